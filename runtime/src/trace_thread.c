/* trace_thread.c: per-thread state and the event hot path.
 *
 * Each thread owns an event buffer (one BATCH in the making) and a definitions buffer
 * (its THREAD, STACK and PYFRAME records). Batches carry the thread's sequence number and
 * the ordinal of their first event, so a reader finds the ones missing (FORMAT.md). The
 * event buffer holds the batch's five
 * columns (FORMAT.md: heads, times, addresses, sizes, stacks), each in its own region
 * as large as the whole budget, so no column can overflow before the total reaches the
 * budget (untouched pages cost nothing). When the total fills up, the definitions and the
 * columns become one chunk for the writer. No lock is taken per event: the only
 * shared-memory write is the thread's own `busy` flag, which lets cytrace_stop() wait
 * until no thread is inside the hot path before it flushes everyone's buffers
 * (Dekker-style: busy=1, fence, read active / active=0, fence, read busy).
 *
 * The states live in one list guarded by `threads_lock`, taken only when a thread starts
 * or ends and at stop. A pthread key destructor flushes a thread's buffer when it exits
 * and recycles its state; states are never freed, so a stale pointer stays harmless.
 *
 * Also here: the stack of an event (native frames, then the Python frames from the
 * extension's callback; a stack deeper than cyt_max_frames loses its middle), its id
 * (a thread remembers its latest RECENT_STACKS stacks, so a loop allocating at a few
 * places neither hashes nor interns them again; under an unchanged Python chain, told by
 * the callback's chain serial, only the native frames are compared), and thread names
 * (the name the extension gives a Python thread, else the native name; a THREAD record
 * again when it changes).
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "trace_internal.h"

#define TCACHE_SIZE 512
#define RECENT_STACKS 4 /* up to 4 call sites taking turns (a loop allocating at several places) skip the hash */
#define STOP_WAIT_NS 2000000000ull /* give up on a thread stuck inside the hook after 2 s */
#define NAME_MAX_LEN 64

struct cyt_thread {
    cyt_thread *next;     /* all states (threads_lock) */
    cyt_thread *next_free;
    _Atomic int busy;
    _Atomic int claimed; /* the writer is flushing this idle thread's buffers */
    _Atomic int unwinding; /* inside libunwind (trace_stack.c): a fork waits for it */
    unsigned session;
    int in_list;
    uint32_t index;
    pid_t tid;
    _Atomic uint64_t t0;       /* time of the batch's first event (read by the writer's tick) */
    uint64_t last_t;
    uint64_t last_addr;
    uint32_t last_stack;  /* stack id of the batch's previous allocation (UINT32_MAX: none) */
    uint64_t batch_seq;   /* batches this thread has flushed in this session */
    _Atomic uint64_t nevents;  /* in the batch in the making (read by the writer's tick) */
    _Atomic uint64_t ordinal;  /* events of this thread's earlier batches (this session) */
    uint64_t progress_reported; /* what the last PROGRESS record said (writer) */
    _Atomic unsigned flush_epoch; /* written by the owner, read by the writer */
    uint64_t *words;           /* cyt_max_frames frame words: the stack being captured */
    struct recent_stack {      /* the stacks of the thread's latest distinct allocation stacks */
        uint64_t *words;       /* cyt_max_frames more each (n words used) */
        int n;                 /* 0: none */
        int native;            /* of which native frames (the rest are Python frames) */
        uint32_t id;           /* its id, and what its hash was seeded with */
        uint64_t generation, cut, cut_at;
        uint64_t chain;        /* the Python frames' chain serial (0: unknown) */
    } recent[RECENT_STACKS];
    unsigned recent_next;      /* the entry a new stack replaces (round robin) */
    unsigned recent_hit[2];    /* the entries found (or made) last and the one before: searched first */
    uint64_t known_chain;      /* a chain serial whose Python words a remembered stack holds (0: none) */
    uint64_t *words_mem;       /* the 1 + RECENT_STACKS buffers, words_cap frame words each */
    int words_cap;
    cyt_scratch scratch;       /* libunwind's buffer for deep stacks */
    unsigned names_seen;       /* names_version when the name was last looked up */
    int python_named;          /* the name came from cytrace_name_thread */
    char name[NAME_MAX_LEN];   /* the name of the last THREAD record */
    uint8_t *ev;               /* NCOLS regions of cyt_buffer_size bytes */
    uint8_t *col[NCOLS];       /* write position in each column */
    uintptr_t col_base;        /* sum of the columns' starts: used = sum(col) - col_base */
    cyt_buf defs;
    cyt_buf defined;           /* uint32 intern-slot entries whose definitions are in defs (trace_stack.c) */
    struct {
        uint64_t hash;
        uint32_t id;
    } tcache[TCACHE_SIZE];
};

static pthread_mutex_t threads_lock = PTHREAD_MUTEX_INITIALIZER;
static cyt_thread *all_threads, *free_threads;
static pthread_key_t exit_key;
static _Atomic uint32_t next_index;
static _Atomic uint64_t flushed_events;
static CYT_TLS cyt_thread *tls_state;

/* ---- thread names ------------------------------------------------------------------ */

/* Names given by the Python extension (threading.Thread.name), by OS thread id. A thread
 * picks its own up when it starts recording or flushes (names_version tells it changed).
 * An entry outlives its thread (what it frees while it ends is still its own); when the
 * table is full the oldest entry goes (OS thread ids come back only after pid_max more). */
#define MAX_NAMED 1024
static struct {
    pid_t tid;
    char name[NAME_MAX_LEN];
} named[MAX_NAMED];
static unsigned named_next; /* the oldest entry, replaced when the table is full */
static pthread_mutex_t names_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic unsigned names_version = 1;

CYTRACE_API void cytrace_name_thread(long tid, const char *name) {
    if (tid <= 0) return;
    int saved = cyt_guard;
    cyt_guard = 1;
    pthread_mutex_lock(&names_lock);
    int slot = -1, empty = -1;
    for (int i = 0; i < MAX_NAMED && slot < 0; i++) {
        if (named[i].tid == (pid_t)tid) slot = i;
        else if (empty < 0 && named[i].tid == 0) empty = i;
    }
    if (name == NULL || name[0] == 0) {
        if (slot >= 0) named[slot].tid = 0;
    } else {
        if (slot < 0) slot = empty;
        if (slot < 0) slot = (int)(named_next++ % MAX_NAMED);
        named[slot].tid = (pid_t)tid;
        snprintf(named[slot].name, sizeof named[slot].name, "%s", name);
    }
    atomic_fetch_add(&names_version, 1);
    pthread_mutex_unlock(&names_lock);
    cyt_guard = saved;
}

static int lookup_name(pid_t tid, char *out) {
    int found = 0;
    pthread_mutex_lock(&names_lock);
    for (int i = 0; i < MAX_NAMED; i++)
        if (named[i].tid == tid) {
            memcpy(out, named[i].name, NAME_MAX_LEN);
            found = 1;
            break;
        }
    pthread_mutex_unlock(&names_lock);
    return found;
}

/* Append a THREAD record when the thread's name changed: the Python name if it has one,
 * else (when `own`: called by the thread itself) its native name. */
static void refresh_name(cyt_thread *ts, int own) {
    char name[NAME_MAX_LEN];
    unsigned version = atomic_load_explicit(&names_version, memory_order_acquire);
    if (version != ts->names_seen) {
        ts->names_seen = version;
        ts->python_named = lookup_name(ts->tid, name);
    } else if (ts->python_named) {
        return; /* unchanged */
    }
    if (!ts->python_named) {
        if (!own) return;
        memset(name, 0, sizeof name);
        prctl(PR_GET_NAME, name, 0, 0, 0); /* 16 bytes at most */
    }
    name[NAME_MAX_LEN - 1] = 0;
    if (strcmp(name, ts->name) == 0) return;
    memcpy(ts->name, name, NAME_MAX_LEN);
    cyt_buf_varint(&ts->defs, REC_THREAD);
    cyt_buf_varint(&ts->defs, ts->index);
    cyt_buf_varint(&ts->defs, (uint64_t)ts->tid);
    cyt_buf_string(&ts->defs, name, strlen(name));
}

/* ---- byte buffers (shared helpers) ------------------------------------------------ */

int cyt_buf_reserve(cyt_buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *n = realloc(b->data, cap);
    if (n == NULL) return -1;
    b->data = n;
    b->cap = cap;
    return 0;
}

void cyt_buf_free(cyt_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int cyt_buf_varint(cyt_buf *b, uint64_t v) {
    if (cyt_buf_reserve(b, 10) != 0) return -1;
    b->len = (size_t)(cyt_put_varint(b->data + b->len, v) - b->data);
    return 0;
}

int cyt_buf_bytes(cyt_buf *b, const void *data, size_t len) {
    if (cyt_buf_reserve(b, len) != 0) return -1;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int cyt_buf_string(cyt_buf *b, const char *s, size_t len) {
    if (cyt_buf_varint(b, len) != 0) return -1;
    return cyt_buf_bytes(b, s, len);
}

/* ---- flushing ---------------------------------------------------------------------- */

static inline uint8_t *col_start(const cyt_thread *ts, int c) { return ts->ev + (size_t)c * cyt_buffer_size; }

static void reset_columns(cyt_thread *ts) {
    ts->col_base = 0;
    for (int c = 0; c < NCOLS; c++) {
        ts->col[c] = col_start(ts, c);
        ts->col_base += (uintptr_t)ts->col[c];
    }
}

/* Bytes in the columns of the batch in the making. */
static inline size_t columns_used(const cyt_thread *ts) {
    uintptr_t sum = 0;
    for (int c = 0; c < NCOLS; c++) sum += (uintptr_t)ts->col[c];
    return (size_t)(sum - ts->col_base);
}

static inline uint64_t nevents_of(cyt_thread *ts) { return atomic_load_explicit(&ts->nevents, memory_order_relaxed); }

/* Turn the thread's definitions and events into one chunk for the writer. `own`: called
 * by the thread itself (else by the writer for an idle thread, or at stop). */
static void flush_thread(cyt_thread *ts, int own) {
    uint64_t n = nevents_of(ts);
    if (n == 0 && ts->defs.len == 0) return;
    refresh_name(ts, own);
    size_t used = ts->ev ? columns_used(ts) : 0;
    size_t size = ts->defs.len + 16 + 10 * (7 + NCOLS) + used;
    uint64_t first = atomic_load_explicit(&ts->ordinal, memory_order_relaxed);
    uint8_t *chunk = malloc(size);
    if (chunk == NULL) {
        cyt_count_lost(n);
        if (n) ts->batch_seq++; /* its sequence number and ordinals stay taken: a gap */
    } else {
        uint8_t *p = chunk;
        if (ts->defs.len) memcpy(p, ts->defs.data, ts->defs.len);
        p += ts->defs.len;
        if (n > 0) {
            *p++ = REC_BATCH;
            p = cyt_put_varint(p, ts->index);
            p = cyt_put_varint(p, ts->batch_seq++);
            p = cyt_put_varint(p, first);
            p = cyt_put_varint(p, atomic_load_explicit(&ts->t0, memory_order_relaxed));
            p = cyt_put_varint(p, cyt_time_unit);
            p = cyt_put_varint(p, n);
            for (int c = COL_TIME; c < NCOLS; c++) p = cyt_put_varint(p, (uint64_t)(ts->col[c] - col_start(ts, c)));
            for (int c = 0; c < NCOLS; c++) {
                size_t len = (size_t)(ts->col[c] - col_start(ts, c));
                memcpy(p, col_start(ts, c), len);
                p += len;
            }
        }
        cyt_writer_submit(chunk, (size_t)(p - chunk), n);
        /* after the submit: a thread that sees the flags queues its batches after ours */
        cyt_definitions_written((const uint32_t *)ts->defined.data, ts->defined.len / sizeof(uint32_t));
    }
    /* (without a chunk, the flags stay down: other threads define those ids again) */
    ts->defined.len = 0;
    atomic_fetch_add(&flushed_events, n);
    ts->defs.len = 0;
    if (ts->ev) reset_columns(ts);
    /* nevents first, then the ordinal (release): the writer's tick reads the ordinal
     * (acquire), then nevents, and so never counts more events than were recorded */
    atomic_store_explicit(&ts->nevents, 0, memory_order_relaxed);
    atomic_store_explicit(&ts->ordinal, first + n, memory_order_release);
}

static void release_buffers(cyt_thread *ts) {
    free(ts->ev);
    ts->ev = NULL;
    atomic_store(&ts->nevents, 0);
    cyt_buf_free(&ts->defs);
    cyt_buf_free(&ts->defined);
}

/* pthread key destructor: the thread is ending. */
static void thread_exit(void *arg) {
    cyt_thread *ts = arg;
    int saved = cyt_guard;
    cyt_guard = 1;
    pthread_mutex_lock(&threads_lock);
    /* Not gated on cyt_active: Thread.join() returns before the OS thread has run its key
     * destructors, so a stop may be under way (active already 0) while we get here. Holding
     * threads_lock, either the stop's flush_all has taken our buffer already (our session is
     * then 0) or it has not, and the writer is still open: flush. */
    if (ts->session == atomic_load(&cyt_session) && ts->ev) flush_thread(ts, 1);
    release_buffers(ts);
    ts->session = 0;
    ts->next_free = free_threads;
    free_threads = ts;
    /* it stays in all_threads (with session 0 nobody flushes it) until reused */
    pthread_mutex_unlock(&threads_lock);
    tls_state = NULL;
    cyt_guard = saved;
}

void cyt_threads_init(void) { pthread_key_create(&exit_key, thread_exit); }

/* Set up (or renew for a new session) the calling thread's state. Guard is held. */
static cyt_thread *thread_setup(cyt_thread *ts, unsigned session) {
    pthread_mutex_lock(&threads_lock);
    if (ts == NULL) {
        ts = free_threads;
        if (ts != NULL) {
            free_threads = ts->next_free;
        } else {
            ts = calloc(1, sizeof *ts);
            if (ts == NULL) {
                pthread_mutex_unlock(&threads_lock);
                cyt_count_dropped(1);
                return NULL;
            }
        }
        if (!ts->in_list) {
            ts->next = all_threads;
            all_threads = ts;
            ts->in_list = 1;
        }
        pthread_setspecific(exit_key, ts);
    }
    release_buffers(ts);
    memset(ts->tcache, 0, sizeof ts->tcache);
    ts->ev = malloc(NCOLS * cyt_buffer_size);
    if (ts->ev) reset_columns(ts);
    if (ts->words_cap < cyt_max_frames) {
        uint64_t *words = realloc(ts->words_mem, (1 + RECENT_STACKS) * (size_t)cyt_max_frames * sizeof *words);
        if (words != NULL) {
            ts->words_mem = words;
            ts->words_cap = cyt_max_frames;
        }
    }
    ts->words = ts->words_mem;
    for (int r = 0; r < RECENT_STACKS; r++)
        ts->recent[r] = (struct recent_stack){.words = ts->words_mem + (size_t)(r + 1) * ts->words_cap};
    ts->recent_next = ts->recent_hit[0] = ts->recent_hit[1] = 0;
    ts->known_chain = 0;
    ts->session = ts->ev && ts->words_cap >= cyt_max_frames ? session : 0;
    ts->index = atomic_fetch_add(&next_index, 1) + 1;
    ts->tid = (pid_t)syscall(SYS_gettid);
    atomic_store_explicit(&ts->t0, 0, memory_order_relaxed);
    ts->last_t = 0;
    ts->batch_seq = 0;
    atomic_store(&ts->ordinal, 0);
    ts->progress_reported = 0;
    atomic_store(&ts->flush_epoch, atomic_load(&cyt_flush_epoch));
    atomic_store(&ts->claimed, 0);
    ts->names_seen = 0;
    ts->python_named = 0;
    ts->name[0] = 1; /* matches no name: the first refresh writes the THREAD record */
    ts->name[1] = 0;
    refresh_name(ts, 1);
    /* decided under the lock: a stop may clear ts->session as soon as it is released */
    cyt_thread *result = ts->session ? ts : NULL;
    pthread_mutex_unlock(&threads_lock);
    tls_state = ts;
    if (result == NULL) cyt_count_dropped(1); /* no memory for its buffers */
    return result;
}

/* The calling thread's state for recording an event; NULL: do not record (cytool's own
 * thread, or no memory: then counted as dropped). */
static cyt_thread *__attribute__((noinline)) thread_get_slow(cyt_thread *ts, unsigned session) {
    /* The clock and the writer set their guard when they start, but the C library may
     * allocate for them before (under ASan, pthread_getattr_np does): never trace them. */
    if (ts == NULL && (cyt_clock_is_self() || cyt_writer_is_self())) return NULL;
    return thread_setup(ts, session);
}

/* cyt_thread_get, inlined into this file's hot path */
static inline __attribute__((always_inline)) cyt_thread *thread_get(void) {
    cyt_thread *ts = tls_state;
    unsigned session = atomic_load_explicit(&cyt_session, memory_order_relaxed);
    if (CYT_LIKELY(ts != NULL && ts->session == session)) return ts;
    return thread_get_slow(ts, session);
}

cyt_thread *cyt_thread_get(void) { return thread_get(); }

int cyt_thread_defines(uint32_t entry) {
    cyt_thread *ts = tls_state;
    if (ts == NULL || ts->session != atomic_load_explicit(&cyt_session, memory_order_relaxed)) return -1;
    return cyt_buf_bytes(&ts->defined, &entry, sizeof entry);
}

/* ---- the hot path -------------------------------------------------------------------- */

static inline int enter(cyt_thread *ts) {
retry:
    atomic_store_explicit(&ts->busy, 1, memory_order_relaxed);
    /* With membarrier(2), cytrace_stop() makes every thread execute the full fence for us
     * (asymmetric fence): here a compiler barrier is enough. */
    if (CYT_LIKELY(cyt_asymmetric_fence)) atomic_signal_fence(memory_order_seq_cst);
    else atomic_thread_fence(memory_order_seq_cst);
    if (CYT_UNLIKELY(!atomic_load_explicit(&cyt_active, memory_order_relaxed) ||
                     ts->session != atomic_load_explicit(&cyt_session, memory_order_relaxed))) {
        atomic_store_explicit(&ts->busy, 0, memory_order_release);
        return 0;
    }
    if (CYT_UNLIKELY(atomic_load_explicit(&ts->claimed, memory_order_acquire))) {
        /* the writer is flushing our buffers (we were idle): wait for it, then start over */
        atomic_store_explicit(&ts->busy, 0, memory_order_release);
        while (atomic_load_explicit(&ts->claimed, memory_order_acquire)) sched_yield();
        goto retry;
    }
    return 1;
}

static inline void leave(cyt_thread *ts) { atomic_store_explicit(&ts->busy, 0, memory_order_release); }

/* Start one event: flush a full batch, start a new one if needed, write the event's time
 * and address. Returns the event's head byte, to be completed by the caller. */
static inline __attribute__((always_inline)) uint8_t *event_begin_at(cyt_thread *ts, unsigned kind, uintptr_t address,
                                                                       uint64_t now) {
    if (CYT_UNLIKELY(columns_used(ts) + CYT_EVENT_MAX > cyt_buffer_size)) flush_thread(ts, 1);
    if (nevents_of(ts) == 0) {
        atomic_store_explicit(&ts->t0, now, memory_order_relaxed);
        ts->last_t = now;
        ts->last_addr = 0;
        ts->last_stack = UINT32_MAX;
    }
    uint8_t *head = ts->col[COL_HEAD]++;
    if (CYT_UNLIKELY(now > ts->last_t)) {
        kind |= EV_TIME;
        ts->col[COL_TIME] = cyt_put_varint(ts->col[COL_TIME], cyt_time_units(now - ts->last_t));
        ts->last_t = now;
    }
    *head = (uint8_t)kind;
    ts->col[COL_ADDR] = cyt_put_address_delta(ts->col[COL_ADDR], (uint64_t)(address - ts->last_addr));
    ts->last_addr = address;
    return head;
}

/* The usual event: timed now. */
static inline uint8_t *event_begin(cyt_thread *ts, unsigned kind, uintptr_t address) {
    return event_begin_at(ts, kind, address, cyt_event_time());
}

static inline void event_end(cyt_thread *ts) {
    atomic_store_explicit(&ts->nevents, nevents_of(ts) + 1, memory_order_relaxed); /* only its owner writes it */
    unsigned epoch = atomic_load_explicit(&cyt_flush_epoch, memory_order_relaxed);
    if (CYT_UNLIKELY(epoch != atomic_load_explicit(&ts->flush_epoch, memory_order_relaxed))) {
        /* a tick: flush the batch if its first event is old enough (else it fills up first) */
        atomic_store_explicit(&ts->flush_epoch, epoch, memory_order_relaxed);
        if (ts->last_t - atomic_load_explicit(&ts->t0, memory_order_relaxed) >= CYT_FLUSH_AGE_NS) flush_thread(ts, 1);
    } else if (CYT_UNLIKELY(ts->defs.len > (1u << 20))) {
        flush_thread(ts, 1);
    }
}

/* 64-bit hash of a stack (its intern key); `seed` tells apart the same frames in another
 * load generation or with another cut. Each word is salted by its position and mixed
 * on its own (a bijection), then the mixes are summed: no dependency chain from word to
 * word, so the multiplies overlap. (Measured against a chained hash on bench_alloc, 8M
 * allocations, 11 interleaved runs: 0.583 s against 0.622 s median wall.) */
static inline uint64_t stack_hash(const uint64_t *words, int n, uint64_t seed) {
    uint64_t h = 0x9e3779b97f4a7c15ULL * (uint64_t)(n + 1) + seed, salt = 0;
    for (int i = 0; i < n; i++) {
        salt += 0x9e3779b97f4a7c15ULL;
        uint64_t x = words[i] ^ salt;
        x ^= x >> 29;
        x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 32;
        h += x;
    }
    h ^= h >> 31;
    h *= 0x94d049bb133111ebULL;
    return h ^ (h >> 29);
}

/* Python frames of the calling thread into words[0..max), skipping the `skip` innermost;
 * *depth: how many it has; *chain: their chain serial, or 0. If that is `known` (not 0),
 * the words may be left unwritten (cytrace.h). */
static inline int python_frames(uint64_t *words, int max, int skip, int *depth, uint64_t *chain, uint64_t known) {
    *depth = 0;
    *chain = known;
    if (cyt_pyframes_cb == NULL || !(cyt_options & CYTRACE_PYTHON_FRAMES)) {
        *chain = 0;
        return 0;
    }
    int n = cyt_pyframes_cb(words, max, skip, depth, chain);
    return n < 0 ? 0 : n;
}

/* The stack of the event being recorded, in ts->words: native frames then Python frames.
 * One deeper than cyt_max_frames keeps its innermost frames and its outermost quarter;
 * *cut and *cut_at say how many were dropped, and where (FORMAT.md, STACK). *native: how
 * many of the words are native frames, and *chain the Python ones' serial, when the stack
 * is whole (else 0). When *chain comes back as `known` (not 0), the Python words are not
 * written: the caller holds them. */
static inline __attribute__((always_inline)) int capture_words(cyt_thread *ts, void *return_address, void *frame_address, uint64_t *cut, uint64_t *cut_at,
                                int *native_words, uint64_t *chain, uint64_t known) {
    int max = cyt_max_frames, tail = max / 4, head = max - tail;
    uint64_t *words = ts->words;
    uint64_t native = cyt_capture_stack(words, max, tail, return_address, frame_address, &ts->unwinding, &ts->scratch);
    int depth = 0;
    *cut = *cut_at = 0;
    *native_words = 0;
    if (native <= (uint64_t)max) {
        int n = (int)native + python_frames(words + native, max - (int)native, 0, &depth, chain, known);
        if (native + (uint64_t)depth <= (uint64_t)max) {
            *native_words = (int)native;
            return n;
        }
    } else {
        python_frames(NULL, 0, 0, &depth, chain, 0);
    }
    *chain = 0;
    /* too deep: words[0..head) the innermost frames, words[head..max) the outermost */
    uint64_t total = native + (uint64_t)depth;
    uint64_t ignored;
    if (native < (uint64_t)head) {
        int d;
        python_frames(words + native, head - (int)native, 0, &d, &ignored, 0);
    }
    int python_part = depth < tail ? depth : tail, native_part = tail - python_part;
    if (native_part > 0) {
        /* the outermost native frames: the end of the ring (native > max) or in place */
        const uint64_t *from = native > (uint64_t)max ? words + head + (tail - native_part) : words + native - native_part;
        memmove(words + head, from, (size_t)native_part * sizeof *words);
    }
    if (python_part > 0) {
        int d;
        python_frames(words + head + native_part, python_part, depth - python_part, &d, &ignored, 0);
    }
    *cut = total - (uint64_t)max;
    *cut_at = (uint64_t)head;
    return max;
}

static uint32_t intern_stack(cyt_thread *ts, const uint64_t *words, int n, uint64_t h, uint64_t generation, uint64_t cut,
                             uint64_t cut_at);

/* The Python words of chain `chain` after words[0..native), copied from a remembered stack
 * of that chain; 0 if none is remembered. */
static int fill_python_words(cyt_thread *ts, uint64_t *words, int native, uint64_t chain) {
    for (int r = 0; r < RECENT_STACKS; r++) {
        const struct recent_stack *e = &ts->recent[r];
        if (e->chain != chain || e->n == 0) continue;
        memcpy(words + native, e->words + e->native, (size_t)(e->n - e->native) * sizeof *words);
        return 1;
    }
    return 0;
}

static uint32_t stack_id(cyt_thread *ts, void *return_address, void *frame_address) {
    uint64_t generation = atomic_load_explicit(&cyt_load_generation, memory_order_relaxed);
    uint64_t cut, cut_at, chain, known = ts->known_chain;
    int native;
    int n = capture_words(ts, return_address, frame_address, &cut, &cut_at, &native, &chain, known);
    if (n == 0) return 0;
    uint64_t *words = ts->words;
    /* The same stack as one of this thread's latest ones (a loop allocating at up to
     * RECENT_STACKS places) gets the same id, without hashing it again. The same chain serial
     * says the Python frames are the same: only the native ones are compared then. The stack
     * found last and the one before are tried first (a loop allocating at one place, or at
     * two in turn); a chain serial is only given to a whole stack (cut 0), so the same one
     * and as many native frames make the same n. */
    for (int h = 0; h < 2 && chain != 0; h++) {
        struct recent_stack *hit = &ts->recent[ts->recent_hit[h]];
        if (chain != hit->chain || native != hit->native || generation != hit->generation) continue;
        int i = 0;
        while (i < native && words[i] == hit->words[i]) i++;
        if (i < native) continue;
        if (h == 1) { /* (the two change places) */
            unsigned r = ts->recent_hit[1];
            ts->recent_hit[1] = ts->recent_hit[0];
            ts->recent_hit[0] = r;
        }
        return hit->id;
    }
    for (unsigned r = 0; r < RECENT_STACKS; r++) {
        struct recent_stack *last = &ts->recent[r];
        if (n != last->n || generation != last->generation || cut != last->cut || cut_at != last->cut_at) continue;
        int same_chain = chain == last->chain && chain != 0 && native == last->native;
        if (!same_chain && chain == known && chain != 0) continue; /* (its Python words are not here to compare) */
        int upto = same_chain ? native : n;
        int i = 0;
        while (i < upto && words[i] == last->words[i]) i++;
        if (i < upto) continue;
        if (CYT_UNLIKELY(last->chain != chain)) { /* (the same words: the newer serial serves the next ones) */
            last->chain = chain;
            last->native = native;
        }
        ts->known_chain = chain;
        if (ts->recent_hit[0] != r) {
            ts->recent_hit[1] = ts->recent_hit[0];
            ts->recent_hit[0] = r;
        }
        return last->id;
    }
    if (chain != 0 && chain == known && !fill_python_words(ts, words, native, chain)) {
        /* (not expected: the entry that made `known` known is still remembered) */
        int depth;
        n = native + python_frames(words + native, cyt_max_frames - native, 0, &depth, &chain, 0);
    }
    /* (multiplied: stacks that differ only there must still spread over the tables) */
    uint64_t h = stack_hash(words, n, generation * 0xd6e8feb86659fd93ULL ^ cut * 0xa0761d6478bd642fULL ^ cut_at);
    unsigned slot = (unsigned)(h ^ (h >> 17)) & (TCACHE_SIZE - 1);
    uint32_t id = ts->tcache[slot].hash == h ? ts->tcache[slot].id : 0;
    if (id == 0) id = intern_stack(ts, words, n, h, generation, cut, cut_at);
    if (id == 0) return 0;
    ts->tcache[slot].hash = h;
    ts->tcache[slot].id = id;
    /* remember it in place of the oldest (the buffers change places: the next capture goes
     * to the replaced one's) */
    struct recent_stack *oldest = &ts->recent[ts->recent_next];
    ts->recent_hit[1] = ts->recent_hit[0];
    ts->recent_hit[0] = ts->recent_next;
    ts->recent_next = (ts->recent_next + 1) % RECENT_STACKS;
    ts->words = oldest->words;
    *oldest = (struct recent_stack){words, n, native, id, generation, cut, cut_at, chain};
    ts->known_chain = chain;
    return id;
}

/* The id of the stack words[0..n) with hash h, defining it (a STACK record) if no thread did. */
static uint32_t intern_stack(cyt_thread *ts, const uint64_t *words, int n, uint64_t h, uint64_t generation, uint64_t cut,
                             uint64_t cut_at) {
    int is_new = 0;
    uint32_t id = cyt_intern_stack(h, &is_new);
    if (id == 0) return 0;
    if (is_new) {
        if (cyt_buf_reserve(&ts->defs, 1 + 10 * 5 + (size_t)n * 10) == 0) {
            uint8_t *p = ts->defs.data + ts->defs.len;
            *p++ = REC_STACK;
            p = cyt_put_varint(p, id);
            p = cyt_put_varint(p, generation);
            p = cyt_put_varint(p, (uint64_t)n);
            for (int i = 0; i < n; i++) p = cyt_put_varint(p, words[i]);
            p = cyt_put_varint(p, cut);
            if (cut) p = cyt_put_varint(p, cut_at);
            ts->defs.len = (size_t)(p - ts->defs.data);
        }
    }
    return id;
}

static void record_alloc(int kind, uintptr_t address, size_t size, void *return_address, void *frame_address) {
    cyt_thread *ts = thread_get();
    if (CYT_UNLIKELY(ts == NULL)) return;
    if (!enter(ts)) return;
    uint32_t stack = stack_id(ts, return_address, frame_address);
    uint8_t *head = event_begin(ts, (unsigned)kind, address);
    ts->col[COL_SIZE] = cyt_put_varint(ts->col[COL_SIZE], size);
    if (stack == ts->last_stack) {
        *head |= EV_SAME_STACK;
    } else {
        ts->col[COL_STACK] = cyt_put_varint(ts->col[COL_STACK], stack);
        ts->last_stack = stack;
    }
    event_end(ts);
    leave(ts);
}

void cyt_record_event(int kind, uintptr_t address, size_t size, void *return_address) {
    record_alloc(kind, address, size, return_address, NULL);
}

/* Called by the hooks with the hook's own frame address for the frame-pointer walk. */
void cyt_record_alloc_fp(int kind, uintptr_t address, size_t size, void *return_address, void *frame_address) {
    record_alloc(kind, address, size, return_address, frame_address);
}

void cyt_record_free(int kind, uintptr_t address) { cyt_record_free_at(kind, address, cyt_event_time()); }

void cyt_record_free_at(int kind, uintptr_t address, uint64_t time) {
    cyt_thread *ts = thread_get();
    if (CYT_UNLIKELY(ts == NULL)) return;
    if (!enter(ts)) return;
    event_begin_at(ts, (unsigned)kind, address, time);
    event_end(ts);
    leave(ts);
}

void cyt_record_munmap(uintptr_t address, size_t size) {
    cyt_thread *ts = thread_get();
    if (CYT_UNLIKELY(ts == NULL)) return;
    if (!enter(ts)) return;
    event_begin(ts, CYTRACE_MUNMAP, address);
    ts->col[COL_SIZE] = cyt_put_varint(ts->col[COL_SIZE], size);
    event_end(ts);
    leave(ts);
}

CYTRACE_API void cytrace_emit_pyframe(uint32_t id, unsigned line, const char *function, const char *file) {
    cyt_thread *ts = tls_state;
    if (ts == NULL || ts->session != atomic_load(&cyt_session)) return;
    cyt_buf_varint(&ts->defs, REC_PYFRAME);
    cyt_buf_varint(&ts->defs, id);
    cyt_buf_varint(&ts->defs, line);
    cyt_buf_string(&ts->defs, function, strlen(function));
    cyt_buf_string(&ts->defs, file, strlen(file));
}

/* ---- stop, stats, fork --------------------------------------------------------------- */

/* Wait until another thread clears one of its flags (it is leaving the hot path, or
 * libunwind); 0 if it is still set after STOP_WAIT_NS (a signal handler that never returns?). */
static int wait_cleared(_Atomic int *flag) {
    uint64_t deadline = cyt_now() + STOP_WAIT_NS;
    while (atomic_load_explicit(flag, memory_order_acquire)) {
        if (cyt_now() > deadline) return 0;
        sched_yield();
    }
    return 1;
}

void cyt_threads_flush_all(void) {
    unsigned session = atomic_load(&cyt_session);
    cyt_thread *self = tls_state;
    pthread_mutex_lock(&threads_lock);
    for (cyt_thread *ts = all_threads; ts != NULL; ts = ts->next) {
        if (ts->session != session) continue;
        if (ts != self) {
            if (!wait_cleared(&ts->busy)) { /* stuck: its events are lost */
                uint64_t n = nevents_of(ts);
                atomic_fetch_add(&flushed_events, n);
                cyt_count_lost(n);
                continue;
            }
        } else if (atomic_load(&ts->busy)) {
            continue; /* stopping from a signal handler that interrupted our own hook */
        }
        flush_thread(ts, ts == self);
        release_buffers(ts);
        ts->session = 0;
    }
    pthread_mutex_unlock(&threads_lock);
}

/* The writer, a moment after each tick's epoch bump: flush the buffers of threads holding
 * events CYT_FLUSH_AGE_NS old or more (a thread that is idle, blocked or descheduled would
 * otherwise hold them until it runs again; running threads flushed themselves at the
 * bump). A thread is claimed, then checked not to be inside the hot path (the same Dekker
 * pairing as at stop); if it enters meanwhile, it waits for the claim to go. Then, when
 * asked, the PROGRESS record: what every thread has recorded so far, when some of it is
 * not written yet. */
#define MAX_IDLE_CLAIMS 256
void cyt_threads_tick(cyt_buf *progress, int queued) {
    unsigned epoch = atomic_load(&cyt_flush_epoch);
    unsigned session = atomic_load(&cyt_session);
    uint64_t now = cyt_event_time();
    cyt_thread *claimed[MAX_IDLE_CLAIMS];
    int n = 0;
    /* Never wait for threads_lock here: its holder (a stop's flush_all, an ending thread)
     * may be waiting for the writer to make room in its queue. Next tick, then. */
    if (pthread_mutex_trylock(&threads_lock) != 0) return;
    for (cyt_thread *ts = all_threads; ts != NULL && n < MAX_IDLE_CLAIMS; ts = ts->next) {
        if (ts->session != session || nevents_of(ts) == 0) continue;
        uint64_t t0 = atomic_load_explicit(&ts->t0, memory_order_relaxed);
        if (now < t0 || now - t0 < CYT_FLUSH_AGE_NS) continue; /* young: it fills up, or is flushed next tick */
        atomic_store_explicit(&ts->claimed, 1, memory_order_relaxed);
        claimed[n++] = ts;
    }
    if (n > 0) {
        atomic_thread_fence(memory_order_seq_cst);
        if (cyt_asymmetric_fence) cyt_membarrier();
        for (int i = 0; i < n; i++) {
            cyt_thread *ts = claimed[i];
            if (atomic_load_explicit(&ts->busy, memory_order_acquire)) continue;
            if (ts->ev != NULL) flush_thread(ts, 0);
            atomic_store_explicit(&ts->flush_epoch, epoch, memory_order_relaxed);
        }
        for (int i = 0; i < n; i++) atomic_store_explicit(&claimed[i]->claimed, 0, memory_order_release);
    }
    cyt_buf entries = {0};
    uint64_t count = 0;
    int unflushed = queued;
    for (cyt_thread *ts = all_threads; progress != NULL && ts != NULL; ts = ts->next) {
        if (ts->session != session) continue;
        uint64_t ordinal = atomic_load_explicit(&ts->ordinal, memory_order_acquire);
        uint64_t pending = nevents_of(ts);
        if (ordinal + pending <= ts->progress_reported) continue;
        ts->progress_reported = ordinal + pending;
        unflushed |= pending > 0;
        cyt_buf_varint(&entries, ts->index);
        cyt_buf_varint(&entries, ordinal + pending);
        count++;
    }
    pthread_mutex_unlock(&threads_lock);
    if (progress != NULL && count > 0 && unflushed && entries.data != NULL) {
        cyt_buf_varint(progress, REC_PROGRESS);
        cyt_buf_varint(progress, cyt_since_start());
        cyt_buf_varint(progress, count);
        cyt_buf_bytes(progress, entries.data, entries.len);
    }
    cyt_buf_free(&entries);
}

/* fork_prepare, after raising cyt_forking and a full fence: wait until no other thread is
 * inside libunwind (threads that look later see cyt_forking and stay out); a stuck one is
 * given up on after STOP_WAIT_NS. */
void cyt_threads_wait_unwinders(void) {
    cyt_thread *self = tls_state;
    pthread_mutex_lock(&threads_lock);
    for (cyt_thread *ts = all_threads; ts != NULL; ts = ts->next)
        if (ts != self) wait_cleared(&ts->unwinding);
    pthread_mutex_unlock(&threads_lock);
}

uint64_t cyt_threads_events(void) { return atomic_load(&flushed_events); }

void cyt_threads_reset_counters(void) {
    atomic_store(&flushed_events, 0);
    atomic_store(&next_index, 0);
}

void cyt_threads_after_fork_child(void) {
    /* Only the forking thread exists in the child. The other states belong to threads that
     * are gone: keep them out of the list (leaked, their buffers may be mid-update). */
    pthread_mutex_init(&threads_lock, NULL);
    pthread_mutex_init(&names_lock, NULL);
    cyt_thread *self = tls_state;
    all_threads = NULL;
    free_threads = NULL;
    if (self != NULL) {
        /* its buffered events belong to the parent, which writes them */
        self->defs.len = 0;
        self->defined.len = 0;
        atomic_store(&self->nevents, 0);
        if (self->ev) reset_columns(self);
        self->session = 0;
        atomic_store(&self->busy, 0);
        self->next = NULL;
        all_threads = self;
        self->in_list = 1;
    }
}
