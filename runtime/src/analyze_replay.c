/* analyze_replay.c: folds the symbolised stacks into report stacks (user frames only
 * unless asked; cut at the launcher's frames outside the program), replays the events
 * to aggregate them per stack, then per location and per source line (self, inclusive,
 * and attributed: each stack charged to its innermost .pyx line).
 *
 * Owns the metrics' definitions:
 *  - allocated: every allocation event (realloc counts its new block);
 *  - peak: blocks live at the moment total live bytes (of the selected threads) was
 *    highest; a second, linear pass over the allocations finds which ones. When live
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
    for (size_t i = 0; i < n; i++)
        if (user_frame(cya_profile_location(p, f[i]))) {
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

#define RUNNER_OWN 1 /* the launcher's own allocation: "(cytool runner)" */
#define TRACER_OWN 2 /* cytool's own code inside a program that is not its launcher's */

/* Cut the folded stack buf[0..*m) (innermost first) at the launcher's frames; returns
 * RUNNER_OWN or TRACER_OWN for an allocation of cytool's own, else 0. */
static int cut_at_runner(const cya_profile *p, uint32_t *buf, size_t *m, const uint8_t *runner)
{
    size_t n = *m;
    /* started by cytool's launcher: the outermost frames (runpy, importlib, cytool's
     * own) include cytool's; `tool` is the innermost of those */
    int launched = 0;
    size_t tool = 0;
    for (size_t j = n; j-- > 0;) {
        if (buf[j] >= p->nsymlocs || !user_frame(&p->locs[buf[j]]))
            continue;
        if (!runner[buf[j]])
            break;
        if (runner[buf[j]] & TOOL_FRAME) {
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
        return RUNNER_OWN;
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
    *m = n;
    return 0;
}

/* Fold every capture stack into a profile stack (user frames only unless asked), cut
 * at the launcher's frames when `runner` flags are given. */
static int map_stacks(cya_profile *p, const cya_symbols *symbols, int keep_native, const uint8_t *runner)
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

static cya_thread_metrics *thread_metrics(cya_profile *p, cya_map *index, uint64_t id)
{
    uint32_t *slot = cya_map_get(index, id);
    if (slot)
        return &p->threads[*slot];
    cya_thread_metrics t;
    memset(&t, 0, sizeof t);
    t.id = id;
    if (!CYA_PUSH(p->threads, p->nthreads, p->cap_threads, t) ||
        !cya_map_put(index, id, (uint32_t)(p->nthreads - 1)))
        return NULL;
    return &p->threads[p->nthreads - 1];
}

/* ---- mappings: released by address range (analyze_mappings.c) -------------------- */

static int is_mapping(unsigned kind) { return kind == CYA_MMAP || kind == CYA_MREMAP || kind == CYA_MUNMAP; }

typedef struct mapping_info {
    uint32_t alloc;
    uint64_t remaining;        /* bytes of it still mapped */
    uint64_t released_by_peak; /* pass 2 */
} mapping_info;

typedef struct release_entry {
    uint32_t info, event;
    uint64_t bytes;
} release_entry;

/* The replay's state that a released piece of a mapping updates. */
typedef struct replay {
    cya_profile *p;
    const cya_capture *c;
    const cya_map *selected;
    int filter;
    const uint32_t *alloc_event, *alloc_ord, *alloc_stack;
    uint32_t *alloc_free;
    cya_map info_index; /* allocation -> mapping_info */
    mapping_info *infos;
    size_t ninfos, cap_infos;
    release_entry *log;
    size_t nlog, cap_log;
    uint64_t *live;
    /* the releasing event */
    uint32_t event, thread;
    uint64_t ord, released;
    int may_be_temporary;
} replay;

static int thread_selected(const replay *r, uint64_t thread)
{
    return !r->filter || cya_map_get(r->selected, thread) != NULL;
}

static int on_release(void *ctx, uint32_t alloc, uint64_t bytes)
{
    replay *r = ctx;
    uint32_t *slot = cya_map_get(&r->info_index, alloc);
    if (!slot || !bytes)
        return 1;
    mapping_info *info = &r->infos[*slot];
    if (bytes > info->remaining)
        bytes = info->remaining;
    info->remaining -= bytes;
    release_entry entry = {*slot, r->event, bytes};
    if (!CYA_PUSH(r->log, r->nlog, r->cap_log, entry))
        return 0;
    const cya_event *ae = &r->c->events[r->alloc_event[alloc]];
    if (!thread_selected(r, ae->thread_id))
        return 1;
    *r->live -= bytes;
    r->released += bytes;
    if (info->remaining == 0) { /* nothing of it is left */
        r->alloc_free[alloc] = r->event;
        r->p->frees++;
        if (r->may_be_temporary && ae->thread_id == r->thread && r->ord - r->alloc_ord[alloc] <= r->p->temporary_window) {
            cya_metrics *m = &r->p->stacks[r->alloc_stack[alloc]].m;
            m->temp_count++;
            m->temp_bytes += ae->size;
        }
    }
    return 1;
}

/* Is the munmap at event i the first half of an mremap (its thread's next event)? */
static int before_mremap(const cya_capture *c, size_t i)
{
    for (size_t j = i + 1; j < c->nevents && j < i + 16; j++)
        if (c->events[j].thread_id == c->events[i].thread_id)
            return c->events[j].kind == CYA_MREMAP;
    return 0;
}

static uint64_t range_end(uint64_t start, uint64_t size)
{
    return size > UINT64_MAX - start ? UINT64_MAX : start + size;
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
    p->temporary_window = options && options->temporary_window ? options->temporary_window : 1;
    int keep_native = options ? options->include_native_frames : 0;

    cya_map selected = {0}, thread_slots = {0}, blocks = {0}, tstate = {0};
    uint32_t *alloc_event = NULL, *alloc_ord = NULL, *alloc_free = NULL, *alloc_stack = NULL;
    cya_mappings *mappings = cya_mappings_new();
    replay rp;
    memset(&rp, 0, sizeof rp);
    uint64_t *ordinals = NULL;
    size_t nordinals = 0, cap_ordinals = 0;
    int ok = 0;
#define FAIL(msg)                                                                          \
    do {                                                                                   \
        snprintf(errbuf, errlen, "%s", msg);                                               \
        goto done;                                                                         \
    } while (0)

    uint8_t *runner = runner_flags(p, options ? options->runner_prefixes : NULL, options ? options->tool_prefixes : NULL);
    int folded = map_stacks(p, symbols, keep_native, runner);
    free(runner);
    if (!folded)
        FAIL("out of memory while folding stacks");
    uint32_t no_stack = pseudo_stack(p, CYA_PSEUDO_NO_STACK);
    uint32_t unknown_stack = pseudo_stack(p, CYA_PSEUDO_UNKNOWN_STACK);
    if (no_stack == UINT32_MAX || unknown_stack == UINT32_MAX)
        FAIL("out of memory");
    int filter = options && options->nthreads > 0;
    for (uint32_t i = 0; filter && i < options->nthreads; i++)
        if (!cya_map_put(&selected, options->threads[i], 1))
            FAIL("out of memory");

    size_t nallocs = 0;
    for (size_t i = 0; i < c->nevents; i++)
        nallocs += c->events[i].kind < CYA_FREE;
    if (c->nevents >= NEVER)
        FAIL("too many events for one analysis (more than 4 billion)");
    alloc_event = malloc((nallocs ? nallocs : 1) * sizeof *alloc_event);
    alloc_ord = malloc((nallocs ? nallocs : 1) * sizeof *alloc_ord);
    alloc_free = malloc((nallocs ? nallocs : 1) * sizeof *alloc_free);
    alloc_stack = malloc((nallocs ? nallocs : 1) * sizeof *alloc_stack);
    if (!alloc_event || !alloc_ord || !alloc_free || !alloc_stack || !mappings)
        FAIL("out of memory for the allocation table");

    uint64_t live = 0, peak = 0, step = c->nevents / TIMELINE_POINTS + 1;
    size_t k = 0;
    uint64_t last_thread = UINT64_MAX, last_raw_stack = UINT64_MAX, last_cut = 0;
    uint32_t tslot = 0, last_stack = 0;
    int last_selected = 1;
    rp = (replay){.p = p, .c = c, .selected = &selected, .filter = filter, .alloc_event = alloc_event,
                  .alloc_ord = alloc_ord, .alloc_stack = alloc_stack, .alloc_free = alloc_free, .live = &live};
    for (size_t i = 0; i < c->nevents; i++) {
        const cya_event *e = &c->events[i];
        if (e->thread_id != last_thread) {
            uint32_t *slot = cya_map_get(&tstate, e->thread_id);
            if (!slot) {
                if (!CYA_PUSH(ordinals, nordinals, cap_ordinals, 0) ||
                    !cya_map_put(&tstate, e->thread_id, (uint32_t)(nordinals - 1)))
                    FAIL("out of memory");
                slot = cya_map_get(&tstate, e->thread_id);
            }
            tslot = *slot;
            last_thread = e->thread_id;
            last_selected = !filter || cya_map_get(&selected, e->thread_id) != NULL;
        }
        uint64_t ord = ++ordinals[tslot];
        if (!e->address) /* a failed allocation, or free(NULL) / realloc(NULL, n)'s free */
            goto sample;
        uint64_t key = cya_block_key(e->kind, e->address);
        uint32_t *old;
        if (e->kind < CYA_FREE) {
            if (e->stack_id != last_raw_stack) {
                uint32_t *slot = e->stack_id ? cya_map_get(&p->raw_to_stack, e->stack_id) : NULL;
                last_stack = slot ? *slot : e->stack_id ? unknown_stack : no_stack;
                last_raw_stack = e->stack_id;
                const cya_stack *raw = slot ? cya_find_stack(c, e->stack_id) : NULL;
                last_cut = raw ? raw->cut : 0;
            }
            if (is_mapping(e->kind)) {
                mapping_info info = {(uint32_t)k, e->size, 0};
                if (!CYA_PUSH(rp.infos, rp.ninfos, rp.cap_infos, info) ||
                    !cya_map_put(&rp.info_index, (uint32_t)k, (uint32_t)(rp.ninfos - 1)))
                    FAIL("out of memory for the mapping table");
                rp.event = (uint32_t)i;
                rp.thread = e->thread_id;
                rp.ord = ord;
                rp.may_be_temporary = 0; /* a mapping over a live range: not a free of the program's */
                if (cya_mappings_add(mappings, e->address, range_end(e->address, e->size), (uint32_t)k, on_release,
                                     &rp) < 0)
                    FAIL("out of memory for the mapping table");
            } else if ((old = cya_map_get(&blocks, key))) { /* its free was never seen */
                const cya_event *oe = &c->events[alloc_event[*old]];
                alloc_free[*old] = (uint32_t)i;
                p->replaced_blocks++;
                if (!filter || cya_map_get(&selected, oe->thread_id))
                    live -= oe->size;
                *old = (uint32_t)k;
            } else if (!cya_map_put(&blocks, key, (uint32_t)k)) {
                FAIL("out of memory for the live block table");
            }
            alloc_event[k] = (uint32_t)i;
            alloc_ord[k] = (uint32_t)ord;
            alloc_free[k] = NEVER;
            alloc_stack[k] = last_stack;
            k++;
            if (last_selected) {
                cya_metrics *m = &p->stacks[last_stack].m;
                m->bytes += e->size;
                m->count++;
                if (last_cut) {
                    p->cut_events++;
                    p->cut_bytes += e->size;
                    if (last_cut > p->cut_most)
                        p->cut_most = last_cut;
                }
                p->kind_count[e->kind & 63]++;
                p->kind_bytes[e->kind & 63] += e->size;
                live += e->size;
                if (live > peak) {
                    peak = live;
                    p->peak_event = i;
                    p->peak_time_ns = e->time_ns;
                }
            }
        } else if (is_mapping(e->kind)) {
            rp.event = (uint32_t)i;
            rp.thread = e->thread_id;
            rp.ord = ord;
            rp.released = 0;
            rp.may_be_temporary = !before_mremap(c, i);
            int found = cya_mappings_release(mappings, e->address, range_end(e->address, e->size), on_release, &rp);
            if (found < 0)
                FAIL("out of memory for the mapping table");
            if (!found)
                p->unmatched_frees++;
            if (last_selected) {
                p->kind_count[e->kind & 63]++;
                p->kind_bytes[e->kind & 63] += rp.released;
            }
        } else {
            uint32_t *slot = cya_map_get(&blocks, key);
            if (!slot) {
                p->unmatched_frees++;
            } else {
                uint32_t a = *slot;
                const cya_event *ae = &c->events[alloc_event[a]];
                cya_map_del(&blocks, key);
                alloc_free[a] = (uint32_t)i;
                p->frees++;
                if (!filter || cya_map_get(&selected, ae->thread_id)) {
                    live -= ae->size;
                    if (e->kind != CYA_REALLOC_FREE && ae->thread_id == e->thread_id &&
                        ord - alloc_ord[a] <= p->temporary_window) {
                        cya_metrics *m = &p->stacks[alloc_stack[a]].m;
                        m->temp_count++;
                        m->temp_bytes += ae->size;
                    }
                }
            }
            if (last_selected)
                p->kind_count[e->kind & 63]++;
        }
    sample:
        if (i % step == 0 || i + 1 == c->nevents || i == p->peak_event) {
            cya_sample s = {e->time_ns, live};
            if (!CYA_PUSH(p->timeline, p->ntimeline, p->cap_timeline, s))
                FAIL("out of memory");
        }
    }

    /* second pass: who was live at the peak, and at the end (a mapping: how much of it) */
    for (size_t j = 0; j < rp.nlog; j++)
        if (rp.log[j].event <= p->peak_event)
            rp.infos[rp.log[j].info].released_by_peak += rp.log[j].bytes;
    for (size_t a = 0; a < k; a++) {
        const cya_event *e = &c->events[alloc_event[a]];
        if (filter && !cya_map_get(&selected, e->thread_id))
            continue;
        cya_metrics *m = &p->stacks[alloc_stack[a]].m;
        uint64_t peak_bytes, end_bytes;
        int at_peak, at_end;
        if (is_mapping(e->kind)) {
            uint32_t *slot = cya_map_get(&rp.info_index, (uint32_t)a);
            const mapping_info *info = slot ? &rp.infos[*slot] : NULL;
            peak_bytes = info && peak && alloc_event[a] <= p->peak_event
                             ? e->size - (info->released_by_peak < e->size ? info->released_by_peak : e->size)
                             : 0;
            end_bytes = info ? info->remaining : 0;
            at_peak = peak_bytes > 0;
            at_end = end_bytes > 0;
        } else {
            at_peak = peak && alloc_event[a] <= p->peak_event && (alloc_free[a] == NEVER || alloc_free[a] > p->peak_event);
            at_end = alloc_free[a] == NEVER;
            peak_bytes = at_peak ? e->size : 0;
            end_bytes = at_end ? e->size : 0;
        }
        if (at_peak) {
            m->peak_bytes += peak_bytes;
            m->peak_count++;
        }
        if (at_end) {
            m->leaked_bytes += end_bytes;
            m->leaked_count++;
        }
        cya_thread_metrics *t = thread_metrics(p, &thread_slots, e->thread_id);
        if (!t)
            FAIL("out of memory");
        t->m.bytes += e->size;
        t->m.count++;
        if (at_end) {
            t->m.leaked_bytes += end_bytes;
            t->m.leaked_count++;
        }
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
    cya_map_free(&selected);
    cya_map_free(&thread_slots);
    cya_map_free(&blocks);
    cya_map_free(&tstate);
    cya_map_free(&rp.info_index);
    free(rp.infos);
    free(rp.log);
    cya_mappings_free(mappings);
    free(alloc_event);
    free(alloc_ord);
    free(alloc_free);
    free(alloc_stack);
    free(ordinals);
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
    free(p->line_self);
    free(p->line_inclusive);
    free(p->line_attributed);
    memset(p, 0, sizeof *p);
}
