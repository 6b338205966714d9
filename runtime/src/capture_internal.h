/* capture_internal.h: shared internals of libcyanalyze: growable arrays, a u64 -> u32
 * hash map, the batch index and the event stream, and the layout of struct cya_capture
 * (owned by capture_read.c). */
#ifndef CAPTURE_INTERNAL_H
#define CAPTURE_INTERNAL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cyanalyze.h"

/* Open `path` read-only if, and only if, it is a regular file: opened non-blocking (a FIFO
 * with no writer never hangs the reader) and checked with fstat (no FIFO, device or
 * directory is ever read). Returns the descriptor (O_CLOEXEC, blocking again), or -1 with
 * errno set (EINVAL: not a regular file; EISDIR: a directory). capture_read.c. */
int cya_open_regular(const char *path);

/* Grow *items (of *cap elements of size `size`) to hold at least `need`; 0 on failure. */
static inline int cya_grow(void **items, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 1;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *p = realloc(*items, n * size);
    if (!p)
        return 0;
    *items = p;
    *cap = n;
    return 1;
}

#define CYA_PUSH(arr, len, cap, value)                                                 \
    (cya_grow((void **)&(arr), &(cap), (len) + 1, sizeof(*(arr))) ? ((arr)[(len)++] = (value), 1) : 0)

/* Open-addressing map from u64 keys to u32 values (key UINT64_MAX is reserved). */
typedef struct cya_map {
    uint64_t *keys;
    uint32_t *values;
    size_t cap; /* power of two, or 0 */
    size_t len;
} cya_map;

#define CYA_MAP_EMPTY UINT64_MAX

static inline uint64_t cya_hash64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline void cya_map_free(cya_map *m)
{
    free(m->keys);
    free(m->values);
    memset(m, 0, sizeof *m);
}

static inline int cya_map_rehash(cya_map *m, size_t ncap)
{
    uint64_t *keys = malloc(ncap * sizeof *keys);
    uint32_t *values = malloc(ncap * sizeof *values);
    if (!keys || !values) {
        free(keys);
        free(values);
        return 0;
    }
    memset(keys, 0xff, ncap * sizeof *keys);
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == CYA_MAP_EMPTY)
            continue;
        size_t j = cya_hash64(m->keys[i]) & (ncap - 1);
        while (keys[j] != CYA_MAP_EMPTY)
            j = (j + 1) & (ncap - 1);
        keys[j] = m->keys[i];
        values[j] = m->values[i];
    }
    free(m->keys);
    free(m->values);
    m->keys = keys;
    m->values = values;
    m->cap = ncap;
    return 1;
}

/* Pointer to the value slot of key, or NULL. */
static inline uint32_t *cya_map_get(const cya_map *m, uint64_t key)
{
    if (!m->cap)
        return NULL;
    size_t j = cya_hash64(key) & (m->cap - 1);
    while (m->keys[j] != CYA_MAP_EMPTY) {
        if (m->keys[j] == key)
            return &m->values[j];
        j = (j + 1) & (m->cap - 1);
    }
    return NULL;
}

/* Insert or overwrite; 0 when out of memory. */
static inline int cya_map_put(cya_map *m, uint64_t key, uint32_t value)
{
    if ((m->len + 1) * 4 >= m->cap * 3 && !cya_map_rehash(m, m->cap ? m->cap * 2 : 64))
        return 0;
    size_t j = cya_hash64(key) & (m->cap - 1);
    while (m->keys[j] != CYA_MAP_EMPTY) {
        if (m->keys[j] == key) {
            m->values[j] = value;
            return 1;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->keys[j] = key;
    m->values[j] = value;
    m->len++;
    return 1;
}

/* Remove key (backward-shift deletion keeps probe chains intact); 1 if it was there. */
static inline int cya_map_del(cya_map *m, uint64_t key)
{
    if (!m->cap)
        return 0;
    size_t mask = m->cap - 1, j = cya_hash64(key) & mask;
    while (m->keys[j] != key) {
        if (m->keys[j] == CYA_MAP_EMPTY)
            return 0;
        j = (j + 1) & mask;
    }
    size_t hole = j;
    for (size_t k = (hole + 1) & mask; m->keys[k] != CYA_MAP_EMPTY; k = (k + 1) & mask) {
        size_t home = cya_hash64(m->keys[k]) & mask;
        /* move k into the hole unless its home lies cyclically in (hole, k] */
        int stays = hole <= k ? (home > hole && home <= k) : (home > hole || home <= k);
        if (!stays) {
            m->keys[hole] = m->keys[k];
            m->values[hole] = m->values[k];
            hole = k;
        }
    }
    m->keys[hole] = CYA_MAP_EMPTY;
    m->len--;
    return 1;
}

/* Which address space an event's block lives in: the top byte of its block key. */
static inline uint64_t cya_domain_of(unsigned kind)
{
    switch (kind) {
    case CYA_MMAP:
    case CYA_MREMAP:
    case CYA_MUNMAP:
        return 1;
    case CYA_PYMEM_RAW:
    case CYA_PYMEM_RAW_FREE:
        return 2;
    case CYA_PYMEM_MEM:
    case CYA_PYMEM_MEM_FREE:
        return 3;
    case CYA_PYMEM_OBJ:
    case CYA_PYMEM_OBJ_FREE:
        return 4;
    default:
        return 0;
    }
}

/* The key of the block an event allocates or frees. */
static inline uint64_t cya_block_key(unsigned kind, uint64_t address)
{
    return address | cya_domain_of(kind) << 56;
}

/* Where one BATCH lies in the file, and its place in the thread's order (formats 2 and 3:
 * the batch sequence number; format 1: its start time). Its events are decoded again from
 * the frame when they are replayed (cya_batch_load), never kept. */
typedef struct cya_batch_ref {
    uint64_t seq;
    uint64_t first;      /* format 3: the thread's ordinal of the batch's first event */
    uint64_t frame_pos;  /* file offset of the frame holding it */
    uint64_t frame_len;  /* compressed bytes of that frame */
    uint64_t offset;     /* of the BATCH record's fields (after the type byte) in the decompressed frame */
    uint64_t len;        /* events */
    uint64_t stackless;  /* allocations without a stack (id 0, address not 0) */
    uint64_t max_time;   /* the latest event time in it (ns) */
    uint64_t file_order; /* the how-manieth batch of the file */
} cya_batch_ref;

/* The batches of one thread (capture_read.c), put in order by cya_order_run. */
typedef struct cya_run {
    cya_batch_ref *batches;
    size_t nbatches, cap_batches;
    uint64_t len;      /* events in its batches (after cya_order_run: without repeats) */
    uint64_t progress; /* the most events a PROGRESS record says the thread had recorded */
} cya_run;

/* What putting a run's batches in order found (capture_merge.c). */
typedef struct cya_run_order {
    uint64_t duplicates, duplicate_events; /* batches read again (dropped) */
    uint64_t gaps, missing_batches;        /* runs of absent sequence numbers, batches in them */
    uint64_t missing_events;               /* format 3: events in the gaps, before the first
                                              batch and after the last (PROGRESS) */
    uint64_t tail_events;                  /* of those, after the last batch */
    uint64_t first_gap_from, first_gap_to; /* the first gap: sequence numbers [from, to] */
} cya_run_order;

typedef struct cya_capture cya_capture;

/* Put a run's batches in their recorded order, drop repeated batches and find the gaps
 * (formats 2 and 3: by sequence number; `ordinals`: format 3, events counted too).
 * 0 when out of memory. */
int cya_order_run(cya_run *rn, int by_sequence, int ordinals, cya_run_order *found);

/* Decodes batches again from the file (capture_read.c): one per stream, not shared
 * between threads. It keeps the last frame it decompressed. */
typedef struct cya_batch_loader cya_batch_loader;
cya_batch_loader *cya_batch_loader_new(const cya_capture *c);
void cya_batch_loader_free(cya_batch_loader *l);
/* Append batch b's events (thread_id set) to *events (growing it): 1, or 0 with a
 * message in errbuf (out of memory, the file changed or cannot be read). */
int cya_batch_load(cya_batch_loader *l, const cya_batch_ref *b, uint64_t thread_id, cya_event **events,
                   size_t *len, size_t *cap, char *errbuf, size_t errlen);

/* Receives the merged events in order, a chunk at a time: 1 to go on, 0 to stop (its
 * own error). */
typedef int (*cya_emit_fn)(void *ctx, const cya_event *events, size_t n);

/* Stream every event of the capture, in the order cya_get_events gives them, to emit
 * (capture_merge.c): threads merged by time, a tick of several threads interleaved and
 * kept consistent per address (searched when the even interleave dead-ends). Memory: one
 * batch per thread and the addresses seen (when several threads have events). Sets the
 * capture's order conflicts (cya_order_conflicts) when it ends. 1, or 0 with a message in
 * errbuf ("" when emit stopped). */
int cya_merge_stream(const cya_capture *c, cya_emit_fn emit, void *ctx, char *errbuf, size_t errlen);
/* One tick of the merge, for a reader that gathers the ticks itself (analyze_follow.c):
 * the events of n threads at one time (each thread's in its order; `tids` their OS thread
 * ids, 0 unknown, and `indices` the tracer's indices of them) put in the order
 * cya_merge_stream gives them, into out (room for all); `blocks` is the merge's state
 * of every address (start it empty, keep it from tick to tick). The number of events,
 * or SIZE_MAX when out of memory. */
size_t cya_merge_tick(cya_map *blocks, const cya_event *const *events, const size_t *lens, const uint64_t *tids,
                      const uint64_t *indices, size_t n, cya_event *out);
/* The same, decoding and merging on a second thread while emit runs on this one
 * (capture_pipe.c); the same chunks' events in the same order. */
int cya_merge_stream_pipelined(const cya_capture *c, cya_emit_fn emit, void *ctx, char *errbuf, size_t errlen);

struct cya_capture {
    cya_header header;
    char **argv;
    cya_status status;
    char problem[512];

    cya_event *events; /* all events, made only when cya_get_events is called */
    size_t nevents;
    int events_made;
    int fd;            /* the file, open for the batches' second reading (-1: none) */
    uint64_t order_conflicts;         /* what the last merge found (cya_order_conflicts) */
    uint64_t first_order_conflict_ns;
    cya_run *runs;     /* the batches of each thread, parallel to threads */

    cya_object *objects;
    size_t nobjects, cap_objects;
    cya_thread *threads;
    size_t nthreads, cap_threads;
    cya_pyframe *pyframes;
    size_t npyframes, cap_pyframes;
    cya_stack *stacks;
    size_t nstacks, cap_stacks;
    cya_loss *losses;
    size_t nlosses, cap_losses;
    cya_takeover *takeovers;
    size_t ntakeovers, cap_takeovers;
    char *notes; /* newline-separated (status.notes) */
    char *exec_what, *exec_failure; /* (status.exec_what, status.exec_failure) */
    size_t notes_len, notes_cap, nnotes;

    cya_map object_index;  /* object id -> index in objects */
    cya_map thread_index;  /* thread id -> index in threads */
    cya_map pyframe_index; /* pyframe id -> index */
    cya_map stack_index;   /* stack id -> index */

    /* objects sorted by segment start, for address lookups */
    struct cya_segment_ref { uint64_t start, end; uint32_t object; } *segrefs;
    size_t nsegrefs;
    uint64_t longest_segment; /* bounds the look-back of address lookups */

    /* follow mode (cya_capture_follow): the reader's state between two reads, and where
     * the next frame starts in the file */
    void *follow;
    uint64_t follow_pos;
};

/* Follow a capture that another process may still be writing (capture_read.c): the header
 * is read now; cya_capture_follow_read then reads the frames completed since the last
 * call, appending definitions, threads and batches (c->runs, in file order, not put in
 * order and not checked for gaps: the caller consumes them). A frame not yet complete at
 * the file's end waits for the next call; a damaged one is skipped and noted as the
 * reader does. NULL with *error and errbuf set as cya_open. */
cya_capture *cya_capture_follow(const char *path, int *error, char *errbuf, size_t errlen);
/* Read what was appended. *grew: bytes of complete frames read now. 1, or 0 with a
 * message in errbuf (the file cannot be read, shrank below what was read, out of memory). */
int cya_capture_follow_read(cya_capture *c, uint64_t *grew, char *errbuf, size_t errlen);

#endif
