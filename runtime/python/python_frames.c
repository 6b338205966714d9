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
 * is immutable while they are alive. Per-thread caches keep it cheap:
 *  - the previous walk: every frame of the chain (those recorded and those skipped) with
 *    the fields that decide its word (code object, instruction position and owner, as the
 *    frame stores them). The usual allocation, in a loop that does not call or return
 *    Python code in between, finds the same chain, compared frame by frame from the
 *    innermost to the end, and gets the previous words back without a walk or a look-up.
 *    That comparison reads each frame's state (two words, the first of its entry; not
 *    the frame's address: a frame's word depends on what it runs and where, not on where
 *    it lives), and the words come back as one copy. Any difference (an outer frame at another
 *    instruction or running another code object, a generator resumed by another caller,
 *    one frame more or less) takes the long way, where the outermost frames that are
 *    unchanged still keep their words;
 *  - a direct-mapped table (code object, instruction offset) -> frame word, so a line is
 *    computed and a PYFRAME record written once per call site, not per allocation.
 * Both caches know code objects by address, so a code object freed and another made at
 * the same address (exec, eval, a module reloaded) would be taken for the old one. Every
 * death of a code object is counted (a code watcher on 3.12+, PyCode_Type's deallocator
 * wrapped before), before its memory is freed; a thread that sees the count changed since
 * its previous allocation drops both caches. A program that keeps making and dropping
 * code objects pays a walk and a look-up per frame at its next allocations, not wrong names.
 *
 * A frame pinned by cytool's code that runs the measured code (the pytest plugin's window
 * around a test, the launcher running a program) stays suspended on its thread's chain
 * while pinned (it is unpinned before it returns). The fast check stops there instead of
 * comparing the dozens of frames outside it (cytool's, runpy's, pytest's and pluggy's) at
 * every allocation, and a pin that asks so (the pytest plugin's) has them not recorded at
 * all: stacks end at the pinned frame, where reports cut them anyway. Only a walk made
 * under the same pin is trusted past it.
 *
 * Each walk's words get a chain serial (unique in the process while the thread's counter
 * does not wrap); an allocation that finds the previous chain returns its serial, so the
 * tracer can tell two stacks' Python parts equal without comparing them.
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

/* What decides a frame's word: the instruction position and the code object as the
 * frame stores them, with (3.11+) its owner in the code pointer's low bits. As long as
 * the code is the same object, a frame seen again in the same state gets the word it had. */
typedef struct {
    uintptr_t where; /* prev_instr / instr_ptr (3.11+), f_lasti (3.9, 3.10), as stored */
    uintptr_t what;  /* f_code (f_executable on 3.13), as stored, | FRAME_OWNED_BY_* (3.11+) */
} frame_state;

/* One interpreter frame as a walk saw it. The fast check reads the states of the previous
 * walk's frames one after the other: they come first. */
typedef struct {
    frame_state state;
    const void *frame;
    uint64_t word; /* its frame word, NOT_PYTHON, or 0 if the tracer's table was full */
} walked_frame;

/* The `word` of a frame that is not a Python function's (a C stack's entry shim, or one
 * whose first instruction has not run yet): nothing is recorded for it. Frame words are
 * odd, so this even value is never one. */
#define NOT_PYTHON ((uint64_t)2)

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
    uint64_t *python_words;        /* the previous walk's Python words, innermost first */
    int nprevious, npython, cap;
    int reusable; /* every frame of `previous` has its word (none is 0: the tracer's table was not full) */
    uint64_t serial; /* the chain serial of `previous`'s words */
    int pin_index;             /* where `previous` met the pinned frame (-1: nowhere) ... */
    unsigned long previous_pin; /* ... under this pin */
    unsigned start, session; /* the start and the tracer session its words belong to */
    unsigned long deaths;    /* code_deaths when the caches were last valid */
    unsigned epoch;          /* this thread's count of those: the site slots' generation */
    site_slot sites[SITE_SLOTS];
} thread_frames;

static __thread __attribute__((tls_model("initial-exec"))) thread_frames *tls_frames;
static pthread_key_t frames_key; /* frees a thread's caches when it ends */
static pthread_once_t frames_key_once = PTHREAD_ONCE_INIT;
static unsigned frames_epoch = 1; /* bumped at each start: cached words of an earlier capture are void */
static unsigned long code_deaths; /* code objects deallocated so far (since the first start) */
static int frames_on;
static const void *pinned_frame;  /* the interpreter frame pinned (NULL: none) ... */
static unsigned long pin_serial;  /* ... and the pin's number: bumped at every pin and unpin */
static int pin_records_outside;   /* the frames outside the pinned one are recorded too */

static void thread_frames_free(void *p) {
    thread_frames *t = p;
    if (t == NULL) return;
    tls_frames = NULL; /* (runs in the ending thread: a later allocation of its own starts afresh) */
    free(t->walk);
    free(t->previous);
    free(t->python_words);
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
    /* each array to `cap` items (one that fails stays as it was) */
#define GROW(array)                                                                                    \
    do {                                                                                               \
        void *grown_ = realloc(t->array, (size_t)cap * sizeof *t->array);                              \
        if (grown_ == NULL) return -1;                                                                 \
        t->array = grown_;                                                                             \
    } while (0)
    GROW(walk);
    GROW(previous);
    GROW(python_words);
#undef GROW
    t->cap = cap;
    return 0;
}

/* Serials: the thread's number in the high 32 bits (taken when its count starts or wraps),
 * its count of walks in the low ones; 0 is never one. */
static unsigned long thread_numbers;

static void next_serial(thread_frames *t) {
    if ((uint32_t)t->serial == UINT32_MAX || t->serial == 0)
        t->serial = (uint64_t)(__atomic_add_fetch(&thread_numbers, 1, __ATOMIC_RELAXED) & 0xffffffffu) << 32;
    t->serial++;
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

/* The fields that say what a frame runs and where, as stored (see walked_frame). */
#if PY_VERSION_HEX >= 0x030D0000
static inline const void *frame_code_field(interp_frame *f) { return f->f_executable; }
static inline uintptr_t frame_where(interp_frame *f) { return (uintptr_t)f->instr_ptr; }
#else
static inline const void *frame_code_field(interp_frame *f) { return f->f_code; }
static inline uintptr_t frame_where(interp_frame *f) { return (uintptr_t)f->prev_instr; }
#endif
static inline int frame_owner(interp_frame *f) { return f->owner; }
/* (code objects are at least 8-byte aligned: the owner, 0 to 3, fits in the low bits) */
static inline frame_state state_of(interp_frame *f) {
    return (frame_state){frame_where(f), (uintptr_t)frame_code_field(f) | (uintptr_t)frame_owner(f)};
}

static inline int code_line(PyCodeObject *code, int lasti) {
    return PyCode_Addr2Line(code, lasti < 0 ? -1 : lasti * (int)sizeof(_Py_CODEUNIT));
}
#else
typedef PyFrameObject interp_frame;

static inline interp_frame *innermost_frame(PyThreadState *ts) { return ts->frame; }
static inline interp_frame *outer_frame(interp_frame *f) { return f->f_back; }
static inline PyCodeObject *frame_code(interp_frame *f) { return f->f_code; }
static inline int frame_lasti(interp_frame *f) { return f->f_lasti; }
static inline frame_state state_of(interp_frame *f) { return (frame_state){(uintptr_t)(intptr_t)f->f_lasti, (uintptr_t)f->f_code}; }
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

/* Another capture (a new start, or a followed fork's child): the words cached so far name
 * pyframe ids that capture never defined; or a code object died: a cached address may be
 * another code object's now. Make every site slot and the previous walk miss. */
static void __attribute__((noinline)) thread_frames_renew(thread_frames *t, unsigned start, unsigned session,
                                                         unsigned long deaths) {
    t->start = start;
    t->session = session;
    t->deaths = deaths;
    if (++t->epoch == 0) t->epoch = 1;
    t->nprevious = 0;
    t->npython = 0;
    t->reusable = 0;
    t->pin_index = -1;
}

/* The long way: walk the whole chain, give each frame its word (those of the outermost
 * frames that the previous walk saw in the same state are kept: a caller's frames stay
 * put while its callees come and go; the others come from the site slots), and keep the
 * walk as the next one's `previous`. */
static int __attribute__((noinline)) walk_frames(thread_frames *t, interp_frame *innermost, uint64_t *words, int max,
                                                 int skip, int *depth, uint64_t *chain) {
    walked_frame *restrict walk = t->walk;
    int n = 0, cap = t->cap, pin_index = -1;
    unsigned long pin = __atomic_load_n(&pin_serial, __ATOMIC_ACQUIRE);
    const void *pinned = __atomic_load_n(&pinned_frame, __ATOMIC_RELAXED);
    int stop_at_pin = !__atomic_load_n(&pin_records_outside, __ATOMIC_RELAXED);
    for (interp_frame *f = innermost; f != NULL; f = outer_frame(f)) {
        if (__builtin_expect(n == cap, 0)) {
            if (grow_walks(t) != 0) break;
            walk = t->walk;
            cap = t->cap;
        }
        walk[n].frame = f;
        walk[n].state = state_of(f);
        n++;
        if ((const void *)f == pinned) {
            pin_index = n - 1;
            if (stop_at_pin) break; /* the frames outside it run pytest, not the measured code */
        }
    }
    const walked_frame *previous = t->previous; /* (read after the walk: growing moves it) */
    int i = n - 1, j = t->nprevious - 1;
    for (; i >= 0 && j >= 0; i--, j--) {
        const walked_frame *p = &previous[j];
        if (walk[i].frame != p->frame || walk[i].state.where != p->state.where ||
            walk[i].state.what != p->state.what || p->word == 0)
            break;
        walk[i].word = p->word;
    }
    for (; i >= 0; i--) {
        interp_frame *f = (interp_frame *)walk[i].frame;
        PyCodeObject *code = frame_code(f);
        walk[i].word = code == NULL ? NOT_PYTHON : cached_site_word(t, code, frame_lasti(f));
    }
    t->previous = walk;
    t->walk = (walked_frame *)previous;
    t->nprevious = n;
    t->pin_index = pin_index;
    t->previous_pin = pin;
    next_serial(t);
    /* the Python frames' words, innermost first, but the `skip` innermost; a word 0 (the
     * tracer's table is full) ends them */
    int python = 0, k = 0, cut = 0;
    t->reusable = 1;
    for (int at = 0; at < n; at++) {
        uint64_t word = walk[at].word;
        if (word == NOT_PYTHON) continue;
        if (word == 0) t->reusable = 0;
        t->python_words[python] = word;
        if (python++ < skip) continue;
        if (word == 0) cut = 1;
        if (!cut && k < max) words[k++] = word;
    }
    t->npython = python;
    *depth = python;
    *chain = t->reusable && skip == 0 && k == python ? t->serial : 0;
    return k;
}

int python_frames_of_thread(uint64_t *words, int max, int skip, int *depth, uint64_t *chain) {
    uint64_t known = *chain;
    *chain = 0;
    if (!__atomic_load_n(&frames_on, __ATOMIC_RELAXED)) goto none;
    PyThreadState *ts = PyGILState_GetThisThreadState(); /* this thread's, GIL held or not */
    if (ts == NULL) goto none;
    thread_frames *t = thread_frames_get();
    if (t == NULL) goto none;
    /* cytrace_session() is one load behind a call, and the only exact way to see that a
     * followed fork's child started a new capture before its first allocation. */
    unsigned start = __atomic_load_n(&frames_epoch, __ATOMIC_RELAXED), session = cytrace_session();
    unsigned long deaths = __atomic_load_n(&code_deaths, __ATOMIC_ACQUIRE);
    if (__builtin_expect(t->start != start || t->session != session || t->deaths != deaths, 0))
        thread_frames_renew(t, start, session, deaths);
    interp_frame *innermost = innermost_frame(ts);

    /* The usual case: the same chain as at this thread's previous allocation, frame by
     * frame from the innermost, each in the same state: its words are the previous ones. */
    int npython = t->npython;
    if (__builtin_expect(skip == 0 && t->reusable && npython <= max, 1)) {
        interp_frame *f = innermost;
        const walked_frame *p = t->previous, *end = p + t->nprevious;
        /* up to the pinned frame's place in `previous` when that walk was made under this
         * pin (the frames outside it are then the same if it is), else to the end */
        const walked_frame *stop = end;
        int by_pin = t->pin_index >= 0 && t->previous_pin == __atomic_load_n(&pin_serial, __ATOMIC_ACQUIRE);
        if (by_pin) stop = p + t->pin_index + 1;
        for (; p != stop && f != NULL; p++, f = outer_frame(f)) {
            frame_state now = state_of(f);
            if (now.where != p->state.where || now.what != p->state.what) break;
        }
        if (by_pin && p == stop) {
            /* the frame matched at the pin's place is the pinned one if they share the
             * frame outside (f): a frame calls one frame at a time, and a pinned frame
             * cannot return (nor another thread's walk have a place for it) */
            const interp_frame *pinned = __atomic_load_n(&pinned_frame, __ATOMIC_RELAXED);
            if (pinned != NULL && outer_frame((interp_frame *)pinned) == f) {
                p = end; /* the pinned frame, in the same state: the frames outside it are the same */
                f = NULL;
            } else {
                for (; p != end && f != NULL; p++, f = outer_frame(f)) {
                    frame_state now = state_of(f);
                    if (now.where != p->state.where || now.what != p->state.what) break;
                }
            }
        }
        if (p == end && f == NULL) {
            if (known != t->serial && npython > 0) /* (the caller has these words already if it knows the serial) */
                memcpy(words, t->python_words, (size_t)npython * sizeof *words);
            *depth = npython;
            *chain = t->serial;
            return npython;
        }
    }
    return walk_frames(t, innermost, words, max, skip, depth, chain);
none:
    *depth = 0;
    return 0;
}

/* ---- code objects' deaths ------------------------------------------------------------ */

static destructor code_dealloc_original;

static void code_dealloc_counted(PyObject *code) {
    __atomic_add_fetch(&code_deaths, 1, __ATOMIC_RELEASE); /* before the memory can be reused */
    code_dealloc_original(code);
}

#if PY_VERSION_HEX >= 0x030C0000
static int code_watcher(PyCodeEvent event, PyCodeObject *code) {
    (void)code;
    if (event == PY_CODE_EVENT_DESTROY) __atomic_add_fetch(&code_deaths, 1, __ATOMIC_RELEASE);
    return 0;
}
#endif

/* Count deaths from now on (GIL held); once per process, never undone (a thread may be in
 * the callback). A code watcher where there is one (3.12+), else (older, or all 8 watchers
 * taken) PyCode_Type's deallocator wrapped. */
static void count_code_deaths(void) {
    static int counting;
    if (counting) return;
    counting = 1;
#if PY_VERSION_HEX >= 0x030C0000
    if (PyCode_AddWatcher(code_watcher) >= 0) return;
    PyErr_Clear();
#endif
    if (PyCode_Type.tp_dealloc == code_dealloc_counted) return;
    code_dealloc_original = PyCode_Type.tp_dealloc;
    PyCode_Type.tp_dealloc = code_dealloc_counted;
}

void python_frames_enable(void) {
    count_code_deaths();
    unsigned epoch = __atomic_load_n(&frames_epoch, __ATOMIC_RELAXED) + 1;
    __atomic_store_n(&frames_epoch, epoch ? epoch : 1, __ATOMIC_RELAXED);
    cytrace_set_pyframes_source(python_frames_of_thread);
    __atomic_store_n(&frames_on, 1, __ATOMIC_RELEASE);
}

void python_frames_disable(void) { __atomic_store_n(&frames_on, 0, __ATOMIC_RELEASE); }

int python_frames_pin(PyObject *frame, int record_outside) {
    const void *interp = NULL;
    if (frame != NULL && frame != Py_None) {
        if (!PyFrame_Check(frame)) {
            PyErr_SetString(PyExc_TypeError, "pin_frame() takes a frame object (sys._getframe()) or None");
            return -1;
        }
#if PY_VERSION_HEX >= 0x030B0000
        interp = ((PyFrameObject *)frame)->f_frame;
#else
        interp = frame;
#endif
    }
    /* (a walk under the old pin, or none, is not trusted past the new one: a new number) */
    __atomic_store_n(&pinned_frame, interp, __ATOMIC_RELAXED);
    __atomic_store_n(&pin_records_outside, record_outside, __ATOMIC_RELAXED);
    __atomic_add_fetch(&pin_serial, 1, __ATOMIC_RELEASE);
    return 0;
}
