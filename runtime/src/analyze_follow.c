/* analyze_follow.c: the live view's aggregator, a capture followed while it is written.
 *
 * Owns cya_follow_*: each poll reads the frames completed since the last one
 * (cya_capture_follow_read), takes each thread's new batches in sequence order, decodes
 * their events, merges the threads by time and replays what is safe to replay, then
 * symbolises the new stacks. Nothing is read twice; memory follows the live blocks, the
 * distinct (stack, thread) pairs and the events held back.
 *
 * Events are held back while an earlier event of another thread may still come: a thread
 * hands its buffer over when it is full or its oldest event is 5 ms old (FORMAT.md), so
 * events older than HOLD_NS before the newest time the file shows (an event or a PROGRESS
 * mark) are replayed, the rest wait; once the trailer is read, or when no process holds
 * the capture's lock any more, everything goes. An event
 * that still comes after later ones were replayed is replayed at once and counted late.
 *
 * The figures follow analyze_replay.c's definitions (allocated, live, peak: blocks live
 * at the first moment total live bytes was highest; mappings by address range), per
 * capture stack and thread, on the events in the report's order: tick by tick, the
 * threads' events of one tick interleaved by capture_merge.c (cya_merge_tick). So once
 * the trailer is read the figures are the report's, unless events came late.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze_internal.h"
#include "symbolize_internal.h"

#define HOLD_NS 250000000ull /* events this close to the newest time seen wait for other threads */
#define NONE UINT32_MAX

typedef struct feed {
    uint64_t next_seq;     /* the thread's next batch */
    cya_batch_ref *waiting; /* batches read and not yet decoded, in sequence order from wpos */
    size_t wpos, nwaiting, cap_waiting;
    cya_event *q;          /* decoded, not yet replayed */
    size_t head, len, cap;
    uint64_t last_time;
} feed;

typedef struct cell_state {
    uint64_t snap_bytes, snap_count, last_change;
} cell_state;

typedef struct heap_entry {
    uint64_t size;
    uint32_t cell;
    uint32_t thread;
} heap_entry;

typedef struct map_entry {
    uint64_t size, remaining;
    uint32_t cell;
    uint8_t in_use;
} map_entry;

struct cya_follower {
    cya_capture *c;
    cya_symbols *symbols;
    cya_batch_loader *loader;
    feed *feeds;
    size_t nfeeds;
    cya_follow_totals totals;
    /* cells: one per (stack, thread) */
    cya_follow_cell *cells;
    cell_state *cstate;
    size_t ncells, cap_cells, cap_cstate;
    cya_map cell_index;
    /* live heap blocks: key -> index in heap */
    cya_map blocks;
    heap_entry *heap;
    size_t nheap, cap_heap;
    uint32_t *heap_spare;
    size_t nheap_spare, cap_heap_spare;
    /* live mappings */
    cya_mappings *mappings;
    map_entry *maps;
    size_t nmaps, cap_maps;
    uint32_t *map_spare;
    size_t nmap_spare, cap_map_spare;
    /* the merge: every address's state (capture_merge.c), one tick's events in order */
    cya_map merge_blocks;
    cya_event *tick_events;
    size_t cap_tick_events;
    const cya_event **slice_events;
    size_t *slice_lens, *slice_feeds;
    uint64_t *slice_tids, *slice_indices; /* the slices' OS thread ids and tracer indices */
    size_t nslices;
    /* the high-water mark */
    uint64_t event, peak_event;
    int have_peak;
    uint64_t replayed_until; /* events at or before this time were replayed */
    int failed;
};

static uint32_t cell_of(cya_follower *f, uint64_t stack, uint64_t thread)
{
    uint64_t key = (stack & 0xffffffffu) << 32 | (thread & 0xffffffffu);
    if (key == CYA_MAP_EMPTY)
        key--;
    uint32_t *slot = cya_map_get(&f->cell_index, key);
    if (slot)
        return *slot;
    cya_follow_cell c;
    memset(&c, 0, sizeof c);
    c.stack_id = stack;
    c.thread_id = thread;
    cell_state s = {0, 0, 0};
    if (!CYA_PUSH(f->cells, f->ncells, f->cap_cells, c))
        return NONE;
    size_t n = f->ncells - 1;
    if (!cya_grow((void **)&f->cstate, &f->cap_cstate, f->ncells, sizeof *f->cstate))
        return NONE;
    f->cstate[n] = s;
    if (!cya_map_put(&f->cell_index, key, (uint32_t)n))
        return NONE;
    return (uint32_t)n;
}

/* A cell's live figures change (as analyze_replay.c's stack_change). */
static void cell_change(cya_follower *f, uint32_t i, uint64_t bytes, int up)
{
    cya_follow_cell *c = &f->cells[i];
    cell_state *s = &f->cstate[i];
    if (f->have_peak && s->last_change <= f->peak_event && f->peak_event < f->event) {
        s->snap_bytes = c->live_bytes;
        s->snap_count = c->live_count;
    }
    s->last_change = f->event;
    if (up > 0) {
        c->live_bytes += bytes;
        c->live_count++;
    } else {
        c->live_bytes -= bytes;
        c->live_count -= up < 0;
    }
}

static void grew(cya_follower *f, uint64_t bytes, uint64_t time_ns)
{
    f->totals.live_bytes += bytes;
    if (f->totals.live_bytes > f->totals.peak_bytes) {
        f->totals.peak_bytes = f->totals.live_bytes;
        f->have_peak = 1;
        f->peak_event = f->event;
        f->totals.peak_time_ns = time_ns;
    }
}

static int on_map_release(void *ctx, uint32_t slot, uint64_t bytes)
{
    cya_follower *f = ctx;
    map_entry *m = &f->maps[slot];
    if (!bytes || !m->in_use)
        return 1;
    if (bytes > m->remaining)
        bytes = m->remaining;
    m->remaining -= bytes;
    f->totals.live_bytes -= bytes;
    cell_change(f, m->cell, bytes, m->remaining == 0 ? -1 : 0);
    if (m->remaining)
        return 1;
    f->totals.live_count--;
    f->totals.frees++;
    m->in_use = 0;
    return CYA_PUSH(f->map_spare, f->nmap_spare, f->cap_map_spare, slot);
}

static uint64_t range_end(uint64_t start, uint64_t size)
{
    return size > UINT64_MAX - start ? UINT64_MAX : start + size;
}

static int is_mapping(unsigned kind) { return kind == CYA_MMAP || kind == CYA_MREMAP || kind == CYA_MUNMAP; }

static void heap_release(cya_follower *f, uint32_t *slot, uint64_t key)
{
    heap_entry *h = &f->heap[*slot];
    f->totals.live_bytes -= h->size;
    f->totals.live_count--;
    cell_change(f, h->cell, h->size, -1);
    uint32_t index = *slot;
    cya_map_del(&f->blocks, key);
    if (!CYA_PUSH(f->heap_spare, f->nheap_spare, f->cap_heap_spare, index))
        f->failed = 1;
}

/* Replay one event (analyze_replay.c's rules). 0 when out of memory. */
static int replay(cya_follower *f, const cya_event *e)
{
    if (!e->address)
        goto done;
    uint64_t key = cya_block_key(e->kind, e->address);
    if (e->kind < CYA_FREE) {
        uint32_t cell = cell_of(f, e->stack_id, e->thread_id);
        if (cell == NONE)
            return 0;
        f->cells[cell].alloc_bytes += e->size;
        f->cells[cell].alloc_count++;
        f->totals.alloc_bytes += e->size;
        f->totals.alloc_count++;
        if (is_mapping(e->kind)) {
            uint32_t k;
            if (f->nmap_spare) {
                k = f->map_spare[--f->nmap_spare];
            } else {
                map_entry none;
                memset(&none, 0, sizeof none);
                if (!CYA_PUSH(f->maps, f->nmaps, f->cap_maps, none))
                    return 0;
                k = (uint32_t)(f->nmaps - 1);
            }
            f->maps[k] = (map_entry){e->size, e->size, cell, 1};
            if (cya_mappings_add(f->mappings, e->address, range_end(e->address, e->size), k, on_map_release, f) < 0)
                return 0;
            if (e->size) {
                cell_change(f, cell, e->size, 1);
                f->totals.live_count++;
                grew(f, e->size, e->time_ns);
            } else {
                f->maps[k].in_use = 0;
                if (!CYA_PUSH(f->map_spare, f->nmap_spare, f->cap_map_spare, k))
                    return 0;
            }
        } else {
            uint32_t *slot = cya_map_get(&f->blocks, key);
            if (slot) /* its free was never seen */
                heap_release(f, slot, key);
            uint32_t index;
            if (f->nheap_spare) {
                index = f->heap_spare[--f->nheap_spare];
            } else {
                heap_entry none = {0, 0, 0};
                if (!CYA_PUSH(f->heap, f->nheap, f->cap_heap, none))
                    return 0;
                index = (uint32_t)(f->nheap - 1);
            }
            f->heap[index] = (heap_entry){e->size, cell, e->thread_id};
            if (!cya_map_put(&f->blocks, key, index))
                return 0;
            cell_change(f, cell, e->size, 1);
            f->totals.live_count++;
            grew(f, e->size, e->time_ns);
        }
    } else if (is_mapping(e->kind)) {
        int found = cya_mappings_release(f->mappings, e->address, range_end(e->address, e->size), on_map_release, f);
        if (found < 0)
            return 0;
        f->totals.unmatched_frees += !found;
    } else {
        uint32_t *slot = cya_map_get(&f->blocks, key);
        if (slot) {
            f->totals.frees++;
            heap_release(f, slot, key);
        } else {
            f->totals.unmatched_frees++;
        }
    }
done:
    f->event++;
    f->totals.events++;
    if (e->time_ns > f->totals.time_ns)
        f->totals.time_ns = e->time_ns;
    return !f->failed;
}

static int batch_cmp(const void *a, const void *b)
{
    const cya_batch_ref *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int load(cya_follower *f, feed *fd, const cya_batch_ref *b, uint64_t thread_id, char *errbuf, size_t errlen)
{
    if (fd->head && fd->head == fd->len)
        fd->head = fd->len = 0;
    else if (fd->head > 4096 && fd->head * 2 > fd->len) {
        memmove(fd->q, fd->q + fd->head, (fd->len - fd->head) * sizeof *fd->q);
        fd->len -= fd->head;
        fd->head = 0;
    }
    size_t before = fd->len;
    if (!cya_batch_load(f->loader, b, thread_id, &fd->q, &fd->len, &fd->cap, errbuf, errlen))
        return 0;
    uint64_t t = fd->last_time;
    for (size_t i = before; i < fd->len; i++) { /* times made non-decreasing along the thread, as the merge does */
        if (fd->q[i].time_ns < t)
            fd->q[i].time_ns = t;
        t = fd->q[i].time_ns;
        if (t < f->replayed_until)
            f->totals.late_events++;
    }
    fd->last_time = t;
    return 1;
}

/* Note each thread's new batches (in sequence order); they are decoded when merged. */
static int take_batches(cya_follower *f, char *errbuf, size_t errlen)
{
    cya_capture *c = f->c;
    if (c->nthreads > f->nfeeds) {
        feed *feeds = realloc(f->feeds, c->nthreads * sizeof *feeds);
        if (!feeds)
            goto nomem;
        memset(feeds + f->nfeeds, 0, (c->nthreads - f->nfeeds) * sizeof *feeds);
        f->feeds = feeds;
        f->nfeeds = c->nthreads;
    }
    for (size_t i = 0; i < c->nthreads; i++) {
        feed *fd = &f->feeds[i];
        cya_run *rn = &c->runs[i];
        if (!rn->nbatches)
            continue;
        if (fd->wpos) {
            memmove(fd->waiting, fd->waiting + fd->wpos, (fd->nwaiting - fd->wpos) * sizeof *fd->waiting);
            fd->nwaiting -= fd->wpos;
            fd->wpos = 0;
        }
        for (size_t j = 0; j < rn->nbatches; j++)
            if (!CYA_PUSH(fd->waiting, fd->nwaiting, fd->cap_waiting, rn->batches[j]))
                goto nomem;
        rn->nbatches = 0; /* taken: the reader's list of them need not grow with the capture */
        if (c->header.version >= 2)
            qsort(fd->waiting, fd->nwaiting, sizeof *fd->waiting, batch_cmp);
    }
    return 1;
nomem:
    snprintf(errbuf, errlen, "out of memory");
    return 0;
}

/* Decode feed i's next batch onto its queue: 1, 0 when none is ready (an earlier batch is
 * still to come; once the capture is complete a gap is passed), -1 on error. */
static int load_one(cya_follower *f, size_t i, char *errbuf, size_t errlen)
{
    feed *fd = &f->feeds[i];
    int by_sequence = f->c->header.version >= 2;
    while (fd->wpos < fd->nwaiting) {
        const cya_batch_ref *b = &fd->waiting[fd->wpos];
        if (by_sequence && b->seq < fd->next_seq) { /* a repeated batch */
            fd->wpos++;
            continue;
        }
        if (by_sequence && b->seq > fd->next_seq && !f->c->status.complete)
            return 0;
        fd->wpos++;
        fd->next_seq = b->seq + 1;
        if (!b->len)
            continue;
        return load(f, fd, b, f->c->threads[i].id, errbuf, errlen) ? 1 : -1;
    }
    return 0;
}

/* Replay the events held up to `until` (ns), tick by tick: the threads' events of one
 * tick in the order the report's merge gives them (cya_merge_tick). Each thread's batches
 * are decoded as the merge reaches them: memory holds about one batch per thread. */
static int merge(cya_follower *f, uint64_t until, char *errbuf, size_t errlen)
{
    if (!f->slice_events || f->nfeeds > f->nslices) {
        size_t n = f->nfeeds ? f->nfeeds : 1;
        free(f->slice_events);
        free(f->slice_lens);
        free(f->slice_feeds);
        free(f->slice_tids);
        free(f->slice_indices);
        f->slice_events = malloc(n * sizeof *f->slice_events);
        f->slice_lens = malloc(n * sizeof *f->slice_lens);
        f->slice_feeds = malloc(n * sizeof *f->slice_feeds);
        f->slice_tids = malloc(n * sizeof *f->slice_tids);
        f->slice_indices = malloc(n * sizeof *f->slice_indices);
        f->nslices = n;
        if (!f->slice_events || !f->slice_lens || !f->slice_feeds || !f->slice_tids || !f->slice_indices)
            goto nomem;
    }
    for (;;) {
        uint64_t tick = UINT64_MAX;
        for (size_t i = 0; i < f->nfeeds; i++) {
            feed *fd = &f->feeds[i];
            while (fd->head == fd->len) {
                int r = load_one(f, i, errbuf, errlen);
                if (r < 0)
                    return 0;
                if (!r)
                    break;
            }
            if (fd->head < fd->len && fd->q[fd->head].time_ns < tick)
                tick = fd->q[fd->head].time_ns;
        }
        if (tick == UINT64_MAX || tick > until)
            return 1;
        size_t n = 0, total = 0;
        for (size_t i = 0; i < f->nfeeds; i++) {
            feed *fd = &f->feeds[i];
            if (fd->head == fd->len || fd->q[fd->head].time_ns != tick)
                continue;
            while (fd->q[fd->len - 1].time_ns == tick) { /* the tick may go on in its next batch */
                int r = load_one(f, i, errbuf, errlen);
                if (r < 0)
                    return 0;
                if (!r)
                    break;
            }
            size_t end = fd->head;
            while (end < fd->len && fd->q[end].time_ns == tick)
                end++;
            f->slice_events[n] = fd->q + fd->head;
            f->slice_lens[n] = end - fd->head;
            f->slice_tids[n] = f->c->threads[i].tid;
            f->slice_indices[n] = f->c->threads[i].id;
            f->slice_feeds[n++] = i;
            total += end - fd->head;
        }
        if (!cya_grow((void **)&f->tick_events, &f->cap_tick_events, total, sizeof *f->tick_events) ||
            cya_merge_tick(&f->merge_blocks, f->slice_events, f->slice_lens, f->slice_tids, f->slice_indices, n,
                           f->tick_events) == SIZE_MAX)
            goto nomem;
        for (size_t i = 0; i < total; i++)
            if (!replay(f, &f->tick_events[i]))
                goto nomem;
        for (size_t i = 0; i < n; i++)
            f->feeds[f->slice_feeds[i]].head += f->slice_lens[i];
        if (tick > f->replayed_until)
            f->replayed_until = tick;
    }
nomem:
    snprintf(errbuf, errlen, "out of memory while replaying the events");
    return 0;
}

CYA_API cya_follower *cya_follow_open(const char *path, const char *search, int *error, char *errbuf, size_t errlen)
{
    cya_capture *c = cya_capture_follow(path, error, errbuf, errlen);
    if (!c)
        return NULL;
    cya_follower *f = calloc(1, sizeof *f);
    if (f) {
        f->c = c;
        f->symbols = cya_symbolize_search(c, search);
        f->loader = cya_batch_loader_new(c);
        f->mappings = cya_mappings_new();
    }
    if (!f || !f->symbols || !f->loader || !f->mappings) {
        *error = CYA_E_NOMEM;
        snprintf(errbuf, errlen, "out of memory");
        if (f)
            cya_follow_close(f);
        else
            cya_close(c);
        return NULL;
    }
    return f;
}

CYA_API int cya_follow_poll(cya_follower *f, char *errbuf, size_t errlen)
{
    cya_capture *c = f->c;
    uint64_t read_now = 0;
    if (!cya_capture_follow_read(c, &read_now, errbuf, errlen))
        return 0;
    if (!take_batches(f, errbuf, errlen))
        return 0;
    /* the newest time the file shows: a PROGRESS mark, or the last event of a batch read */
    uint64_t newest = c->status.last_progress_ns, pending = 0, settled = c->follow_pos;
    for (size_t i = 0; i < f->nfeeds; i++) {
        const feed *fd = &f->feeds[i];
        for (size_t j = fd->wpos; j < fd->nwaiting; j++)
            if (fd->waiting[j].len && fd->waiting[j].max_time > newest)
                newest = fd->waiting[j].max_time;
        if (fd->len > fd->head && fd->q[fd->len - 1].time_ns > newest)
            newest = fd->q[fd->len - 1].time_ns;
    }
    /* no writer (finished, or killed before its trailer): nothing more will come */
    uint64_t until = c->status.complete || !c->status.live ? UINT64_MAX : newest > HOLD_NS ? newest - HOLD_NS : 0;
    if (!merge(f, until, errbuf, errlen))
        return 0;
    for (size_t i = 0; i < f->nfeeds; i++) {
        const feed *fd = &f->feeds[i];
        pending += fd->len - fd->head;
        for (size_t j = fd->wpos; j < fd->nwaiting; j++) {
            pending += fd->waiting[j].len;
            if (fd->waiting[j].frame_pos < settled)
                settled = fd->waiting[j].frame_pos;
        }
    }
    f->totals.settled_bytes = settled;
    if (!cya_symbols_extend(f->symbols)) {
        snprintf(errbuf, errlen, "out of memory while symbolising");
        return 0;
    }
    for (size_t i = 0; i < f->ncells; i++) {
        cya_follow_cell *cl = &f->cells[i];
        const cell_state *s = &f->cstate[i];
        int unchanged = s->last_change <= f->peak_event;
        cl->peak_bytes = !f->have_peak ? 0 : unchanged ? cl->live_bytes : s->snap_bytes;
        cl->peak_count = !f->have_peak ? 0 : unchanged ? cl->live_count : s->snap_count;
    }
    f->totals.pending = pending;
    f->totals.file_bytes = c->status.file_bytes;
    f->totals.read_bytes = c->follow_pos;
    f->totals.complete = c->status.complete && pending == 0;
    f->totals.live = c->status.live;
    return 1;
}

CYA_API const cya_follow_totals *cya_follow_get_totals(const cya_follower *f) { return &f->totals; }

CYA_API const cya_follow_cell *cya_follow_get_cells(const cya_follower *f, size_t *count)
{
    *count = f->ncells;
    return f->cells;
}

CYA_API const cya_capture *cya_follow_get_capture(const cya_follower *f) { return f->c; }
CYA_API const cya_symbols *cya_follow_get_symbols(const cya_follower *f) { return f->symbols; }

CYA_API void cya_follow_close(cya_follower *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nfeeds; i++) {
        free(f->feeds[i].waiting);
        free(f->feeds[i].q);
    }
    free(f->feeds);
    free(f->cells);
    free(f->cstate);
    cya_map_free(&f->cell_index);
    cya_map_free(&f->blocks);
    free(f->heap);
    free(f->heap_spare);
    cya_mappings_free(f->mappings);
    free(f->maps);
    free(f->map_spare);
    cya_map_free(&f->merge_blocks);
    free(f->tick_events);
    free(f->slice_events);
    free(f->slice_lens);
    free(f->slice_feeds);
    free(f->slice_tids);
    free(f->slice_indices);
    cya_batch_loader_free(f->loader);
    cya_symbols_close(f->symbols);
    cya_close(f->c);
    free(f);
}
