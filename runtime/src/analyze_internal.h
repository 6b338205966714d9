/* analyze_internal.h: the aggregated profile shared by analyze_replay.c (which builds
 * it from a capture's events) and analyze_json.c (which serialises it). */
#ifndef ANALYZE_INTERNAL_H
#define ANALYZE_INTERNAL_H

#include "capture_internal.h"

typedef struct cya_metrics {
    uint64_t bytes, count;             /* allocated */
    uint64_t peak_bytes, peak_count;   /* live at the high-water mark */
    uint64_t leaked_bytes, leaked_count; /* live at the end of the capture */
    uint64_t temp_bytes, temp_count;   /* freed within the temporary window */
} cya_metrics;

#define CYA_METRICS_ADD(dst, src)                                                          \
    do {                                                                                   \
        (dst).bytes += (src).bytes;                                                        \
        (dst).count += (src).count;                                                        \
        (dst).peak_bytes += (src).peak_bytes;                                              \
        (dst).peak_count += (src).peak_count;                                              \
        (dst).leaked_bytes += (src).leaked_bytes;                                          \
        (dst).leaked_count += (src).leaked_count;                                          \
        (dst).temp_bytes += (src).temp_bytes;                                              \
        (dst).temp_count += (src).temp_count;                                              \
    } while (0)

typedef struct cya_pstack {
    uint64_t offset, count; /* frames in profile->frames, innermost first */
    uint32_t self;          /* location the stack's allocations are attributed to */
    cya_metrics m;
} cya_pstack;

typedef struct cya_sample {
    uint64_t time_ns, live_bytes;
} cya_sample;

typedef struct cya_thread_metrics {
    uint64_t id;
    cya_metrics m;
} cya_thread_metrics;

#define CYA_PSEUDO_NO_STACK 0
#define CYA_PSEUDO_UNKNOWN_STACK 1
#define CYA_PSEUDO_RUNNER 2
#define CYA_PSEUDO_TRACER 3
#define CYA_PSEUDO_HELPER 4 /* and the next ones: helper calls folded to one frame (options->helper_labels) */
#define CYA_HELPER_LABELS 4
#define CYA_NPSEUDO (CYA_PSEUDO_HELPER + CYA_HELPER_LABELS)

typedef struct cya_flame_node {
    uint32_t location; /* UINT32_MAX for the root */
    uint32_t parent;   /* UINT32_MAX for the root; always before the node */
    uint64_t values[4]; /* bytes, peak bytes, leaked bytes, count */
    int kept;          /* 0: pruned (too small to see in a big tree) */
} cya_flame_node;

typedef struct cya_profile {
    const cya_capture *capture;
    const cya_location *locs; /* the symbols' table, then CYA_NPSEUDO pseudo locations */
    size_t nsymlocs;
    cya_location pseudo[CYA_NPSEUDO];
    char *helper_labels_text; /* the pseudo locations' names of helper calls point into it */

    uint32_t *frames;
    size_t nframes, cap_frames;
    cya_pstack *stacks;
    size_t nstacks, cap_stacks;
    cya_map stack_by_hash;  /* hash of the frame list -> stack (probing on collisions) */
    cya_map raw_to_stack;   /* capture stack id -> profile stack */

    cya_metrics totals;
    cya_metrics *self, *inclusive; /* per location (nsymlocs + CYA_NPSEUDO) */
    /* per source line: the location shown for it, and its self, inclusive, attributed */
    cya_flame_node *flame;
    size_t nflame;
    uint32_t *line_location;
    cya_metrics *line_self, *line_inclusive, *line_attributed;
    size_t nlines;
    uint64_t peak_time_ns, peak_event;
    uint64_t frees, unmatched_frees, replaced_blocks;
    uint64_t cut_events, cut_bytes, cut_most; /* allocations whose stack was cut, and the most frames cut */
    uint64_t kind_count[64], kind_bytes[64];
    uint32_t temporary_window;

    cya_sample *timeline;
    size_t ntimeline, cap_timeline;
    cya_thread_metrics *threads;
    size_t nthreads, cap_threads;
} cya_profile;

static inline const cya_location *cya_profile_location(const cya_profile *p, uint32_t index)
{
    return index < p->nsymlocs ? &p->locs[index] : &p->pseudo[index - p->nsymlocs];
}

/* analyze_mappings.c: the live mappings by address range. A release reports each piece
 * it covers through a cya_release_fn (0 from it: out of memory). */
typedef struct cya_mappings cya_mappings;
typedef int (*cya_release_fn)(void *ctx, uint32_t alloc, uint64_t bytes);
cya_mappings *cya_mappings_new(void);
void cya_mappings_free(cya_mappings *m);
size_t cya_mappings_count(const cya_mappings *m);
/* Release [start, end): 1 if it covered anything, 0 if nothing, -1 out of memory. */
int cya_mappings_release(cya_mappings *m, uint64_t start, uint64_t end, cya_release_fn fn, void *ctx);
/* Map [start, end) for allocation `alloc`, releasing what it covers first (as release). */
int cya_mappings_add(cya_mappings *m, uint64_t start, uint64_t end, uint32_t alloc, cya_release_fn fn, void *ctx);

/* analyze_replay.c: 1 on success, 0 with a message in errbuf. */
int cya_profile_build(cya_profile *p, const cya_capture *capture, const cya_symbols *symbols,
                      const cya_analyze_options *options, char *errbuf, size_t errlen);
void cya_profile_free(cya_profile *p);
/* analyze_flame.c: fill p->flame from p->stacks; 0 when out of memory. */
int cya_flame_build(cya_profile *p);

#endif
