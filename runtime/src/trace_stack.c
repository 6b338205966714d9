/* trace_stack.c: native stack capture and the lock-free intern tables that give stacks
 * and Python frames their small ids.
 *
 * Capture: when the allocation's caller lies in an object built with frame pointers
 * (cytool-built modules link libcytrace, so trace_patch.c registers their code ranges
 * here), walk the frame-pointer chain while the return addresses stay inside such
 * objects; the first address outside (the interpreter, which omits frame pointers) is
 * kept and the walk stops there (the Python frames above are read from the interpreter).
 * Otherwise unwind with libunwind's unw_backtrace (DWARF CFI): first a short unwind, which
 * ends the stack the same way if it passes through such objects and out again (the
 * interpreter allocating for a Cython function), then, if it did not, the whole stack. A stack deeper than the
 * frame limit keeps its innermost frames and its outermost ones (a ring buffer holds the
 * latest frames seen while the walk goes on), and says how deep it was.
 *
 * libunwind takes locks of its own (its caches, the first unwinds of a thread). A fork while
 * another thread holds one would leave it held forever in the child, and a followed child
 * hangs at its first unwind. So a thread raises its `unwinding` flag before it enters
 * libunwind and then checks cyt_forking (Dekker-style, as enter() in trace_thread.c does
 * against cyt_active); while a fork is under way it keeps just the return address. The fork
 * raises cyt_forking, then waits for every raised flag to drop (trace_control.c).
 *
 * Interning: an open-addressing table of (64-bit key, id) slots. A thread claims an empty
 * slot with a compare-and-swap on the key, then publishes the id; readers that find the
 * key wait for the id. No lock is taken. The first inserter emits the definition record,
 * into its own buffer. Until that buffer has been handed to the writer (the slot's
 * `written` flag, raised by cyt_definitions_written at the flush), every other thread that
 * finds the key emits the definition as well: threads flush independently, and a batch
 * whose definition sat in another thread's buffer could reach the file first, or alone
 * (a process killed before the other thread flushed). So every batch's definitions come
 * before it in the file; a definition may come twice (FORMAT.md).
 */
#define _GNU_SOURCE
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "trace_internal.h"

typedef struct {
    _Atomic uint64_t key;
    _Atomic uint32_t id;
    _Atomic uint32_t written; /* its definition has been handed to the writer */
} intern_slot;

typedef struct {
    intern_slot *slots;
    size_t mask;
    _Atomic uint32_t next_id;
} intern_table;

#define STACK_TABLE_BITS 21
#define PYFRAME_TABLE_BITS 18
#define MAX_PROBES 256

static intern_table stack_table, pyframe_table;
cytrace_pyframes_fn cyt_pyframes_cb;

static int table_create(intern_table *t, unsigned bits) {
    size_t size = (size_t)1 << bits;
    void *mem = mmap(NULL, size * sizeof(intern_slot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) return -1;
    t->slots = mem;
    t->mask = size - 1;
    atomic_store(&t->next_id, 0);
    return 0;
}

static void table_destroy(intern_table *t) {
    if (t->slots) munmap(t->slots, (t->mask + 1) * sizeof(intern_slot));
    t->slots = NULL;
}

/* Pending-definition entries (cyt_thread_defines): the table in the top bit, the slot below. */
#define PYFRAME_ENTRY 0x80000000u

/* The calling thread emits the definition of slot i: it raises the slot's flag once its
 * buffer is handed to the writer (if it cannot keep track, the flag is raised now: the
 * definition may then come after a batch of another thread, as before). */
static void defining(intern_table *t, size_t i) {
    uint32_t entry = (uint32_t)i | (t == &pyframe_table ? PYFRAME_ENTRY : 0);
    if (cyt_thread_defines(entry) != 0) atomic_store_explicit(&t->slots[i].written, 1, memory_order_release);
}

static uint32_t table_intern(intern_table *t, uint64_t key, int *is_new) {
    *is_new = 0;
    if (t->slots == NULL) return 0;
    if (key == 0) key = 1;
    size_t i = (size_t)(key ^ (key >> 29)) & t->mask;
    for (int probe = 0; probe < MAX_PROBES; probe++, i = (i + 1) & t->mask) {
        intern_slot *s = &t->slots[i];
        uint64_t k = atomic_load_explicit(&s->key, memory_order_acquire);
        if (k == 0) {
            uint64_t expected = 0;
            if (atomic_compare_exchange_strong(&s->key, &expected, key)) {
                uint32_t id = atomic_fetch_add(&t->next_id, 1) + 1;
                atomic_store_explicit(&s->id, id, memory_order_release);
                *is_new = 1;
                defining(t, i);
                return id;
            }
            k = expected;
        }
        if (k == key) {
            uint32_t id;
            while ((id = atomic_load_explicit(&s->id, memory_order_acquire)) == 0) __builtin_ia32_pause();
            if (CYT_UNLIKELY(!atomic_load_explicit(&s->written, memory_order_acquire))) {
                *is_new = 1; /* defined by a thread that has not flushed it yet: define it too */
                defining(t, i);
            }
            return id;
        }
    }
    return 0;
}

int cyt_stacks_init(void) {
    cyt_stacks_release();
    if (table_create(&stack_table, STACK_TABLE_BITS) != 0) return -1;
    if (table_create(&pyframe_table, PYFRAME_TABLE_BITS) != 0) return -1;
    return 0;
}

void cyt_stacks_release(void) {
    table_destroy(&stack_table);
    table_destroy(&pyframe_table);
}

uint64_t cyt_stacks_count(void) { return atomic_load(&stack_table.next_id); }

void cyt_definitions_written(const uint32_t *entries, size_t n) {
    for (size_t k = 0; k < n; k++) {
        intern_table *t = entries[k] & PYFRAME_ENTRY ? &pyframe_table : &stack_table;
        size_t i = entries[k] & ~PYFRAME_ENTRY;
        if (t->slots != NULL && i <= t->mask) atomic_store_explicit(&t->slots[i].written, 1, memory_order_release);
    }
}

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint32_t cyt_intern_stack(uint64_t hash, int *is_new) { return table_intern(&stack_table, hash, is_new); }

CYTRACE_API uint32_t cytrace_pyframe_intern(uint64_t key, int *is_new) {
    return table_intern(&pyframe_table, mix64(key), is_new);
}

/* ---- code ranges of frame-pointer objects ---------------------------------------- */

#define MAX_FP_RANGES 256
static struct {
    _Atomic uintptr_t start, end;
} fp_ranges[MAX_FP_RANGES];
static _Atomic int fp_count;

void cyt_fp_objects_reset(void) {
    for (int i = 0; i < MAX_FP_RANGES; i++) {
        atomic_store(&fp_ranges[i].start, 0);
        atomic_store(&fp_ranges[i].end, 0);
    }
    atomic_store(&fp_count, 0);
}

void cyt_fp_objects_add(uintptr_t start, uintptr_t end) {
    int n = atomic_load(&fp_count);
    for (int i = 0; i < n; i++) /* reuse a slot freed by an unload, or skip a duplicate */
        if (atomic_load(&fp_ranges[i].start) == start) {
            atomic_store(&fp_ranges[i].end, end);
            return;
        }
    if (n >= MAX_FP_RANGES) return;
    atomic_store(&fp_ranges[n].start, start);
    atomic_store(&fp_ranges[n].end, end);
    atomic_store(&fp_count, n + 1);
}

/* Whether pc lies in a frame-pointer object. *hint: the range to try first (a walk's
 * addresses mostly stay in one object), updated to the one found. */
static inline int in_fp_object(uintptr_t pc, int *hint) {
    int n = atomic_load_explicit(&fp_count, memory_order_acquire), h = *hint;
    if (h < n && pc >= atomic_load_explicit(&fp_ranges[h].start, memory_order_relaxed) &&
        pc < atomic_load_explicit(&fp_ranges[h].end, memory_order_relaxed))
        return 1;
    for (int i = 0; i < n; i++) {
        uintptr_t s = atomic_load_explicit(&fp_ranges[i].start, memory_order_relaxed);
        uintptr_t e = atomic_load_explicit(&fp_ranges[i].end, memory_order_relaxed);
        if (pc >= s && pc < e) {
            *hint = i;
            return 1;
        }
    }
    return 0;
}

static _Atomic int fp_hint; /* the range the latest walk began in (shared: written when it changes) */

/* ---- capture ------------------------------------------------------------------------ */

/* The frame-pointer walk needs no stack bounds (asking glibc for them can deadlock: the
 * first allocation of a thread may come from inside pthread_getattr_np): it only follows
 * frame pointers saved by functions of frame-pointer objects, and still checks that each
 * step goes up the stack by less than MAX_FRAME_SIZE. */
#define MAX_FRAME_SIZE ((uintptr_t)1 << 20)

/* Announce this thread inside libunwind; 0 if a fork is under way (then stay out). */
static inline int unwind_begin(_Atomic int *unwinding) {
    atomic_store_explicit(unwinding, 1, memory_order_relaxed);
    if (CYT_LIKELY(cyt_asymmetric_fence)) atomic_signal_fence(memory_order_seq_cst);
    else atomic_thread_fence(memory_order_seq_cst);
    if (CYT_LIKELY(atomic_load_explicit(&cyt_forking, memory_order_relaxed) == 0)) return 1;
    atomic_store_explicit(unwinding, 0, memory_order_release);
    return 0;
}

#define MAX_UNWIND_FRAMES (1u << 16) /* a walk stops after this many frames (the cut is then a lower bound) */

/* Frame number t of a walk goes to words[slot(t)]: the first `head` in place, the rest
 * round a ring of `tail` slots after them, which ends up holding the latest `tail`. */
static inline void put_frame(uint64_t *words, int head, int tail, uint64_t t, uint64_t word)
{
    words[t < (uint64_t)head ? t : (uint64_t)head + (t - (uint64_t)head) % (uint64_t)tail] = word;
}

/* After a walk of `total` frames: put the ring in order (oldest first). */
static void unroll_ring(uint64_t *words, int head, int tail, uint64_t total)
{
    if (total <= (uint64_t)head + (uint64_t)tail)
        return;
    uint64_t *ring = words + head;
    size_t shift = (size_t)((total - (uint64_t)head) % (uint64_t)tail); /* index of the oldest */
    if (shift == 0)
        return;
    uint64_t tmp[64];
    while (shift > 0) { /* rotate left by `shift`, at most 64 words at a time */
        size_t step = shift < 64 ? shift : 64;
        memcpy(tmp, ring, step * sizeof *ring);
        memmove(ring, ring + step, ((size_t)tail - step) * sizeof *ring);
        memcpy(ring + tail - step, tmp, step * sizeof *ring);
        shift -= step;
    }
}


/* A short unwind first, for a caller outside the frame-pointer objects (the interpreter
 * allocating for a Cython function): SHORT_FRAMES frames, about a third of a full unwind's
 * cost. If they pass through frame-pointer objects and out again, the stack ends there, as
 * the frame-pointer walk ends its stacks (the Python frames above come from the
 * interpreter). 0: it did not, and a full unwind follows. A thread whose short unwinds keep
 * failing (allocations from Python code, no Cython frame near) tries one in SHORT_RETRY. */
#define SHORT_FRAMES 11
#define SHORT_MISSES 8
#define SHORT_RETRY 64
static uint64_t short_unwind(uint64_t *words, int max, uintptr_t ret, _Atomic int *unwinding, cyt_scratch *scratch,
                             int *hint) {
    if (scratch->short_misses >= SHORT_MISSES && ++scratch->short_skips % SHORT_RETRY != 0) return 0;
    void *ips[SHORT_FRAMES];
    if (!unwind_begin(unwinding)) return 0;
    int got = unw_backtrace(ips, SHORT_FRAMES);
    atomic_store_explicit(unwinding, 0, memory_order_release);
    int start = -1;
    for (int i = 0; i < got && i < 8; i++)
        if ((uintptr_t)ips[i] == ret) {
            start = i;
            break;
        }
    int seen_fp = 0, end = -1;
    for (int i = start < 0 ? got : start; i < got; i++) {
        int fp = in_fp_object((uintptr_t)ips[i], hint);
        if (fp) seen_fp = 1;
        else if (seen_fp) {
            end = i;
            break;
        }
    }
    if (end < 0 || end - start + 1 > max) {
        scratch->short_misses++;
        return 0;
    }
    scratch->short_misses = 0;
    uint64_t n = 0;
    for (int i = start; i <= end; i++) words[n++] = (uint64_t)(uintptr_t)ips[i] << 1;
    return n;
}

uint64_t cyt_capture_stack(uint64_t *words, int max, int tail, void *return_address, void *frame_address,
                           _Atomic int *unwinding, cyt_scratch *scratch)
{
    uintptr_t ret = (uintptr_t)return_address;
    int head = max - tail;
    uint64_t n = 0;
    int first = atomic_load_explicit(&fp_hint, memory_order_relaxed), hint = first;
    if (!(cyt_options & CYTRACE_NATIVE_UNWIND) && frame_address != NULL && in_fp_object(ret, &hint)) {
        if (CYT_UNLIKELY(hint != first)) atomic_store_explicit(&fp_hint, hint, memory_order_relaxed);
        /* frame_address is the hook's frame: [0] = caller's saved frame pointer, [1] = ret */
        uintptr_t fp = (uintptr_t)frame_address;
        words[n++] = (uint64_t)ret << 1;
        uintptr_t pc = ret;
        while (in_fp_object(pc, &hint)) {
            uintptr_t next = ((uintptr_t *)fp)[0];
            if (next <= fp || next - fp > MAX_FRAME_SIZE || (next & 7) != 0) break;
            fp = next;
            pc = ((uintptr_t *)fp)[1];
            if (pc == 0) break;
            if (CYT_UNLIKELY(n >= (uint64_t)max)) { /* deeper than the limit: the rest round the ring */
                if (n >= MAX_UNWIND_FRAMES) break;
                put_frame(words, head, tail, n++, (uint64_t)pc << 1);
                continue;
            }
            words[n++] = (uint64_t)pc << 1;
        }
        if (CYT_UNLIKELY(n > (uint64_t)max)) unroll_ring(words, head, tail, n);
        return n;
    }
    int got = 0;
    if (!(cyt_options & CYTRACE_NATIVE_UNWIND) && atomic_load_explicit(&fp_count, memory_order_relaxed) > 0) {
        uint64_t kept = short_unwind(words, max, ret, unwinding, scratch, &hint);
        if (kept) return kept;
    }
    for (;;) {
        if (scratch->cap < (size_t)max + 8) {
            size_t cap = (size_t)max + 8;
            void **ips = realloc(scratch->ips, cap * sizeof *ips);
            if (ips == NULL) break;
            scratch->ips = ips;
            scratch->cap = cap;
        }
        if (!unwind_begin(unwinding)) break;
        got = unw_backtrace(scratch->ips, (int)scratch->cap);
        atomic_store_explicit(unwinding, 0, memory_order_release);
        if ((size_t)got < scratch->cap || scratch->cap >= MAX_UNWIND_FRAMES) break;
        /* deeper than the buffer: again with a bigger one, to see the outermost frames */
        size_t cap = scratch->cap * 4 > MAX_UNWIND_FRAMES ? MAX_UNWIND_FRAMES : scratch->cap * 4;
        void **ips = realloc(scratch->ips, cap * sizeof *ips);
        if (ips == NULL) break;
        scratch->ips = ips;
        scratch->cap = cap;
    }
    int start = -1;
    for (int i = 0; i < got && i < 8; i++)
        if ((uintptr_t)scratch->ips[i] == ret) {
            start = i;
            break;
        }
    if (start < 0) { /* no unwind, or it lost the hook's caller: keep just the return address */
        words[0] = (uint64_t)ret << 1;
        return 1;
    }
    for (int i = start; i < got && n < (uint64_t)max; i++) words[n++] = (uint64_t)(uintptr_t)scratch->ips[i] << 1;
    if (CYT_UNLIKELY(got - start > max)) { /* deeper than the limit: the rest round the ring */
        for (int i = start + max; i < got; i++) put_frame(words, head, tail, n++, (uint64_t)(uintptr_t)scratch->ips[i] << 1);
        unroll_ring(words, head, tail, n);
    }
    return n;
}

CYTRACE_API void cytrace_set_pyframes_source(cytrace_pyframes_fn fn) { cyt_pyframes_cb = fn; }
