/* cytrace_module.c: cytool._cytrace, the CPython face of libcytrace.
 *
 * start()/stop() drive the tracer. Besides, this module owns what needs the Python API:
 *  - Python frames: a C profile function (PyEval_SetProfile, in every thread) keeps a
 *    per-thread shadow stack of the running Python frames; the tracer's allocation hook
 *    calls pyframes() to turn it into frame words. That callback never calls into the
 *    interpreter: it reads the shadow stack of its own thread and the line of a suspended
 *    frame (PyFrame_GetLineNumber, a pure read), so it is safe without the GIL.
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
#include <frameobject.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cytrace.h"

/* ---- the code registry: code object -> small index and its names ------------------- */

#define CODE_CHUNK 1024
#define CODE_CHUNKS 4096

typedef struct {
    char *function;
    char *file;
} code_names;

static code_names *code_chunks[CODE_CHUNKS]; /* never moved: read by other threads */
static uint32_t ncodes;
static struct {
    PyObject *code;
    uint32_t index;
} *code_map; /* open addressing, touched only with the GIL */
static size_t code_map_cap, code_map_used;

static char *utf8_copy(PyObject *text) {
    const char *s = text && PyUnicode_Check(text) ? PyUnicode_AsUTF8(text) : NULL;
    if (s == NULL) {
        PyErr_Clear();
        s = "?";
    }
    size_t n = strlen(s);
    char *copy = PyMem_RawMalloc(n + 1);
    if (copy) memcpy(copy, s, n + 1);
    return copy;
}

static size_t ptr_hash(const void *p) { return (size_t)(((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ULL); }

static int code_map_grow(void) {
    size_t cap = code_map_cap ? code_map_cap * 2 : 1024;
    void *mem = PyMem_RawCalloc(cap, sizeof *code_map);
    if (mem == NULL) return -1;
    __typeof__(code_map) old = code_map;
    size_t old_cap = code_map_cap;
    code_map = mem;
    code_map_cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].code == NULL) continue;
        size_t j = ptr_hash(old[i].code) & (cap - 1);
        while (code_map[j].code) j = (j + 1) & (cap - 1);
        code_map[j] = old[i];
    }
    PyMem_RawFree(old);
    return 0;
}

/* Index of a code object (registering it, and keeping it alive, on first sight); 0 on failure. */
static uint32_t code_index(PyCodeObject *code) {
    if ((code_map_used + 1) * 2 > code_map_cap && code_map_grow() != 0) return 0;
    size_t j = ptr_hash(code) & (code_map_cap - 1);
    while (code_map[j].code) {
        if (code_map[j].code == (PyObject *)code) return code_map[j].index;
        j = (j + 1) & (code_map_cap - 1);
    }
    uint32_t index = ncodes + 1;
    uint32_t chunk = index / CODE_CHUNK;
    if (chunk >= CODE_CHUNKS) return 0;
    if (code_chunks[chunk] == NULL) {
        code_chunks[chunk] = PyMem_RawCalloc(CODE_CHUNK, sizeof(code_names));
        if (code_chunks[chunk] == NULL) return 0;
    }
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *name = PyObject_GetAttrString((PyObject *)code, "co_qualname");
#else
    PyObject *name = PyObject_GetAttrString((PyObject *)code, "co_name");
#endif
    if (name == NULL) PyErr_Clear();
    PyObject *file = PyObject_GetAttrString((PyObject *)code, "co_filename");
    if (file == NULL) PyErr_Clear();
    code_names *slot = &code_chunks[chunk][index % CODE_CHUNK];
    slot->function = utf8_copy(name);
    slot->file = utf8_copy(file);
    Py_XDECREF(name);
    Py_XDECREF(file);
    Py_INCREF(code);
    code_map[j].code = (PyObject *)code;
    code_map[j].index = index;
    code_map_used++;
    __atomic_store_n(&ncodes, index, __ATOMIC_RELEASE);
    return index;
}

static const code_names *names_of(uint32_t index) {
    if (index == 0 || index > __atomic_load_n(&ncodes, __ATOMIC_ACQUIRE)) return NULL;
    return &code_chunks[index / CODE_CHUNK][index % CODE_CHUNK];
}

/* ---- shadow stacks of Python frames ---------------------------------------------------- */

typedef struct {
    PyFrameObject *frame;
    uint32_t code;
    uint32_t cached_id; /* pyframe id for cached_lasti, 0 = not computed */
    int cached_lasti;
} shadow_entry;

/* The frame's last instruction: cheap to read, unlike its line (a line-table walk). */
static inline int frame_lasti(PyFrameObject *frame) {
#if PY_VERSION_HEX >= 0x030B0000
    return PyFrame_GetLasti(frame);
#else
    return frame->f_lasti;
#endif
}

typedef struct shadow_stack {
    shadow_entry *entries;
    int n, cap;
    unsigned generation;
    unsigned ids_session; /* the tracer session its entries' cached pyframe ids belong to */
    struct shadow_stack *next; /* all shadow stacks (touched with the GIL) */
} shadow_stack;

static shadow_stack *all_shadows;

/* Entries hold a reference to their frame: a frame we missed the RETURN of (a greenlet
 * switch, say) stays alive instead of being read after it is freed. */
static void shadow_pop_to(shadow_stack *s, int n) {
    int old = s->n;
    if (n >= old) return;
    __atomic_store_n(&s->n, n, __ATOMIC_RELEASE);
    for (int i = old - 1; i >= n; i--) Py_DECREF(s->entries[i].frame);
}

static __thread __attribute__((tls_model("initial-exec"))) shadow_stack *tls_shadow;
static unsigned frames_generation; /* bumped at each start; 0 = not recording frames */
static int frames_on;

static int shadow_push(shadow_stack *s, PyFrameObject *frame) {
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 64;
        shadow_entry *e = PyMem_RawRealloc(s->entries, (size_t)cap * sizeof *e);
        if (e == NULL) return -1;
        s->entries = e;
        s->cap = cap;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    uint32_t index = code_index(code);
    Py_DECREF(code);
    if (s->n > 0) s->entries[s->n - 1].cached_id = 0; /* its line is now fixed: recompute once */
    shadow_entry *e = &s->entries[s->n];
    Py_INCREF(frame);
    e->frame = frame;
    e->code = index;
    e->cached_id = 0;
    e->cached_lasti = -2;
    __atomic_store_n(&s->n, s->n + 1, __ATOMIC_RELEASE);
    return 0;
}

/* Make the shadow stack describe `frame` and its callers (outermost first), however deep. */
static void shadow_seed(shadow_stack *s, PyFrameObject *frame) {
    shadow_pop_to(s, 0);
    int depth = 0, cap = 0;
    PyFrameObject **chain = NULL;
    Py_XINCREF(frame);
    while (frame != NULL) {
        if (depth == cap) {
            int more = cap ? cap * 2 : 256;
            PyFrameObject **n = PyMem_RawRealloc(chain, (size_t)more * sizeof *n);
            if (n == NULL) break;
            chain = n;
            cap = more;
        }
        chain[depth++] = frame;
        frame = PyFrame_GetBack(frame);
    }
    Py_XDECREF(frame);
    for (int i = depth - 1; i >= 0; i--) {
        shadow_push(s, chain[i]);
        Py_DECREF(chain[i]); /* the shadow stack holds its own reference */
    }
    PyMem_RawFree(chain);
}

static shadow_stack *thread_shadow(PyFrameObject *seed_from) {
    shadow_stack *s = tls_shadow;
    if (s == NULL) {
        s = PyMem_RawCalloc(1, sizeof *s);
        if (s == NULL) return NULL;
        s->next = all_shadows;
        all_shadows = s;
        tls_shadow = s;
    }
    if (s->generation != frames_generation) {
        s->generation = frames_generation;
        shadow_seed(s, seed_from);
    }
    return s;
}

static int profile_fn(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg) {
    (void)obj;
    (void)arg;
    if (!frames_on) return 0;
    if (what != PyTrace_CALL && what != PyTrace_RETURN) {
        /* a C call: in a thread that was running when tracing started (cytool attach)
         * and calls only C functions (a loop over a Cython function), this is the
         * first sight of its Python frames: `frame` (the caller) and its callers */
        shadow_stack *s = tls_shadow;
        if (__builtin_expect(s == NULL || s->generation != frames_generation, 0)) {
            int guard = cytrace_guard_enter();
            thread_shadow(frame);
            cytrace_guard_exit(guard);
        }
        return 0;
    }
    int guard = cytrace_guard_enter();
    shadow_stack *s = tls_shadow;
    if (s == NULL || s->generation != frames_generation) {
        /* first event in this thread: its stack, callers included, is known now */
        PyFrameObject *back = what == PyTrace_CALL ? PyFrame_GetBack(frame) : (Py_INCREF(frame), frame);
        s = thread_shadow(back);
        Py_XDECREF(back);
        if (s != NULL && what == PyTrace_CALL) shadow_push(s, frame);
        else if (s != NULL && s->n > 0) shadow_pop_to(s, s->n - 1);
    } else if (what == PyTrace_CALL) {
        shadow_push(s, frame);
    } else {
        int i = s->n - 1;
        while (i >= 0 && s->entries[i].frame != frame) i--;
        if (i >= 0) shadow_pop_to(s, i); /* pops frames we missed too */
    }
    cytrace_guard_exit(guard);
    return 0;
}

/* The tracer's callback (cytrace_pyframes_fn): runs inside an allocation hook, guard
 * held, maybe without the GIL. */
static int pyframes(uint64_t *words, int max, int skip, int *depth) {
    shadow_stack *s = tls_shadow;
    *depth = 0;
    if (s == NULL || !frames_on || s->generation != frames_generation) return 0;
    int n = __atomic_load_n(&s->n, __ATOMIC_ACQUIRE);
    *depth = n;
    unsigned session = cytrace_session();
    if (__builtin_expect(s->ids_session != session, 0)) {
        /* a new session in the same shadow stack (a followed fork's child): its ids were
         * defined in the parent's capture, not in this one */
        for (int i = 0; i < n; i++) s->entries[i].cached_id = 0;
        s->ids_session = session;
    }
    int k = 0;
    for (int i = n - 1 - skip; i >= 0 && k < max; i--) {
        shadow_entry *e = &s->entries[i];
        if (i != n - 1 && e->cached_id != 0) {
            words[k++] = ((uint64_t)e->cached_id << 1) | 1;
            continue;
        }
        int lasti = frame_lasti(e->frame);
        if (lasti != e->cached_lasti || e->cached_id == 0) {
            int line = PyFrame_GetLineNumber(e->frame);
            int is_new = 0;
            uint32_t id = cytrace_pyframe_intern(((uint64_t)e->code << 32) | (uint32_t)line, &is_new);
            if (id == 0) break;
            if (is_new) {
                const code_names *names = names_of(e->code);
                cytrace_emit_pyframe(id, (unsigned)(line < 0 ? 0 : line), names && names->function ? names->function : "?",
                                     names && names->file ? names->file : "?");
            }
            e->cached_lasti = lasti;
            e->cached_id = id;
        }
        words[k++] = ((uint64_t)e->cached_id << 1) | 1;
    }
    return k;
}

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

/* threading.setprofile() hook: the first event of a new thread installs the C profiler. */
static PyObject *thread_bootstrap(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *frame, *event, *arg;
    if (!PyArg_ParseTuple(args, "OOO", &frame, &event, &arg)) return NULL;
    if (cytrace_is_active()) name_current_thread();
    if (frames_on) {
        PyEval_SetProfile(profile_fn, NULL);
        if (PyFrame_Check(frame)) {
            int guard = cytrace_guard_enter();
            shadow_stack *s = thread_shadow((PyFrameObject *)frame);
            (void)s;
            cytrace_guard_exit(guard);
        }
    }
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

static void set_profile_all_threads(Py_tracefunc fn) {
#if PY_VERSION_HEX >= 0x030C0000
    PyEval_SetProfileAllThreads(fn, NULL);
#else
    PyThreadState *self = PyThreadState_Get();
    for (PyThreadState *t = PyInterpreterState_ThreadHead(self->interp); t != NULL; t = PyThreadState_Next(t))
        _PyEval_SetProfile(t, fn, NULL);
#endif
}

static int frames_start(void) {
    frames_generation++;
    if (frames_generation == 0) frames_generation = 1;
    frames_on = 1;
    cytrace_set_pyframes_source(pyframes);
    PyObject *hook = PyCFunction_New(&bootstrap_def, NULL);
    if (hook == NULL) return -1;
    int r = call_threading("setprofile", hook);
    Py_DECREF(hook);
    if (r != 0) return -1;
    set_profile_all_threads(profile_fn);
    int guard = cytrace_guard_enter();
    PyFrameObject *current = PyEval_GetFrame();
    thread_shadow(current);
    cytrace_guard_exit(guard);
    return 0;
}

static void frames_stop(void) {
    if (!frames_on) return;
    frames_on = 0;
    set_profile_all_threads(NULL);
    if (call_threading("setprofile", Py_None) != 0) PyErr_Clear();
    /* The tracer has stopped: no allocation hook reads a shadow stack any more. Release
     * the frames they hold, in every thread (a thread re-seeds at the next start). */
    int guard = cytrace_guard_enter();
    for (shadow_stack *s = all_shadows; s != NULL; s = s->next) {
        shadow_pop_to(s, 0);
        s->generation = 0;
    }
    cytrace_guard_exit(guard);
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
                               "time_resolution_ns", "compression_level", "max_frames", "attached", NULL};
    PyObject *path_obj;
    int follow = 0, pymem = 0, frames = 1, native_unwind = 0, compression = 0, max_frames = CYTRACE_DEFAULT_MAX_FRAMES;
    int attached = 0;
    unsigned long long resolution = CYTRACE_DEFAULT_TIME_RESOLUTION_NS;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|ppppKiip", keywords, PyUnicode_FSConverter, &path_obj, &follow,
                                     &pymem, &frames, &native_unwind, &resolution, &compression, &max_frames,
                                     &attached))
        return NULL;
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
                       (attached ? CYTRACE_ATTACHED : 0);
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

/* os.register_at_fork(after_in_child=...): only this thread exists in the child. The
 * other threads' shadow stacks point at frames the child's interpreter tears down:
 * forget them without touching their references. Then, unless the tracer follows the
 * fork (it is still active), drop the profiler too. */
static PyObject *py_after_fork_child(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    shadow_stack *mine = tls_shadow;
    all_shadows = mine;
    if (mine != NULL) mine->next = NULL;
    if (!cytrace_is_active()) frames_stop();
    Py_RETURN_NONE;
}

/* How many threads have a profile function of someone else's (sys.setprofile in any
 * thread): starting Python frames would displace it (cytool attach checks first). */
static PyObject *py_foreign_profilers(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    long n = 0;
    PyThreadState *me = PyThreadState_Get();
    for (PyThreadState *t = PyInterpreterState_ThreadHead(me->interp); t != NULL; t = PyThreadState_Next(t))
        if (t->c_profilefunc != NULL && t->c_profilefunc != profile_fn) n++;
    return PyLong_FromLong(n);
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

static PyMethodDef methods[] = {
    {"start", (PyCFunction)(void (*)(void))py_start, METH_VARARGS | METH_KEYWORDS,
     "start(path, follow_fork=False, trace_python_allocators=False, python_frames=True, native_unwind=False,\n"
     "      time_resolution_ns=1000000, compression_level=0, max_frames=1024, attached=False)\n"
     "Start tracing every allocation of this process into the capture file `path`.\n"
     "OSError(EAGAIN) when another process is tracing into `path`."},
    {"stop", py_stop, METH_NOARGS, "stop() -> dict of stats, or None if not tracing. Finishes the capture."},
    {"is_active", py_is_active, METH_NOARGS, "is_active() -> bool"},
    {"foreign_profilers", py_foreign_profilers, METH_NOARGS,
     "foreign_profilers() -> int: threads with a profile function (sys.setprofile) other than the tracer's"},
    {"_after_fork_child", py_after_fork_child, METH_NOARGS, "for os.register_at_fork(after_in_child=...)"},
    {"path", py_path, METH_NOARGS, "path() -> the capture path of the current (or last) session"},
    {"stats", py_stats, METH_NOARGS, "stats() -> dict: events, dropped, stacks, frames, bytes, lost"},
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
