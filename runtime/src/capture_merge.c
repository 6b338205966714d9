/* capture_merge.c: one order for the events of all threads, streamed.
 *
 * Owns: putting each thread's batches in their recorded order (dropping a batch read
 * twice, finding the sequence numbers and event ordinals that are missing), then merging
 * the threads' events as a stream (cya_merge_stream): each thread's batches are decoded
 * again one at a time, in the thread's order, wherever they lie in the file, so a batch
 * written late (out of time order) is still merged at its place and memory holds one
 * batch per thread, never the whole capture. Threads are merged by time; events of several threads in one tick (the
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
 *
 * An allocation that its thread keeps past the end of the tick must not shut out another
 * thread that still allocates (and frees) the same block in this tick: glibc gives an
 * ended thread's arena, and the block it reused again and again, to the next thread
 * started, often within one tick. Such an allocation waits while another slice's next event
 * about the block is an allocation and none's is a free (which could release it).
 */
#include <stdio.h>

#include "capture_internal.h"

enum { BLOCK_DEAD = 0, BLOCK_LIVE = 1 }; /* values of the block map; absent: never seen */

static int batch_cmp(const void *a, const void *b)
{
    const cya_batch_ref *x = a, *y = b;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return x->file_order < y->file_order ? -1 : x->file_order > y->file_order;
}

int cya_order_run(cya_run *rn, int by_sequence, int ordinals, cya_run_order *found)
{
    memset(found, 0, sizeof *found);
    int sorted = 1;
    for (size_t i = 1; i < rn->nbatches && sorted; i++)
        sorted = by_sequence ? rn->batches[i - 1].seq < rn->batches[i].seq : rn->batches[i - 1].seq <= rn->batches[i].seq;
    if (!sorted) /* by sequence, then file order: a stable order even for a hostile file */
        qsort(rn->batches, rn->nbatches, sizeof *rn->batches, batch_cmp);
    if (by_sequence) {
        uint64_t next_seq = 0, next_first = 0;
        size_t kept = 0;
        for (size_t i = 0; i < rn->nbatches; i++) {
            cya_batch_ref b = rn->batches[i];
            if (kept > 0 && b.seq == rn->batches[kept - 1].seq) { /* read again: keep the first copy */
                found->duplicates++;
                found->duplicate_events += b.len;
                rn->len -= b.len;
                continue;
            }
            if (b.seq > next_seq) {
                if (!found->gaps) {
                    found->first_gap_from = next_seq;
                    found->first_gap_to = b.seq - 1;
                }
                found->gaps++;
                found->missing_batches += b.seq - next_seq;
            }
            if (ordinals && b.first > next_first)
                found->missing_events += b.first - next_first;
            next_seq = b.seq + 1;
            next_first = b.first + b.len;
            rn->batches[kept++] = b;
        }
        rn->nbatches = kept;
        if (ordinals && rn->progress > next_first) {
            found->tail_events = rn->progress - next_first;
            found->missing_events += found->tail_events;
        }
    }
    return 1;
}

/* A run's events in the current tick. */
typedef struct slice {
    const cya_event *events;
    size_t pos, len;
} slice;

/* The blocks of one tick's remaining events, by block key: the slice allocating them (+1)
 * or MANY, and (built when a block is allocated by MANY) which slices have events about
 * them (bit slice % 32). */
typedef struct window {
    cya_map allocs;
    cya_map touched;
    int built, touched_built;
} window;

#define MANY UINT32_MAX

static void window_free(window *w)
{
    cya_map_free(&w->allocs);
    cya_map_free(&w->touched);
}

static int window_build(window *w, const slice *s, size_t n, int touched)
{
    if (touched)
        w->touched_built = 1;
    else
        w->built = 1;
    for (size_t i = 0; i < n; i++)
        for (size_t j = s[i].pos; j < s[i].len; j++) {
            const cya_event *e = &s[i].events[j];
            if (!e->address || (!touched && e->kind >= CYA_FREE))
                continue;
            uint64_t key = cya_block_key(e->kind, e->address);
            if (touched) {
                uint32_t bit = 1u << (i % 32), *mask = cya_map_get(&w->touched, key);
                if (mask)
                    *mask |= bit;
                else if (!cya_map_put(&w->touched, key, bit))
                    return 0;
                continue;
            }
            uint32_t *by = cya_map_get(&w->allocs, key);
            if (by && *by != i + 1)
                *by = MANY;
            else if (!by && !cya_map_put(&w->allocs, key, (uint32_t)(i + 1)))
                return 0;
        }
    return 1;
}

/* The index of the slice's first event about block `key` from `from` on, or SIZE_MAX. */
static size_t next_about(const slice *t, uint64_t key, size_t from)
{
    for (size_t j = from; j < t->len; j++)
        if (t->events[j].address && cya_block_key(t->events[j].kind, t->events[j].address) == key)
            return j;
    return SIZE_MAX;
}

/* Would the allocation of `key` at slice `from`'s position shut out another slice? Only
 * when other slices allocate that block in this tick too, and this one does not free it
 * again in the tick: then yes while another slice's next event about it is an allocation
 * and no slice's next one is a free. */
static int shuts_out(window *w, const slice *s, size_t n, size_t from, uint64_t key)
{
    const uint32_t *by = cya_map_get(&w->allocs, key);
    if (!by || *by != MANY)
        return 0;
    if (!w->touched_built && !window_build(w, s, n, 1))
        return -1;
    size_t own = next_about(&s[from], key, s[from].pos + 1);
    if (own != SIZE_MAX && s[from].events[own].kind >= CYA_FREE)
        return 0;
    const uint32_t *mask = cya_map_get(&w->touched, key);
    int waiting = 0;
    for (size_t t = 0; mask && t < n; t++) {
        if (t == from || !(*mask & 1u << (t % 32)))
            continue;
        size_t j = next_about(&s[t], key, s[t].pos);
        if (j == SIZE_MAX)
            continue;
        if (s[t].events[j].kind >= CYA_FREE)
            return 0;
        waiting = 1;
    }
    return waiting;
}

/* Can event e of slice `from` come next, given what is live? 1 yes, 0 no, -1 out of memory. */
static int ready(const cya_map *blocks, window *w, const slice *s, size_t n, size_t from, const cya_event *e)
{
    if (!e->address)
        return 1;
    uint64_t key = cya_block_key(e->kind, e->address);
    const uint32_t *state = cya_map_get(blocks, key);
    if (e->kind >= CYA_FREE && state)
        return *state != BLOCK_DEAD;
    if (e->kind < CYA_FREE && state && *state == BLOCK_LIVE)
        return 0;
    if (!w->built && !window_build(w, s, n, 0))
        return -1;
    if (e->kind < CYA_FREE) {
        int shut = shuts_out(w, s, n, from, key);
        return shut < 0 ? -1 : !shut;
    }
    /* never seen: wait if another slice of this tick allocates it */
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
    window w = {{0}, {0}, 0, 0};
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
                    window_free(&w);
                    return SIZE_MAX;
                }
                if (r)
                    best_ready = i, best_ready_at = at;
            }
        }
        size_t pick = best_ready != SIZE_MAX ? best_ready : best; /* none ready: an untraced gap */
        const cya_event *e = &s[pick].events[s[pick].pos++];
        if (!apply(blocks, e)) {
            window_free(&w);
            return SIZE_MAX;
        }
        out[o++] = *e;
        if (s[pick].pos == s[pick].len)
            active--;
    }
    window_free(&w);
    return o;
}

size_t cya_merge_tick(cya_map *blocks, const cya_event *const *events, const size_t *lens, size_t n, cya_event *out)
{
    if (n == 1) {
        for (size_t i = 0; i < lens[0]; i++)
            if (!apply(blocks, &events[0][i]))
                return SIZE_MAX;
        memcpy(out, events[0], lens[0] * sizeof *out);
        return lens[0];
    }
    slice *s = malloc((n ? n : 1) * sizeof *s);
    if (!s)
        return SIZE_MAX;
    for (size_t i = 0; i < n; i++)
        s[i] = (slice){events[i], 0, lens[i]};
    size_t o = interleave(blocks, s, n, out, 0);
    free(s);
    return o;
}

/* One thread's events being streamed: the batches decoded and not yet merged. */
typedef struct run_cursor {
    const cya_run *run;
    uint64_t thread_id;
    cya_event *events;
    size_t pos, len, cap;
    size_t next_batch;
    uint64_t last_time; /* times are made non-decreasing along the thread */
} run_cursor;

typedef struct stream {
    const cya_capture *c;
    cya_batch_loader *loader;
    char *errbuf;
    size_t errlen;
} stream;

/* Decode the run's next batch with events onto its buffer: 1, 0 when none is left, -1 on error. */
static int load_next(stream *st, run_cursor *rc)
{
    while (rc->next_batch < rc->run->nbatches) {
        const cya_batch_ref *b = &rc->run->batches[rc->next_batch++];
        if (!b->len)
            continue;
        size_t from = rc->len;
        if (!cya_batch_load(st->loader, b, rc->thread_id, &rc->events, &rc->len, &rc->cap, st->errbuf, st->errlen))
            return -1;
        uint64_t t = rc->last_time;
        for (size_t i = from; i < rc->len; i++) {
            if (rc->events[i].time_ns < t)
                rc->events[i].time_ns = t;
            t = rc->events[i].time_ns;
        }
        rc->last_time = t;
        return 1;
    }
    return 0;
}

/* Drop the events merged already from the buffer's front. */
static void compact(run_cursor *rc)
{
    if (rc->pos == 0)
        return;
    memmove(rc->events, rc->events + rc->pos, (rc->len - rc->pos) * sizeof *rc->events);
    rc->len -= rc->pos;
    rc->pos = 0;
}

/* Is there a next event (decoding the next batch if needed)? 1, 0, -1 on error. */
static int has_next(stream *st, run_cursor *rc)
{
    if (rc->pos < rc->len)
        return 1;
    rc->pos = rc->len = 0;
    return load_next(st, rc);
}

/* Make the buffer hold every event of the run at time `tick` from pos on: 1, or -1. */
static int fill_tick(stream *st, run_cursor *rc, uint64_t tick)
{
    compact(rc);
    while (rc->len && rc->events[rc->len - 1].time_ns == tick) {
        int r = load_next(st, rc);
        if (r <= 0)
            return r < 0 ? -1 : 1;
    }
    return 1;
}

/* Binary min-heap of run indices keyed by (next event time, run index). */
typedef struct heap {
    size_t *items, n;
    const run_cursor *runs;
} heap;

static int heap_less(const heap *h, size_t x, size_t y)
{
    uint64_t tx = h->runs[x].events[h->runs[x].pos].time_ns, ty = h->runs[y].events[h->runs[y].pos].time_ns;
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

/* Only one thread has events: its batches in order, as they are. */
static int stream_one(stream *st, run_cursor *rc, cya_emit_fn emit, void *ctx)
{
    for (;;) {
        rc->pos = rc->len = 0;
        int r = load_next(st, rc);
        if (r <= 0)
            return r == 0;
        if (!emit(ctx, rc->events, rc->len)) {
            snprintf(st->errbuf, st->errlen, "%s", "");
            return 0;
        }
    }
}

int cya_merge_stream(const cya_capture *c, cya_emit_fn emit, void *ctx, char *errbuf, size_t errlen)
{
    size_t k = c->nthreads, nonempty = 0, only = 0;
    for (size_t i = 0; i < k; i++)
        if (c->runs[i].len)
            nonempty++, only = i;
    if (errlen)
        errbuf[0] = '\0';
    if (!nonempty)
        return 1;
    stream st = {c, cya_batch_loader_new(c), errbuf, errlen};
    run_cursor *rcs = calloc(k, sizeof *rcs);
    heap h = {malloc(k * sizeof *h.items), 0, rcs};
    slice *slices = malloc(k * sizeof *slices);
    size_t *members = malloc(k * sizeof *members);
    cya_event *out = NULL;
    size_t out_cap = 0;
    cya_map blocks = {0};
    int ok = st.loader && rcs && h.items && slices && members;
    if (!ok)
        snprintf(errbuf, errlen, "out of memory");
    for (size_t i = 0; ok && i < k; i++)
        rcs[i] = (run_cursor){&c->runs[i], c->threads[i].id, NULL, 0, 0, 0, 0, 0};
    if (ok && nonempty == 1) { /* the common case: no merge */
        ok = stream_one(&st, &rcs[only], emit, ctx);
        goto done;
    }
    for (size_t i = 0; ok && i < k; i++) {
        int r = has_next(&st, &rcs[i]);
        if (r < 0)
            ok = 0;
        else if (r)
            heap_push(&h, i);
    }
    while (ok && h.n) {
        /* every run whose next event is in the earliest tick */
        uint64_t tick = rcs[h.items[0]].events[rcs[h.items[0]].pos].time_ns;
        size_t n = 0, total = 0;
        while (ok && h.n && rcs[h.items[0]].events[rcs[h.items[0]].pos].time_ns == tick) {
            size_t r = heap_pop(&h);
            run_cursor *rc = &rcs[r];
            if (fill_tick(&st, rc, tick) < 0) {
                ok = 0;
                break;
            }
            size_t end = rc->pos;
            while (end < rc->len && rc->events[end].time_ns == tick)
                end++;
            slices[n] = (slice){rc->events + rc->pos, 0, end - rc->pos};
            total += end - rc->pos;
            members[n++] = r;
        }
        if (!ok)
            break;
        if (n == 1) {
            for (size_t i = 0; ok && i < slices[0].len; i++)
                ok = apply(&blocks, &slices[0].events[i]);
            if (!ok)
                snprintf(errbuf, errlen, "out of memory while merging the threads");
            else if (!emit(ctx, slices[0].events, slices[0].len))
                ok = 0;
        } else {
            if (!cya_grow((void **)&out, &out_cap, total, sizeof *out) ||
                interleave(&blocks, slices, n, out, 0) == SIZE_MAX) {
                snprintf(errbuf, errlen, "out of memory while merging the threads");
                ok = 0;
            } else if (!emit(ctx, out, total)) {
                ok = 0;
            }
        }
        for (size_t i = 0; ok && i < n; i++) {
            run_cursor *rc = &rcs[members[i]];
            rc->pos += slices[i].len;
            int r = has_next(&st, rc);
            if (r < 0)
                ok = 0;
            else if (r)
                heap_push(&h, members[i]);
        }
    }
done:
    cya_map_free(&blocks);
    if (rcs)
        for (size_t i = 0; i < k; i++)
            free(rcs[i].events);
    free(rcs);
    free(h.items);
    free(slices);
    free(members);
    free(out);
    cya_batch_loader_free(st.loader);
    return ok;
}
