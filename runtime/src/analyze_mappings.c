/* analyze_mappings.c: the live memory mappings of a replay, by address range.
 *
 * Owns the set of mapped pieces (start, end, the allocation that made them), kept as a
 * treap ordered by start so that a release finds the pieces it overlaps in O(log n + k).
 * Pieces never overlap. Releasing a range gives back exactly the bytes it covers, as the
 * kernel does for munmap: the head or the tail of a mapping, a hole in its middle (which
 * splits it in two), or several adjacent mappings at once; a new mapping over a live range
 * first releases that range (MAP_FIXED). Each released piece is reported through a
 * callback with its allocation and byte count; analyze_replay.c does the accounting.
 */
#include "analyze_internal.h"

#define NIL UINT32_MAX

typedef struct piece {
    uint64_t start, end;
    uint32_t alloc;
    uint32_t priority;
    uint32_t left, right;
} piece;

struct cya_mappings {
    piece *nodes;
    size_t nnodes, cap;
    uint32_t free_list; /* recycled nodes, chained through `left` */
    uint32_t root;
    uint32_t seed;
    size_t live;
};

cya_mappings *cya_mappings_new(void)
{
    cya_mappings *m = calloc(1, sizeof *m);
    if (m) {
        m->free_list = NIL;
        m->root = NIL;
        m->seed = 0x9e3779b9u;
    }
    return m;
}

void cya_mappings_free(cya_mappings *m)
{
    if (!m)
        return;
    free(m->nodes);
    free(m);
}

size_t cya_mappings_count(const cya_mappings *m) { return m->live; }

static uint32_t next_priority(cya_mappings *m)
{
    uint32_t x = m->seed; /* xorshift32 */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    m->seed = x;
    return x;
}

static uint32_t node_new(cya_mappings *m, uint64_t start, uint64_t end, uint32_t alloc)
{
    uint32_t i;
    if (m->free_list != NIL) {
        i = m->free_list;
        m->free_list = m->nodes[i].left;
    } else {
        if (m->nnodes >= NIL - 1 || !cya_grow((void **)&m->nodes, &m->cap, m->nnodes + 1, sizeof *m->nodes))
            return NIL;
        i = (uint32_t)m->nnodes++;
    }
    m->nodes[i] = (piece){start, end, alloc, next_priority(m), NIL, NIL};
    m->live++;
    return i;
}

static void node_release(cya_mappings *m, uint32_t i)
{
    m->nodes[i].left = m->free_list;
    m->free_list = i;
    m->live--;
}

/* Split tree t into (< key) and (>= key) by start. */
static void split(cya_mappings *m, uint32_t t, uint64_t key, uint32_t *lo, uint32_t *hi)
{
    if (t == NIL) {
        *lo = *hi = NIL;
        return;
    }
    piece *n = &m->nodes[t];
    if (n->start < key) {
        split(m, n->right, key, &n->right, hi);
        *lo = t;
    } else {
        split(m, n->left, key, lo, &n->left);
        *hi = t;
    }
}

/* Every start in a precedes every start in b. */
static uint32_t merge(cya_mappings *m, uint32_t a, uint32_t b)
{
    if (a == NIL)
        return b;
    if (b == NIL)
        return a;
    if (m->nodes[a].priority > m->nodes[b].priority) {
        m->nodes[a].right = merge(m, m->nodes[a].right, b);
        return a;
    }
    m->nodes[b].left = merge(m, a, m->nodes[b].left);
    return b;
}

static uint32_t rightmost(const cya_mappings *m, uint32_t t)
{
    if (t == NIL)
        return NIL;
    while (m->nodes[t].right != NIL)
        t = m->nodes[t].right;
    return t;
}

/* Report every piece of subtree t (all inside [.., end) by start) and recycle them; a
 * piece reaching past `end` keeps its part from `end` on and is returned (at most one:
 * pieces do not overlap), NIL when none. */
static uint32_t drain(cya_mappings *m, uint32_t t, uint64_t end, cya_release_fn fn, void *ctx, int *failed)
{
    if (t == NIL)
        return NIL;
    uint32_t left = m->nodes[t].left, right = m->nodes[t].right;
    uint32_t kept = drain(m, left, end, fn, ctx, failed);
    piece *n = &m->nodes[t];
    uint64_t stop = n->end < end ? n->end : end;
    if (!fn(ctx, n->alloc, stop - n->start))
        *failed = 1;
    uint32_t mine = NIL;
    if (n->end > end) {
        n->start = end;
        n->left = n->right = NIL;
        mine = t;
    } else {
        node_release(m, t);
    }
    uint32_t other = drain(m, right, end, fn, ctx, failed);
    return mine != NIL ? mine : kept != NIL ? kept : other;
}

int cya_mappings_release(cya_mappings *m, uint64_t start, uint64_t end, cya_release_fn fn, void *ctx)
{
    if (end <= start)
        return 0;
    int failed = 0, found = 0;
    uint32_t lo, rest, mid, hi;
    split(m, m->root, start, &lo, &rest);
    /* the piece starting before `start` may reach into the range */
    uint32_t last = rightmost(m, lo), tail = NIL;
    if (last != NIL && m->nodes[last].end > start) {
        piece *p = &m->nodes[last];
        uint64_t stop = p->end < end ? p->end : end;
        if (!fn(ctx, p->alloc, stop - start))
            failed = 1;
        found = 1;
        if (p->end > end) { /* a hole in its middle: the part after the range lives on */
            tail = node_new(m, end, p->end, p->alloc); /* (may move the nodes) */
            if (tail == NIL)
                failed = 1;
        }
        m->nodes[last].end = start;
    }
    split(m, rest, end, &mid, &hi);
    if (mid != NIL) {
        found = 1;
        uint32_t kept = drain(m, mid, end, fn, ctx, &failed);
        if (kept != NIL)
            tail = kept; /* (no hole then: the two cannot both exist) */
    }
    if (tail != NIL)
        hi = merge(m, tail, hi);
    m->root = merge(m, lo, hi);
    return failed ? -1 : found;
}

int cya_mappings_add(cya_mappings *m, uint64_t start, uint64_t end, uint32_t alloc, cya_release_fn fn, void *ctx)
{
    if (end <= start)
        return 0;
    int released = cya_mappings_release(m, start, end, fn, ctx);
    if (released < 0)
        return -1;
    uint32_t node = node_new(m, start, end, alloc);
    if (node == NIL)
        return -1;
    uint32_t lo, hi;
    split(m, m->root, start, &lo, &hi);
    m->root = merge(m, merge(m, lo, node), hi);
    return released;
}
