/* cyanalyze.h: the public API of libcyanalyze, the offline half of cytool's profiler.
 *
 *   reader      (capture_read.c)    a capture file (runtime/FORMAT.md) -> events, stacks,
 *                                   threads, objects, Python frames, in time order
 *   symboliser  (symbolize_*.c)     native PCs -> function/file/line via libdw, inline
 *                                   frames expanded, Cython helpers folded into .pyx lines
 *   aggregator  (analyze_*.c)       events + symbols -> per line / per stack metrics (JSON)
 *   follower    (analyze_follow.c)  a capture still being written, read and replayed poll by
 *                                   poll (the live view)
 *
 * Every pointer handed out stays valid until the object that owns it is closed.
 * Loaded from Python with ctypes (cytool/capture.py, cytool/analysis.py).
 */
#ifndef CYANALYZE_H
#define CYANALYZE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CYA_API __attribute__((visibility("default")))

/* The format version this reader understands (FORMAT.md). */
#define CYA_FORMAT_VERSION 6

/* Event kinds, as in FORMAT.md section 3. */
enum cya_kind {
    CYA_MALLOC = 1,
    CYA_CALLOC = 2,
    CYA_REALLOC = 3,
    CYA_REALLOCARRAY = 4,
    CYA_POSIX_MEMALIGN = 5,
    CYA_ALIGNED_ALLOC = 6,
    CYA_MEMALIGN = 7,
    CYA_VALLOC = 8,
    CYA_PVALLOC = 9,
    CYA_MMAP = 10,
    CYA_PYMEM_RAW = 11,
    CYA_PYMEM_MEM = 12,
    CYA_PYMEM_OBJ = 13,
    CYA_MREMAP = 14, /* the new mapping of an mremap (format 3) */
    CYA_FREE = 32,
    CYA_REALLOC_FREE = 33,
    CYA_MUNMAP = 34,
    CYA_PYMEM_RAW_FREE = 35,
    CYA_PYMEM_MEM_FREE = 36,
    CYA_PYMEM_OBJ_FREE = 37,
};

/* Why cya_open failed. */
enum cya_error {
    CYA_OK = 0,
    CYA_E_IO = 1,          /* cannot open or read the file */
    CYA_E_NOT_CAPTURE = 2, /* wrong magic: not a cytool capture */
    CYA_E_NEWER = 3,       /* format version newer than CYA_FORMAT_VERSION */
    CYA_E_HEADER = 4,      /* the header is cut short or malformed */
    CYA_E_NOMEM = 5,
};

typedef struct cya_event {
    uint64_t time_ns;   /* since capture start */
    uint64_t address;
    uint64_t size;      /* 0 for frees; MUNMAP: the length of the range released */
    uint32_t stack_id;  /* 0: no stack (and always 0 for frees) */
    uint32_t thread_id; /* the tracer's thread index (cya_thread.id) */
    uint8_t kind;       /* enum cya_kind */
    uint8_t reserved[7];
} cya_event;

typedef struct cya_header {
    uint32_t version;
    uint64_t pid;
    uint64_t start_time_ns; /* CLOCK_REALTIME, ns since the epoch */
    uint64_t flags;         /* FORMAT.md: bit 0 native, 1 PyMem, 2 Python frames, 3 forked child */
    uint64_t parent_pid;
    const char *python_version;
    const char *executable;
    uint64_t argc;
    const char *const *argv;
    uint64_t time_resolution_ns; /* format 2: events' time unit; 0: not recorded (format 1) */
    uint32_t clock;              /* format 2: 0 exact (per-event clock read), 1 ticking */
    uint64_t max_frames;         /* format 3: frames a stack keeps at most; 0: not recorded */
} cya_header;

typedef struct cya_object {
    uint64_t id;
    uint64_t load_bias;
    const char *path;
    const uint8_t *build_id;
    uint64_t build_id_len;
    uint64_t nsegments;
    const uint64_t *segments; /* nsegments pairs (start, end), absolute addresses */
    int64_t unload_time_ns;   /* -1 while loaded */
    uint64_t load_generation;   /* format 3: the load generation from which it may be mapped (0 before) */
    uint64_t unload_generation; /* the generation from which it may be gone; UINT64_MAX while loaded */
} cya_object;

typedef struct cya_thread {
    uint64_t id;  /* tracer's index */
    uint64_t tid; /* OS thread id, 0 when no THREAD record was read */
    const char *name;
    uint64_t nevents;
} cya_thread;

typedef struct cya_pyframe {
    uint64_t id;
    uint64_t line;
    const char *function;
    const char *file;
} cya_pyframe;

typedef struct cya_stack {
    uint64_t id;
    uint64_t nframes;
    const uint64_t *frames; /* frame words, innermost first (FORMAT.md) */
    uint64_t generation;    /* load generation in force when captured (format 3; else 0) */
    uint64_t cut;           /* frames dropped from the middle of a deep stack (0: none) */
    uint64_t cut_at;        /* when cut: kept frames before the gap (the innermost ones) */
} cya_stack;

/* A LOSS record: the capture could not be written for a while (format 3). */
typedef struct cya_loss {
    uint64_t from_ns, until_ns; /* first failed write, first write that worked again */
    uint64_t events, frames;    /* what was lost in between */
    const char *reason;         /* strerror text */
} cya_loss;

/* A TAKEOVER record: another tracer replaced (or gave back) one of the tracer's hooks. */
typedef struct cya_takeover {
    uint64_t time_ns;
    uint32_t what;        /* 0: a GOT/PLT slot of object `object`; 1: PyMem domain `object` (0 RAW, 1 MEM, 2 OBJ) */
    uint32_t state;       /* 1: taken over by someone else; 0: leads to the tracer again */
    uint64_t object;      /* object id (what 0) or domain (what 1) */
    const char *function; /* "malloc", ... */
    const char *target;   /* the object the slot now leads into ("" unknown) */
} cya_takeover;

typedef struct cya_status {
    int truncated;            /* events are missing: the body ends inside a frame or has no END,
                                 a frame was damaged, batches or events are missing */
    int complete;             /* an END record was read */
    int has_stats;            /* a STATS record was read */
    uint64_t file_bytes;      /* size of the file */
    uint64_t recovered_bytes; /* header + every complete frame that was decoded */
    uint64_t frames;          /* frames decoded */
    uint64_t records;
    uint64_t end_time_ns;     /* END time, else the time of the last event */
    uint64_t stats_events, stats_dropped, stats_stacks, stats_frames;
    uint64_t missing_stacks;    /* stack ids used by events but never defined */
    uint64_t missing_pyframes;  /* pyframe ids used by stacks but never defined */
    const char *problem;        /* the first problem met while reading, "" when nothing */
    /* format 3 integrity (batch gaps and repeats are found in format 2 too) */
    uint64_t damaged_frames;    /* frames skipped: damaged, or holding a malformed record */
    uint64_t missing_batches;   /* batches absent between the ones read (sequence gaps) */
    uint64_t duplicate_batches; /* batches read more than once (the copies were ignored) */
    uint64_t missing_events;    /* events the tracer recorded that are not in the file */
    uint64_t stats_lost;        /* STATS: events recorded but never written (write errors) */
    uint64_t last_progress_ns;  /* time of the last PROGRESS record (0: none) */
    int live;                   /* another process holds the capture's lock: still being written */
    const char *notes;          /* newline-separated: each damaged frame, gap, repeat ("" none) */
    /* format 5: the capture was finished for an exec (EXEC), which failed (EXEC_FAILED) */
    int exec_seen;              /* an EXEC record was read */
    uint64_t exec_time_ns;
    const char *exec_what;      /* the program the process was replaced by ("" none) */
    const char *exec_failure;   /* why that exec failed ("" when it did not, or unknown) */
} cya_status;

typedef struct cya_capture cya_capture;

/* Read a whole capture. On failure returns NULL, sets *error (enum cya_error) and writes
 * a one-line message into errbuf. A truncated body is not a failure: see cya_status. */
CYA_API cya_capture *cya_open(const char *path, int *error, char *errbuf, size_t errlen);
CYA_API void cya_close(cya_capture *capture);

CYA_API const cya_header *cya_get_header(const cya_capture *capture);
CYA_API const cya_status *cya_get_status(const cya_capture *capture);
/* All events of all threads: each thread's in its recorded order, threads merged by time;
 * within one tick, interleaved evenly and kept consistent per address (capture_merge.c). */
CYA_API const cya_event *cya_get_events(const cya_capture *capture, size_t *count);
/* The number of events cya_get_events gives, without making them: cya_get_events decodes
 * the whole capture into memory on its first call (about 40 bytes an event, NULL when
 * out of memory); reports stream the events instead (cya_analyze_json). */
CYA_API size_t cya_count_events(const cya_capture *capture);
/* Events that no order of their tick's threads could place with their block in the right
 * state (an allocation of a live block, a free of a dead one): a capture the tracer wrote
 * correctly has none. Found by the last merge of the events (cya_get_events, a report);
 * 0 before any. *first_ns (may be NULL): the time of the first such event's tick. */
CYA_API uint64_t cya_order_conflicts(const cya_capture *capture, uint64_t *first_ns);
CYA_API const cya_object *cya_get_objects(const cya_capture *capture, size_t *count);
CYA_API const cya_thread *cya_get_threads(const cya_capture *capture, size_t *count);
CYA_API const cya_pyframe *cya_get_pyframes(const cya_capture *capture, size_t *count);
CYA_API const cya_stack *cya_get_stacks(const cya_capture *capture, size_t *count);
CYA_API const cya_loss *cya_get_losses(const cya_capture *capture, size_t *count);
CYA_API const cya_takeover *cya_get_takeovers(const cya_capture *capture, size_t *count);
/* Lookups by id; NULL when the id was never defined. */
CYA_API const cya_stack *cya_find_stack(const cya_capture *capture, uint64_t id);
CYA_API const cya_pyframe *cya_find_pyframe(const cya_capture *capture, uint64_t id);
/* The object whose segments contain addr, or NULL; of several (objects unloaded and
 * replaced at the same addresses), the one loaded last. */
CYA_API const cya_object *cya_find_object(const cya_capture *capture, uint64_t addr);
/* The object that held addr at load generation `generation` (FORMAT.md, "Load
 * generations"): of the objects whose segments contain addr and that were loaded then,
 * the latest loaded; when none was, cya_find_object's answer. */
CYA_API const cya_object *cya_find_object_at(const cya_capture *capture, uint64_t addr, uint64_t generation);

/* ---- symboliser ---------------------------------------------------------------- */

/* Where a symbolised frame lives. */
enum cya_frame_kind {
    CYA_FRAME_PYX = 0,     /* native code whose DWARF line is in a .pyx/.pxd/.pxi file */
    CYA_FRAME_NATIVE = 1,  /* other native code with a symbol (libc, libpython, C files) */
    CYA_FRAME_PYTHON = 2,  /* an interpreter frame (PYFRAME record) */
    CYA_FRAME_UNKNOWN = 3, /* no symbol: raw address, or an undefined id */
    CYA_FRAME_CUT = 4,     /* "… frames cut": where the middle of a deep stack was dropped */
    CYA_FRAME_CYTHON_C = 5, /* a Cython function at a line of its generated C file: a module
                               built without #line directives whose .c was not found */
};

typedef struct cya_location {
    const char *function; /* Cython name ("mod.work") where known, else the symbol */
    const char *file;     /* source file as recorded in DWARF / the PYFRAME, "" if none */
    uint32_t line;        /* 0 when unknown */
    uint32_t kind;        /* enum cya_frame_kind */
    const char *object;   /* path of the shared object ("" for Python frames) */
} cya_location;

typedef struct cya_symbols cya_symbols;

/* Symbolise every stack of the capture. Never fails on missing files: frames of an
 * object that cannot be read fall back to symbol names or raw addresses, and the
 * reason is listed in cya_symbols_warnings(). Returns NULL only when out of memory. */
CYA_API cya_symbols *cya_symbolize(const cya_capture *capture);
/* The same, and an object that is missing or changed is looked for, by its build-id, as
 * <dir>/<basename> in the directories matching `search` (colon-separated glob patterns,
 * e.g. every entry directory of cytool's build cache); NULL or "" searches nowhere. */
CYA_API cya_symbols *cya_symbolize_search(const cya_capture *capture, const char *search);
CYA_API void cya_symbols_close(cya_symbols *symbols);
/* The location table. */
CYA_API const cya_location *cya_symbols_locations(const cya_symbols *symbols, size_t *count);
/* The symbolised frames of stack `stack_id`, innermost first, inline frames expanded,
 * Cython helper frames folded away, native frames resolved in the objects loaded at the
 * stack's load generation, and one CYA_FRAME_CUT location where a deep stack's middle
 * was dropped: location indices. *count = 0 for an unknown stack. */
CYA_API const uint32_t *cya_symbols_stack(const cya_symbols *symbols, uint64_t stack_id, size_t *count);
/* Newline-separated warnings (missing or changed modules), "" when none. */
CYA_API const char *cya_symbols_warnings(const cya_symbols *symbols);

/* ---- aggregator ---------------------------------------------------------------- */

typedef struct cya_analyze_options {
    uint32_t temporary_window;   /* a block freed within this many later events of its
                                    thread is temporary (0: default 1) */
    uint32_t nthreads;           /* > 0: only events of these thread ids */
    const uint64_t *threads;
    int include_native_frames;   /* 1: stacks keep every frame; 0: only .pyx, Python and
                                    unsymbolisable-module frames (the innermost frame
                                    when there is none of those) */
    const char *runner_prefixes; /* newline-separated file prefixes of the launcher's
                                    Python frames (cytool's runner, runpy, importlib; an
                                    entry starting with '*' matches as a suffix): stacks
                                    are cut at the first such frame outside the program's
                                    outermost frame. NULL: none */
    const char *tool_prefixes;   /* the same for cytool's own code (its package, the
                                    console script that started it), a subset of the
                                    above. A stack whose outermost frames (past runpy and
                                    importlib) are cytool's was started by its launcher:
                                    the program's frames are every user frame that is not
                                    the launcher's, and a stack with none of them becomes
                                    "(cytool runner)". In any other stack, one whose
                                    innermost user frame is cytool's (cytool.Tracker
                                    starting or stopping, a measurement of the pytest
                                    plugin) becomes "(cytool tracer)". NULL: none */
    const char *helper_calls;    /* newline-separated "label\tfile\tfunction" lines (function
                                    "*": any): Python functions a program calls on a tool's
                                    behalf (pytest's assertion message helpers). In a stack
                                    that passes through one, the outermost such frame and
                                    the library frames inside it, down to the first frame
                                    of the program's own (a Cython frame, a Python frame of
                                    a file not in helper_library), are one frame named by
                                    its label: line `label` (0 to 3) of helper_labels.
                                    NULL: none */
    const char *helper_labels;   /* newline-separated, e.g. "(pytest assertion message)" */
    const char *helper_library;  /* newline-separated files (the standard library, pytest,
                                    installed packages) */
} cya_analyze_options;

/* Aggregate the capture. Returns a malloc'd NUL-terminated JSON document to be released
 * with cya_free, or NULL on error with a message in errbuf. The document (read by
 * cytool/analysis.py, not a public format; docs/report-json.md describes the report
 * built from it): metric_names, totals, peak_time_ns, end_time_ns, events, frees,
 * unmatched_frees, replaced_blocks, temporary_window, cut_events, cut_bytes, cut_most
 * (allocations whose stack was cut, their bytes, the most frames cut from one stack),
 * kinds {name: [count, bytes]} (bytes: allocated; for munmap, released),
 * locations [[function, file, line, kind, object]], self and inclusive
 * [[location, metrics...]], stacks [[self location, [locations innermost first],
 * metrics]], lines [[location, self metrics, inclusive metrics, attributed metrics]]
 * (one per source line: .pyx and Python locations on the same file:line are one line;
 * inclusive counts a line once per stack; attributed charges each stack to its
 * innermost .pyx line), timeline [[time, live bytes]], threads [[id, metrics]]. */
CYA_API char *cya_analyze_json(const cya_capture *capture, const cya_symbols *symbols,
                               const cya_analyze_options *options, char *errbuf, size_t errlen);
CYA_API void cya_free(void *pointer);

/* ---- follower: a capture read while it is being written (analyze_follow.c) -------- */

/* Figures of one (stack, thread) pair so far. */
typedef struct cya_follow_cell {
    uint64_t stack_id;                /* capture stack id (0: no stack) */
    uint64_t thread_id;
    uint64_t live_bytes, live_count;  /* live now */
    uint64_t peak_bytes, peak_count;  /* live at the moment total live bytes was highest */
    uint64_t alloc_bytes, alloc_count; /* allocated so far */
} cya_follow_cell;

typedef struct cya_follow_totals {
    uint64_t live_bytes, live_count, peak_bytes, peak_time_ns;
    uint64_t alloc_bytes, alloc_count, frees, unmatched_frees;
    uint64_t events;        /* replayed so far */
    uint64_t time_ns;       /* the time of the last event replayed */
    uint64_t pending;       /* events read but held back (a thread's batch may still come) */
    uint64_t late_events;   /* events that came after later ones were replayed (replayed late) */
    uint64_t file_bytes, read_bytes;
    uint64_t settled_bytes; /* the file before this offset is never read again (its batches are replayed) */
    int complete;           /* the trailer (END record) was read: the writer finished */
    int live;               /* a process holds the capture's lock: still being written */
} cya_follow_totals;

typedef struct cya_follower cya_follower;

/* Start following the capture at `path` (the header must be there). `search` as for
 * cya_symbolize_search. NULL on failure, *error and errbuf set as cya_open. */
CYA_API cya_follower *cya_follow_open(const char *path, const char *search, int *error, char *errbuf,
                                      size_t errlen);
/* Read the frames completed since the last poll, replay their events (threads merged by
 * time, held back while a thread's earlier events may still come) and symbolise the new
 * stacks. 1, or 0 with a message in errbuf. */
CYA_API int cya_follow_poll(cya_follower *f, char *errbuf, size_t errlen);
CYA_API const cya_follow_totals *cya_follow_get_totals(const cya_follower *f);
/* Every (stack, thread) pair seen so far; valid until the next poll. */
CYA_API const cya_follow_cell *cya_follow_get_cells(const cya_follower *f, size_t *count);
/* The capture as read so far (header, threads, status) and its symbols (locations,
 * cya_symbols_stack); valid until cya_follow_close. */
CYA_API const cya_capture *cya_follow_get_capture(const cya_follower *f);
CYA_API const cya_symbols *cya_follow_get_symbols(const cya_follower *f);
CYA_API void cya_follow_close(cya_follower *f);

#ifdef __cplusplus
}
#endif
#endif
