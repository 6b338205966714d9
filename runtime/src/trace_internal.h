/* trace_internal.h: what the tracer's subsystems (runtime/src/trace_*.c) share.
 *
 *   trace_control.c  start/stop, the environment start, atexit, fork handling
 *   trace_patch.c    GOT/PLT rewriting of loaded objects, the object table, OBJECT records
 *   trace_hooks.c    the replacement allocation functions (and dlopen/dlclose)
 *   trace_thread.c   per-thread state, event encoding, buffer flushes
 *   trace_stack.c    native stack capture and the lock-free intern tables
 *   trace_clock.c    event time: the ticking clock thread, or the exact TSC clock
 *   trace_writer.c   the capture file: header, writer thread, zstd frames
 */
#ifndef CYTRACE_INTERNAL_H
#define CYTRACE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "capture_format.h"
#include "cytrace.h"

#define CYT_LIKELY(x) __builtin_expect(!!(x), 1)
#define CYT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define CYT_TLS __thread __attribute__((tls_model("initial-exec")))

#define CYT_EVENT_MAX 48       /* worst-case bytes of one encoded event */
/* Buffers go to the writer when full, and at the writer's tick (every CYT_FLUSH_INTERVAL_NS)
 * when their oldest event is CYT_FLUSH_AGE_NS old or more: no event waits much longer than
 * 10 ms, and a thread that fills its buffer faster than that never flushes part of one. */
#define CYT_FLUSH_INTERVAL_NS 5000000ull
#define CYT_FLUSH_AGE_NS 5000000ull

/* ---- byte buffers and varints --------------------------------------------------- */

typedef struct cyt_buf {
    uint8_t *data;
    size_t len, cap;
} cyt_buf;

int cyt_buf_reserve(cyt_buf *b, size_t extra); /* 0 or -1 (out of memory) */
void cyt_buf_free(cyt_buf *b);

static inline uint8_t *cyt_put_varint(uint8_t *p, uint64_t v) {
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static inline uint8_t *cyt_put_svarint(uint8_t *p, int64_t v) {
    return cyt_put_varint(p, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

/* An event's address delta (FORMAT.md, "Events inside a BATCH", format 4): a delta that is
 * a multiple of 16 (glibc's blocks are 16-byte aligned) is stored in 16-byte units, the
 * others in bytes; bit 0 of the first byte says which. At most 11 bytes, exact for any
 * 64-bit delta: the first byte holds the flag and the low 6 bits, then (when its high bit
 * is set) a varint holds the rest. */
static inline uint8_t *cyt_put_address_delta(uint8_t *p, uint64_t delta) {
    uint64_t flag = (delta & 15) != 0;
    int64_t v = flag ? (int64_t)delta : (int64_t)delta >> 4;
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    uint8_t first = (uint8_t)(((z & 0x3f) << 1) | flag);
    z >>= 6;
    if (CYT_LIKELY(z == 0)) {
        *p++ = first;
        return p;
    }
    *p++ = first | 0x80;
    return cyt_put_varint(p, z);
}

int cyt_buf_varint(cyt_buf *b, uint64_t v);
int cyt_buf_bytes(cyt_buf *b, const void *data, size_t len);
int cyt_buf_string(cyt_buf *b, const char *s, size_t len);

/* ---- global session state (trace_control.c) -------------------------------------- */

extern _Atomic int cyt_active;       /* events are being recorded */
extern _Atomic unsigned cyt_session; /* bumped at every start; thread states compare it */
extern unsigned cyt_options;         /* CYTRACE_* options of the running session */
extern int cyt_compression_level;    /* zstd level of the running session (0: the fast -1) */
extern size_t cyt_buffer_size;       /* per-thread event buffer (one frame) */
extern int cyt_max_frames;           /* frames a stack keeps (deeper: cut in the middle) */
extern _Atomic unsigned cyt_flush_epoch; /* bumped by the writer each tick: flush soon */
extern _Atomic uint64_t cyt_load_generation; /* FORMAT.md "Load generations" */
extern CYT_TLS int cyt_guard;        /* reentrancy guard of this thread */
extern int cyt_asymmetric_fence;     /* membarrier(2) is available: see enter() */
extern _Atomic int cyt_forking;      /* forks under way: nobody may enter libunwind */

/* ---- event time (trace_clock.c) --------------------------------------------------- */

#define CYT_TICKING_MIN_NS 100000ull      /* from 100 us up, a clock thread ticks */
#define CYT_TICKING_MAX_NS 1000000000ull  /* at most once a second */

uint64_t cyt_now(void); /* CLOCK_MONOTONIC ns */
extern uint64_t cyt_start_mono;      /* CLOCK_MONOTONIC ns at start */
extern int cyt_tsc_ok;
extern uint64_t cyt_tsc0, cyt_tsc_mult; /* mult: ns per TSC tick, 32.32 fixed point */

/* Exact time since the capture started: from the TSC when the kernel itself uses it as its
 * clock source (a few ns instead of a clock_gettime call), else CLOCK_MONOTONIC. */
static inline uint64_t cyt_since_start(void) {
    if (CYT_LIKELY(cyt_tsc_ok)) {
        uint64_t ticks = __builtin_ia32_rdtsc() - cyt_tsc0;
        return (uint64_t)(((unsigned __int128)ticks * cyt_tsc_mult) >> 32);
    }
    return cyt_now() - cyt_start_mono;
}

extern int cyt_clock_ticking;          /* the clock thread keeps cyt_clock_now */
extern _Atomic uint64_t cyt_clock_now; /* ns since start, whole ticks */
extern uint64_t cyt_time_unit;         /* ns per unit of an event's time delta */
extern uint64_t cyt_time_mask;         /* exact clock: low bits cleared */
extern unsigned cyt_time_shift;        /* exact clock: log2(cyt_time_unit) */

/* An event's time: a multiple of cyt_time_unit. */
static inline uint64_t cyt_event_time(void) {
    if (CYT_LIKELY(cyt_clock_ticking)) return atomic_load_explicit(&cyt_clock_now, memory_order_relaxed);
    return cyt_since_start() & ~cyt_time_mask;
}

/* A time difference in units of cyt_time_unit. */
static inline uint64_t cyt_time_units(uint64_t dt) {
    return cyt_clock_ticking ? dt / cyt_time_unit : dt >> cyt_time_shift;
}

/* Start the event clock: ticking from CYT_TICKING_MIN_NS up (exact if no thread can be
 * started), else exact. */
void cyt_clock_start(uint64_t resolution_ns);
void cyt_clock_stop(void);
void cyt_clock_after_fork_child(void);
int cyt_clock_is_self(void); /* the calling thread is the clock thread */

void cyt_count_dropped(uint64_t n); /* events that could not be recorded */
void cyt_count_lost(uint64_t n);    /* events recorded but never written */
int cyt_stop_for_exit(const char *exec_what); /* _exit (NULL), an exec of `exec_what`: stop if possible
                                              * without blocking; 1 if it stopped */
int cyt_high_fd(int fd, int cloexec); /* fd moved near the top of the descriptor range (the
                                       * old number closed), out of the program's way; fd
                                       * itself if it cannot be */
void cyt_grow_descriptor_table(void); /* before the tracer's threads start: makes cyt_high_fd cheap */
int cyt_writer_append_closed(const uint8_t *data, size_t len); /* one more frame after the END
                                              * of the capture just closed: 1 if written */
int cyt_note_exec_failed(uint64_t since_start_ns, int error); /* after the exec the capture was
                                              * finished for: an EXEC_FAILED frame after its END */
void cyt_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- per-thread state (trace_thread.c) -------------------------------------------- */

typedef struct cyt_thread cyt_thread;
void cyt_threads_init(void);                 /* once, at library load */
cyt_thread *cyt_thread_get(void);            /* the calling thread's state, created on demand;
                                              * NULL: do not record */
void cyt_record_event(int kind, uintptr_t address, size_t size, void *return_address);
void cyt_record_free(int kind, uintptr_t address);
/* A free timed at `time` (cyt_event_time() read before the block was released: realloc
 * records its old block's free after the call, but the block may be reused meanwhile). */
void cyt_record_free_at(int kind, uintptr_t address, uint64_t time);
void cyt_record_munmap(uintptr_t address, size_t size);
void cyt_threads_flush_all(void);            /* at stop: every thread's buffer to the writer */
/* The writer, each tick: flush the buffers of threads that hold events CYT_FLUSH_AGE_NS old
 * or more (idle, blocked or descheduled threads); with `progress`, append a PROGRESS record
 * when events are not written yet (some thread holds unflushed events, or `queued`: chunks
 * wait in the writer's queue). */
void cyt_threads_tick(cyt_buf *progress, int queued);
void cyt_membarrier(void);                   /* a full barrier on every thread (membarrier) */
extern CYT_TLS int cyt_is_writer;            /* this thread is the writer */
void cyt_threads_after_fork_child(void);     /* forget the parent's threads */
void cyt_threads_wait_unwinders(void);       /* fork: until no other thread is in libunwind */
uint64_t cyt_threads_events(void);

/* ---- stacks (trace_stack.c) ------------------------------------------------------- */

int cyt_stacks_init(void);           /* (re)create the intern tables for a session */
void cyt_stacks_release(void);
/* Capture the native stack of the allocation whose hook returns to `return_address`,
 * innermost first, into words[0..max). Returns how many frames the stack has (more than
 * max when it is deeper: then words holds its innermost `max - tail` frames followed by
 * its outermost `tail` ones, in order). `unwinding` is the calling thread's flag that it
 * is inside libunwind (see cyt_threads_wait_unwinders); `scratch` is the thread's buffer
 * for deep libunwind stacks (grown with malloc, the guard being held). */
typedef struct cyt_scratch {
    void **ips;
    size_t cap;
    unsigned short_misses; /* short unwinds in a row that did not reach out of a frame-pointer object */
    unsigned short_skips;  /* short unwinds skipped since (retried every SHORT_RETRY) */
} cyt_scratch;
uint64_t cyt_capture_stack(uint64_t *words, int max, int tail, void *return_address, void *frame_address,
                           _Atomic int *unwinding, cyt_scratch *scratch);
uint32_t cyt_intern_stack(uint64_t hash, int *is_new); /* hash: of the whole stack, well mixed;
                                                        * *is_new: the caller must emit the definition */
/* Definitions (stacks, Python frames) the calling thread emits into its buffer: `entry`
 * names an intern slot, whose `written` flag its flush raises (cyt_definitions_written).
 * 0, or -1 when the thread cannot keep track (no state, no memory). */
int cyt_thread_defines(uint32_t entry);
void cyt_definitions_written(const uint32_t *entries, size_t n); /* their buffer was handed to the writer */
uint64_t cyt_stacks_count(void);
void cyt_fp_objects_reset(void);
void cyt_fp_objects_add(uintptr_t start, uintptr_t end);
extern cytrace_pyframes_fn cyt_pyframes_cb;

/* ---- objects and patching (trace_patch.c) ----------------------------------------- */

int cyt_patch_all(cyt_buf *objects_out);   /* patch new objects; append their OBJECT records */
void cyt_unpatch_all(void);                /* restore every slot we wrote */
/* After dlopen/dlclose: patch new objects (load generation `generation`), UNLOAD the gone
 * ones (from `generation` on). */
void cyt_objects_rescan(cyt_buf *out, uint64_t generation);
/* Append TAKEOVER records for slots that stopped (or started again) leading to our hooks;
 * `blocking`: wait for the patch lock (at stop) rather than skip this round. */
void cyt_patch_check(cyt_buf *out, int blocking);
void cyt_pymem_check(cyt_buf *out);        /* the same for the PyMem domains */
uint64_t cyt_objects_described(void);      /* OBJECT records written this session */
void cyt_patch_lock(void);
void cyt_patch_unlock(void);

/* ---- the writer (trace_writer.c) -------------------------------------------------- */

/* Create (or take over) the capture file under an exclusive lock; -1 with errno EAGAIN
 * when another process holds it. */
int cyt_writer_open(const char *path, unsigned header_flags, pid_t parent_pid);
/* Hand a chunk of complete records, holding `nevents` events, to the writer thread (it
 * becomes one frame). Takes ownership of `data` (malloc'ed). */
void cyt_writer_submit(uint8_t *data, size_t len, uint64_t nevents);
/* Compress and write synchronously from the calling thread (start, stop). */
int cyt_writer_write_now(const uint8_t *data, size_t len);
/* Drain the queue, join the thread, write `final` (the last records; NULL: none), close. */
void cyt_writer_close(const uint8_t *final, size_t len);
void cyt_writer_abandon_after_fork(void);  /* child: drop the parent's writer without writing */
int cyt_writer_is_self(void);              /* the calling thread is the writer thread */
uint64_t cyt_writer_frames(void);
uint64_t cyt_writer_bytes(void);

/* trace_signals.c: the capture finished when SIGTERM, SIGHUP or SIGINT (default
 * disposition) ends the process */
void cyt_signals_start(void); /* (control_lock) handlers on the default signals, the finisher thread */
void cyt_signals_stop(void);  /* (control_lock) the default dispositions back */
void cyt_signals_end_finisher(void); /* after a stop, control_lock released: the finisher thread ends */
extern _Atomic int cyt_stopping; /* trace_control.c: a stop is under way */

#endif
