/* capture_merge.c: one order for the events of all threads.
 *
 * Owns: putting each thread's batches in their recorded order (dropping a batch read
 * twice, finding the sequence numbers and event ordinals that are missing), then merging
 * the threads into c->events. Threads are merged by time; events of several threads in one tick (the
 * ticking clock's 1 ms by default, FORMAT.md) are interleaved in proportion to their
 * position in the tick, as if each thread allocated at an even pace through it, and then
 * repaired so that every address keeps a possible history: an allocation waits for
 * another thread's free of that address in the same tick, and a free waits for the
 * allocation it frees. The tracer guarantees that such a free's time is never later than
 * that allocation's (trace_clock.c), so the repair never has to look beyond one tick.
 *
 * A free of an address never seen before is either of a block allocated before tracing
 * started, or of a block another thread allocates in this same tick (a hand-off): when
 * another thread's slice of the tick allocates that address, the free waits for it.
 */
#include "capture_internal.h"

enum { BLOCK_DEAD = 0, BLOCK_LIVE = 1 }; /* values of the block map; absent: never seen */

static int batch_cmp(const void *a, const void *b)
{
    const cya_batch_ref *x = a, *y = b;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return x->start < y->start ? -1 : x->start > y->start;
}

int cya_order_run(cya_run *rn, int by_sequence, int ordinals, cya_run_order *found)
{
    memset(found, 0, sizeof *found);
    int sorted = 1;
    for (size_t i = 1; i < rn->nbatches && sorted; i++)
        sorted = by_sequence ? rn->batches[i - 1].seq < rn->batches[i].seq : rn->batches[i - 1].seq <= rn->batches[i].seq;
    int rebuild = 0;
    if (!sorted) {
        /* by sequence, then file order (start): a stable order even for a hostile file */
        qsort(rn->batches, rn->nbatches, sizeof *rn->batches, batch_cmp);
        rebuild = 1;
    }
    if (by_sequence) {
        uint64_t next_seq = 0, next_first = 0;
        for (size_t i = 0; i < rn->nbatches; i++) {
            cya_batch_ref *b = &rn->batches[i];
            if (i > 0 && b->seq == rn->batches[i - 1].seq) { /* read again: keep the first copy */
                found->duplicates++;
                found->duplicate_events += b->len;
                b->start = SIZE_MAX; /* dropped below */
                rebuild = 1;
                continue;
            }
            if (b->seq > next_seq) {
                if (!found->gaps) {
                    found->first_gap_from = next_seq;
                    found->first_gap_to = b->seq - 1;
                }
                found->gaps++;
                found->missing_batches += b->seq - next_seq;
            }
            if (ordinals && b->first > next_first)
                found->missing_events += b->first - next_first;
            next_seq = b->seq + 1;
            next_first = b->first + b->len;
        }
        if (ordinals && rn->progress > next_first) {
            found->tail_events = rn->progress - next_first;
            found->missing_events += found->tail_events;
        }
    }
    if (rebuild) {
        cya_event *ordered = malloc((rn->len ? rn->len : 1) * sizeof *ordered);
        if (!ordered)
            return 0;
        size_t out = 0;
        for (size_t i = 0; i < rn->nbatches; i++) {
            if (rn->batches[i].start == SIZE_MAX)
                continue;
            memcpy(ordered + out, rn->events + rn->batches[i].start, rn->batches[i].len * sizeof *ordered);
            out += rn->batches[i].len;
        }
        free(rn->events);
        rn->events = ordered;
        rn->len = out;
        rn->cap = out ? out : 1;
    }
    for (size_t i = 1; i < rn->len; i++)
        if (rn->events[i].time_ns < rn->events[i - 1].time_ns)
            rn->events[i].time_ns = rn->events[i - 1].time_ns;
    return 1;
}

/* A run's events in the current tick. */
typedef struct slice {
    const cya_event *events;
    size_t pos, len;
} slice;

/* The allocations of one tick, by block key: the slice making them (+1), or MANY. */
typedef struct window {
    cya_map allocs;
    int built;
} window;

#define MANY UINT32_MAX

static int window_build(window *w, const slice *s, size_t n)
{
    w->built = 1;
    for (size_t i = 0; i < n; i++)
        for (size_t j = s[i].pos; j < s[i].len; j++) {
            const cya_event *e = &s[i].events[j];
            if (e->kind >= CYA_FREE || !e->address)
                continue;
            uint64_t key = cya_block_key(e->kind, e->address);
            uint32_t *by = cya_map_get(&w->allocs, key);
            if (by && *by != i + 1)
                *by = MANY;
            else if (!by && !cya_map_put(&w->allocs, key, (uint32_t)(i + 1)))
                return 0;
        }
    return 1;
}

/* Can event e of slice `from` come next, given what is live? 1 yes, 0 no, -1 out of memory. */
static int ready(const cya_map *blocks, window *w, const slice *s, size_t n, size_t from, const cya_event *e)
{
    if (!e->address)
        return 1;
    uint64_t key = cya_block_key(e->kind, e->address);
    const uint32_t *state = cya_map_get(blocks, key);
    if (e->kind < CYA_FREE)
        return !state || *state != BLOCK_LIVE;
    if (state)
        return *state != BLOCK_DEAD;
    /* never seen: wait if another slice of this tick allocates it */
    if (!w->built && !window_build(w, s, n))
        return -1;
    const uint32_t *by = cya_map_get(&w->allocs, key);
    return !by || *by == from + 1;
}

static int apply(cya_map *blocks, const cya_event *e)
{
    if (!e->address)
        return 1;
    return cya_map_put(blocks, cya_block_key(e->kind, e->address), e->kind < CYA_FREE ? BLOCK_LIVE : BLOCK_DEAD);
}

/* Interleave the slices of one tick into out; returns the new out position, or
 * SIZE_MAX when out of memory. */
static size_t interleave(cya_map *blocks, slice *s, size_t n, cya_event *out, size_t o)
{
    size_t active = n;
    window w = {{0}, 0};
    while (active > 0) {
        size_t best = SIZE_MAX, best_ready = SIZE_MAX;
        double best_at = 2, best_ready_at = 2;
        for (size_t i = 0; i < n; i++) {
            if (s[i].pos == s[i].len)
                continue;
            double at = ((double)s[i].pos + 0.5) / (double)s[i].len; /* place in the tick */
            if (at < best_at)
                best = i, best_at = at;
            if (at < best_ready_at) {
                int r = ready(blocks, &w, s, n, i, &s[i].events[s[i].pos]);
                if (r < 0) {
                    cya_map_free(&w.allocs);
                    return SIZE_MAX;
                }
                if (r)
                    best_ready = i, best_ready_at = at;
            }
        }
        size_t pick = best_ready != SIZE_MAX ? best_ready : best; /* none ready: an untraced gap */
        const cya_event *e = &s[pick].events[s[pick].pos++];
        if (!apply(blocks, e)) {
            cya_map_free(&w.allocs);
            return SIZE_MAX;
        }
        out[o++] = *e;
        if (s[pick].pos == s[pick].len)
            active--;
    }
    cya_map_free(&w.allocs);
    return o;
}

/* Binary min-heap of run indices keyed by (next event time, run index). */
typedef struct heap {
    size_t *items, n;
    const cya_run *runs;
    const size_t *pos;
} heap;

static int heap_less(const heap *h, size_t x, size_t y)
{
    uint64_t tx = h->runs[x].events[h->pos[x]].time_ns, ty = h->runs[y].events[h->pos[y]].time_ns;
    return tx < ty || (tx == ty && x < y);
}

static void heap_push(heap *h, size_t run)
{
    size_t j = h->n++;
    h->items[j] = run;
    while (j && heap_less(h, h->items[j], h->items[(j - 1) / 2])) {
        size_t t = h->items[j];
        h->items[j] = h->items[(j - 1) / 2];
        h->items[(j - 1) / 2] = t;
        j = (j - 1) / 2;
    }
}

static size_t heap_pop(heap *h)
{
    size_t top = h->items[0];
    h->items[0] = h->items[--h->n];
    size_t j = 0;
    for (;;) {
        size_t l = 2 * j + 1, m = j;
        if (l < h->n && heap_less(h, h->items[l], h->items[m]))
            m = l;
        if (l + 1 < h->n && heap_less(h, h->items[l + 1], h->items[m]))
            m = l + 1;
        if (m == j)
            break;
        size_t t = h->items[j];
        h->items[j] = h->items[m];
        h->items[m] = t;
        j = m;
    }
    return top;
}

int cya_merge_runs(cya_capture *c, cya_run *runs)
{
    size_t k = c->nthreads, total = 0, nonempty = 0, only = 0;
    for (size_t i = 0; i < k; i++) {
        total += runs[i].len;
        c->threads[i].nevents = runs[i].len;
        if (runs[i].len)
            nonempty++, only = i;
    }
    c->nevents = total;
    if (nonempty <= 1) { /* the common case: no copy */
        c->events = k ? runs[only].events : NULL;
        if (k)
            runs[only].events = NULL;
        return 1;
    }
    c->events = malloc(total * sizeof *c->events);
    size_t *pos = calloc(k, sizeof *pos);
    heap h = {malloc(k * sizeof *h.items), 0, runs, pos};
    slice *slices = malloc(k * sizeof *slices);
    size_t *members = malloc(k * sizeof *members);
    cya_map blocks = {0};
    int ok = c->events && pos && h.items && slices && members;
    for (size_t i = 0; ok && i < k; i++)
        if (runs[i].len)
            heap_push(&h, i);
    size_t out = 0;
    while (ok && h.n) {
        /* every run whose next event is in the earliest tick */
        uint64_t tick = runs[h.items[0]].events[pos[h.items[0]]].time_ns;
        size_t n = 0;
        while (h.n && runs[h.items[0]].events[pos[h.items[0]]].time_ns == tick) {
            size_t r = heap_pop(&h);
            size_t end = pos[r];
            while (end < runs[r].len && runs[r].events[end].time_ns == tick)
                end++;
            slices[n] = (slice){runs[r].events + pos[r], 0, end - pos[r]};
            members[n++] = r;
            pos[r] = end;
        }
        if (n == 1) {
            for (size_t i = 0; ok && i < slices[0].len; i++) {
                ok = apply(&blocks, &slices[0].events[i]);
                c->events[out++] = slices[0].events[i];
            }
        } else {
            out = interleave(&blocks, slices, n, c->events, out);
            ok = out != SIZE_MAX;
        }
        for (size_t i = 0; ok && i < n; i++)
            if (pos[members[i]] < runs[members[i]].len)
                heap_push(&h, members[i]);
    }
    cya_map_free(&blocks);
    free(pos);
    free(h.items);
    free(slices);
    free(members);
    for (size_t i = 0; i < k; i++) {
        free(runs[i].events);
        runs[i].events = NULL;
    }
    return ok;
}
