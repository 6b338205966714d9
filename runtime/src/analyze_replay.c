/* analyze_replay.c: folds the symbolised stacks into report stacks (user frames only
 * unless asked; cut at the launcher's frames outside the program), replays the events
 * to aggregate them per stack, then per location and per source line (self, inclusive,
 * and attributed: each stack charged to its innermost .pyx line).
 *
 * The replay is one pass over the event stream (cya_merge_stream_pipelined: decoded on a
 * second thread) and keeps only what is live: the heap blocks (one table entry each,
 * reused once freed), the mappings, and per stack its live bytes and blocks. Memory
 * therefore follows the live blocks and the distinct stacks, not the number of events.
 *
 * Owns the metrics' definitions:
 *  - allocated: every allocation event (realloc counts its new block);
 *  - peak: blocks live at the moment total live bytes (of the selected threads) was
 *    highest. Each stack keeps its figures at the latest high-water mark lazily: when it
 *    changes for the first time after that moment, it copies its figures then (see
 *    stack_change), so the snapshot costs nothing per new high-water mark. When live
 *    bytes reach the same high-water mark again later, the first moment wins (the peak
 *    is the first event after which live bytes were at their maximum);
 *  - leaked: blocks still live when the capture ends;
 *  - temporary: blocks freed by the thread that allocated them within
 *    `temporary_window` of that thread's later events (a block that realloc moves
 *    is grown, not temporary).
 * Events at address 0 (failed allocations, free(NULL)) are skipped.
 * Heap, mmap and each PyMem domain are separate address spaces. A free of an unknown
 * address (allocated before tracing) is counted and ignored; an allocation over a live
 * block ends that block (its free was not seen). Mappings are accounted by address range
 * (analyze_mappings.c): a munmap releases exactly the bytes it covers, so a mapping may
 * be live, at the peak and leaked in part; it counts as freed once nothing of it is left.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze_internal.h"

#define NEVER UINT32_MAX
#define TIMELINE_POINTS 1000

static uint64_t frames_hash(const uint32_t *f, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n;
    for (size_t i = 0; i < n; i++)
        h = cya_hash64(h ^ f[i]) + i;
    return h == CYA_MAP_EMPTY ? 0 : h;
}

/* Frames a report attributes to: .pyx and Python lines, and the raw addresses of
 * objects that could not be symbolised (a deleted module is still the user's code). */
static int cython_frame(const cya_location *l)
{
    return l->kind == CYA_FRAME_PYX || l->kind == CYA_FRAME_CYTHON_C;
}

static int user_frame(const cya_location *l)
{
    return cython_frame(l) || l->kind == CYA_FRAME_PYTHON ||
           (l->kind == CYA_FRAME_UNKNOWN && l->object && l->object[0]);
}

/* The profile stack for a folded frame list; UINT32_MAX when out of memory. */
static uint32_t intern_stack(cya_profile *p, const uint32_t *f, size_t n)
{
    uint64_t h = frames_hash(f, n);
    for (;; h++) {
        if (h == CYA_MAP_EMPTY)
            continue;
        uint32_t *slot = cya_map_get(&p->stack_by_hash, h);
        if (!slot)
            break;
        cya_pstack *s = &p->stacks[*slot];
        if (s->count == n && memcmp(p->frames + s->offset, f, n * sizeof *f) == 0)
            return *slot;
    }
    cya_pstack s;
    memset(&s, 0, sizeof s);
    s.offset = p->nframes;
    s.count = n;
    s.self = n ? f[0] : (uint32_t)(p->nsymlocs + CYA_PSEUDO_UNKNOWN_STACK);
    for (size_t i = 0; i < n; i++) /* the innermost user frame, or a pseudo frame (a folded helper call) */
        if (f[i] >= p->nsymlocs || user_frame(cya_profile_location(p, f[i]))) {
            s.self = f[i];
            break;
        }
    if (!cya_grow((void **)&p->frames, &p->cap_frames, p->nframes + n, sizeof *p->frames))
        return UINT32_MAX;
    memcpy(p->frames + p->nframes, f, n * sizeof *f);
    p->nframes += n;
    if (!CYA_PUSH(p->stacks, p->nstacks, p->cap_stacks, s) ||
        !cya_map_put(&p->stack_by_hash, h, (uint32_t)(p->nstacks - 1)))
        return UINT32_MAX;
    return (uint32_t)(p->nstacks - 1);
}

static int program_frame(const cya_location *l)
{
    return cython_frame(l) || (l->kind == CYA_FRAME_UNKNOWN && l->object && l->object[0]);
}

#define RUNNER_FRAME 1 /* the launcher's: cytool's runner, runpy, importlib */
#define TOOL_FRAME 2   /* cytool's own code */
#define ENTRY_FRAME 4  /* the launcher's frame that runs the program's code: runpy's
                          `_run_code` (a script, -m) or cytool's `Launcher._run_code` (-c) */

/* Whether `file` matches one of the newline-separated prefixes ('*' first: a suffix). */
static int matches_prefix(const char *file, const char *prefixes)
{
    size_t flen = strlen(file);
    for (const char *q = prefixes; q && *q;) {
        size_t len = strcspn(q, "\n");
        if (len > 1 && q[0] == '*' ? (len - 1 <= flen && strncmp(file + flen - (len - 1), q + 1, len - 1) == 0)
                                   : (len && strncmp(file, q, len) == 0))
            return 1;
        q += len;
        if (*q == '\n')
            q++;
    }
    return 0;
}

/* Per location: RUNNER_FRAME and TOOL_FRAME bits for the Python frames of the launcher
 * and of cytool itself. NULL when there are no prefixes. */
static uint8_t *runner_flags(const cya_profile *p, const char *prefixes, const char *tool_prefixes)
{
    if (!prefixes || !*prefixes)
        return NULL;
    uint8_t *flags = calloc(p->nsymlocs + 1, 1);
    if (!flags)
        return NULL;
    for (size_t i = 0; i < p->nsymlocs; i++) {
        const cya_location *l = &p->locs[i];
        if (l->kind != CYA_FRAME_PYTHON || !l->file)
            continue;
        if (matches_prefix(l->file, prefixes))
            flags[i] |= RUNNER_FRAME;
        if (matches_prefix(l->file, tool_prefixes))
            flags[i] |= TOOL_FRAME | RUNNER_FRAME;
        size_t flen = l->function ? strlen(l->function) : 0;
        if (flags[i] && flen >= 9 && strcmp(l->function + flen - 9, "_run_code") == 0 &&
            (flen == 9 || l->function[flen - 10] == '.'))
            flags[i] |= ENTRY_FRAME;
    }
    return flags;
}

#define HELPER_LIBRARY 0x80 /* helper_flags: a library frame (inside a helper call, the helper's too) */

/* The length of the next newline-separated field of `q` ending at '\t' or '\n'. */
static size_t field_length(const char *q) { return strcspn(q, "\t\n"); }

static int field_is(const char *q, size_t len, const char *text)
{
    return strlen(text) == len && strncmp(q, text, len) == 0;
}

/* Per location: 1 + the label of the helper call a Python frame is (options->helper_calls:
 * "label\tfile\tfunction" lines, function "*" for any), | HELPER_LIBRARY for a frame of
 * options->helper_library's files (or any frame that is not a user frame). NULL when
 * there are no helper calls. */
static uint8_t *helper_flags(const cya_profile *p, const char *calls, const char *library)
{
    if (!calls || !*calls)
        return NULL;
    uint8_t *flags = calloc(p->nsymlocs + 1, 1);
    if (!flags)
        return NULL;
    for (size_t i = 0; i < p->nsymlocs; i++) {
        const cya_location *l = &p->locs[i];
        if (!user_frame(l)) {
            flags[i] = HELPER_LIBRARY;
            continue;
        }
        if (l->kind != CYA_FRAME_PYTHON || !l->file || !l->function)
            continue;
        for (const char *q = calls; *q;) {
            size_t llen = field_length(q);
            const char *file = q + llen + (q[llen] == '\t');
            size_t flen = q[llen] == '\t' ? field_length(file) : 0;
            const char *function = file + flen + (file[flen] == '\t');
            size_t nlen = file[flen] == '\t' ? field_length(function) : 0;
            unsigned label = (unsigned)strtoul(q, NULL, 10);
            if (label < CYA_HELPER_LABELS && field_is(file, flen, l->file) &&
                (field_is(function, nlen, "*") || field_is(function, nlen, l->function))) {
                flags[i] = (uint8_t)(1 + label);
                break;
            }
            q = function + nlen;
            q += strcspn(q, "\n");
            if (*q == '\n')
                q++;
        }
        for (const char *q = library; !flags[i] && q && *q;) {
            size_t len = strcspn(q, "\n");
            if (field_is(q, len, l->file))
                flags[i] = HELPER_LIBRARY;
            q += len;
            if (*q == '\n')
                q++;
        }
    }
    return flags;
}

/* Fold the outermost helper call of buf[0..*m) (innermost first) into one frame, its
 * label's: the helper's frame and the library frames it called, up to the first frame
 * inside it that is the program's own (a Cython frame, a Python frame of another file:
 * a __repr__ or __eq__ the helper called), which stays with what it called. */
static void fold_helper_call(const cya_profile *p, uint32_t *buf, size_t *m, const uint8_t *helper)
{
    size_t n = *m, nsymlocs = p->nsymlocs;
    size_t j = n;
    while (j-- > 0)
        if (buf[j] < nsymlocs && (helper[buf[j]] & ~HELPER_LIBRARY))
            break;
    if (j == (size_t)-1)
        return;
    uint32_t label_loc = (uint32_t)(nsymlocs + CYA_PSEUDO_HELPER + (helper[buf[j]] & ~HELPER_LIBRARY) - 1);
    size_t keep = 0; /* frames buf[0..keep) inside the call stay */
    for (size_t k = j; k-- > 0;)
        if (buf[k] < nsymlocs && !helper[buf[k]]) {
            keep = k + 1;
            break;
        }
    buf[keep] = label_loc;
    memmove(buf + keep + 1, buf + j + 1, (n - j - 1) * sizeof *buf);
    *m = keep + 1 + (n - j - 1);
}

#define RUNNER_OWN 1 /* the launcher's own allocation: "(cytool runner)" */
#define TRACER_OWN 2 /* cytool's own code inside a program that is not its launcher's */

/* Cut the folded stack buf[0..*m) (innermost first) at the launcher's frames; returns
 * RUNNER_OWN or TRACER_OWN for an allocation of cytool's own, else 0. */
static int cut_at_runner(const cya_profile *p, uint32_t *buf, size_t *m, const uint8_t *runner)
{
    size_t n = *m;
    /* started by cytool's launcher: the outermost frames (runpy, importlib, cytool's
     * own) include cytool's; `tool` is the innermost of those */
    int launched = 0, measured = 0;
    size_t tool = 0;
    for (size_t j = n; j-- > 0;) {
        if (buf[j] >= p->nsymlocs || !user_frame(&p->locs[buf[j]]))
            continue;
        if (!runner[buf[j]])
            break;
        if (runner[buf[j]] & TOOL_FRAME) {
            /* the outermost frame is cytool's frame that runs the measured code (the pytest
             * plugin's, whose stacks end there): a measurement, not the launcher */
            if (!launched && (runner[buf[j]] & ENTRY_FRAME))
                measured = 1;
            launched = 1;
            tool = j;
        }
    }
    /* the program's outermost frame: its outermost Cython frame, or under the launcher
     * a user frame not the launcher's inside the frame that runs the program's code
     * (not runpy importing its helpers, nor the launcher's own calls) */
    size_t entry = 0;
    for (size_t j = 0; launched && j <= tool; j++)
        if (runner[buf[j]] & ENTRY_FRAME)
            entry = j;
    size_t outer = 0;
    int any = 0;
    for (size_t j = 0; j < n; j++) {
        const cya_location *l = &p->locs[buf[j]];
        if (buf[j] < p->nsymlocs &&
            (program_frame(l) || (j < entry && user_frame(l) && !runner[buf[j]]))) {
            outer = j;
            any = 1;
        }
    }
    if (any) {
        for (size_t j = outer + 1; j < n; j++)
            if (buf[j] < p->nsymlocs && runner[buf[j]]) {
                n = j;
                break;
            }
    } else if (launched) {
        return measured ? TRACER_OWN : RUNNER_OWN;
    }
    /* no launcher of cytool's: its own code at the inner end (cytool.Tracker starting or
     * stopping, a measurement of the pytest plugin or a notebook cell) is the tracer's */
    for (size_t j = 0; !launched && j < n; j++) {
        if (buf[j] >= p->nsymlocs || !user_frame(&p->locs[buf[j]]))
            continue;
        if (runner[buf[j]] & TOOL_FRAME)
            return TRACER_OWN;
        break;
    }
    /* ... and further out, cytool's code that runs the measured code (the pytest plugin's
     * window around a test, a notebook cell's measurement): the stack starts inside it, as
     * a stack through a Cython frame does (cut above) */
    for (size_t j = 0; !launched && !any && j < n; j++)
        if (buf[j] < p->nsymlocs && (runner[buf[j]] & TOOL_FRAME)) {
            n = j;
            break;
        }
    *m = n;
    return 0;
}

/* Fold every capture stack into a profile stack (user frames only unless asked), cut
 * at the launcher's frames when `runner` flags are given. */
static int map_stacks(cya_profile *p, const cya_symbols *symbols, int keep_native, const uint8_t *runner,
                      const uint8_t *helper)
{
    const cya_capture *c = p->capture;
    uint32_t *buf = NULL;
    size_t cap = 0;
    uint32_t runner_loc = (uint32_t)(p->nsymlocs + CYA_PSEUDO_RUNNER);
    uint32_t tracer_loc = (uint32_t)(p->nsymlocs + CYA_PSEUDO_TRACER);
    for (size_t i = 0; i < c->nstacks; i++) {
        size_t n = 0;
        const uint32_t *f = cya_symbols_stack(symbols, c->stacks[i].id, &n);
        if (!cya_grow((void **)&buf, &cap, n + 1, sizeof *buf)) {
            free(buf);
            return 0;
        }
        size_t m = 0, users = 0;
        for (size_t j = 0; j < n; j++) {
            int user = user_frame(&p->locs[f[j]]);
            users += user;
            if (keep_native || user || p->locs[f[j]].kind == CYA_FRAME_CUT)
                buf[m++] = f[j];
        }
        if (!users && n && !keep_native) { /* no user frame at all: the innermost one (and any cut) */
            size_t cuts = m;
            m = 0;
            buf[m++] = f[0];
            if (cuts && f[0] != buf[cuts - 1])
                buf[m++] = buf[cuts - 1];
        }
        if (helper)
            fold_helper_call(p, buf, &m, helper);
        int own = runner ? cut_at_runner(p, buf, &m, runner) : 0;
        if (own) {
            buf[0] = own == RUNNER_OWN ? runner_loc : tracer_loc;
            m = 1;
        }
        uint32_t s = intern_stack(p, buf, m);
        if (s == UINT32_MAX || !cya_map_put(&p->raw_to_stack, c->stacks[i].id, s)) {
            free(buf);
            return 0;
        }
    }
    free(buf);
    return 1;
}

static uint64_t line_hash(const cya_location *l)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *q = l->file; *q; q++)
        h = (h ^ (uint8_t)*q) * 1099511628211ULL;
    h = cya_hash64(h ^ l->line);
    return h == CYA_MAP_EMPTY ? 0 : h;
}

/* Group locations into source lines (a .pyx or Python file:line is one line whatever
 * function or object names it) and sum self, inclusive and attributed per line. */
static int group_lines(cya_profile *p)
{
    size_t nl = p->nsymlocs + CYA_NPSEUDO;
    uint32_t *line_of = malloc(nl * sizeof *line_of);
    p->line_location = malloc(nl * sizeof *p->line_location);
    if (!line_of || !p->line_location) {
        free(line_of);
        return 0;
    }
    cya_map by_key = {0};
    for (size_t i = 0; i < nl; i++) {
        const cya_location *l = cya_profile_location(p, (uint32_t)i);
        if ((cython_frame(l) || l->kind == CYA_FRAME_PYTHON) && l->file && l->file[0]) {
            uint64_t h = line_hash(l);
            uint32_t *slot;
            for (;; h++) { /* probe past hash collisions */
                if (h == CYA_MAP_EMPTY)
                    continue;
                slot = cya_map_get(&by_key, h);
                if (!slot)
                    break;
                const cya_location *o = cya_profile_location(p, p->line_location[*slot]);
                if (o->line == l->line && strcmp(o->file, l->file) == 0)
                    break;
            }
            if (slot) {
                line_of[i] = *slot;
                continue;
            }
            if (!cya_map_put(&by_key, h, (uint32_t)p->nlines)) {
                cya_map_free(&by_key);
                free(line_of);
                return 0;
            }
        }
        line_of[i] = (uint32_t)p->nlines;
        p->line_location[p->nlines++] = (uint32_t)i;
    }
    cya_map_free(&by_key);
    p->line_self = calloc(p->nlines + 1, sizeof *p->line_self);
    p->line_inclusive = calloc(p->nlines + 1, sizeof *p->line_inclusive);
    p->line_attributed = calloc(p->nlines + 1, sizeof *p->line_attributed);
    uint32_t *mark = calloc(p->nlines + 1, sizeof *mark);
    if (!p->line_self || !p->line_inclusive || !p->line_attributed || !mark) {
        free(mark);
        free(line_of);
        return 0;
    }
    for (size_t s = 0; s < p->nstacks; s++) {
        const cya_pstack *st = &p->stacks[s];
        uint32_t self = line_of[st->self];
        CYA_METRICS_ADD(p->line_self[self], st->m);
        CYA_METRICS_ADD(p->line_inclusive[self], st->m);
        mark[self] = (uint32_t)(s + 1);
        int attributed = 0;
        for (uint64_t j = 0; j < st->count; j++) {
            uint32_t loc = p->frames[st->offset + j];
            uint32_t line = line_of[loc];
            if (!attributed && cython_frame(cya_profile_location(p, loc))) {
                CYA_METRICS_ADD(p->line_attributed[line], st->m);
                attributed = 1;
            }
            if (mark[line] == s + 1)
                continue;
            mark[line] = (uint32_t)(s + 1);
            CYA_METRICS_ADD(p->line_inclusive[line], st->m);
        }
    }
    free(mark);
    free(line_of);
    return 1;
}

static uint32_t pseudo_stack(cya_profile *p, uint32_t which)
{
    uint32_t loc = (uint32_t)(p->nsymlocs + which);
    return intern_stack(p, &loc, 1);
}

/* ---- the replay: one pass over the event stream ------------------------------------ */

static int is_mapping(unsigned kind) { return kind == CYA_MMAP || kind == CYA_MREMAP || kind == CYA_MUNMAP; }

/* A live mapping (while any of it is mapped; analyze_mappings.c holds its pieces by the
 * slot). Slots are reused once it is gone: memory follows the live mappings. The heap
 * blocks have their own table (heap_block). */
typedef struct live_block {
    uint64_t size;      /* as allocated */
    uint64_t remaining; /* mappings: bytes of it still mapped */
    uint64_t ord;       /* its thread's ordinal of the allocation */
    uint32_t stack;     /* profile stack */
    uint32_t thread;    /* the allocating thread's id */
    uint32_t metrics;   /* its thread's index in p->threads, or NEVER when not selected */
    uint8_t in_use, mapping;
} live_block;

/* Live bytes and blocks of one profile stack (selected threads only), and the same at the
 * latest high-water mark, kept lazily: `snap` holds the figures at the peak moment once
 * the stack changes after it (last_change: the event that changed it last). */
typedef struct stack_live {
    uint64_t bytes, count;
    uint64_t snap_bytes, snap_count;
    uint64_t last_change;
} stack_live;

/* The live heap blocks by key (open addressing, linear probing): a block's figures sit
 * beside its key, so a malloc or a free touches one place. */
typedef struct heap_block {
    uint64_t key; /* CYA_MAP_EMPTY: a free entry */
    uint64_t size;
    uint64_t ord;   /* its thread's ordinal of the allocation */
    uint32_t stack; /* profile stack */
    uint32_t tslot; /* the allocating thread's slot (replay.ordinals, replay.tslot_metrics) */
} heap_block;   /* 32 bytes: two to a cache line */

typedef struct block_table {
    heap_block *items;
    size_t cap, len; /* cap: a power of two */
    unsigned shift;  /* 64 - log2(cap) */
} block_table;

static inline size_t block_home(const block_table *t, uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ULL) >> t->shift); /* Fibonacci hashing */
}

static int block_table_grow(block_table *t)
{
    size_t ncap = t->cap ? t->cap * 2 : 1024;
    heap_block *items = aligned_alloc(64, ncap * sizeof *items);
    if (!items)
        return 0;
    for (size_t i = 0; i < ncap; i++)
        items[i].key = CYA_MAP_EMPTY;
    block_table n = {items, ncap, t->len, (unsigned)(64 - __builtin_ctzll(ncap))};
    for (size_t i = 0; i < t->cap; i++) {
        if (t->items[i].key == CYA_MAP_EMPTY)
            continue;
        size_t j = block_home(&n, t->items[i].key);
        while (items[j].key != CYA_MAP_EMPTY)
            j = (j + 1) & (ncap - 1);
        items[j] = t->items[i];
    }
    free(t->items);
    *t = n;
    return 1;
}

/* The entry of key, or the free entry where it goes (its key then CYA_MAP_EMPTY);
 * NULL when out of memory. */
static inline heap_block *block_find(block_table *t, uint64_t key)
{
    if ((t->len + 1) * 2 >= t->cap && !block_table_grow(t)) /* at most half full: short probes */
        return NULL;
    size_t mask = t->cap - 1, j = block_home(t, key);
    while (t->items[j].key != key && t->items[j].key != CYA_MAP_EMPTY)
        j = (j + 1) & mask;
    return &t->items[j];
}

/* Remove an entry returned by block_find (backward-shift deletion). */
static inline void block_remove(block_table *t, heap_block *b)
{
    size_t mask = t->cap - 1, hole = (size_t)(b - t->items);
    for (size_t k = (hole + 1) & mask; t->items[k].key != CYA_MAP_EMPTY; k = (k + 1) & mask) {
        size_t home = block_home(t, t->items[k].key);
        int stays = hole <= k ? (home > hole && home <= k) : (home > hole || home <= k);
        if (!stays) {
            t->items[hole] = t->items[k];
            hole = k;
        }
    }
    t->items[hole].key = CYA_MAP_EMPTY;
    t->len--;
}

#define LOOKAHEAD 15
#define PREFETCH 12 /* events ahead whose block entry is prefetched */ /* events after a munmap searched for its thread's mremap */

typedef struct replay {
    cya_profile *p;
    const cya_capture *c;
    cya_map selected;
    int filter;
    block_table blocks; /* the live heap blocks */
    live_block *tab;
    size_t ntab, cap_tab;
    uint32_t *spare; /* free slots */
    size_t nspare, cap_spare;
    stack_live *stacks; /* parallel to p->stacks */
    cya_mappings *mappings;
    cya_map tstate, thread_slots;
    uint64_t *ordinals;
    size_t nordinals, cap_ordinals;
    uint32_t *tslot_metrics; /* per thread slot: its index in p->threads, NEVER when not selected */
    size_t ntslot_metrics, cap_tslot_metrics;
    uint32_t no_stack, unknown_stack;
    /* the high-water mark */
    uint64_t live, peak;
    int have_peak;
    uint64_t step, nevents;
    /* the event being replayed */
    uint64_t event;
    uint64_t last_thread, last_raw_stack, last_cut;
    uint64_t next_sample; /* the next event index that is a multiple of step */
    /* capture stack id -> profile stack + 1 (0: undefined) and its frames cut, for ids
     * below ndense (the tracer numbers its stacks 1, 2, 3 ...) */
    uint32_t *dense_stack;
    uint64_t *dense_cut;
    size_t ndense;
    uint32_t tslot, last_stack, last_metrics;
    int last_selected;
    /* the releasing event (mappings) */
    uint32_t thread;
    uint64_t ord, released;
    int may_be_temporary;
    /* the last events of the previous chunk, waiting for their lookahead */
    cya_event carry[LOOKAHEAD];
    size_t ncarry;
    int failed; /* out of memory */
} replay;

static void stack_change(replay *r, uint32_t s, uint64_t bytes, int up)
{
    stack_live *l = &r->stacks[s];
    uint64_t peak_event = r->p->peak_event;
    if (r->have_peak && l->last_change <= peak_event && peak_event < r->event) {
        l->snap_bytes = l->bytes; /* unchanged since the peak: its figures then */
        l->snap_count = l->count;
    }
    l->last_change = r->event;
    if (up > 0) {
        l->bytes += bytes;
        l->count++;
    } else {
        l->bytes -= bytes;
        l->count -= up < 0;
    }
}

static uint32_t new_slot(replay *r)
{
    if (r->nspare)
        return r->spare[--r->nspare];
    live_block b;
    memset(&b, 0, sizeof b);
    if (r->ntab >= NEVER || !CYA_PUSH(r->tab, r->ntab, r->cap_tab, b))
        return NEVER;
    return (uint32_t)(r->ntab - 1);
}

static int drop_slot(replay *r, uint32_t slot)
{
    r->tab[slot].in_use = 0;
    return CYA_PUSH(r->spare, r->nspare, r->cap_spare, slot);
}

static int on_release(void *ctx, uint32_t slot, uint64_t bytes)
{
    replay *r = ctx;
    live_block *b = &r->tab[slot];
    if (!bytes || !b->in_use)
        return 1;
    if (bytes > b->remaining)
        bytes = b->remaining;
    b->remaining -= bytes;
    if (b->metrics != NEVER) {
        r->live -= bytes;
        r->released += bytes;
        stack_change(r, b->stack, bytes, b->remaining == 0 ? -1 : 0);
        if (b->remaining == 0) { /* nothing of it is left */
            r->p->frees++;
            if (r->may_be_temporary && b->thread == r->thread && r->ord - b->ord <= r->p->temporary_window) {
                cya_metrics *m = &r->p->stacks[b->stack].m;
                m->temp_count++;
                m->temp_bytes += b->size;
            }
        }
    }
    return b->remaining == 0 ? drop_slot(r, slot) : 1;
}

static uint64_t range_end(uint64_t start, uint64_t size)
{
    return size > UINT64_MAX - start ? UINT64_MAX : start + size;
}

static int add_sample(replay *r, uint64_t time_ns)
{
    cya_sample s = {time_ns, r->live};
    return CYA_PUSH(r->p->timeline, r->p->ntimeline, r->p->cap_timeline, s);
}

/* Replay one event; `ahead` holds the events after it (up to LOOKAHEAD). 0: out of memory. */
static int replay_event(replay *r, const cya_event *e, const cya_event *ahead, size_t nahead)
{
    cya_profile *p = r->p;
    const cya_capture *c = r->c;
    if (e->thread_id != r->last_thread) {
        uint32_t *slot = cya_map_get(&r->tstate, e->thread_id);
        if (!slot) {
            if (!CYA_PUSH(r->ordinals, r->nordinals, r->cap_ordinals, 0) ||
                !CYA_PUSH(r->tslot_metrics, r->ntslot_metrics, r->cap_tslot_metrics, NEVER) ||
                !cya_map_put(&r->tstate, e->thread_id, (uint32_t)(r->nordinals - 1)))
                return 0;
            slot = cya_map_get(&r->tstate, e->thread_id);
        }
        r->tslot = *slot;
        r->last_thread = e->thread_id;
        r->last_selected = !r->filter || cya_map_get(&r->selected, e->thread_id) != NULL;
        r->last_metrics = NEVER;
    }
    uint64_t ord = ++r->ordinals[r->tslot];
    if (!e->address) /* a failed allocation, or free(NULL) / realloc(NULL, n)'s free */
        goto sample;
    uint64_t key = cya_block_key(e->kind, e->address);
    if (e->kind < CYA_FREE) {
        if (e->stack_id != r->last_raw_stack) {
            r->last_raw_stack = e->stack_id;
            if (e->stack_id < r->ndense) {
                uint32_t s = r->dense_stack[e->stack_id];
                r->last_stack = s ? s - 1 : e->stack_id ? r->unknown_stack : r->no_stack;
                r->last_cut = r->dense_cut[e->stack_id];
            } else {
                uint32_t *slot = e->stack_id ? cya_map_get(&p->raw_to_stack, e->stack_id) : NULL;
                r->last_stack = slot ? *slot : e->stack_id ? r->unknown_stack : r->no_stack;
                const cya_stack *raw = slot ? cya_find_stack(c, e->stack_id) : NULL;
                r->last_cut = raw ? raw->cut : 0;
            }
        }
        if (r->last_selected && r->last_metrics == NEVER) {
            uint32_t *slot = cya_map_get(&r->thread_slots, e->thread_id);
            if (!slot) {
                cya_thread_metrics t;
                memset(&t, 0, sizeof t);
                t.id = e->thread_id;
                if (!CYA_PUSH(p->threads, p->nthreads, p->cap_threads, t) ||
                    !cya_map_put(&r->thread_slots, e->thread_id, (uint32_t)(p->nthreads - 1)))
                    return 0;
                slot = cya_map_get(&r->thread_slots, e->thread_id);
            }
            r->last_metrics = *slot;
            r->tslot_metrics[r->tslot] = *slot;
        }
        uint32_t metrics = r->last_selected ? r->last_metrics : NEVER;
        int mapping = is_mapping(e->kind);
        uint32_t k = NEVER;
        if (mapping) {
            k = new_slot(r);
            if (k == NEVER)
                return 0;
            r->tab[k] = (live_block){e->size, e->size, ord, r->last_stack, e->thread_id, metrics, 1, 1};
            r->thread = e->thread_id;
            r->ord = ord;
            r->may_be_temporary = 0; /* a mapping over a live range: not a free of the program's */
            if (cya_mappings_add(r->mappings, e->address, range_end(e->address, e->size), k, on_release, r) < 0)
                return 0;
        } else {
            heap_block *b = block_find(&r->blocks, key);
            if (!b)
                return 0;
            if (b->key != CYA_MAP_EMPTY) { /* its free was never seen */
                p->replaced_blocks++;
                if (r->tslot_metrics[b->tslot] != NEVER) {
                    r->live -= b->size;
                    stack_change(r, b->stack, b->size, -1);
                }
            } else {
                r->blocks.len++;
            }
            *b = (heap_block){key, e->size, ord, r->last_stack, r->tslot};
        }
        if (r->last_selected) {
            cya_metrics *m = &p->stacks[r->last_stack].m;
            m->bytes += e->size;
            m->count++;
            cya_thread_metrics *t = &p->threads[r->last_metrics];
            t->m.bytes += e->size;
            t->m.count++;
            if (r->last_cut) {
                p->cut_events++;
                p->cut_bytes += e->size;
                if (r->last_cut > p->cut_most)
                    p->cut_most = r->last_cut;
            }
            p->kind_count[e->kind & 63]++;
            p->kind_bytes[e->kind & 63] += e->size;
            if (!mapping || e->size)
                stack_change(r, r->last_stack, e->size, 1);
            r->live += e->size;
            if (r->live > r->peak) {
                r->peak = r->live;
                r->have_peak = 1;
                p->peak_event = r->event;
                p->peak_time_ns = e->time_ns;
            }
        }
        if (mapping && !r->tab[k].remaining && !drop_slot(r, k)) /* an empty mapping: nothing to release */
            return 0;
    } else if (is_mapping(e->kind)) {
        r->thread = e->thread_id;
        r->ord = ord;
        r->released = 0;
        /* the first half of an mremap: its thread's next event is the new mapping */
        r->may_be_temporary = 1;
        for (size_t j = 0; j < nahead; j++)
            if (ahead[j].thread_id == e->thread_id) {
                r->may_be_temporary = ahead[j].kind != CYA_MREMAP;
                break;
            }
        int found = cya_mappings_release(r->mappings, e->address, range_end(e->address, e->size), on_release, r);
        if (found < 0)
            return 0;
        if (!found)
            p->unmatched_frees++;
        if (r->last_selected) {
            p->kind_count[e->kind & 63]++;
            p->kind_bytes[e->kind & 63] += r->released;
        }
    } else {
        heap_block *b = block_find(&r->blocks, key);
        if (!b)
            return 0;
        if (b->key == CYA_MAP_EMPTY) {
            p->unmatched_frees++;
        } else {
            p->frees++;
            if (r->tslot_metrics[b->tslot] != NEVER) {
                r->live -= b->size;
                stack_change(r, b->stack, b->size, -1);
                if (e->kind != CYA_REALLOC_FREE && b->tslot == r->tslot && ord - b->ord <= p->temporary_window) {
                    cya_metrics *m = &p->stacks[b->stack].m;
                    m->temp_count++;
                    m->temp_bytes += b->size;
                }
            }
            block_remove(&r->blocks, b);
        }
        if (r->last_selected)
            p->kind_count[e->kind & 63]++;
    }
sample:
    /* a sample every step events, at the last, and at each new high-water mark */
    if (r->event == r->next_sample || r->event + 1 == r->nevents || (r->have_peak && p->peak_event == r->event)) {
        if (r->event == r->next_sample)
            r->next_sample += r->step;
        if (!add_sample(r, e->time_ns))
            return 0;
    }
    r->event++;
    return 1;
}

/* A chunk of the merged stream: each event is replayed once the LOOKAHEAD events after it
 * are known (the last ones of a chunk wait for the next). */
static int replay_chunk(void *ctx, const cya_event *events, size_t n)
{
    replay *r = ctx;
    if (r->ncarry) {
        cya_event window[2 * LOOKAHEAD];
        size_t w = r->ncarry, take = n < LOOKAHEAD ? n : LOOKAHEAD;
        memcpy(window, r->carry, w * sizeof *window);
        memcpy(window + w, events, take * sizeof *window);
        size_t ready = w + take > LOOKAHEAD ? w + take - LOOKAHEAD : 0;
        if (ready > w)
            ready = w;
        for (size_t i = 0; i < ready; i++)
            if (!replay_event(r, &window[i], &window[i + 1], LOOKAHEAD)) {
                r->failed = 1;
                return 0;
            }
        if (ready < w) { /* still waiting: the chunk was short */
            memmove(r->carry, window + ready, (w - ready) * sizeof *window);
            r->ncarry = w - ready;
            size_t room = LOOKAHEAD - r->ncarry;
            size_t add = n < room ? n : room; /* w + n <= LOOKAHEAD here */
            memcpy(r->carry + r->ncarry, events, add * sizeof *events);
            r->ncarry += add;
            return 1;
        }
        r->ncarry = 0;
    }
    size_t full = n > LOOKAHEAD ? n - LOOKAHEAD : 0;
    for (size_t i = 0; i < full; i++) {
        /* the block table is larger than the caches: ask for the entry of an event to come */
        if (i + PREFETCH < n && r->blocks.cap) {
            const cya_event *f = &events[i + PREFETCH];
            __builtin_prefetch(&r->blocks.items[block_home(&r->blocks, cya_block_key(f->kind, f->address))]);
        }
        if (!replay_event(r, &events[i], &events[i + 1], LOOKAHEAD)) {
            r->failed = 1;
            return 0;
        }
    }
    memcpy(r->carry, events + full, (n - full) * sizeof *events);
    r->ncarry = n - full;
    return 1;
}

int cya_profile_build(cya_profile *p, const cya_capture *c, const cya_symbols *symbols,
                      const cya_analyze_options *options, char *errbuf, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->capture = c;
    p->locs = cya_symbols_locations(symbols, &p->nsymlocs);
    p->pseudo[CYA_PSEUDO_NO_STACK] = (cya_location){"<no stack>", "", 0, CYA_FRAME_UNKNOWN, ""};
    p->pseudo[CYA_PSEUDO_UNKNOWN_STACK] = (cya_location){"<unknown stack>", "", 0, CYA_FRAME_UNKNOWN, ""};
    p->pseudo[CYA_PSEUDO_RUNNER] = (cya_location){"(cytool runner)", "", 0, CYA_FRAME_UNKNOWN, ""};
    p->pseudo[CYA_PSEUDO_TRACER] = (cya_location){"(cytool tracer)", "", 0, CYA_FRAME_UNKNOWN, ""};
    /* the helper calls' labels: newline-separated (options->helper_labels), kept in labels_text */
    const char *labels = options && options->helper_labels ? options->helper_labels : "";
    char *labels_text = strdup(labels);
    for (unsigned k = 0, at = 0; k < CYA_HELPER_LABELS; k++) {
        const char *name = "(helper call)";
        if (labels_text && labels_text[at]) {
            name = labels_text + at;
            size_t len = strcspn(name, "\n");
            at += (unsigned)len + (labels_text[at + len] == '\n');
            labels_text[name - labels_text + len] = '\0';
        }
        p->pseudo[CYA_PSEUDO_HELPER + k] = (cya_location){name, "", 0, CYA_FRAME_UNKNOWN, ""};
    }
    p->helper_labels_text = labels_text;
    p->temporary_window = options && options->temporary_window ? options->temporary_window : 1;
    int keep_native = options ? options->include_native_frames : 0;

    replay *r = calloc(1, sizeof *r);
    int ok = 0;
#define FAIL(msg)                                                                          \
    do {                                                                                   \
        snprintf(errbuf, errlen, "%s", msg);                                               \
        goto done;                                                                         \
    } while (0)
    if (!r)
        FAIL("out of memory");
    r->p = p;
    r->c = c;
    r->mappings = cya_mappings_new();

    uint8_t *runner = runner_flags(p, options ? options->runner_prefixes : NULL, options ? options->tool_prefixes : NULL);
    uint8_t *helper = helper_flags(p, options ? options->helper_calls : NULL, options ? options->helper_library : NULL);
    int folded = map_stacks(p, symbols, keep_native, runner, helper);
    free(runner);
    free(helper);
    if (!folded)
        FAIL("out of memory while folding stacks");
    r->no_stack = pseudo_stack(p, CYA_PSEUDO_NO_STACK);
    r->unknown_stack = pseudo_stack(p, CYA_PSEUDO_UNKNOWN_STACK);
    if (r->no_stack == UINT32_MAX || r->unknown_stack == UINT32_MAX || !r->mappings)
        FAIL("out of memory");
    r->stacks = calloc(p->nstacks ? p->nstacks : 1, sizeof *r->stacks);
    if (!r->stacks)
        FAIL("out of memory");
    r->filter = options && options->nthreads > 0;
    for (uint32_t i = 0; r->filter && i < options->nthreads; i++)
        if (!cya_map_put(&r->selected, options->threads[i], 1))
            FAIL("out of memory");
    r->nevents = cya_count_events(c);
    r->step = r->nevents / TIMELINE_POINTS + 1;
    r->last_thread = UINT64_MAX;
    r->last_raw_stack = UINT64_MAX;
    /* a table by capture stack id, when the ids are dense enough */
    uint64_t most = 0;
    size_t nraw = 0;
    const cya_stack *raws = cya_get_stacks(c, &nraw);
    for (size_t i = 0; i < nraw; i++)
        if (raws[i].id > most)
            most = raws[i].id;
    if (most < (1u << 20) || most < 4 * (uint64_t)nraw) {
        r->ndense = (size_t)most + 1;
        r->dense_stack = calloc(r->ndense, sizeof *r->dense_stack);
        r->dense_cut = calloc(r->ndense, sizeof *r->dense_cut);
        if (!r->dense_stack || !r->dense_cut)
            FAIL("out of memory");
        for (size_t i = 0; i < nraw; i++) {
            uint32_t *slot = cya_map_get(&p->raw_to_stack, raws[i].id);
            if (slot && raws[i].id) {
                r->dense_stack[raws[i].id] = *slot + 1;
                r->dense_cut[raws[i].id] = raws[i].cut;
            }
        }
    }
    r->last_selected = 1;
    r->last_metrics = NEVER;

    char why[256];
    if (!cya_merge_stream_pipelined(c, replay_chunk, r, why, sizeof why) || r->failed) {
        if (r->failed || !why[0])
            FAIL("out of memory while replaying the events");
        FAIL(why);
    }
    for (size_t i = 0; i < r->ncarry; i++) /* the last events: what follows them is all there is */
        if (!replay_event(r, &r->carry[i], &r->carry[i + 1], r->ncarry - i - 1))
            FAIL("out of memory while replaying the events");

    /* per stack: live at the peak and at the end; per thread: live at the end */
    for (size_t s = 0; s < p->nstacks; s++) {
        const stack_live *l = &r->stacks[s];
        cya_metrics *m = &p->stacks[s].m;
        if (r->have_peak) {
            int unchanged = l->last_change <= p->peak_event;
            m->peak_bytes += unchanged ? l->bytes : l->snap_bytes;
            m->peak_count += unchanged ? l->count : l->snap_count;
        }
        m->leaked_bytes += l->bytes;
        m->leaked_count += l->count;
    }
    for (size_t k = 0; k < r->blocks.cap; k++) {
        const heap_block *b = &r->blocks.items[k];
        if (b->key == CYA_MAP_EMPTY || r->tslot_metrics[b->tslot] == NEVER)
            continue;
        p->threads[r->tslot_metrics[b->tslot]].m.leaked_bytes += b->size;
        p->threads[r->tslot_metrics[b->tslot]].m.leaked_count++;
    }
    for (size_t k = 0; k < r->ntab; k++) {
        const live_block *b = &r->tab[k];
        if (!b->in_use || b->metrics == NEVER || !b->remaining)
            continue;
        p->threads[b->metrics].m.leaked_bytes += b->remaining;
        p->threads[b->metrics].m.leaked_count++;
    }

    /* per location: self from each stack's attribution, inclusive once per stack */
    size_t nl = p->nsymlocs + CYA_NPSEUDO;
    p->self = calloc(nl, sizeof *p->self);
    p->inclusive = calloc(nl, sizeof *p->inclusive);
    uint32_t *mark = calloc(nl, sizeof *mark);
    if (!p->self || !p->inclusive || !mark) {
        free(mark);
        FAIL("out of memory");
    }
#define ADD(dst, src) CYA_METRICS_ADD(dst, src)
    for (size_t s = 0; s < p->nstacks; s++) {
        const cya_pstack *st = &p->stacks[s];
        ADD(p->totals, st->m);
        ADD(p->self[st->self], st->m);
        for (uint64_t j = 0; j < st->count; j++) {
            uint32_t loc = p->frames[st->offset + j];
            if (mark[loc] == s + 1)
                continue;
            mark[loc] = (uint32_t)(s + 1);
            ADD(p->inclusive[loc], st->m);
        }
        if (!st->count) {
            ADD(p->inclusive[st->self], st->m);
        }
    }
#undef ADD
    free(mark);
    if (!group_lines(p))
        FAIL("out of memory while grouping lines");
    if (!cya_flame_build(p))
        FAIL("out of memory while building the flame graph");
    ok = 1;
done:
#undef FAIL
    if (r) {
        cya_map_free(&r->selected);
        cya_map_free(&r->thread_slots);
        free(r->blocks.items);
        cya_map_free(&r->tstate);
        cya_mappings_free(r->mappings);
        free(r->tab);
        free(r->spare);
        free(r->stacks);
        free(r->ordinals);
        free(r->tslot_metrics);
        free(r->dense_stack);
        free(r->dense_cut);
        free(r);
    }
    return ok;
}


void cya_profile_free(cya_profile *p)
{
    free(p->frames);
    free(p->stacks);
    cya_map_free(&p->stack_by_hash);
    cya_map_free(&p->raw_to_stack);
    free(p->self);
    free(p->inclusive);
    free(p->timeline);
    free(p->threads);
    free(p->flame);
    free(p->line_location);
    free(p->helper_labels_text);
    free(p->line_self);
    free(p->line_inclusive);
    free(p->line_attributed);
    memset(p, 0, sizeof *p);
}
