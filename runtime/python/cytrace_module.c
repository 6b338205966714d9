/* cytrace_module.c: cytool._cytrace, the CPython face of libcytrace.
 *
 * start()/stop() drive the tracer. Besides, this module owns what needs the Python API:
 *  - Python frames: the tracer's allocation hook reads the calling thread's interpreter
 *    frames at that moment (python_frames.c); nothing runs on Python calls and returns;
 *  - thread names: every Python thread's name (threading.Thread.name) is handed to the
 *    tracer by its OS thread id, at start, when a thread starts, and at stop (renames);
 *  - the PyMem domains (trace_python_allocators) are wrapped by libcytrace itself
 *    (cytrace_pymem_install), so CYTOOL_PROFILE can trace them too;
 *  - cytool attach: cytool_attach_run(), which gdb calls in a running process to run
 *    Python code from a thread of its own (cytool/attach_gdb.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cytrace.h"
#include "python_frames.h"

/* ---- thread names ---------------------------------------------------------------------- */

/* Hand the tracer the name of Python thread object `thread` (its native_id names it). */
static void name_thread(PyObject *thread, long fallback_tid) {
    PyObject *name = PyObject_GetAttrString(thread, "name");
    PyObject *native = PyObject_GetAttrString(thread, "native_id");
    long tid = native != NULL && PyLong_Check(native) ? PyLong_AsLong(native) : fallback_tid;
    const char *text = name != NULL && PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    if (text != NULL && tid > 0) cytrace_name_thread(tid, text);
    Py_XDECREF(name);
    Py_XDECREF(native);
    PyErr_Clear();
}

/* Every Python thread's name (threading._active: the threads threading knows as started). */
static void name_all_threads(void) {
    int guard = cytrace_guard_enter();
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *active = threading ? PyObject_GetAttrString(threading, "_active") : NULL;
    PyObject *threads = active && PyDict_Check(active) ? PyDict_Values(active) : NULL;
    for (Py_ssize_t i = 0; threads != NULL && i < PyList_GET_SIZE(threads); i++)
        name_thread(PyList_GET_ITEM(threads, i), 0);
    Py_XDECREF(threads);
    Py_XDECREF(active);
    Py_XDECREF(threading);
    PyErr_Clear();
    cytrace_guard_exit(guard);
}

/* The calling thread's name, as threading knows it (a thread that is starting). */
static void name_current_thread(void) {
    int guard = cytrace_guard_enter();
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *current = threading ? PyObject_CallMethod(threading, "current_thread", NULL) : NULL;
    if (current != NULL) name_thread(current, (long)syscall(SYS_gettid));
    Py_XDECREF(current);
    Py_XDECREF(threading);
    PyErr_Clear();
    cytrace_guard_exit(guard);
}

/* threading.setprofile() hook, the first event of a thread started while tracing: name
 * the thread, then remove the hook (Python frames need no profile function). */
static PyObject *thread_bootstrap(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *frame, *event, *arg;
    if (!PyArg_ParseTuple(args, "OOO", &frame, &event, &arg)) return NULL;
    if (cytrace_is_active()) name_current_thread();
    PyEval_SetProfile(NULL, NULL);
    Py_RETURN_NONE;
}

static PyMethodDef bootstrap_def = {"_thread_bootstrap", thread_bootstrap, METH_VARARGS, NULL};

static int call_threading(const char *function, PyObject *arg) {
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL) return -1;
    PyObject *r = PyObject_CallMethod(threading, function, "O", arg);
    Py_DECREF(threading);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static int frames_on, naming_hook_on;

/* 1 when threading has no profile hook of its own (the program's, a profiler's): only
 * then is ours installed, so a program's profiler is never displaced. */
static int threading_hook_free(void) {
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *hook = threading ? PyObject_GetAttrString(threading, "_profile_hook") : NULL;
    int free_ = hook == Py_None;
    Py_XDECREF(hook);
    Py_XDECREF(threading);
    PyErr_Clear();
    return free_;
}

/* Python frames on: the walker answers the tracer; threads started from now on are named
 * when they start (else at stop, if they are still alive). */
static int frames_start(void) {
    if (threading_hook_free()) {
        PyObject *hook = PyCFunction_New(&bootstrap_def, NULL);
        if (hook == NULL) return -1;
        int r = call_threading("setprofile", hook);
        Py_DECREF(hook);
        if (r != 0) return -1;
        naming_hook_on = 1;
    }
    python_frames_enable();
    frames_on = 1;
    return 0;
}

static void frames_stop(void) {
    if (!frames_on) return;
    frames_on = 0;
    python_frames_disable();
    if (naming_hook_on && call_threading("setprofile", Py_None) != 0) PyErr_Clear();
    naming_hook_on = 0;
}

/* ---- `cytool attach`: running Python code from a new thread ---------------------------
 *
 * cytool attach stops the process with gdb at a safe point (the entry of an allocation
 * function), dlopen()s this extension and calls cytool_attach_run(code): it copies the
 * code and starts a detached thread, then returns at once, so the process is paused only
 * for the dlopen and the thread's creation. The thread takes the GIL the ordinary way
 * (PyGILState_Ensure waits for the running thread to let it go at a bytecode boundary),
 * runs the code, and ends. */

static void *attach_thread(void *arg) {
    char *code = arg;
#if PY_VERSION_HEX >= 0x030D0000
    int finalizing = Py_IsFinalizing();
#else
    int finalizing = _Py_IsFinalizing();
#endif
    if (Py_IsInitialized() && !finalizing) {
        PyGILState_STATE gil = PyGILState_Ensure();
        if (PyRun_SimpleString(code) != 0) PyErr_Clear();
        PyGILState_Release(gil);
    }
    free(code);
    return NULL;
}

/* Returns 0 when the thread started, -1 otherwise (no memory, no thread). */
__attribute__((visibility("default"))) int cytool_attach_run(const char *code) {
    char *copy = strdup(code);
    if (copy == NULL) return -1;
    pthread_attr_t attr;
    pthread_t thread;
    if (pthread_attr_init(&attr) != 0) {
        free(copy);
        return -1;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int started = pthread_create(&thread, &attr, attach_thread, copy) == 0;
    pthread_attr_destroy(&attr);
    if (!started) free(copy);
    return started ? 0 : -1;
}

/* ---- the module ---------------------------------------------------------------------- */

static PyObject *stats_dict(void) {
    struct cytrace_stats s;
    cytrace_get_stats(&s);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K}", "events", (unsigned long long)s.events, "dropped",
                         (unsigned long long)s.dropped, "stacks", (unsigned long long)s.stacks, "frames",
                         (unsigned long long)s.frames_flushed, "bytes", (unsigned long long)s.bytes_written, "lost",
                         (unsigned long long)s.lost);
}

static PyObject *py_start(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"path", "follow_fork", "trace_python_allocators", "python_frames", "native_unwind",
                               "time_resolution_ns", "compression_level", "max_frames", "attached", "say_exec",
                               "parent_pid", NULL};
    PyObject *path_obj;
    int follow = 0, pymem = 0, frames = 1, native_unwind = 0, compression = 0, max_frames = CYTRACE_DEFAULT_MAX_FRAMES;
    int attached = 0, say_exec = 0;
    long parent_pid = 0;
    unsigned long long resolution = CYTRACE_DEFAULT_TIME_RESOLUTION_NS;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|ppppKiippl", keywords, PyUnicode_FSConverter, &path_obj, &follow,
                                     &pymem, &frames, &native_unwind, &resolution, &compression, &max_frames,
                                     &attached, &say_exec, &parent_pid))
        return NULL;
    cytrace_set_parent_pid(parent_pid);
    cytrace_set_time_resolution((uint64_t)resolution);
    cytrace_set_compression_level(compression);
    cytrace_set_max_frames(max_frames);
    if (cytrace_is_active()) {
        Py_DECREF(path_obj);
        PyErr_Format(PyExc_RuntimeError, "already tracing into %s", cytrace_path());
        return NULL;
    }
    unsigned options = (follow ? CYTRACE_FOLLOW_FORK : 0) | (pymem ? CYTRACE_PYMEM : 0) |
                       (frames ? CYTRACE_PYTHON_FRAMES : 0) | (native_unwind ? CYTRACE_NATIVE_UNWIND : 0) |
                       (attached ? CYTRACE_ATTACHED : 0) | (say_exec ? CYTRACE_SAY_EXEC : 0);
    if (frames && frames_start() != 0) {
        frames_stop();
        Py_DECREF(path_obj);
        return NULL;
    }
    if (pymem && cytrace_pymem_install() != 0) {
        frames_stop();
        PyErr_Format(PyExc_RuntimeError, "cannot trace the Python allocators: %s", cytrace_last_error());
        Py_DECREF(path_obj);
        return NULL;
    }
    name_all_threads();
    if (cytrace_start(PyBytes_AS_STRING(path_obj), options) != 0) {
        int error = errno;
        cytrace_pymem_uninstall();
        frames_stop();
        /* OSError(errno, message): EAGAIN when another process traces into the path */
        PyObject *value = Py_BuildValue("(is)", error, cytrace_last_error());
        if (value != NULL) {
            PyErr_SetObject(PyExc_OSError, value);
            Py_DECREF(value);
        }
        Py_DECREF(path_obj);
        return NULL;
    }
    Py_DECREF(path_obj);
    Py_RETURN_NONE;
}

static PyObject *py_stop(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    if (cytrace_is_active()) name_all_threads(); /* names given since they started */
    int was_active = cytrace_stop() == 0;
    frames_stop();
    if (!was_active) Py_RETURN_NONE;
    return stats_dict();
}

/* os.register_at_fork(after_in_child=...): unless the tracer follows the fork (it is
 * still active), Python frames stop too. A followed child's threads see the tracer's new
 * session and forget the pyframe ids they cached in the parent's capture. */
static PyObject *py_after_fork_child(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    if (!cytrace_is_active()) frames_stop();
    Py_RETURN_NONE;
}

static PyObject *py_is_active(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyBool_FromLong(cytrace_is_active());
}

static PyObject *py_path(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyUnicode_DecodeFSDefault(cytrace_path());
}

static PyObject *py_stats(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return stats_dict();
}

static PyObject *py_unused_capture_path(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *path_object;
    int path_itself = 1;
    if (!PyArg_ParseTuple(args, "O&|p:unused_capture_path", PyUnicode_FSConverter, &path_object, &path_itself))
        return NULL;
    char out[4096 + 48];
    int r = cytrace_unused_path(PyBytes_AS_STRING(path_object), path_itself, out, sizeof out);
    Py_DECREF(path_object);
    if (r != 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyUnicode_DecodeFSDefault(out);
}

static PyObject *py_pin_frame(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *frame;
    int record_outside = 1;
    if (!PyArg_ParseTuple(args, "O|p:pin_frame", &frame, &record_outside)) return NULL;
    if (python_frames_pin(frame, record_outside) != 0) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"start", (PyCFunction)(void (*)(void))py_start, METH_VARARGS | METH_KEYWORDS,
     "start(path, follow_fork=False, trace_python_allocators=False, python_frames=True, native_unwind=False,\n"
     "      time_resolution_ns=1000000, compression_level=0, max_frames=1024, attached=False, say_exec=False)\n"
     "Start tracing every allocation of this process into the capture file `path`. say_exec: say on stderr\n"
     "when an exec finishes the capture.\n"
     "OSError(EAGAIN) when another process is tracing into `path`."},
    {"stop", py_stop, METH_NOARGS, "stop() -> dict of stats, or None if not tracing. Finishes the capture."},
    {"is_active", py_is_active, METH_NOARGS, "is_active() -> bool"},
    {"_after_fork_child", py_after_fork_child, METH_NOARGS, "for os.register_at_fork(after_in_child=...)"},
    {"path", py_path, METH_NOARGS, "path() -> the capture path of the current (or last) session"},
    {"stats", py_stats, METH_NOARGS, "stats() -> dict: events, dropped, stacks, frames, bytes, lost"},
    {"unused_capture_path", py_unused_capture_path, METH_VARARGS,
     "unused_capture_path(path, path_itself=True) -> a capture path naming no existing file: path itself\n"
     "(when path_itself and it does not exist), else the first free of <path>.<pid>, <path>.<pid>.2, ...\n"
     "OSError(ENAMETOOLONG) when the name does not fit."},
    {"pin_frame", py_pin_frame, METH_VARARGS,
     "pin_frame(frame or None, record_outside=True): the frame (of this thread) that runs the measured code\n"
     "stays suspended until pin_frame(None), called before it returns: allocations below it compare only\n"
     "the frames inside it, and record only those when record_outside is false."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "cytool._cytrace", "Driver of libcytrace, cytool's allocation tracer.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cytrace(void) {
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    PyModule_AddIntConstant(m, "FOLLOW_FORK", CYTRACE_FOLLOW_FORK);
    PyModule_AddObject(m, "DEFAULT_TIME_RESOLUTION_NS", PyLong_FromUnsignedLongLong(CYTRACE_DEFAULT_TIME_RESOLUTION_NS));
    PyModule_AddIntConstant(m, "DEFAULT_MAX_FRAMES", CYTRACE_DEFAULT_MAX_FRAMES);
    PyModule_AddIntConstant(m, "MIN_MAX_FRAMES", CYTRACE_MIN_MAX_FRAMES);
    PyModule_AddIntConstant(m, "MAX_MAX_FRAMES", CYTRACE_MAX_MAX_FRAMES);
    return m;
}
