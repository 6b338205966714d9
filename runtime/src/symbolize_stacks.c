/* symbolize_stacks.c: turns every stack of a capture into a list of locations.
 *
 * Owns the location table (function, file, line, kind, object; deduplicated), the
 * per-pc cache of inline chains, the folding rules, and the public cya_symbol* API:
 *  - native pcs are return addresses: they are looked up at pc - 1;
 *  - inline frames are expanded (innermost first);
 *  - in a Cython module, frames outside .pyx/.pxd/.pxi files (Cython's utility code,
 *    `(tree fragment)`, the module's own .c, inlined headers) fold into the nearest
 *    .pyx caller of the same module, and a `__pyx_pw_` wrapper frame folds into the
 *    Cython function it wraps;
 *  - in a Cython module built without #line directives (a wheel, a plain setup.py
 *    build: no debug XML), a Cython function's frame on a line of the generated C gets
 *    its .pyx line from that C file's source-position comments when the file is found;
 *    else it stays at the C line as CYA_FRAME_CYTHON_C, and one warning names such
 *    modules. Either way it is the program's frame, never dropped as native;
 *  - a frame that DWARF puts in a .pyx but that is Cython utility code (`__Pyx_*`) is
 *    helper code; a Cython function's frame on a line past the end of the file (C code
 *    after the last #line directive inherits it) keeps the function with line 0;
 *  - an object that is gone or changed since the capture is looked for, by build-id,
 *    among other builds (cytool's cache keeps them); failing that its frames show raw
 *    addresses. Either way the warnings say so;
 *  - a native pc is looked up in the object mapped there at the stack's load generation
 *    (a library unloaded and another loaded at its address are told apart);
 *  - where the tracer dropped the middle of a deep stack, one "… frames cut" location.
 */
#define _GNU_SOURCE
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "symbolize_internal.h"

#define NO_OBJECT UINT32_MAX
#define MAX_INLINE 64

typedef struct loc_extra {
    uint32_t object;  /* index into capture objects, NO_OBJECT when none */
    uint8_t wrapper;  /* a __pyx_pw_ wrapper frame */
    uint8_t eval;     /* the interpreter's eval loop (_PyEval_EvalFrameDefault) */
} loc_extra;

/* A C file named by an object's DWARF, and the generated C found for it (NULL: none). */
typedef struct c_source {
    char *dwarf_path;
    cy_cfile *cfile;
} c_source;

typedef struct obj_state {
    int opened;
    int warned_no_lines;
    int c_lines_only; /* frames of its Cython functions show generated-C lines (no .c found) */
    enum sym_state state;
    sym_dwarf *dwarf;
    cy_names *names;
    c_source *c_sources;
    size_t nc_sources, cap_c_sources;
} obj_state;

typedef struct span {
    uint64_t offset, count;
} span;

struct cya_symbols {
    const cya_capture *capture;
    cya_location *locs;
    loc_extra *extra;
    size_t nlocs, cap_locs, cap_extra;
    cya_map loc_index; /* hash of a location -> index (probing on collisions) */

    obj_state *objects;

    uint32_t *pc_frames; /* inline chains, location indices */
    size_t npc_frames, cap_pc_frames;
    cya_map pc_index;    /* pc -> index into pc_spans */
    span *pc_spans;
    size_t npc_spans, cap_pc_spans;

    uint32_t *frames; /* folded stacks, location indices */
    size_t nframes, cap_frames;
    span *stacks;     /* parallel to the capture's stacks */
    size_t nstacks_done, nobjects_known; /* what cya_symbols_extend has seen of the capture */

    char *warnings;
    size_t nwarnings, cap_warnings;
    cy_sources *sources;
    char *search; /* colon-separated glob patterns of directories holding other builds */
    int failed;
};

static uint64_t hash_bytes(uint64_t h, const char *s)
{
    for (; s && *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL;
}

static int same_string(const char *a, const char *b) { return strcmp(a ? a : "", b ? b : "") == 0; }

/* Index of the location, added when new; UINT32_MAX when out of memory. */
static uint32_t intern(cya_symbols *s, const char *function, const char *file, uint32_t line, uint32_t kind,
                       const char *object, uint32_t object_index, int wrapper)
{
    uint64_t h = hash_bytes(hash_bytes(hash_bytes(1469598103934665603ULL, function), file), object);
    h ^= cya_hash64(((uint64_t)line << 8) | (kind << 1) | (wrapper ? 1 : 0));
    for (;; h++) {
        if (h == CYA_MAP_EMPTY)
            continue;
        uint32_t *slot = cya_map_get(&s->loc_index, h);
        if (!slot)
            break;
        cya_location *l = &s->locs[*slot];
        if (l->line == line && l->kind == kind && s->extra[*slot].wrapper == (wrapper ? 1 : 0) &&
            same_string(l->function, function) && same_string(l->file, file) && same_string(l->object, object))
            return *slot;
    }
    cya_location loc = {strdup(function ? function : ""), strdup(file ? file : ""), line, kind,
                        strdup(object ? object : "")};
    loc_extra ex = {object_index, (uint8_t)(wrapper ? 1 : 0),
                    (uint8_t)(kind == CYA_FRAME_NATIVE && function && strcmp(function, "_PyEval_EvalFrameDefault") == 0)};
    if (!loc.function || !loc.file || !loc.object ||
        !cya_grow((void **)&s->extra, &s->cap_extra, s->nlocs + 1, sizeof *s->extra) ||
        !CYA_PUSH(s->locs, s->nlocs, s->cap_locs, loc)) {
        free((void *)loc.function);
        free((void *)loc.file);
        free((void *)loc.object);
        s->failed = 1;
        return UINT32_MAX;
    }
    s->extra[s->nlocs - 1] = ex;
    if (!cya_map_put(&s->loc_index, h, (uint32_t)(s->nlocs - 1))) {
        s->failed = 1;
        return UINT32_MAX;
    }
    return (uint32_t)(s->nlocs - 1);
}

static void warn(cya_symbols *s, const char *fmt, const char *path, const char *extra)
{
    char line[8400];
    int n = snprintf(line, sizeof line, fmt, path, extra);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = sizeof line - 1;
    if (!cya_grow((void **)&s->warnings, &s->cap_warnings, s->nwarnings + (size_t)n + 2, 1)) {
        s->failed = 1;
        return;
    }
    memcpy(s->warnings + s->nwarnings, line, (size_t)n);
    s->nwarnings += (size_t)n;
    s->warnings[s->nwarnings++] = '\n';
    s->warnings[s->nwarnings] = '\0';
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* A copy of a missing or changed object with the captured build-id, looked for as
 * <dir>/<basename> in every directory matching one of the search patterns (cytool's
 * build cache keeps every build it made). Returns an opened sym_dwarf or NULL. */
static sym_dwarf *find_same_build(cya_symbols *s, const cya_object *o, char *found, size_t len)
{
    if (!s->search || !o->build_id_len || !o->path || !*o->path)
        return NULL;
    const char *base = base_name(o->path);
    char *patterns = strdup(s->search), *save = NULL;
    if (!patterns)
        return NULL;
    sym_dwarf *d = NULL;
    for (char *pat = strtok_r(patterns, ":", &save); pat && !d; pat = strtok_r(NULL, ":", &save)) {
        glob_t g;
        if (glob(pat, GLOB_NOSORT | GLOB_ONLYDIR, NULL, &g) != 0)
            continue;
        for (size_t i = 0; i < g.gl_pathc && !d; i++) {
            int n = snprintf(found, len, "%s/%s", g.gl_pathv[i], base);
            if (n < 0 || (size_t)n >= len || strcmp(found, o->path) == 0 || access(found, R_OK) != 0)
                continue;
            enum sym_state state;
            d = sym_dwarf_open(found, o->load_bias, o->build_id, o->build_id_len, &state);
            if (d && state != SYM_OK) {
                sym_dwarf_close(d);
                d = NULL;
            }
        }
        globfree(&g);
    }
    free(patterns);
    return d;
}

static obj_state *open_object(cya_symbols *s, uint32_t index)
{
    obj_state *st = &s->objects[index];
    if (st->opened)
        return st;
    st->opened = 1;
    const cya_object *o = &s->capture->objects[index];
    const char *path = o->path;
    if (!path || !*path) /* the main program: link_map names it "" */
        path = s->capture->header.executable;
    st->dwarf = sym_dwarf_open(path, o->load_bias, o->build_id, o->build_id_len, &st->state);
    if (!st->dwarf) {
        s->failed = 1;
        return st;
    }
    const char *what = st->state == SYM_MISSING   ? "deleted since the capture was made"
                       : st->state == SYM_CHANGED ? "changed since the capture was made (build-id differs)"
                                                  : "cannot be read for symbols";
    if (st->state != SYM_OK) {
        char found[4096];
        sym_dwarf *copy = find_same_build(s, o, found, sizeof found);
        if (copy) {
            sym_dwarf_close(st->dwarf);
            st->dwarf = copy;
            st->state = SYM_OK;
            if (sym_dwarf_is_cython(copy))
                st->names = cy_names_load(found, sym_dwarf_module_name(copy), o->build_id, o->build_id_len, s->search, copy);
            char where[4200];
            snprintf(where, sizeof where, "; symbols come from the identical build %s", found);
            char head[4200];
            snprintf(head, sizeof head, "%s: %s", path, what);
            warn(s, "%s%s", head, where);
            return st;
        }
        warn(s, "%s: %s; its frames show as raw addresses", path, what);
        return st;
    }
    if (sym_dwarf_is_cython(st->dwarf))
        st->names = cy_names_load(path, sym_dwarf_module_name(st->dwarf), o->build_id, o->build_id_len, s->search,
                                  st->dwarf);
    return st;
}

/* A source path as the DWARF or the C file names it (`#line 5 "pkg/inc.pyx"` of a
 * setup.py build: relative to the directory the C file was compiled in), made absolute
 * with that directory (the object's DW_AT_comp_dir at `pc`, the address looked up),
 * whatever directory the report runs in; into buf, else `file` as it is. */
static const char *compiled_in(obj_state *st, uint64_t pc, const char *file, char *buf, size_t size)
{
    if (!file || !*file || file[0] == '/')
        return file;
    const char *dir = sym_dwarf_comp_dir(st->dwarf, pc);
    if (!dir || dir[0] != '/' || (size_t)snprintf(buf, size, "%s/%s", dir, file) >= size)
        return file;
    return buf;
}

/* The generated C file (no #line directives) whose C lines `file` (as the object's DWARF
 * names it, relative to the compilation directory of the code at `pc`) are, or NULL. */
static const cy_cfile *generated_c(cya_symbols *s, obj_state *st, const cya_object *o, uint64_t pc,
                                   const char *file)
{
    for (size_t k = 0; k < st->nc_sources; k++)
        if (strcmp(st->c_sources[k].dwarf_path, file) == 0)
            return st->c_sources[k].cfile;
    char joined[4096];
    const char *where = compiled_in(st, pc, file, joined, sizeof joined);
    const char *so = o->path && *o->path ? o->path : s->capture->header.executable;
    cy_cfile *f = cy_cfile_find(so, sym_dwarf_module_name(st->dwarf), where);
    /* found beside the module or in the project: only the file the DWARF names */
    if (f && strcmp(base_name(cy_cfile_path(f)), base_name(file)) != 0) {
        cy_cfile_free(f);
        f = NULL;
    }
    struct stat c_stat, so_stat;
    if (f && stat(cy_cfile_path(f), &c_stat) == 0 && stat(so, &so_stat) == 0 &&
        c_stat.st_mtime > so_stat.st_mtime + 2) /* generated again since the module was built */
        warn(s, "%s is newer than the module it was compiled into: its .pyx lines may be off (rebuild %s)",
             cy_cfile_path(f), so);
    c_source cs = {strdup(file), f};
    if (!cs.dwarf_path || !CYA_PUSH(st->c_sources, st->nc_sources, st->cap_c_sources, cs)) {
        free(cs.dwarf_path);
        cy_cfile_free(f);
        s->failed = 1;
        return NULL;
    }
    return f;
}

static int is_c_file(const char *file)
{
    const char *dot = file ? strrchr(file, '.') : NULL;
    return dot && (strcmp(dot, ".c") == 0 || strcmp(dot, ".cpp") == 0 || strcmp(dot, ".cc") == 0 ||
                   strcmp(dot, ".cxx") == 0);
}

/* The location indices of a native pc's inline chain in the object mapped there at load
 * generation `generation` (cached per pc and object). */
static span lookup_pc(cya_symbols *s, uint64_t pc, uint64_t generation)
{
    const cya_object *o = cya_find_object_at(s->capture, pc, generation);
    uint32_t oi = o ? (uint32_t)(o - s->capture->objects) : NO_OBJECT;
    /* user-space pcs fit in 48 bits: the object goes above (a pc beyond misses the cache) */
    uint64_t key = pc < ((uint64_t)1 << 48) ? pc | (uint64_t)((oi + 1) & 0x7fff) << 48 : CYA_MAP_EMPTY;
    uint32_t *slot = key != CYA_MAP_EMPTY ? cya_map_get(&s->pc_index, key) : NULL;
    if (slot)
        return s->pc_spans[*slot];
    span sp = {s->npc_frames, 0};
    raw_frame raw[MAX_INLINE];
    int n = 0;
    obj_state *st = NULL;
    if (o) {
        st = open_object(s, oi);
        if (st->state == SYM_OK)
            n = sym_dwarf_lookup(st->dwarf, pc ? pc - 1 : 0, raw, MAX_INLINE);
    }
    char name[1024], joined[4096];
    for (int i = 0; i < n; i++) {
        const char *file = raw[i].file;
        int line = raw[i].line;
        int pyx = cy_is_cython_source(file);
        if (pyx && file && !strchr(file, '/') && cy_names_source(st->names) &&
            strcmp(base_name(cy_names_source(st->names)), file) == 0) {
            file = cy_names_source(st->names);
        } else if (pyx) {
            file = compiled_in(st, pc ? pc - 1 : 0, file, joined, sizeof joined);
        }
        const char *function = cy_display_name(st->names, raw[i].cname, name, sizeof name);
        if (pyx && cy_is_utility(raw[i].cname)) {
            pyx = 0; /* helper code that inherited a .pyx file from the last #line */
            file = NULL;
            line = 0;
        } else if (pyx && !cy_line_exists(s->sources, file, line)) {
            line = 0; /* a Cython function, but no real line: the function as a whole */
            if (!function) {
                pyx = 0;
                file = NULL;
            }
        }
        uint32_t kind = pyx ? CYA_FRAME_PYX : CYA_FRAME_NATIVE;
        if (!pyx && function && file && !cy_is_utility(raw[i].cname) && is_c_file(file) &&
            sym_dwarf_is_cython(st->dwarf)) {
            /* a Cython function of a module built without #line directives (a wheel, a
             * plain setup.py build): its .pyx line from the generated C's position
             * comments, else its C line marked as such */
            const cy_cfile *cf = generated_c(s, st, o, pc ? pc - 1 : 0, file);
            const char *pyx_file = NULL;
            int pyx_line = 0;
            const char *def_name = cy_is_generator_body(raw[i].cname) ? cy_cfile_def_name(cf, raw[i].decl_line) : NULL;
            char *last = def_name ? strrchr(name, '.') : NULL;
            if (last && function == name && strcmp(last, ".genexpr") == 0) /* no wrapper named its def */
                snprintf(last + 1, sizeof name - (size_t)(last + 1 - name), "%s", def_name);
            if (cf && !cy_cfile_has_line_directives(cf) && cy_cfile_position(cf, line, &pyx_file, &pyx_line)) {
                if (cy_is_cython_source(pyx_file)) {
                    pyx = 1;
                    kind = CYA_FRAME_PYX;
                    file = compiled_in(st, pc ? pc - 1 : 0, pyx_file, joined, sizeof joined);
                    line = cy_line_exists(s->sources, file, pyx_line) ? pyx_line : 0;
                } /* else Cython's `(tree fragment)`: helper code, folded into a .pyx caller */
            } else if (!cf || !cy_cfile_has_line_directives(cf)) {
                kind = CYA_FRAME_CYTHON_C;
                if (cf)
                    file = cy_cfile_path(cf);
                st->c_lines_only = 1;
            }
        }
        if (!file && function && !cy_is_utility(raw[i].cname)) {
            /* a Cython function without line information: attribute to the function */
            pyx = 1;
            file = cy_names_source(st->names) ? cy_names_source(st->names) : "";
            line = 0;
            if (!st->warned_no_lines) {
                st->warned_no_lines = 1;
                warn(s, "%s: has no DWARF line information (built without -g?); its frames show Cython function "
                        "names only%s", o->path && *o->path ? o->path : "?", "");
            }
            kind = CYA_FRAME_PYX;
        }
        if (!function)
            function = raw[i].cname ? raw[i].cname : "??";
        uint32_t li = intern(s, function, file, file ? (uint32_t)line : 0, kind, o->path, oi,
                             cy_is_wrapper(raw[i].cname));
        if (li == UINT32_MAX || !CYA_PUSH(s->pc_frames, s->npc_frames, s->cap_pc_frames, li)) {
            s->failed = 1;
            return sp;
        }
    }
    if (n == 0) {
        if (o)
            snprintf(name, sizeof name, "%s+0x%llx", base_name(o->path && *o->path ? o->path : "?"),
                     (unsigned long long)(pc - o->load_bias));
        else
            snprintf(name, sizeof name, "0x%llx", (unsigned long long)pc);
        uint32_t li = intern(s, name, "", 0, CYA_FRAME_UNKNOWN, o ? o->path : "", oi, 0);
        if (li == UINT32_MAX || !CYA_PUSH(s->pc_frames, s->npc_frames, s->cap_pc_frames, li)) {
            s->failed = 1;
            return sp;
        }
    }
    sp.count = s->npc_frames - sp.offset;
    if (!CYA_PUSH(s->pc_spans, s->npc_spans, s->cap_pc_spans, sp) ||
        (key != CYA_MAP_EMPTY && !cya_map_put(&s->pc_index, key, (uint32_t)(s->npc_spans - 1))))
        s->failed = 1;
    return sp;
}

static uint32_t python_location(cya_symbols *s, uint64_t id)
{
    const cya_pyframe *f = cya_find_pyframe(s->capture, id);
    if (!f)
        return intern(s, "<unknown>", "", 0, CYA_FRAME_UNKNOWN, "", NO_OBJECT, 0);
    return intern(s, f->function, f->file, (uint32_t)f->line, CYA_FRAME_PYTHON, "", NO_OBJECT, 0);
}

/* The one location that stands for the frames dropped from the middle of deep stacks
 * (how many: cya_stack.cut). */
static uint32_t cut_location(cya_symbols *s)
{
    return intern(s, "\xe2\x80\xa6 frames cut", "", 0, CYA_FRAME_CUT, "", NO_OBJECT, 0);
}

typedef struct expansion {
    cya_symbols *s;
    const cya_stack *st;
    uint32_t **tmp;
    size_t *tmp_cap, n;
    int cut_done;
} expansion;

static void push_location(expansion *x, uint32_t li)
{
    if (li == UINT32_MAX || !CYA_PUSH(*x->tmp, x->n, *x->tmp_cap, li))
        x->s->failed = 1;
}

/* Before raw frame `i` is expanded: the cut marker, if the gap lies just before it. */
static void before_raw(expansion *x, uint64_t i)
{
    if (x->st->cut && !x->cut_done && i >= x->st->cut_at) {
        x->cut_done = 1;
        push_location(x, cut_location(x->s));
    }
}

static void push_python(expansion *x, uint64_t i)
{
    before_raw(x, i);
    push_location(x, python_location(x->s, x->st->frames[i] >> 1));
}

/* Expand one stack into `tmp`, then fold it into s->frames. */
static void fold_stack(cya_symbols *s, const cya_stack *st, uint32_t **tmp, size_t *tmp_cap, uint32_t *seen,
                       uint32_t generation)
{
    expansion x = {s, st, tmp, tmp_cap, 0, 0};
    /* Python frames whose position the tracer did not know follow all native frames.
     * When the native frames show the interpreter's eval loop, put them back inside it:
     * each _PyEval_EvalFrameDefault runs one Python frame (exact before 3.11, where
     * every Python call has its own; from 3.11 Python-to-Python calls share one, and
     * the outermost eval frame takes all that remain). */
    uint64_t first_py = st->nframes;
    for (uint64_t i = 0; i < st->nframes; i++)
        if (st->frames[i] & 1) {
            first_py = i;
            break;
        }
    int tail_layout = first_py < st->nframes;
    for (uint64_t i = first_py; i < st->nframes; i++)
        if (!(st->frames[i] & 1))
            tail_layout = 0;
    size_t evals = 0;
    if (tail_layout)
        for (uint64_t i = 0; i < first_py; i++) {
            span sp = lookup_pc(s, st->frames[i] >> 1, st->generation);
            for (uint64_t j = 0; j < sp.count; j++)
                if (s->extra[s->pc_frames[sp.offset + j]].eval) {
                    evals++;
                    break;
                }
        }
    uint64_t next_py = first_py, nat_end = evals ? first_py : st->nframes;
    size_t eval_seen = 0;
    for (uint64_t i = 0; i < nat_end && !s->failed; i++) {
        uint64_t w = st->frames[i];
        if (w & 1) {
            push_python(&x, i);
            continue;
        }
        before_raw(&x, i);
        span sp = lookup_pc(s, w >> 1, st->generation);
        int eval = 0;
        for (uint64_t j = 0; j < sp.count; j++)
            eval |= s->extra[s->pc_frames[sp.offset + j]].eval;
        if (evals && eval && next_py < st->nframes) {
            /* the Python frame(s) this eval loop was running sit inside it */
            uint64_t take = ++eval_seen == evals ? st->nframes - next_py : 1;
            for (uint64_t k = 0; k < take && !s->failed; k++)
                push_python(&x, next_py++);
        }
        for (uint64_t j = 0; j < sp.count; j++)
            push_location(&x, s->pc_frames[sp.offset + j]);
    }
    for (uint64_t i = next_py; evals && i < st->nframes && !s->failed; i++)
        push_python(&x, i);
    before_raw(&x, st->nframes);
    size_t n = x.n;
    if (s->failed)
        return;
    /* helper frames fold into a .pyx frame of the same object further out */
    uint32_t *t = *tmp;
    size_t kept = n;
    for (size_t k = n; k-- > 0;) {
        const cya_location *l = &s->locs[t[k]];
        uint32_t obj = s->extra[t[k]].object;
        if (obj == NO_OBJECT)
            continue;
        if (l->kind == CYA_FRAME_PYX || l->kind == CYA_FRAME_CYTHON_C)
            seen[obj] = generation;
        else if (seen[obj] == generation) {
            t[k] = UINT32_MAX;
            kept--;
        }
    }
    if (!cya_grow((void **)&s->frames, &s->cap_frames, s->nframes + kept, sizeof *s->frames)) {
        s->failed = 1;
        return;
    }
    size_t start = s->nframes;
    for (size_t k = 0; k < n; k++) {
        if (t[k] == UINT32_MAX)
            continue;
        /* a wrapper frame right outside the function it wraps adds nothing */
        if (s->extra[t[k]].wrapper && s->nframes > start) {
            const cya_location *inner = &s->locs[s->frames[s->nframes - 1]];
            if (strcmp(inner->function, s->locs[t[k]].function) == 0 &&
                s->extra[s->frames[s->nframes - 1]].object == s->extra[t[k]].object)
                continue;
        }
        s->frames[s->nframes++] = t[k];
    }
    s->stacks[st - s->capture->stacks].offset = start;
    s->stacks[st - s->capture->stacks].count = s->nframes - start;
}

/* One warning naming every Cython module whose frames show generated-C lines. */
static void warn_c_lines_only(cya_symbols *s)
{
    char *names = NULL;
    size_t len = 0, cap = 0, count = 0;
    for (size_t i = 0; s->objects && i < s->capture->nobjects; i++) {
        if (!s->objects[i].c_lines_only)
            continue;
        const char *path = s->capture->objects[i].path;
        const char *name = sym_dwarf_module_name(s->objects[i].dwarf);
        char item[4200];
        int n = snprintf(item, sizeof item, "%s%s (%s)", count ? ", " : "", name ? name : base_name(path ? path : "?"),
                         path ? path : "?");
        if (n < 0 || count >= 8) {
            count++;
            continue;
        }
        if ((size_t)n >= sizeof item)
            n = sizeof item - 1;
        if (!cya_grow((void **)&names, &cap, len + (size_t)n + 1, 1)) {
            s->failed = 1;
            break;
        }
        memcpy(names + len, item, (size_t)n + 1);
        len += (size_t)n;
        count++;
    }
    if (!count || !names) {
        free(names);
        return;
    }
    char more[64] = "";
    if (count > 8)
        snprintf(more, sizeof more, " and %zu more", count - 8);
    char *all = malloc(len + sizeof more);
    if (all) {
        snprintf(all, len + sizeof more, "%s%s", names, more);
        warn(s,
             "Cython modules with no .pyx line information: %s%s; their Cython functions show at lines of the "
             "generated C (kind cython-c): their C was compiled without --line-directives and the generated .c "
             "file was not found. Build them with `cytool develop`, or keep the generated .c beside the module "
             "(or build with `cython --line-directives`)",
             all, "");
    }
    free(all);
    free(names);
}

CYA_API cya_symbols *cya_symbolize(const cya_capture *capture) { return cya_symbolize_search(capture, NULL); }

CYA_API cya_symbols *cya_symbolize_search(const cya_capture *capture, const char *search)
{
    cya_symbols *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->capture = capture;
    if (search && *search && !(s->search = strdup(search))) {
        free(s);
        return NULL;
    }
    s->objects = calloc(capture->nobjects ? capture->nobjects : 1, sizeof *s->objects);
    s->stacks = calloc(capture->nstacks ? capture->nstacks : 1, sizeof *s->stacks);
    uint32_t *seen = calloc(capture->nobjects ? capture->nobjects : 1, sizeof *seen);
    s->warnings = strdup("");
    s->cap_warnings = 1;
    s->sources = cy_sources_new();
    uint32_t *tmp = NULL;
    size_t tmp_cap = 0;
    if (!s->objects || !s->stacks || !seen || !s->warnings || !s->sources)
        s->failed = 1;
    for (size_t i = 0; i < capture->nstacks && !s->failed; i++)
        fold_stack(s, &capture->stacks[i], &tmp, &tmp_cap, seen, (uint32_t)(i + 1));
    free(tmp);
    free(seen);
    s->nstacks_done = capture->nstacks;
    s->nobjects_known = capture->nobjects;
    warn_c_lines_only(s);
    if (s->failed) {
        cya_symbols_close(s);
        return NULL;
    }
    return s;
}

int cya_symbols_extend(cya_symbols *s)
{
    const cya_capture *capture = s->capture;
    if (s->failed)
        return 0;
    if (capture->nobjects > s->nobjects_known) {
        obj_state *objects = realloc(s->objects, capture->nobjects * sizeof *objects);
        if (!objects)
            return 0;
        memset(objects + s->nobjects_known, 0, (capture->nobjects - s->nobjects_known) * sizeof *objects);
        s->objects = objects;
        s->nobjects_known = capture->nobjects;
    }
    if (capture->nstacks == s->nstacks_done)
        return 1;
    span *stacks = realloc(s->stacks, capture->nstacks * sizeof *stacks);
    if (!stacks)
        return 0;
    s->stacks = stacks;
    uint32_t *seen = calloc(capture->nobjects ? capture->nobjects : 1, sizeof *seen);
    uint32_t *tmp = NULL;
    size_t tmp_cap = 0;
    if (!seen)
        return 0;
    for (size_t i = s->nstacks_done; i < capture->nstacks && !s->failed; i++)
        fold_stack(s, &capture->stacks[i], &tmp, &tmp_cap, seen, (uint32_t)(i - s->nstacks_done + 1));
    free(tmp);
    free(seen);
    s->nstacks_done = capture->nstacks;
    return !s->failed;
}

CYA_API void cya_symbols_close(cya_symbols *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nlocs; i++) {
        free((void *)s->locs[i].function);
        free((void *)s->locs[i].file);
        free((void *)s->locs[i].object);
    }
    free(s->locs);
    free(s->extra);
    cya_map_free(&s->loc_index);
    if (s->objects)
        for (size_t i = 0; i < s->nobjects_known; i++) {
            sym_dwarf_close(s->objects[i].dwarf);
            cy_names_free(s->objects[i].names);
            for (size_t k = 0; k < s->objects[i].nc_sources; k++) {
                free(s->objects[i].c_sources[k].dwarf_path);
                cy_cfile_free(s->objects[i].c_sources[k].cfile);
            }
            free(s->objects[i].c_sources);
        }
    free(s->objects);
    free(s->pc_frames);
    cya_map_free(&s->pc_index);
    free(s->pc_spans);
    free(s->frames);
    free(s->stacks);
    free(s->warnings);
    cy_sources_free(s->sources);
    free(s->search);
    free(s);
}

CYA_API const cya_location *cya_symbols_locations(const cya_symbols *s, size_t *count)
{
    *count = s->nlocs;
    return s->locs;
}

CYA_API const uint32_t *cya_symbols_stack(const cya_symbols *s, uint64_t stack_id, size_t *count)
{
    const cya_stack *st = cya_find_stack(s->capture, stack_id);
    if (!st) {
        *count = 0;
        return s->frames;
    }
    const span *sp = &s->stacks[st - s->capture->stacks];
    *count = sp->count;
    return s->frames + sp->offset;
}

CYA_API const char *cya_symbols_warnings(const cya_symbols *s) { return s->warnings; }
