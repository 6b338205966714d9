/* cytrace.h: public API of libcytrace, the cytool allocation tracer.
 *
 * The tracer is dormant until started. Starting it rewrites the GOT/PLT slots of every
 * loaded object so that the allocation functions (malloc ... mremap) lead to the
 * tracer, which records each call into a capture file (format: runtime/FORMAT.md).
 * Stopping it restores the slots, flushes every thread and finishes the file.
 *
 * It starts three ways: cytrace_start() (the cytool._cytrace Python extension calls it
 * for cytool.Tracker and `cytool profile`), or CYTOOL_PROFILE=path in the environment
 * when the library is loaded. The environment start also reads:
 *   CYTOOL_PROFILE_FOLLOW_FORK=1              forked children write <path>.<pid>
 *   CYTOOL_PROFILE_TRACE_PYTHON_ALLOCATORS=1  the PyMem domains too (alias CYTOOL_TRACE_PYTHON_ALLOCATORS)
 *   CYTOOL_PROFILE_NATIVE_UNWIND=1            libunwind for every stack
 *   CYTOOL_PROFILE_TIME_RESOLUTION=NS, CYTOOL_PROFILE_COMPRESSION=LEVEL,
 *   CYTOOL_PROFILE_MAX_FRAMES=N (see below)
 * If `path` exists already, or another process is writing it, the capture goes to
 * <path>.<pid> (children inherit the environment: nothing is overwritten). Python frames
 * need the cytool._cytrace extension (cytool.Tracker, `cytool profile`); the environment
 * start records native frames only.
 *
 * Nothing is lost without saying so: events that cannot be recorded (no memory) or written
 * (disk full, file size limit, I/O error: said on stderr when it happens, and writing
 * resumes when it can) are counted in the stats and the capture (runtime/FORMAT.md).
 */
#ifndef CYTRACE_H
#define CYTRACE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CYTRACE_API __attribute__((visibility("default")))

/* Options for cytrace_start(). */
#define CYTRACE_FOLLOW_FORK 0x1u        /* a forked child writes <path>.<pid> */
#define CYTRACE_PYMEM 0x2u              /* the caller traces the PyMem domains (header flag) */
#define CYTRACE_PYTHON_FRAMES 0x4u      /* the caller provides Python frames (header flag) */
#define CYTRACE_NATIVE_UNWIND 0x8u      /* always unwind with libunwind (no frame-pointer fast path) */
#define CYTRACE_ATTACHED 0x10u          /* started in a running process (`cytool attach`; header flag) */
#define CYTRACE_SAY_EXEC 0x20u          /* say on stderr when an exec finishes the capture (`cytool profile`) */

/* Event kinds (FORMAT.md, "Events inside a BATCH"). */
enum cytrace_kind {
    CYTRACE_MALLOC = 1,
    CYTRACE_CALLOC = 2,
    CYTRACE_REALLOC = 3,
    CYTRACE_REALLOCARRAY = 4,
    CYTRACE_POSIX_MEMALIGN = 5,
    CYTRACE_ALIGNED_ALLOC = 6,
    CYTRACE_MEMALIGN = 7,
    CYTRACE_VALLOC = 8,
    CYTRACE_PVALLOC = 9,
    CYTRACE_MMAP = 10,
    CYTRACE_PYMEM_RAW = 11,
    CYTRACE_PYMEM_MEM = 12,
    CYTRACE_PYMEM_OBJ = 13,
    CYTRACE_MREMAP = 14,
    CYTRACE_FREE = 32,
    CYTRACE_REALLOC_FREE = 33,
    CYTRACE_MUNMAP = 34,
    CYTRACE_PYMEM_RAW_FREE = 35,
    CYTRACE_PYMEM_MEM_FREE = 36,
    CYTRACE_PYMEM_OBJ_FREE = 37,
};

struct cytrace_stats {
    uint64_t events;          /* events recorded */
    uint64_t dropped;         /* events that could not be recorded (out of memory) */
    uint64_t stacks;          /* distinct stacks defined */
    uint64_t frames_flushed;  /* frames written */
    uint64_t bytes_written;   /* capture bytes written so far */
    uint64_t lost;            /* events recorded but not written (write errors, stop timeout) */
};

/* Start tracing into `path` (created, or emptied: it is locked while tracing). Returns 0,
 * or -1 with errno set (EBUSY when already tracing, EAGAIN when another process is tracing
 * into `path`); cytrace_last_error() then says why. */
CYTRACE_API int cytrace_start(const char *path, unsigned options);

/* Stop tracing: restore the GOT slots, flush every thread, write STATS and END, close the
 * file. Returns 0, or -1 if not tracing. Safe to call from atexit handlers. */
CYTRACE_API int cytrace_stop(void);

/* Settings for the next cytrace_start() (the environment start reads
 * CYTOOL_PROFILE_TIME_RESOLUTION and CYTOOL_PROFILE_COMPRESSION):
 *  - time resolution in ns (default 1000000). From 100 us up, a clock thread ticks at that
 *    period and an event's time costs one memory read; events of different threads within
 *    one tick are interleaved by the reader, each address keeping a possible history
 *    (FORMAT.md, "Order"). Below 100 us, each event reads the TSC, rounded down to a power
 *    of two of ns: exact order across threads, at some ns per event and larger captures;
 *  - zstd compression level: 0 fast (default: zstd's -1), 1..12 (smaller, more writer
 *    CPU); then each thread buffers 1 MiB of events instead of 256 KiB (longer frames
 *    compress better). */
#define CYTRACE_DEFAULT_TIME_RESOLUTION_NS 1000000ull
CYTRACE_API void cytrace_set_time_resolution(uint64_t ns);
CYTRACE_API void cytrace_set_compression_level(int level);
/* The most frames a stack keeps (native and Python together; 16 .. 65536, default 1024).
 * A deeper stack keeps its innermost frames and its outermost quarter; the capture says
 * how many were cut (FORMAT.md, STACK). */
#define CYTRACE_DEFAULT_MAX_FRAMES 1024
#define CYTRACE_MIN_MAX_FRAMES 16
#define CYTRACE_MAX_MAX_FRAMES 65536
CYTRACE_API void cytrace_set_max_frames(int frames);

/* The parent pid the next started capture's header gives (0: none): the process that
 * started this one, when that one is traced too (CYTOOL_PROFILE), so that merged reports
 * put the two in one tree. A followed fork's child gives its parent whatever this says. */
CYTRACE_API void cytrace_set_parent_pid(long pid);

/* A capture path for this process that names no existing file, into out[0..cap):
 * `path` itself when `path_itself` and it does not exist, else the first free of
 * <path>.<pid>, <path>.<pid>.2, <path>.<pid>.3 ... (the same process after an exec, or an
 * earlier process of the same pid, wrote the others: never overwritten). Returns 0, or -1
 * (ENAMETOOLONG) when the name does not fit. */
CYTRACE_API int cytrace_unused_path(const char *path, int path_itself, char *out, size_t cap);

CYTRACE_API int cytrace_is_active(void);
/* The capture path of the running (or last) session, "" if none. */
CYTRACE_API const char *cytrace_path(void);
CYTRACE_API const char *cytrace_last_error(void);
/* Statistics of the running session, or of the last one once stopped. */
CYTRACE_API void cytrace_get_stats(struct cytrace_stats *out);

/* ---- for the Python extension (cytool._cytrace) ------------------------------------ */

/* The reentrancy guard: while it is held by a thread, nothing that thread allocates is
 * recorded. Returns the previous state, to hand back to cytrace_guard_exit(). */
CYTRACE_API int cytrace_guard_enter(void);
CYTRACE_API void cytrace_guard_exit(int previous);

/* Record one event from outside the GOT hooks (the PyMem domain wrappers). `return_address`
 * is the caller's return address (the innermost frame). No-op when not tracing or guarded. */
CYTRACE_API void cytrace_record(int kind, uintptr_t address, size_t size, void *return_address);

/* Python frames: the callback sets *depth to the number of Python frames of the calling
 * thread, fills `words` with at most `max` of their frame words (pyframe_id << 1 | 1),
 * innermost first, after skipping the `skip` innermost ones, and returns how many it
 * wrote (`words` may be NULL when max is 0). Chain serials: on return *chain is 0, or a
 * serial naming the words: a later call on the same thread that gives the same serial has
 * the same words (serials are never reused in a process). On entry *chain is 0, or the
 * serial of words the caller holds: if the serial is still that one, the callback may
 * leave `words` unwritten. It runs inside the allocation hook with the guard held and must
 * neither block nor call into Python. */
typedef int (*cytrace_pyframes_fn)(uint64_t *words, int max, int skip, int *depth, uint64_t *chain);
CYTRACE_API void cytrace_set_pyframes_source(cytrace_pyframes_fn fn);

/* The name of the thread with OS thread id `tid` (Python's threading name), used instead
 * of its native name from its next flush on; NULL or "" forgets it. */
CYTRACE_API void cytrace_name_thread(long tid, const char *name);

/* Map a caller-chosen 64-bit key (non-zero) to a small pyframe id, lock-free. *is_new is
 * set when the caller must define it with cytrace_emit_pyframe(): this call created the
 * id, or the thread that did has not flushed its definition yet. Returns 0 when the table
 * is full. */
CYTRACE_API uint32_t cytrace_pyframe_intern(uint64_t key, int *is_new);
/* The current session's number, bumped at every start (a followed fork's child starts
 * one): pyframe ids cached under another session are not defined in this capture. */
CYTRACE_API unsigned cytrace_session(void);
/* Emit a PYFRAME record into the current thread's buffer (only from inside the callback). */
CYTRACE_API void cytrace_emit_pyframe(uint32_t id, unsigned line, const char *function, const char *file);

/* PyMem domains: wrap the interpreter's RAW/MEM/OBJ allocators so they record PYMEM_*
 * events (start with CYTRACE_PYMEM so the header says so). Needs an initialised
 * interpreter and the GIL; returns 0 or -1 (cytrace_last_error() says why). */
CYTRACE_API int cytrace_pymem_install(void);
CYTRACE_API void cytrace_pymem_uninstall(void);

#ifdef __cplusplus
}
#endif
#endif
