/* python_frames.c: the Python frames of the calling thread, read at an allocation.
 *
 * The tracer's allocation hook calls python_frames_of_thread() (a cytrace_pyframes_fn):
 * it walks the thread's own interpreter frames as they are at that moment, innermost
 * first, the way tracemalloc and samplers do, with the layout of the interpreter this
 * file is compiled for: PyFrameObject f_back/f_lasti (3.9, 3.10), the internal
 * _PyInterpreterFrame chain (3.11+: internal/pycore_frame.h under Py_BUILD_CORE). Nothing
 * runs on Python calls and returns, so a program that calls a lot and allocates little
 * pays for its allocations only.
 *
 * It never calls into the interpreter and never takes the GIL (the hook may run in a
 * `nogil` section): the frames of the calling thread cannot change while it is in the
 * hook, and what it reads of them (code object, instruction offset, names, line table)
 * is immutable while they are alive. Two per-thread caches keep a deep, unchanged stack
 * cheap: the previous walk (its outermost frames that are still there, same frame at the
 * same instruction, give their words back without a look-up) and a direct-mapped table
 * (code object, instruction offset) -> frame word, so a line is computed and a PYFRAME
 * record written once per call site, not per allocation.
 *
 * A frame word is `pyframe_id << 1 | 1`; pyframe ids come from the tracer's intern table
 * keyed by the frame's content (qualified name, file, line), so the same call site seen
 * by two threads has one id and one PYFRAME record.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if PY_VERSION_HEX >= 0x030B0000
#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
#else
#include <frameobject.h>
#endif
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cytrace.h"
#include "python_frames.h"

/* One frame of a walk. `frame` and `lasti` say where it is; `code` what it runs. */
typedef struct {
    const void *frame;
    const PyCodeObject *code;
    int lasti; /* instruction offset, in the interpreter's own unit */
    uint64_t word;
} walked_frame;

#define SITE_SLOTS 2048 /* per thread, direct mapped (80 KiB) */

/* A call site seen by this thread: (code, lasti) and the names it was checked against. */
typedef struct {
    const PyCodeObject *code;
    const PyObject *name, *file; /* guard against a new code object at a freed one's address */
    int lasti;
    unsigned epoch;
    uint64_t word;
} site_slot;

typedef struct {
    walked_frame *walk, *previous; /* this walk and the one before, innermost first */
    int nprevious, cap;
    unsigned start, session; /* the start and the tracer session its words belong to */
    unsigned epoch;          /* this thread's count of those: the site slots' generation */
    site_slot sites[SITE_SLOTS];
} thread_frames;

static __thread __attribute__((tls_model("initial-exec"))) thread_frames *tls_frames;
static pthread_key_t frames_key; /* frees a thread's caches when it ends */
static pthread_once_t frames_key_once = PTHREAD_ONCE_INIT;
static unsigned frames_epoch = 1; /* bumped at each start: cached words of an earlier capture are void */
static int frames_on;

static void thread_frames_free(void *p) {
    thread_frames *t = p;
    if (t == NULL) return;
    tls_frames = NULL; /* (runs in the ending thread: a later allocation of its own starts afresh) */
    free(t->walk);
    free(t->previous);
    free(t);
}

static void make_frames_key(void) { (void)pthread_key_create(&frames_key, thread_frames_free); }

/* The calling thread's caches (made on first use; allocations made here are not
 * recorded: the tracer's guard is held). */
static thread_frames *thread_frames_get(void) {
    thread_frames *t = tls_frames;
    if (__builtin_expect(t != NULL, 1)) return t;
    t = calloc(1, sizeof *t);
    if (t == NULL) return NULL;
    pthread_once(&frames_key_once, make_frames_key);
    (void)pthread_setspecific(frames_key, t);
    tls_frames = t;
    return t;
}

static int grow_walks(thread_frames *t) {
    int cap = t->cap ? t->cap * 2 : 256;
    walked_frame *walk = realloc(t->walk, (size_t)cap * sizeof *walk);
    if (walk == NULL) return -1;
    t->walk = walk;
    walked_frame *previous = realloc(t->previous, (size_t)cap * sizeof *previous);
    if (previous == NULL) return -1;
    t->previous = previous;
    t->cap = cap;
    return 0;
}

/* ---- the interpreter's frames, version by version --------------------------------- */

#if PY_VERSION_HEX >= 0x030B0000
typedef _PyInterpreterFrame interp_frame;

static inline interp_frame *innermost_frame(PyThreadState *ts) {
#if PY_VERSION_HEX >= 0x030D0000
    return ts->current_frame;
#else
    return ts->cframe != NULL ? ts->cframe->current_frame : NULL;
#endif
}

static inline interp_frame *outer_frame(interp_frame *f) { return f->previous; }

/* The code a frame runs, or NULL for a frame that is not a Python function's (a C
 * stack's entry shim, or one whose first instruction has not run yet). */
static inline PyCodeObject *frame_code(interp_frame *f) {
#if PY_VERSION_HEX >= 0x030C0000
    if (f->owner == FRAME_OWNED_BY_CSTACK) return NULL;
#endif
#if PY_VERSION_HEX >= 0x030D0000
    if (f->f_executable == NULL || !PyCode_Check(f->f_executable)) return NULL;
#endif
    if (_PyFrame_IsIncomplete(f)) return NULL;
#if PY_VERSION_HEX >= 0x030D0000
    return (PyCodeObject *)f->f_executable;
#else
    return f->f_code;
#endif
}

static inline int frame_lasti(interp_frame *f) { return _PyInterpreterFrame_LASTI(f); }
static inline int code_line(PyCodeObject *code, int lasti) {
    return PyCode_Addr2Line(code, lasti < 0 ? -1 : lasti * (int)sizeof(_Py_CODEUNIT));
}
#else
typedef PyFrameObject interp_frame;

static inline interp_frame *innermost_frame(PyThreadState *ts) { return ts->frame; }
static inline interp_frame *outer_frame(interp_frame *f) { return f->f_back; }
static inline PyCodeObject *frame_code(interp_frame *f) { return f->f_code; }
static inline int frame_lasti(interp_frame *f) { return f->f_lasti; }
#if PY_VERSION_HEX >= 0x030A0000
static inline int code_line(PyCodeObject *code, int lasti) {
    return PyCode_Addr2Line(code, lasti < 0 ? -1 : lasti * (int)sizeof(_Py_CODEUNIT));
}
#else
static inline int code_line(PyCodeObject *code, int lasti) { return PyCode_Addr2Line(code, lasti); }
#endif
#endif

static inline PyObject *code_function_name(PyCodeObject *code) {
#if PY_VERSION_HEX >= 0x030B0000
    return code->co_qualname;
#else
    return code->co_name;
#endif
}

/* ---- names, read without the interpreter's help ------------------------------------ */

/* `text` as UTF-8 into out[0..cap) (NUL-terminated, cut at a character), read straight
 * from the string's storage: no conversion cache is made, so no GIL is needed. */
static size_t utf8_of(const PyObject *text, char *out, size_t cap) {
    size_t n = 0;
    PyObject *s = (PyObject *)text;
    if (s == NULL || !PyUnicode_Check(s)
#if PY_VERSION_HEX < 0x030C0000
        || !PyUnicode_IS_READY(s)
#endif
    ) {
        memcpy(out, "?", 2);
        return 1;
    }
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t length = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < length; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (n + 5 > cap) break;
        if (c < 0x80) {
            out[n++] = (char)c;
        } else if (c < 0x800) {
            out[n++] = (char)(0xC0 | (c >> 6));
            out[n++] = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            out[n++] = (char)(0xE0 | (c >> 12));
            out[n++] = (char)(0x80 | ((c >> 6) & 0x3F));
            out[n++] = (char)(0x80 | (c & 0x3F));
        } else {
            out[n++] = (char)(0xF0 | (c >> 18));
            out[n++] = (char)(0x80 | ((c >> 12) & 0x3F));
            out[n++] = (char)(0x80 | ((c >> 6) & 0x3F));
            out[n++] = (char)(0x80 | (c & 0x3F));
        }
    }
    out[n] = '\0';
    return n;
}

static uint64_t hash_bytes(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL; /* FNV-1a */
    return h;
}

/* The frame word of (code, lasti), defining its PYFRAME if this capture has not yet. */
static uint64_t site_word(PyCodeObject *code, int lasti) {
    char function[1024], file[4096];
    size_t nf = utf8_of(code_function_name(code), function, sizeof function);
    size_t nfile = utf8_of(code->co_filename, file, sizeof file);
    int line = code_line(code, lasti);
    if (line < 0) line = 0;
    uint64_t key = hash_bytes(0xcbf29ce484222325ULL, function, nf + 1);
    key = hash_bytes(key, file, nfile + 1);
    key ^= (uint64_t)(unsigned)line * 0x9e3779b97f4a7c15ULL;
    if (key == 0) key = 1;
    int is_new = 0;
    uint32_t id = cytrace_pyframe_intern(key, &is_new);
    if (id == 0) return 0;
    if (is_new) cytrace_emit_pyframe(id, (unsigned)line, function, file);
    return ((uint64_t)id << 1) | 1;
}

static inline uint64_t cached_site_word(thread_frames *t, PyCodeObject *code, int lasti) {
    uintptr_t h = ((uintptr_t)code >> 4) * 0x9e3779b97f4a7c15ULL ^ (uintptr_t)(unsigned)lasti * 0xbf58476d1ce4e5b9ULL;
    site_slot *s = &t->sites[(h >> 40) & (SITE_SLOTS - 1)];
    PyObject *name = code_function_name(code), *file = code->co_filename;
    if (s->code == code && s->lasti == lasti && s->epoch == t->epoch && s->name == name && s->file == file)
        return s->word;
    uint64_t word = site_word(code, lasti);
    if (word == 0) return 0;
    s->code = code;
    s->lasti = lasti;
    s->name = name;
    s->file = file;
    s->epoch = t->epoch;
    s->word = word;
    return word;
}

/* ---- the tracer's callback ----------------------------------------------------------- */

int python_frames_of_thread(uint64_t *words, int max, int skip, int *depth) {
    *depth = 0;
    if (!__atomic_load_n(&frames_on, __ATOMIC_RELAXED)) return 0;
    PyThreadState *ts = PyGILState_GetThisThreadState(); /* this thread's, GIL held or not */
    if (ts == NULL) return 0;
    thread_frames *t = thread_frames_get();
    if (t == NULL) return 0;
    /* cytrace_session() is one load behind a call: 5 of the ~820 instructions of a traced
     * malloc with 3 Python frames (callgrind, bench_alloc), and the only exact way to see
     * that a followed fork's child started a new capture before its first allocation. */
    unsigned epoch = __atomic_load_n(&frames_epoch, __ATOMIC_RELAXED), session = cytrace_session();
    if (__builtin_expect(t->start != epoch || t->session != session, 0)) {
        /* another capture (a new start, or a followed fork's child): the words cached so
         * far name pyframe ids that capture never defined; make every site slot miss */
        t->start = epoch;
        t->session = session;
        if (++t->epoch == 0) t->epoch = 1;
        t->nprevious = 0;
    }
    /* this walk, innermost first */
    walked_frame *restrict walk = t->walk;
    int n = 0, cap = t->cap;
    for (interp_frame *f = innermost_frame(ts); f != NULL; f = outer_frame(f)) {
        PyCodeObject *code = frame_code(f);
        if (code == NULL) continue;
        if (__builtin_expect(n == cap, 0)) {
            if (grow_walks(t) != 0) break;
            walk = t->walk;
            cap = t->cap;
        }
        walk[n].frame = f;
        walk[n].code = code;
        walk[n].lasti = frame_lasti(f);
        n++;
    }
    /* the outermost frames that the previous walk saw in the same state keep their words;
     * the usual call (no skip, room for all) gets them straight into `words` */
    const walked_frame *restrict previous = t->previous;
    int direct = skip == 0 && n <= max;
    int i = n - 1, j = t->nprevious - 1;
    for (; i >= 0 && j >= 0; i--, j--) {
        if (walk[i].frame != previous[j].frame || walk[i].lasti != previous[j].lasti ||
            walk[i].code != previous[j].code || previous[j].word == 0)
            break;
        walk[i].word = previous[j].word;
        if (direct) words[i] = previous[j].word;
    }
    for (; i >= 0; i--) {
        walk[i].word = cached_site_word(t, (PyCodeObject *)walk[i].code, walk[i].lasti);
        if (direct) words[i] = walk[i].word;
    }
    t->previous = walk;
    t->walk = (walked_frame *)previous;
    t->nprevious = n;
    *depth = n;
    int k = 0;
    if (direct) {
        while (k < n && words[k] != 0) k++; /* 0: the tracer's table is full */
        return k;
    }
    for (int at = skip; at < n && k < max; at++) {
        if (walk[at].word == 0) break;
        words[k++] = walk[at].word;
    }
    return k;
}

void python_frames_enable(void) {
    unsigned epoch = __atomic_load_n(&frames_epoch, __ATOMIC_RELAXED) + 1;
    __atomic_store_n(&frames_epoch, epoch ? epoch : 1, __ATOMIC_RELAXED);
    cytrace_set_pyframes_source(python_frames_of_thread);
    __atomic_store_n(&frames_on, 1, __ATOMIC_RELEASE);
}

void python_frames_disable(void) { __atomic_store_n(&frames_on, 0, __ATOMIC_RELEASE); }
