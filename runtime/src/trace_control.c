/* trace_control.c: the tracer's life cycle. Starting (the API, or CYTOOL_PROFILE in the
 * environment when the library loads), stopping (the API, atexit), and fork: the child
 * either stops tracing without touching the parent's file, or with CYTRACE_FOLLOW_FORK
 * starts its own capture `<path>.<pid>` (flag bit 3, parent pid in the header).
 */
#define _GNU_SOURCE
#define UNW_LOCAL_ONLY
#include <errno.h>
#include <libunwind.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/membarrier.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "trace_internal.h"

_Atomic int cyt_active;
_Atomic unsigned cyt_session;
unsigned cyt_options;
int cyt_compression_level;
size_t cyt_buffer_size = 256u << 10;
int cyt_max_frames = CYTRACE_DEFAULT_MAX_FRAMES;
_Atomic unsigned cyt_flush_epoch;
static uint64_t next_time_resolution = CYTRACE_DEFAULT_TIME_RESOLUTION_NS;
static int next_compression_level;
static int next_max_frames = CYTRACE_DEFAULT_MAX_FRAMES;
static pid_t next_parent_pid; /* cytrace_set_parent_pid */
_Atomic int cyt_stopping;     /* a stop is under way (cyt_active is 0 already) */
CYT_TLS int cyt_guard;
int cyt_asymmetric_fence;
_Atomic int cyt_forking;

void cyt_threads_reset_counters(void);

static pthread_mutex_t control_lock = PTHREAD_MUTEX_INITIALIZER;
static char capture_path[4096];
static char last_error[512];
static _Atomic uint64_t dropped, lost;
static struct cytrace_stats last_stats;
static int handlers_installed;
static pid_t session_pid;

void cyt_count_dropped(uint64_t n) { atomic_fetch_add(&dropped, n); }
void cyt_count_lost(uint64_t n) { atomic_fetch_add(&lost, n); }

void cyt_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

static void current_stats(struct cytrace_stats *s) {
    s->events = cyt_threads_events();
    s->dropped = atomic_load(&dropped);
    s->stacks = cyt_stacks_count();
    s->frames_flushed = cyt_writer_frames();
    s->bytes_written = cyt_writer_bytes();
    s->lost = atomic_load(&lost);
}

static void at_exit(void) {
    if (atomic_load(&cyt_active) && getpid() == session_pid) cytrace_stop();
}

static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);

/* Caller holds control_lock and the guard. */
static int start_locked(const char *path, unsigned options, pid_t parent_pid, int forked_child) {
    if (strlen(path) >= sizeof capture_path) {
        errno = ENAMETOOLONG;
        cyt_set_error("capture path too long");
        return -1;
    }
    unsigned flags = 1u;
    if (options & CYTRACE_PYMEM) flags |= 2u;
    if (options & CYTRACE_PYTHON_FRAMES) flags |= 4u;
    if (forked_child) flags |= 8u;
    if (options & CYTRACE_ATTACHED) flags |= 16u;
    cyt_options = options;
    cyt_compression_level = next_compression_level;
    /* Each frame starts with an empty dictionary, so longer frames compress better: 256 KiB
     * of events per thread (measured on bench_alloc: 0.030 B/event at 128 KiB, 0.022 at
     * 256, 0.019 at 512; with LZ4 then), and 1 MiB when a higher level asks for small captures */
    cyt_buffer_size = cyt_compression_level > 0 ? (1024u << 10) : (256u << 10);
    cyt_max_frames = next_max_frames;
    atomic_store(&cyt_load_generation, 0);
    atomic_store(&dropped, 0);
    atomic_store(&lost, 0);
    cyt_threads_reset_counters();
    if (cyt_stacks_init() != 0) {
        cyt_set_error("cannot allocate the stack table");
        errno = ENOMEM;
        return -1;
    }
    if (!cyt_asymmetric_fence && getenv("CYTOOL_PROFILE_NO_MEMBARRIER") == NULL)
        cyt_asymmetric_fence = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    cyt_grow_descriptor_table();
    cyt_clock_start(next_time_resolution);
    if (cyt_writer_open(path, flags, parent_pid) != 0) {
        cyt_clock_stop();
        return -1;
    }
    strcpy(capture_path, path);
    session_pid = getpid();
    atomic_fetch_add(&cyt_session, 1);
    if (!handlers_installed) {
        handlers_installed = 1;
        atexit(at_exit);
        pthread_atfork(fork_prepare, fork_parent, fork_child);
    }
    cyt_signals_start();
    atomic_store(&cyt_active, 1);
    cyt_buf objects = {0};
    cyt_patch_all(&objects);
    if (objects.len > 0) cyt_writer_write_now(objects.data, objects.len);
    cyt_buf_free(&objects);
    /* libunwind's first use makes its memory-check pipe: after the patching, so that its
     * pipe2 goes through hook_unwinder_pipe2 (trace_hooks.c) */
    static int unwinder_ready;
    if (!unwinder_ready) {
        unwinder_ready = 1;
        unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
    }
    return 0;
}

CYTRACE_API int cytrace_start(const char *path, unsigned options) {
    int saved = cyt_guard;
    cyt_guard = 1;
    pthread_mutex_lock(&control_lock);
    int r;
    if (atomic_load(&cyt_active)) {
        cyt_set_error("already tracing into %s", capture_path);
        errno = EBUSY;
        r = -1;
    } else {
        r = start_locked(path, options, next_parent_pid, 0);
    }
    pthread_mutex_unlock(&control_lock);
    cyt_guard = saved;
    return r;
}

void cyt_membarrier(void) {
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
        /* cannot happen once registered; if it does, wait out any thread in the hot path */
        struct timespec pause = {0, 50000000};
        nanosleep(&pause, NULL);
    }
}

static void stop_locked(void);

CYTRACE_API int cytrace_stop(void) {
    int saved = cyt_guard;
    cyt_guard = 1;
    pthread_mutex_lock(&control_lock);
    if (!atomic_load(&cyt_active)) {
        pthread_mutex_unlock(&control_lock);
        cyt_guard = saved;
        return -1;
    }
    stop_locked();
    pthread_mutex_unlock(&control_lock);
    cyt_signals_end_finisher();
    cyt_guard = saved;
    return 0;
}

static const char *stopping_for_exec; /* (control_lock) the EXEC record's program, or NULL */

int cyt_stop_for_exit(const char *exec_what) {
    if (!(atomic_load(&cyt_active) || atomic_load(&cyt_stopping)) || getpid() != session_pid || cyt_guard) return 0;
    /* Another thread may be stopping (a Tracker's stop, the finisher of trace_signals.c):
     * the process must not end under it, so wait for the lock; bounded, so that a stuck
     * stop never keeps the process from ending. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    int stopped = 0;
    cyt_guard = 1;
    if (pthread_mutex_timedlock(&control_lock, &deadline) == 0) {
        if (atomic_load(&cyt_active)) {
            stopping_for_exec = exec_what;
            stop_locked();
            stopping_for_exec = NULL;
            stopped = 1;
        }
        pthread_mutex_unlock(&control_lock);
        if (stopped) cyt_signals_end_finisher();
    }
    cyt_guard = 0;
    return stopped;
}

int cyt_note_exec_failed(uint64_t since_start_ns, int error) {
    cyt_buf record = {0};
    const char *reason = strerror(error);
    cyt_buf_varint(&record, REC_EXEC_FAILED);
    cyt_buf_varint(&record, since_start_ns);
    cyt_buf_varint(&record, (uint64_t)error);
    cyt_buf_string(&record, reason, strlen(reason));
    int saved = cyt_guard;
    cyt_guard = 1;
    int ok = record.data != NULL && cyt_writer_append_closed(record.data, record.len);
    cyt_buf_free(&record);
    cyt_guard = saved;
    return ok;
}

/* Caller holds control_lock and the guard; tracing is active. */
static void stop_locked(void) {
    atomic_store(&cyt_stopping, 1);
    atomic_store(&cyt_active, 0);
    atomic_thread_fence(memory_order_seq_cst);
    if (cyt_asymmetric_fence) cyt_membarrier();
    cyt_buf tail = {0};
    cyt_patch_check(&tail, 1); /* the last word on takeovers, before the slots are restored */
    cyt_pymem_check(&tail);
    uint64_t objects = cyt_objects_described();
    cytrace_pymem_uninstall();
    cyt_threads_flush_all();
    cyt_clock_stop();

    struct cytrace_stats s;
    current_stats(&s);
    if (stopping_for_exec != NULL) {
        cyt_buf_varint(&tail, REC_EXEC);
        cyt_buf_varint(&tail, cyt_since_start());
        cyt_buf_string(&tail, stopping_for_exec, strlen(stopping_for_exec));
    }
    cyt_buf_varint(&tail, REC_STATS);
    cyt_buf_varint(&tail, s.events);
    cyt_buf_varint(&tail, s.dropped);
    cyt_buf_varint(&tail, s.stacks);
    cyt_buf_varint(&tail, s.frames_flushed + 1);
    cyt_buf_varint(&tail, s.lost); /* (chunks still queued that fail to be written: not yet) */
    cyt_buf_varint(&tail, objects);
    cyt_buf_varint(&tail, REC_END);
    cyt_buf_varint(&tail, cyt_since_start());
    cyt_writer_close(tail.data, tail.len);
    cyt_buf_free(&tail);
    current_stats(&last_stats);
    /* Only now: until the capture is closed, another thread's _exit or exec must still
     * come to cyt_stop_for_exit and wait for this stop (the hooks record nothing meanwhile:
     * tracing is off) */
    cyt_unpatch_all();
    cyt_signals_stop(); /* (a signal during the stop waited for it: trace_signals.c) */
    atomic_store(&cyt_stopping, 0);
}

CYTRACE_API void cytrace_set_time_resolution(uint64_t ns) { next_time_resolution = ns ? ns : 1; }

CYTRACE_API void cytrace_set_parent_pid(long pid) { next_parent_pid = pid > 0 ? (pid_t)pid : 0; }

CYTRACE_API void cytrace_set_compression_level(int level) {
    next_compression_level = level < 0 ? 0 : level > 12 ? 12 : level;
}

CYTRACE_API void cytrace_set_max_frames(int frames) {
    next_max_frames = frames < CYTRACE_MIN_MAX_FRAMES   ? CYTRACE_MIN_MAX_FRAMES
                      : frames > CYTRACE_MAX_MAX_FRAMES ? CYTRACE_MAX_MAX_FRAMES
                                                        : frames;
}

CYTRACE_API int cytrace_is_active(void) { return atomic_load(&cyt_active); }
CYTRACE_API unsigned cytrace_session(void) { return atomic_load_explicit(&cyt_session, memory_order_relaxed); }
CYTRACE_API const char *cytrace_path(void) { return capture_path; }
CYTRACE_API const char *cytrace_last_error(void) { return last_error; }

CYTRACE_API void cytrace_get_stats(struct cytrace_stats *out) {
    if (atomic_load(&cyt_active)) current_stats(out);
    else *out = last_stats;
}

/* ---- fork ---------------------------------------------------------------------------- */

/* No thread may be inside libunwind when the process forks: its locks would stay held in
 * the child (trace_stack.c). Raise cyt_forking, make every thread see it, wait for those
 * already inside; until fork_parent, the others keep just the return address. */
static void fork_prepare(void) {
    int saved = cyt_guard;
    cyt_guard = 1;
    atomic_fetch_add(&cyt_forking, 1);
    atomic_thread_fence(memory_order_seq_cst);
    if (cyt_asymmetric_fence) cyt_membarrier();
    cyt_threads_wait_unwinders();
    pthread_mutex_lock(&control_lock);
    cyt_patch_lock();
    cyt_guard = saved;
}

static void fork_parent(void) {
    cyt_patch_unlock();
    pthread_mutex_unlock(&control_lock);
    atomic_fetch_sub(&cyt_forking, 1);
}

static void fork_child(void) {
    int saved = cyt_guard;
    cyt_guard = 1;
    atomic_store(&cyt_forking, 0); /* the only thread here */
    cyt_patch_unlock();
    pthread_mutex_unlock(&control_lock);
    if (!atomic_load(&cyt_active)) {
        cyt_guard = saved;
        return;
    }
    atomic_store(&cyt_active, 0);
    cyt_asymmetric_fence = 0; /* membarrier registration is per process: not inherited */
    cyt_writer_abandon_after_fork();
    cyt_clock_after_fork_child();
    cyt_threads_after_fork_child();
    cyt_unpatch_all();
    if (cyt_options & CYTRACE_FOLLOW_FORK) {
        char path[sizeof capture_path + 48];
        pid_t parent = getppid();
        pthread_mutex_lock(&control_lock);
        if (cytrace_unused_path(capture_path, 0, path, sizeof path) != 0)
            fprintf(stderr, "cytool: cannot follow fork: no capture name fits beside %s\n", capture_path);
        else if (start_locked(path, cyt_options, parent, 1) != 0)
            fprintf(stderr, "cytool: cannot follow fork into %s: %s\n", path, last_error);
        pthread_mutex_unlock(&control_lock);
    }
    cyt_guard = saved;
}

/* ---- capture names ------------------------------------------------------------------- */

CYTRACE_API int cytrace_unused_path(const char *path, int path_itself, char *out, size_t cap) {
    struct stat st;
    int n = snprintf(out, cap, "%s", path);
    if (n < 0 || (size_t)n >= cap) goto too_long;
    if (path_itself && lstat(out, &st) != 0 && errno == ENOENT) return 0;
    for (unsigned k = 1; k < 100000; k++) {
        n = k == 1 ? snprintf(out, cap, "%s.%d", path, (int)getpid())
                   : snprintf(out, cap, "%s.%d.%u", path, (int)getpid(), k);
        if (n < 0 || (size_t)n >= cap) goto too_long;
        if (lstat(out, &st) != 0 && errno == ENOENT) return 0;
    }
too_long: /* (or 100,000 captures of this pid there already) */
    errno = ENAMETOOLONG;
    return -1;
}

/* ---- library load --------------------------------------------------------------------- */

static int env_flag(const char *name) {
    const char *v = getenv(name);
    return v != NULL && v[0] != 0 && strcmp(v, "0") != 0;
}

__attribute__((constructor)) static void cyt_library_init(void) {
    cyt_threads_init();
    const char *path = getenv("CYTOOL_PROFILE");
    if (path == NULL || path[0] == 0) return;
    unsigned options = 0;
    if (env_flag("CYTOOL_PROFILE_FOLLOW_FORK")) options |= CYTRACE_FOLLOW_FORK;
    if (env_flag("CYTOOL_PROFILE_NATIVE_UNWIND")) options |= CYTRACE_NATIVE_UNWIND;
    const char *value = getenv("CYTOOL_PROFILE_TIME_RESOLUTION");
    if (value != NULL && value[0] != 0) cytrace_set_time_resolution(strtoull(value, NULL, 10));
    value = getenv("CYTOOL_PROFILE_COMPRESSION");
    if (value != NULL && value[0] != 0) cytrace_set_compression_level(atoi(value));
    value = getenv("CYTOOL_PROFILE_MAX_FRAMES");
    if (value != NULL && value[0] != 0) cytrace_set_max_frames(atoi(value));
    if (env_flag("CYTOOL_PROFILE_TRACE_PYTHON_ALLOCATORS") || env_flag("CYTOOL_TRACE_PYTHON_ALLOCATORS")) {
        if (cytrace_pymem_install() == 0) options |= CYTRACE_PYMEM;
        else fprintf(stderr, "cytool: not tracing the Python allocators: %s\n", last_error);
    }
    /* A program run under CYTOOL_PROFILE may start others that inherit it, or exec another:
     * never overwrite an existing file (nor one another process is writing). */
    char chosen[4096 + 48];
    if (cytrace_unused_path(path, 1, chosen, sizeof chosen) != 0) {
        fprintf(stderr, "cytool: cannot start tracing: no capture name fits beside %s\n", path);
        return;
    }
    int r = cytrace_start(chosen, options);
    if (r != 0 && errno == EAGAIN && strcmp(chosen, path) == 0 && cytrace_unused_path(path, 0, chosen, sizeof chosen) == 0)
        r = cytrace_start(chosen, options);
    if (r != 0) fprintf(stderr, "cytool: cannot start tracing into %s: %s\n", chosen, last_error);
}
