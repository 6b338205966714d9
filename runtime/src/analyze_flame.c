/* analyze_flame.c: the flame graph's tree, built from the profile's stacks (outermost
 * frame at the root). Owns the trie (a hash of (parent node, location) -> node) and the
 * pruning rule: when the tree has more than CYA_FLAME_MAX_NODES nodes, nodes worth less
 * than 1/20000 of the biggest total (bytes, peak or leaked) are left out, with their
 * subtrees; their values stay in their parents'. */
#include <stdlib.h>
#include <string.h>

#include "analyze_internal.h"

#define CYA_FLAME_MAX_NODES 50000

static uint64_t node_key(uint32_t parent, uint32_t loc)
{
    uint64_t h = cya_hash64(((uint64_t)parent << 32) | loc);
    return h == CYA_MAP_EMPTY ? 0 : h;
}

int cya_flame_build(cya_profile *p)
{
    cya_flame_node root = {UINT32_MAX, UINT32_MAX, {0, 0, 0, 0}, 1};
    p->flame = NULL;
    p->nflame = 0;
    size_t cap = 0;
    if (!CYA_PUSH(p->flame, p->nflame, cap, root))
        return 0;
    cya_map index = {0};
    for (size_t s = 0; s < p->nstacks; s++) {
        const cya_pstack *st = &p->stacks[s];
        uint64_t v[4] = {st->m.bytes, st->m.peak_bytes, st->m.leaked_bytes, st->m.count};
        if (!v[0] && !v[1] && !v[2] && !v[3])
            continue;
        for (int k = 0; k < 4; k++)
            p->flame[0].values[k] += v[k];
        uint32_t node = 0;
        size_t n = st->count ? st->count : 1;
        for (size_t j = n; j-- > 0;) {
            uint32_t loc = st->count ? p->frames[st->offset + j] : st->self;
            uint64_t h = node_key(node, loc);
            uint32_t *slot;
            for (;; h++) {
                if (h == CYA_MAP_EMPTY)
                    continue;
                slot = cya_map_get(&index, h);
                if (!slot || (p->flame[*slot].parent == node && p->flame[*slot].location == loc))
                    break;
            }
            uint32_t child;
            if (slot) {
                child = *slot;
            } else {
                cya_flame_node fresh = {loc, node, {0, 0, 0, 0}, 1};
                if (!CYA_PUSH(p->flame, p->nflame, cap, fresh) ||
                    !cya_map_put(&index, h, (uint32_t)(p->nflame - 1))) {
                    cya_map_free(&index);
                    return 0;
                }
                child = (uint32_t)(p->nflame - 1);
            }
            for (int k = 0; k < 4; k++)
                p->flame[child].values[k] += v[k];
            node = child;
        }
    }
    cya_map_free(&index);
    if (p->nflame > CYA_FLAME_MAX_NODES) {
        uint64_t top = p->flame[0].values[0];
        if (p->flame[0].values[1] > top)
            top = p->flame[0].values[1];
        if (p->flame[0].values[2] > top)
            top = p->flame[0].values[2];
        double threshold = (double)top / 20000.0;
        /* parents come before their children: one pass decides */
        for (size_t i = 1; i < p->nflame; i++) {
            const cya_flame_node *f = &p->flame[i];
            uint64_t most = f->values[0] > f->values[1] ? f->values[0] : f->values[1];
            if (f->values[2] > most)
                most = f->values[2];
            p->flame[i].kept = p->flame[f->parent].kept && (double)most >= threshold;
        }
    }
    return 1;
}
