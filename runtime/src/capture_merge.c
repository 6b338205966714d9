/* capture_merge.c: one order for the events of all threads, streamed.
 *
 * Owns: putting each thread's batches in their recorded order (dropping a batch read
 * twice, finding the sequence numbers and event ordinals that are missing), then merging
 * the threads' events as a stream (cya_merge_stream): each thread's batches are decoded
 * again one at a time, in the thread's order, wherever they lie in the file, so a batch
 * written late (out of time order) is still merged at its place and memory holds one
 * batch per thread, never the whole capture. Threads are merged by time.
 *
 * Events of several threads in one tick (the ticking clock's 1 ms by default, FORMAT.md
 * §4) are put in an order that keeps each thread's order and gives every block a possible
 * history (the slices of one OS thread that the tracer recorded under several indices are
 * first joined, in index order: join_same_thread): no allocation of a live block (one whose free was not placed yet). A free of a
 * dead or never seen block is possible: its allocation was not recorded. Besides blocks
 * allocated before tracing started, the dynamic linker allocates threads' dynamic TLS
 * blocks with the C library's malloc directly (no hooked call), and the C library frees
 * them through its PLT (hooked) when pthread_create reuses a cached thread stack. The
 * tracer makes such an order always exist (a free is timed no later than any reuse of its
 * block), so one is looked for within the tick alone:
 *  - first the even interleave (each thread's events placed in proportion to their
 *    position in its slice of the tick, as if it allocated at an even pace), taking at
 *    each step the earliest event that is ready: an allocation of a block that is not
 *    live, a free of a live or never seen one. A free of a block never seen waits while
 *    another slice of the tick allocates that block (a hand-over, rather than a block
 *    whose allocation was not recorded). This nearly always places every event;
 *  - when it gets stuck (every slice's next event waits), the tick is ordered by a search
 *    (order_tick): greedy choices can dead-end where an order exists, e.g. two threads
 *    taking two blocks in opposite orders, or two threads on one glibc arena trading three
 *    blocks within the tick. Only events about blocks that several slices touch constrain
 *    the order; the slices sharing blocks form groups, each searched depth first over its
 *    slices' positions with the even interleave's preferences, dead-end states memoised.
 *    A group with no such order is searched again with frees of dead blocks allowed, as
 *    few as its blocks' counts need (frees beyond allocations), then a few more;
 *  - when no order exists (or none is found within the search's budget) the tick keeps
 *    the even interleave and every event placed with its block in the wrong state counts
 *    as a conflict (cya_order_conflicts): never a silent reordering.
 * Memory of a tick: its slices' events, plus the search's maps when it runs.
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

#define MANY UINT32_MAX
#define SHARED 0x80000000u
#define UNKNOWN 2u                      /* a block never seen before the tick (search state) */
/* A search state value: bits 0-1 the block's state, 2-3 its state before the tick, then
 * the frees of it as a dead block placed (DEAD_FREES) and the fewest any order needs
 * (SPARE_INIT: its frees beyond its allocations). */
#define DEAD_FREES 4
#define SPARE_INIT 18
#define MAX_SLACK 3 /* frees of a dead block beyond the fewest, tried one more at a time */
#define SPARE_MAX 0x3fffu
#define BALANCE_ZERO 0x8000000u /* while counting: frees - allocations, offset */
#define STATE_RESET(v) (((v) >> 2 & 3u) | ((v) >> 2 & 3u) << 2 | ((v) >> SPARE_INIT & SPARE_MAX) << SPARE_INIT)
#define SEARCH_BUDGET ((size_t)1 << 20) /* placements the search may try per group of a tick */

/* The place of a slice's event j in the tick, as if its thread went at an even pace. */
static double place(const slice *t, size_t j)
{
    return ((double)j + 0.5) / (double)t->len;
}

static int is_alloc(const cya_event *e)
{
    return e->kind < CYA_FREE;
}

/* The allocations among the slices' events from their positions on, by block key: the
 * slice making them (+1), or MANY. 0 when out of memory. */
static int allocs_build(cya_map *allocs, const slice *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = s[i].pos; j < s[i].len; j++) {
            const cya_event *e = &s[i].events[j];
            if (!e->address || !is_alloc(e))
                continue;
            uint64_t key = cya_block_key(e->kind, e->address);
            uint32_t *by = cya_map_get(allocs, key);
            if (by && *by != i + 1)
                *by = MANY;
            else if (!by && !cya_map_put(allocs, key, (uint32_t)(i + 1)))
                return 0;
        }
    return 1;
}

/* Set the block map's state for event e; `absent` says whether the block was absent before
 * (NULL: not wanted). 0 when out of memory. */
static int apply_noting(cya_map *blocks, const cya_event *e, unsigned char *absent)
{
    if (!e->address)
        return 1;
    uint64_t key = cya_block_key(e->kind, e->address);
    uint32_t *st = cya_map_get(blocks, key), now = is_alloc(e) ? BLOCK_LIVE : BLOCK_DEAD;
    if (absent)
        *absent = !st;
    if (st) {
        *st = now;
        return 1;
    }
    return cya_map_put(blocks, key, now);
}

/* The first try, and nearly always the last: the even interleave, taking at each step the
 * earliest placed event whose block is in the right state (an allocation's dead or never
 * seen, a free's live; a free of a block never seen waits while another slice of the tick
 * allocates it: a block handed over). 1 when every event found its place (out and blocks
 * done), 0 when stuck (blocks and positions as they were), -1 out of memory. */
static int greedy(cya_map *blocks, slice *s, size_t n, cya_event *out, unsigned char *absent)
{
    cya_map allocs = {0};
    int built = 0;
    size_t o = 0;
    for (;;) {
        size_t best = SIZE_MAX;
        double best_at = 2;
        for (size_t i = 0; i < n; i++) {
            if (s[i].pos == s[i].len)
                continue;
            double at = place(&s[i], s[i].pos);
            if (at >= best_at)
                continue;
            const cya_event *e = &s[i].events[s[i].pos];
            if (e->address) {
                uint64_t key = cya_block_key(e->kind, e->address);
                const uint32_t *st = cya_map_get(blocks, key);
                if (st && *st != (is_alloc(e) ? BLOCK_DEAD : BLOCK_LIVE))
                    continue;
                if (!st && !is_alloc(e)) {
                    if (!built && !(built = allocs_build(&allocs, s, n))) {
                        cya_map_free(&allocs);
                        return -1;
                    }
                    const uint32_t *by = cya_map_get(&allocs, key);
                    if (by && *by != i + 1)
                        continue;
                }
            }
            best = i;
            best_at = at;
        }
        if (best == SIZE_MAX)
            break;
        const cya_event *e = &s[best].events[s[best].pos++];
        if (!apply_noting(blocks, e, &absent[o])) {
            cya_map_free(&allocs);
            return -1;
        }
        out[o++] = *e;
    }
    cya_map_free(&allocs);
    int done = 1;
    for (size_t i = 0; i < n; i++)
        done &= s[i].pos == s[i].len;
    if (done)
        return 1;
    while (o-- > 0) { /* undo: each event was placed with its block in the right state */
        const cya_event *e = &out[o];
        if (!e->address)
            continue;
        uint64_t key = cya_block_key(e->kind, e->address);
        if (absent[o])
            cya_map_del(blocks, key);
        else
            *cya_map_get(blocks, key) = is_alloc(e) ? BLOCK_DEAD : BLOCK_LIVE;
    }
    for (size_t i = 0; i < n; i++)
        s[i].pos = 0;
    return 0;
}

/* The search, when the greedy order got stuck. Only the events about blocks that several
 * slices touch in the tick ("shared") constrain the order: another block's state depends
 * on its own thread alone. The slices that share blocks form groups (connected through
 * the blocks they share); each group's shared events are ordered by a depth-first search
 * over the slices' positions, trying the ready events in the greedy's preference (even
 * interleave, a hand-over before a free of an unknown block) and backtracking from dead
 * ends. The blocks' states after any set of positions are a function of those positions
 * and of which unknown blocks were first freed, so a state that dead-ended once (kept by
 * its Zobrist hash) is never searched again: the search is bounded by the product of the
 * group's slices' shared event counts, and by SEARCH_BUDGET. */
typedef struct search {
    slice *s;
    size_t n;
    int frees_of_dead; /* frees of a dead block may be placed (the later tries) */
    uint32_t slack;    /* how many more of them than the fewest a block needs */
    cya_map touch;  /* key -> first slice touching it + 1, | SHARED when another does too */
    cya_map allocs; /* key -> the slice allocating it + 1, or MANY */
    cya_map state;  /* key -> state value (bit layout above DEAD_FREES: state, state before, dead frees) */
    cya_map failed; /* Zobrist hashes of dead-end states */
    size_t *parent; /* union-find of slices over shared blocks */
    size_t *first;  /* slice i's shared events: shared[first[i] .. first[i + 1]) */
    size_t *shared; /* their indices in the slice */
    size_t cap_shared;
    size_t *placed; /* per slice: shared events placed */
    size_t *group;  /* per slice: its group (index in groups), or SIZE_MAX */
    struct group { size_t from, len, cursor; int solved; } *groups;
    uint32_t *order; /* per group, from its `from`: the slices of its shared events in order */
    struct choice { uint32_t slice, rank; uint64_t key; uint32_t was; } *path;
    struct candidate { uint32_t slice; int later; double at; } *cands;
} search;

static size_t root(size_t *parent, size_t i)
{
    while (parent[i] != i)
        i = parent[i] = parent[parent[i]];
    return i;
}

static uint64_t zterm(uint64_t key, uint32_t v)
{
    return (v & 3) == v >> 2 ? 0 : cya_hash64(key * 4 + (v & 3) + 0x9E3779B97F4A7C15ULL);
}

static uint64_t failed_key(uint64_t hash)
{
    return hash == CYA_MAP_EMPTY ? hash ^ 1 : hash;
}

static uint64_t zpos(size_t slice, size_t p)
{
    return p ? cya_hash64(((uint64_t)slice << 40 ^ p) + 0x632BE59BD9B4E019ULL) : 0;
}

static void search_free(search *q)
{
    cya_map_free(&q->touch);
    cya_map_free(&q->allocs);
    cya_map_free(&q->state);
    cya_map_free(&q->failed);
    free(q->parent);
    free(q->first);
    free(q->shared);
    free(q->placed);
    free(q->group);
    free(q->groups);
    free(q->order);
    free(q->path);
    free(q->cands);
}

/* Which blocks are shared, the groups, and each slice's shared events. 0: out of memory. */
static int search_prepare(search *q, const cya_map *blocks, size_t *ngroups)
{
    slice *s = q->s;
    size_t n = q->n, nshared = 0;
    q->parent = malloc(n * sizeof *q->parent);
    q->first = malloc((n + 1) * sizeof *q->first);
    q->placed = calloc(n, sizeof *q->placed);
    q->group = malloc(n * sizeof *q->group);
    q->groups = malloc(n * sizeof *q->groups);
    q->cands = malloc(n * sizeof *q->cands);
    if (!q->parent || !q->first || !q->placed || !q->group || !q->groups || !q->cands)
        return 0;
    for (size_t i = 0; i < n; i++)
        q->parent[i] = i;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < s[i].len; j++) {
            const cya_event *e = &s[i].events[j];
            if (!e->address)
                continue;
            uint64_t key = cya_block_key(e->kind, e->address);
            uint32_t *t = cya_map_get(&q->touch, key);
            if (!t) {
                if (!cya_map_put(&q->touch, key, (uint32_t)(i + 1)))
                    return 0;
            } else if ((*t & ~SHARED) != i + 1) {
                *t |= SHARED;
                q->parent[root(q->parent, (*t & ~SHARED) - 1)] = root(q->parent, i);
            }
        }
    if (!allocs_build(&q->allocs, s, n))
        return 0;
    for (size_t i = 0; i < n; i++) {
        q->first[i] = nshared;
        for (size_t j = 0; j < s[i].len; j++) {
            const cya_event *e = &s[i].events[j];
            if (!e->address)
                continue;
            uint64_t key = cya_block_key(e->kind, e->address);
            if (!(*cya_map_get(&q->touch, key) & SHARED))
                continue;
            if (!CYA_PUSH(q->shared, nshared, q->cap_shared, j))
                return 0;
            uint32_t *v = cya_map_get(&q->state, key);
            if (!v) {
                const uint32_t *b = cya_map_get(blocks, key);
                uint32_t init = b ? *b : UNKNOWN;
                if (!cya_map_put(&q->state, key, init | init << 2 | BALANCE_ZERO << 4))
                    return 0;
                v = cya_map_get(&q->state, key);
            }
            uint32_t balance = *v >> 4; /* frees - allocations, from BALANCE_ZERO */
            if (balance > 0 && balance < 2 * BALANCE_ZERO)
                balance += is_alloc(e) ? -1u : 1u;
            *v = (*v & 15u) | balance << 4;
        }
    }
    /* A block's frees beyond its allocations (and its being live, or never seen, before
     * the tick) can only be frees of allocations that were not recorded: that many frees
     * of a dead block are allowed when no order without them exists. */
    for (size_t k = 0; k < q->state.cap; k++) {
        if (q->state.keys[k] == CYA_MAP_EMPTY)
            continue;
        uint32_t v = q->state.values[k], balance = v >> 4, init = v & 3;
        uint32_t excess = balance > BALANCE_ZERO ? balance - BALANCE_ZERO : 0;
        if (excess > 0 && init != BLOCK_DEAD)
            excess--;
        if (excess > SPARE_MAX)
            excess = SPARE_MAX;
        q->state.values[k] = (v & 15u) | excess << SPARE_INIT;
    }
    q->first[n] = nshared;
    *ngroups = 0;
    for (size_t i = 0; i < n; i++)
        q->group[i] = SIZE_MAX;
    size_t from = 0;
    for (size_t i = 0; i < n; i++) { /* groups numbered by their first slice */
        if (q->first[i + 1] == q->first[i])
            continue;
        size_t r = root(q->parent, i);
        if (q->group[r] == SIZE_MAX) {
            q->group[r] = (*ngroups)++;
            q->groups[q->group[r]] = (struct group){0, 0, 0, 0};
        }
        q->group[i] = q->group[r];
        q->groups[q->group[i]].len += q->first[i + 1] - q->first[i];
    }
    for (size_t g = 0; g < *ngroups; g++) {
        q->groups[g].from = from;
        from += q->groups[g].len;
    }
    q->order = malloc((nshared ? nshared : 1) * sizeof *q->order);
    q->path = malloc((nshared ? nshared : 1) * sizeof *q->path);
    return q->order && q->path;
}

static int cand_before(const struct candidate *a, const struct candidate *b)
{
    if (a->later != b->later)
        return a->later < b->later;
    if (a->at != b->at)
        return a->at < b->at;
    return a->slice < b->slice;
}

/* The ready shared events of group g's slices, best first; their number. */
static size_t candidates(search *q, size_t g)
{
    size_t k = 0;
    for (size_t i = 0; i < q->n; i++) {
        if (q->group[i] != g || q->first[i] + q->placed[i] == q->first[i + 1])
            continue;
        size_t j = q->shared[q->first[i] + q->placed[i]];
        const cya_event *e = &q->s[i].events[j];
        uint64_t key = cya_block_key(e->kind, e->address);
        uint32_t v = *cya_map_get(&q->state, key), st = v & 3;
        if (is_alloc(e) ? st == BLOCK_LIVE
                        : st == BLOCK_DEAD && (v >> DEAD_FREES & SPARE_MAX) >= (q->frees_of_dead ? (v >> SPARE_INIT & SPARE_MAX) + q->slack : 0))
            continue;
        int later = 0;
        if (!is_alloc(e) && st != BLOCK_LIVE) {
            const uint32_t *by = cya_map_get(&q->allocs, key);
            later = by && *by != i + 1;
        }
        struct candidate c = {(uint32_t)i, later, place(&q->s[i], j)};
        size_t at = k++;
        while (at > 0 && cand_before(&c, &q->cands[at - 1])) {
            q->cands[at] = q->cands[at - 1];
            at--;
        }
        q->cands[at] = c;
    }
    return k;
}

/* Order group g's shared events into q->order: 1 found, 0 no order exists (or none found
 * within the budget), -1 out of memory. */
static int search_group(search *q, size_t g)
{
    struct group *gr = &q->groups[g];
    size_t depth = 0, rank = 0, tries = 0;
    uint64_t hash = 0;
    for (;;) {
        if (depth == gr->len) {
            for (size_t d = 0; d < depth; d++)
                q->order[gr->from + d] = q->path[d].slice;
            return 1;
        }
        size_t k = candidates(q, g);
        int moved = 0;
        for (; rank < k; rank++) {
            size_t i = q->cands[rank].slice;
            const cya_event *e = &q->s[i].events[q->shared[q->first[i] + q->placed[i]]];
            uint64_t key = cya_block_key(e->kind, e->address);
            uint32_t *v = cya_map_get(&q->state, key);
            uint32_t now = (*v & ~3u) | (is_alloc(e) ? BLOCK_LIVE : BLOCK_DEAD);
            if (!is_alloc(e) && (*v & 3) == BLOCK_DEAD)
                now += 1u << DEAD_FREES; /* a free of an allocation not recorded */
            uint64_t next = hash ^ zpos(i, q->placed[i]) ^ zpos(i, q->placed[i] + 1) ^ zterm(key, *v) ^ zterm(key, now);
            if (cya_map_get(&q->failed, failed_key(next)))
                continue;
            if (++tries > SEARCH_BUDGET)
                return 0;
            q->path[depth++] = (struct choice){(uint32_t)i, (uint32_t)rank, key, *v};
            *v = now;
            q->placed[i]++;
            hash = next;
            rank = 0;
            moved = 1;
            break;
        }
        if (moved)
            continue;
        /* a dead end: remember it, and take back the last step */
        if (!cya_map_put(&q->failed, failed_key(hash), 1))
            return -1;
        if (depth == 0)
            return 0;
        struct choice c = q->path[--depth];
        uint32_t *v = cya_map_get(&q->state, c.key);
        hash ^= zpos(c.slice, q->placed[c.slice]) ^ zpos(c.slice, q->placed[c.slice] - 1) ^ zterm(c.key, *v) ^
                zterm(c.key, c.was);
        *v = c.was;
        q->placed[c.slice]--;
        rank = c.rank + 1;
    }
}

/* Place every event of the tick after the search: each group's shared events in the order
 * found, the other events of each slice around them by the even interleave. A group with
 * no order takes the greedy's (an event whose block is in the wrong state goes only when
 * nothing else can), and each event so placed counts as a conflict. Returns the events
 * placed, or SIZE_MAX when out of memory. */
static size_t place_searched(search *q, cya_map *blocks, cya_event *out, uint64_t *conflicts)
{
    slice *s = q->s;
    size_t o = 0;
    for (size_t i = 0; i < q->n; i++)
        q->placed[i] = 0;
    for (;;) {
        size_t best = SIZE_MAX, forced = SIZE_MAX;
        double best_at = 2, forced_at = 2;
        for (size_t i = 0; i < q->n; i++) {
            if (s[i].pos == s[i].len)
                continue;
            double at = place(&s[i], s[i].pos);
            if (at >= best_at && at >= forced_at)
                continue;
            int ok = 1;
            if (q->first[i] + q->placed[i] < q->first[i + 1] && q->shared[q->first[i] + q->placed[i]] == s[i].pos) {
                const struct group *gr = &q->groups[q->group[i]];
                if (gr->solved) {
                    ok = q->order[gr->from + gr->cursor] == i;
                } else {
                    const cya_event *e = &s[i].events[s[i].pos];
                    const uint32_t *st = cya_map_get(blocks, cya_block_key(e->kind, e->address));
                    ok = !is_alloc(e) || !st || *st == BLOCK_DEAD;
                }
            }
            if (ok && at < best_at)
                best = i, best_at = at;
            else if (!ok && at < forced_at)
                forced = i, forced_at = at;
        }
        if (best == SIZE_MAX && forced == SIZE_MAX)
            return o;
        size_t pick = best;
        if (pick == SIZE_MAX) { /* only a group without an order is left, every one stuck */
            pick = forced;
            (*conflicts)++;
        }
        if (q->first[pick] + q->placed[pick] < q->first[pick + 1] && q->shared[q->first[pick] + q->placed[pick]] == s[pick].pos) {
            q->placed[pick]++;
            q->groups[q->group[pick]].cursor++;
        }
        const cya_event *e = &s[pick].events[s[pick].pos++];
        if (!apply_noting(blocks, e, NULL))
            return SIZE_MAX;
        out[o++] = *e;
    }
}

/* One slice of a tick before joining: its OS thread and the tracer's index of it. */
typedef struct slice_owner {
    uint64_t tid, index;
    size_t at; /* its position among the tick's slices */
} slice_owner;

static int owner_cmp(const void *a, const void *b)
{
    const slice_owner *x = a, *y = b;
    if (x->tid != y->tid)
        return x->tid < y->tid ? -1 : 1;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* Join the slices of one OS thread into one slice, their events in the order of the
 * tracer's indices. The tracer gives a thread a new index when the thread records again
 * after its state ended (allocations and frees after the thread-exit destructors ran), and
 * a thread id is reused only after its thread ended: so a lower index of one tid recorded
 * all its events first. Kept apart, such slices would let the tick's order put a thread's
 * later events before its earlier ones, and multiply the orders the search must try.
 * `tids[i]` is slice i's OS thread id (0: unknown, never joined), `indices[i]` its tracer
 * index. Joined events are copied to *scratch (grown as needed; room for every event of
 * the tick). Returns the number of slices left (the joined ones where their first member
 * was), or SIZE_MAX when out of memory. */
static size_t join_same_thread(slice *s, size_t n, const uint64_t *tids, const uint64_t *indices,
                               cya_event **scratch, size_t *scratch_cap)
{
    size_t with_tid = 0;
    for (size_t i = 0; i < n; i++)
        with_tid += tids[i] != 0;
    if (with_tid < 2)
        return n;
    slice_owner *own = malloc(n * sizeof *own);
    size_t *group_of = malloc(n * sizeof *group_of); /* slice -> first slice of its group */
    if (!own || !group_of) {
        free(own);
        free(group_of);
        return SIZE_MAX;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        own[i] = (slice_owner){tids[i], indices[i], i};
        group_of[i] = i;
        total += s[i].len;
    }
    qsort(own, n, sizeof *own, owner_cmp);
    int any = 0;
    for (size_t a = 0; a < n;) {
        size_t b = a + 1;
        while (b < n && own[a].tid && own[b].tid == own[a].tid)
            b++;
        if (b - a > 1) {
            size_t first = own[a].at;
            for (size_t k = a; k < b; k++)
                if (own[k].at < first)
                    first = own[k].at;
            for (size_t k = a; k < b; k++)
                group_of[own[k].at] = first;
            any = 1;
        }
        a = b;
    }
    if (!any) {
        free(own);
        free(group_of);
        return n;
    }
    if (!cya_grow((void **)scratch, scratch_cap, total, sizeof **scratch)) {
        free(own);
        free(group_of);
        return SIZE_MAX;
    }
    /* copy each joined group's events, in index order (own is sorted by tid, index) */
    size_t used = 0;
    slice *joined = malloc(n * sizeof *joined);
    if (!joined) {
        free(own);
        free(group_of);
        return SIZE_MAX;
    }
    for (size_t i = 0; i < n; i++)
        joined[i] = s[i];
    for (size_t a = 0; a < n;) {
        size_t b = a + 1;
        while (b < n && own[a].tid && own[b].tid == own[a].tid)
            b++;
        if (b - a > 1) {
            size_t first = group_of[own[a].at], from = used;
            for (size_t k = a; k < b; k++) {
                const slice *m = &s[own[k].at];
                memcpy(*scratch + used, m->events + m->pos, (m->len - m->pos) * sizeof **scratch);
                used += m->len - m->pos;
            }
            joined[first] = (slice){*scratch + from, 0, used - from};
        }
        a = b;
    }
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (group_of[i] == i)
            s[kept++] = joined[i];
    free(joined);
    free(own);
    free(group_of);
    return kept;
}

/* What ordering a tick found. */
typedef struct tick_report {
    uint64_t conflicts;        /* events placed with their block in the wrong state */
    uint64_t first_conflict_ns; /* the tick of the first */
} tick_report;

/* Interleave the slices of one tick into out (room for all their events); `absent` has
 * room for one byte an event. Returns the events placed, or SIZE_MAX when out of memory. */
static size_t order_tick(cya_map *blocks, slice *s, size_t n, cya_event *out, unsigned char *absent, tick_report *rep)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += s[i].len;
    int r = greedy(blocks, s, n, out, absent);
    if (r != 0)
        return r < 0 ? SIZE_MAX : total;
    search q;
    memset(&q, 0, sizeof q);
    q.s = s;
    q.n = n;
    size_t ngroups = 0, o = SIZE_MAX;
    if (!search_prepare(&q, blocks, &ngroups))
        goto done;
    /* First with every free of a live block (or of one never seen). For the groups where
     * no such order exists, frees of dead blocks are allowed (allocations the tracer could
     * not see): as few as the blocks' counts need, then one more each, up to MAX_SLACK
     * (each bound keeps the search small, and the fewest unseen allocations win). */
    for (uint32_t try = 0; try < 2 + MAX_SLACK; try++) {
        int unsolved = 0;
        for (size_t g = 0; g < ngroups; g++) {
            if (q.groups[g].solved)
                continue;
            for (size_t i = 0; i < n; i++)
                q.placed[i] = 0;
            cya_map_free(&q.failed);
            q.frees_of_dead = try > 0;
            q.slack = try > 0 ? try - 1 : 0;
            int found = search_group(&q, g);
            if (found < 0)
                goto done;
            q.groups[g].solved = found > 0;
            unsolved += !found;
            /* back to the states before the tick (for the next group: its keys are its own) */
            for (size_t k = 0; k < q.state.cap; k++)
                if (q.state.keys[k] != CYA_MAP_EMPTY)
                    q.state.values[k] = STATE_RESET(q.state.values[k]);
        }
        if (!unsolved)
            break;
    }
    for (size_t i = 0; i < n; i++)
        q.placed[i] = 0;
    uint64_t conflicts = 0;
    o = place_searched(&q, blocks, out, &conflicts);
    if (conflicts && rep) {
        if (!rep->conflicts)
            rep->first_conflict_ns = s[0].len ? s[0].events[0].time_ns : 0;
        rep->conflicts += conflicts;
    }
done:
    search_free(&q);
    return o;
}

size_t cya_merge_tick(cya_map *blocks, const cya_event *const *events, const size_t *lens, const uint64_t *tids,
                      const uint64_t *indices, size_t n, cya_event *out)
{
    if (n == 1) {
        for (size_t j = 0; j < lens[0]; j++)
            if (!apply_noting(blocks, &events[0][j], NULL))
                return SIZE_MAX;
        memcpy(out, events[0], lens[0] * sizeof *out);
        return lens[0];
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += lens[i];
    slice *s = malloc((n ? n : 1) * sizeof *s);
    unsigned char *absent = malloc(total ? total : 1);
    cya_event *joined = NULL;
    size_t joined_cap = 0, o = SIZE_MAX;
    if (s && absent) {
        for (size_t i = 0; i < n; i++)
            s[i] = (slice){events[i], 0, lens[i]};
        size_t m = join_same_thread(s, n, tids, indices, &joined, &joined_cap);
        if (m != SIZE_MAX)
            o = order_tick(blocks, s, m, out, absent, NULL);
    }
    free(joined);
    free(s);
    free(absent);
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
    size_t *members = malloc(k * sizeof *members), *member_len = malloc(k * sizeof *member_len);
    uint64_t *tids = malloc(k * sizeof *tids), *indices = malloc(k * sizeof *indices);
    cya_event *joined = NULL;
    size_t joined_cap = 0;
    cya_event *out = NULL;
    unsigned char *absent = NULL;
    size_t out_cap = 0, absent_cap = 0;
    tick_report report = {0, 0};
    cya_map blocks = {0};
    int ok = st.loader && rcs && h.items && slices && members && member_len && tids && indices;
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
            tids[n] = c->threads[r].tid;
            indices[n] = c->threads[r].id;
            member_len[n] = end - rc->pos;
            members[n++] = r;
        }
        if (!ok)
            break;
        if (n == 1) {
            for (size_t i = 0; ok && i < slices[0].len; i++)
                ok = apply_noting(&blocks, &slices[0].events[i], NULL);
            if (!ok)
                snprintf(errbuf, errlen, "out of memory while merging the threads");
            else if (!emit(ctx, slices[0].events, slices[0].len))
                ok = 0;
        } else {
            size_t joined_n = SIZE_MAX;
            if (!cya_grow((void **)&out, &out_cap, total, sizeof *out) ||
                !cya_grow((void **)&absent, &absent_cap, total, 1) ||
                (joined_n = join_same_thread(slices, n, tids, indices, &joined, &joined_cap)) == SIZE_MAX ||
                order_tick(&blocks, slices, joined_n, out, absent, &report) == SIZE_MAX) {
                snprintf(errbuf, errlen, "out of memory while merging the threads");
                ok = 0;
            } else if (!emit(ctx, out, total)) {
                ok = 0;
            }
        }
        for (size_t i = 0; ok && i < n; i++) {
            run_cursor *rc = &rcs[members[i]];
            rc->pos += member_len[i];
            int r = has_next(&st, rc);
            if (r < 0)
                ok = 0;
            else if (r)
                heap_push(&h, members[i]);
        }
    }
done:
    if (ok) {
        cya_capture *mc = (cya_capture *)c; /* what this merge found, for cya_order_conflicts */
        mc->order_conflicts = report.conflicts;
        mc->first_order_conflict_ns = report.first_conflict_ns;
    }
    cya_map_free(&blocks);
    free(absent);
    if (rcs)
        for (size_t i = 0; i < k; i++)
            free(rcs[i].events);
    free(rcs);
    free(h.items);
    free(slices);
    free(members);
    free(member_len);
    free(tids);
    free(indices);
    free(joined);
    free(out);
    cya_batch_loader_free(st.loader);
    return ok;
}
