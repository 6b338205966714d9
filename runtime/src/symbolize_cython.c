/* symbolize_cython.c: Cython's names for C functions.
 *
 * Owns reading the `cython_debug/cython_debug_info_<module>` XML that `cython --gdb`
 * writes beside the build (Function elements: cname -> qualified_name), demangling
 * `__pyx_pf_/__pyx_pw_/__pyx_f_` names when there is no XML, telling Cython sources
 * and wrapper functions apart, and reading a generated C file's source-position comments
 * (which .pyx line each C line belongs to) for modules built without `#line` directives. The XML is flat and machine-written, so a small scanner
 * for `<Function ...>` start tags is enough. */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "symbolize_internal.h"

typedef struct cy_entry {
    char *cname;
    char *qualified;
} cy_entry;

struct cy_names {
    char *module;
    char *source;
    int has_xml;
    cy_entry *entries;
    size_t len, cap;
    cya_map index;  /* hash(cname) -> entry (first one wins on hash collision: checked) */
    char *prefix;   /* the module's part of its C names: "8fastavro_6_write_" ("" if unknown) */
    char **symbols; /* the object's `__pyx_` function symbols, clone suffixes cut, sorted */
    size_t nsymbols;
};

static uint64_t hash_string(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h == CYA_MAP_EMPTY ? 0 : h;
}

/* A regular file opened for reading (never a FIFO, device or directory: a capture may
 * name any path), or NULL. */
static FILE *open_regular(const char *path)
{
    int fd = cya_open_regular(path);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f)
        close(fd);
    return f;
}

static char *read_whole(const char *path)
{
    FILE *f = open_regular(path);
    if (!f)
        return NULL;
    char *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (!cya_grow((void **)&data, &cap, len + 65536 + 1, 1)) {
            free(data);
            fclose(f);
            return NULL;
        }
        size_t got = fread(data + len, 1, 65536, f);
        len += got;
        if (got < 65536)
            break;
    }
    fclose(f);
    data[len] = '\0';
    return data;
}

/* Value of attribute `name` within the tag [tag, end), unescaped, malloc'd; NULL if absent. */
static char *attribute(const char *tag, const char *end, const char *name)
{
    size_t nlen = strlen(name);
    for (const char *p = tag; p && p < end; p++) {
        p = strstr(p, name);
        if (!p || p >= end)
            return NULL;
        if (p[-1] != ' ' || p[nlen] != '=' || p[nlen + 1] != '"')
            continue;
        const char *v = p + nlen + 2, *q = strchr(v, '"');
        if (!q || q > end)
            return NULL;
        char *out = malloc((size_t)(q - v) + 1), *o = out;
        if (!out)
            return NULL;
        while (v < q) {
            static const struct { const char *text; char c; } entities[] = {
                {"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&quot;", '"'}, {"&apos;", '\''}};
            size_t i;
            for (i = 0; i < sizeof entities / sizeof entities[0]; i++) {
                size_t elen = strlen(entities[i].text);
                if (strncmp(v, entities[i].text, elen) == 0) {
                    *o++ = entities[i].c;
                    v += elen;
                    break;
                }
            }
            if (i == sizeof entities / sizeof entities[0])
                *o++ = *v++;
        }
        *o = '\0';
        return out;
    }
    return NULL;
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The first `dir/name` that exists and passes `ok`, for `dir` = start and each folder
 * above it (`levels` in all), trying the names in order at each; malloc'd, or NULL. */
static char *find_above(const char *start, int levels, const char *const *names, size_t nnames,
                        int (*ok)(const char *path))
{
    char *dir = start ? strdup(start) : NULL;
    for (int level = 0; dir && level < levels; level++) {
        for (size_t k = 0; k < nnames; k++) {
            char path[4096];
            int n = names[k] ? snprintf(path, sizeof path, "%s/%s", dir, names[k]) : -1;
            if (n > 0 && (size_t)n < sizeof path && ok(path)) {
                free(dir);
                return strdup(path);
            }
        }
        char *up = strrchr(dir, '/');
        if (!up || up == dir)
            break;
        *up = '\0';
    }
    free(dir);
    return NULL;
}

/* The `"debug_info": "<path>"` of a module index entry (cytool/module_index.py), malloc'd;
 * NULL when absent, null or escaped beyond \" \\ \/. */
static char *index_debug_info(const char *json)
{
    const char *p = strstr(json, "\"debug_info\":");
    if (!p)
        return NULL;
    p += strlen("\"debug_info\":");
    while (*p == ' ')
        p++;
    if (*p != '"')
        return NULL;
    char *out = malloc(strlen(p)), *o = out;
    if (!out)
        return NULL;
    for (p++; *p && *p != '"'; p++) {
        if (*p == '\\') {
            p++;
            if (*p != '"' && *p != '\\' && *p != '/') {
                free(out);
                return NULL;
            }
        }
        *o++ = *p;
    }
    *o = '\0';
    if (*p != '"' || !*out) {
        free(out);
        return NULL;
    }
    return out;
}

/* The debug XML of the module at so_path (see cy_names_load), malloc'd, or NULL. Cython
 * writes it into its output folder: beside the module for cytool's builds (short or
 * dotted name), at the project root for a setuptools build of a package; `cytool
 * develop` keeps it in cytool's cache, where the module index says. */
static char *find_xml(const char *so_path, const char *module, const uint8_t *build_id, size_t build_id_len,
                      const char *search)
{
    const char *slash = strrchr(so_path, '/');
    const char *base = slash ? slash + 1 : so_path;
    char short_name[256], path[4096], short_xml[300], module_xml[300];
    snprintf(short_name, sizeof short_name, "%.*s", (int)strcspn(base, "."), base);
    snprintf(short_xml, sizeof short_xml, "cython_debug/cython_debug_info_%s", short_name);
    snprintf(module_xml, sizeof module_xml, "cython_debug/cython_debug_info_%s", module ? module : "");
    char *dir = slash ? strndup(so_path, (size_t)(slash - so_path)) : strdup(".");
    const char *beside[2] = {short_xml, module ? module_xml : NULL}, *above[1] = {beside[1]};
    char *xml = find_above(dir, 1, beside, 2, is_file); /* beside the module: short or dotted name */
    if (!xml)
        xml = find_above(dir, 5, above, 1, is_file); /* a package's: dotted, up to 4 folders above */
    free(dir);
    if (xml)
        return xml;
    if (!search || !build_id_len || build_id_len > 64)
        return NULL;
    char hex[129];
    for (size_t i = 0; i < build_id_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", build_id[i]);
    char *patterns = strdup(search), *save = NULL, *found = NULL;
    static const char entries[] = "/entries/*";
    for (char *pat = patterns ? strtok_r(patterns, ":", &save) : NULL; pat && !found; pat = strtok_r(NULL, ":", &save)) {
        size_t plen = strlen(pat);
        if (plen <= strlen(entries) || strcmp(pat + plen - strlen(entries), entries) != 0)
            continue;
        int n = snprintf(path, sizeof path, "%.*s/index/%s.json", (int)(plen - strlen(entries)), pat, hex);
        if (n < 0 || (size_t)n >= sizeof path)
            continue;
        char *json = read_whole(path);
        found = json ? index_debug_info(json) : NULL;
        free(json);
        if (found && !is_file(found)) {
            free(found);
            found = NULL;
        }
    }
    free(patterns);
    return found;
}

static int is_digits_after(const char *s, const char *word)
{
    size_t w = strlen(word);
    return strncmp(s, word, w) == 0 && strspn(s + w, "0123456789") == strlen(s + w);
}

/* The last part of a qualified name as Cython's tracebacks give it: its numbered
 * `lambda1` and `genexpr1` scopes are `lambda` and `genexpr` ("mod.f.lambda"). */
static const char *python_name(const char *name, const char *cname)
{
    if (strncmp(cname, "__pyx_lambda_funcdef_", 21) == 0 && is_digits_after(name, "lambda"))
        return "lambda";
    if (is_digits_after(name, "genexpr"))
        return "genexpr";
    return name;
}

/* The XML's qualified names ("mod.outer.inner", "mod.f.lambda1") as Cython's tracebacks
 * give them ("mod.outer.inner", "mod.f.lambda"): a numbered lambda or generator
 * expression scope as its last part loses its number. */
static void traceback_names(cy_names *names, char **short_names)
{
    for (size_t i = 0; i < names->len; i++) {
        cy_entry *e = &names->entries[i];
        char *dot = strrchr(e->qualified, '.');
        const char *part = dot ? dot + 1 : e->qualified;
        if (!short_names[i] || strcmp(short_names[i], part) != 0)
            continue;
        const char *last = python_name(part, e->cname);
        if (last != part && strlen(last) <= strlen(part))
            memmove((char *)part, last, strlen(last) + 1);
    }
}

static int compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void load_xml(cy_names *names, const char *path, const char *short_name)
{
    char *xml = read_whole(path);
    if (!xml)
        return;
    names->has_xml = 1;
    const char *module_tag = strstr(xml, "<Module ");
    if (module_tag) {
        const char *end = strchr(module_tag, '>');
        if (!names->module)
            names->module = attribute(module_tag, end, "module_name");
        names->source = attribute(module_tag, end, "filename");
    }
    if (!names->module)
        names->module = strdup(short_name);
    char **short_names = NULL;
    size_t cap_short = 0;
    for (const char *p = xml; names->module && (p = strstr(p, "<Function ")) != NULL; p++) {
        const char *end = strchr(p, '>');
        if (!end)
            break;
        /* the C function and, for a cpdef, its Python wrapper (pf_cname) */
        char *cnames[2] = {attribute(p, end, "cname"), attribute(p, end, "pf_cname")};
        char *qualified = attribute(p, end, "qualified_name"), *name = attribute(p, end, "name");
        if (qualified && !*qualified) { /* the module init function */
            free(qualified);
            size_t len = strlen(names->module) + sizeof ".<module>";
            qualified = malloc(len);
            if (qualified)
                snprintf(qualified, len, "%s.<module>", names->module);
        }
        for (int k = 0; k < 2; k++) {
            cy_entry e = {cnames[k], qualified ? strdup(qualified) : NULL};
            uint64_t h = e.cname ? hash_string(e.cname) : 0;
            if (!e.cname || !*e.cname || !e.qualified || cya_map_get(&names->index, h) ||
                !cya_grow((void **)&short_names, &cap_short, names->len + 1, sizeof *short_names) ||
                !CYA_PUSH(names->entries, names->len, names->cap, e) ||
                !cya_map_put(&names->index, h, (uint32_t)(names->len - 1))) {
                free(e.cname);
                free(e.qualified);
                continue;
            }
            short_names[names->len - 1] = name ? strdup(name) : NULL;
        }
        free(qualified);
        free(name);
    }
    free(xml);
    if (short_names) {
        traceback_names(names, short_names);
        for (size_t i = 0; i < names->len; i++)
            free(short_names[i]);
        free(short_names);
    }
}

cy_names *cy_names_load(const char *so_path, const char *module, const uint8_t *build_id, size_t build_id_len,
                        const char *search, const sym_dwarf *symbols)
{
    cy_names *names = calloc(1, sizeof *names);
    if (!names)
        return NULL;
    const char *slash = so_path ? strrchr(so_path, '/') : NULL;
    const char *base = slash ? slash + 1 : so_path ? so_path : "";
    char short_name[256];
    snprintf(short_name, sizeof short_name, "%.*s", (int)strcspn(base, "."), base);
    names->module = module ? strdup(module) : NULL;
    char *xml = so_path && *so_path ? find_xml(so_path, module, build_id, build_id_len, search) : NULL;
    if (xml)
        load_xml(names, xml, short_name);
    free(xml);
    /* the module's part of its C names: each dotted part as <len><part>_ */
    size_t plen = 0;
    names->prefix = calloc(1, names->module ? strlen(names->module) * 4 + 8 : 1);
    for (const char *part = names->module; names->prefix && part && *part;) {
        size_t len = strcspn(part, ".");
        plen += (size_t)sprintf(names->prefix + plen, "%zu%.*s_", len, (int)len, part);
        part += len + (part[len] == '.');
    }
    size_t cap = 0;
    for (size_t i = 0, n = sym_dwarf_nsymbols(symbols); i < n; i++) {
        const char *name = sym_dwarf_symbol_name(symbols, i);
        if (!name || strncmp(name, "__pyx_", 6) != 0 ||
            !cya_grow((void **)&names->symbols, &cap, names->nsymbols + 1, sizeof *names->symbols))
            continue;
        char *copy = strndup(name, strcspn(name, ".")); /* without gcc's `.isra.0`, `.cold` */
        if (copy)
            names->symbols[names->nsymbols++] = copy;
    }
    if (names->nsymbols)
        qsort(names->symbols, names->nsymbols, sizeof *names->symbols, compare_strings);
    return names;
}

void cy_names_free(cy_names *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->len; i++) {
        free(n->entries[i].cname);
        free(n->entries[i].qualified);
    }
    free(n->entries);
    cya_map_free(&n->index);
    for (size_t i = 0; i < n->nsymbols; i++)
        free(n->symbols[i]);
    free(n->symbols);
    free(n->prefix);
    free(n->module);
    free(n->source);
    free(n);
}

const char *cy_names_source(const cy_names *n) { return n ? n->source : NULL; }

int cy_names_has_xml(const cy_names *n) { return n && n->has_xml; }

/* ---- C names without the XML: Cython's mangling ----
 *
 * Cython names a function's C code (Symtab.py, Nodes.py) `<kind><scope prefix><id><name>`:
 * the scope prefix is `<len><part>_` for each part of the module's dotted name, then for
 * each class or enclosing function; <id> is a counter per scope prefix, left out the first
 * time (`__pyx_pf_8fastavro_6_write_4null_write_block`: def null_write_block, the module's
 * 5th id; `__pyx_pf_5names_4null_write_block`: method write_block of class null, its
 * class's first). `__pyx_f_` (cdef) names have no counter. The string alone is ambiguous,
 * so each way to read it is weighed by the object's symbols: a def's body (`__pyx_pf_`,
 * id k) and its Python wrapper (`__pyx_pw_`, id k+1) come in pairs, an enclosing function
 * has a wrapper in its own scope, a cdef class has `__pyx_tp_new_`. A generator's body
 * `__pyx_gb_<scope><k>generator<n>` belongs to the function of ids k-2 (body) and k-1
 * (wrapper) in the same scope; with none, it is a generator expression's. A lambda's
 * body `__pyx_lambda_funcdef_lambda<n>` is named by its wrapper
 * `__pyx_pw_<scope>___pyx_lambda_funcdef_lambda<n>`. Names come out as Cython's
 * tracebacks give them: `mod.outer.inner`, `mod.f.genexpr`, `mod.f.lambda`. */

#define MAX_SCOPES 16

typedef struct reading {
    const char *seg[MAX_SCOPES]; /* each scope's name (length in seglen) */
    size_t seglen[MAX_SCOPES];
    int function[MAX_SCOPES]; /* the scope is a function (weighs the reading) */
    int nseg;
    const char *terminal; /* where the counter (or the name) starts */
    long counter;         /* -1: none */
    const char *name;
    int score;
} reading;

static size_t lower_bound(const cy_names *n, const char *key)
{
    size_t lo = 0, hi = n->nsymbols;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (strcmp(n->symbols[mid], key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int has_symbol(const cy_names *n, const char *name)
{
    size_t i = lower_bound(n, name);
    return i < n->nsymbols && strcmp(n->symbols[i], name) == 0;
}

/* The name after `<kind><scope>[id]` of a symbol with that exact id (-1: none) in that
 * scope (its tail starts with no digit: not a deeper scope's), or NULL. */
static const char *function_with_id(const cy_names *n, const char *kind, const char *scope, size_t scope_len, long id)
{
    char key[1200];
    int k = id > 0 ? snprintf(key, sizeof key, "%s%.*s%ld", kind, (int)scope_len, scope, id)
                   : snprintf(key, sizeof key, "%s%.*s", kind, (int)scope_len, scope);
    if (id < 0 || k < 0 || (size_t)k >= sizeof key)
        return NULL;
    for (size_t i = lower_bound(n, key); i < n->nsymbols && strncmp(n->symbols[i], key, (size_t)k) == 0; i++) {
        const char *tail = n->symbols[i] + k;
        if (*tail && !isdigit((unsigned char)*tail))
            return tail;
    }
    return NULL;
}

/* Whether scope `scope` (its C prefix up to the segment) defines a function named
 * seg: a wrapper `__pyx_pw_<scope>[id]<seg>`. */
static int defines_function(const cy_names *n, const char *scope, size_t scope_len, const char *seg, size_t seglen)
{
    char key[1200];
    int k = snprintf(key, sizeof key, "__pyx_pw_%.*s", (int)scope_len, scope);
    if (k < 0 || (size_t)k >= sizeof key)
        return 0;
    for (size_t i = lower_bound(n, key); i < n->nsymbols && strncmp(n->symbols[i], key, (size_t)k) == 0; i++) {
        const char *tail = n->symbols[i] + k;
        tail += strspn(tail, "0123456789");
        if (strlen(tail) == seglen && strncmp(tail, seg, seglen) == 0)
            return 1;
    }
    return 0;
}

static int defines_cdef_class(const cy_names *n, const char *scope, size_t scope_len, const char *seg, size_t seglen)
{
    char key[1200];
    int k = snprintf(key, sizeof key, "__pyx_tp_new_%.*s%.*s", (int)scope_len, scope, (int)seglen, seg);
    return k > 0 && (size_t)k < sizeof key && has_symbol(n, key);
}

/* Every way to read `p` as scopes, then [counter] and a name. */
static void readings(const char *p, int counters, reading *cur, reading *out, int *nout, int max)
{
    size_t d = strspn(p, "0123456789");
    if (*nout < max && p[d] && (d ? counters : 1)) {
        reading r = *cur;
        r.terminal = p;
        r.counter = d ? strtol(p, NULL, 10) : -1;
        r.name = p + d;
        out[(*nout)++] = r;
    }
    if (!d || cur->nseg >= MAX_SCOPES)
        return;
    unsigned long len = strtoul(p, NULL, 10);
    const char *seg = p + d;
    if (len == 0 || len > 512 || strnlen(seg, len + 2) < len + 2 || seg[len] != '_' || isdigit((unsigned char)*seg))
        return;
    for (unsigned long i = 0; i < len; i++)
        if (!isalnum((unsigned char)seg[i]) && seg[i] != '_')
            return;
    cur->seg[cur->nseg] = seg;
    cur->seglen[cur->nseg] = len;
    cur->nseg++;
    readings(seg + len + 1, counters, cur, out, nout, max);
    cur->nseg--;
}

/* Weighs a reading by the symbols that confirm it; fills in which scopes are functions.
 * `scope` is where the first scope of the reading starts (after the kind). */
static void weigh(const cy_names *n, const char *kind, const char *scope, reading *r)
{
    r->score = 0;
    for (int s = 0; s < r->nseg; s++) {
        size_t before = (size_t)(r->seg[s] - scope) - (size_t)snprintf(NULL, 0, "%zu", r->seglen[s]);
        r->function[s] = defines_function(n, scope, before, r->seg[s], r->seglen[s]);
        if (r->function[s] || defines_cdef_class(n, scope, before, r->seg[s], r->seglen[s]))
            r->score += 2;
    }
    size_t scope_len = (size_t)(r->terminal - scope);
    if (strcmp(kind, "__pyx_pf_") == 0 || strcmp(kind, "__pyx_pw_") == 0) {
        int body = kind[7] == 'f';
        long partner = body ? (r->counter < 0 ? 1 : r->counter + 1) : (r->counter <= 1 ? (r->counter == 1 ? 0 : -1) : r->counter - 1);
        const char *tail = function_with_id(n, body ? "__pyx_pw_" : "__pyx_pf_", scope, scope_len, partner);
        if (tail && strcmp(tail, r->name) == 0)
            r->score += 4;
        if (!body && r->counter < 0 && strncmp(r->name, "__pyx_lambda_funcdef_", 21) != 0)
            r->score -= 3; /* a def's wrapper always has an id: its body took the first */
    }
    for (const char *q = r->name; *q; q++)
        if (q[0] == '_' && isdigit((unsigned char)q[1]))
            r->score -= 1; /* `_7` in a name: more likely a scope's length */
}

/* Writes `<module>.<scopes>.<last>` into buf. */
static const char *compose(const cy_names *n, int with_module, const reading *r, const char *last, char *buf, size_t len)
{
    size_t o = 0;
    int w = snprintf(buf, len, "%s", with_module && n->module ? n->module : "");
    for (int s = 0; w >= 0 && (size_t)w < len - o && s <= r->nseg; s++) {
        o += (size_t)w;
        const char *dot = o ? "." : "";
        if (s == r->nseg)
            w = snprintf(buf + o, len - o, "%s%s", dot, last);
        else
            w = snprintf(buf + o, len - o, "%s%.*s", dot, (int)r->seglen[s], r->seg[s]);
    }
    return w >= 0 && (size_t)w < len - o ? buf : NULL;
}

static const char *demangle(const cy_names *n, const char *full, char *buf, size_t len)
{
    static const char *const kinds[] = {"__pyx_pf_", "__pyx_pw_", "__pyx_f_", "__pyx_gb_", "__pyx_lambda_funcdef_",
                                        "__pyx_pymod_exec_"};
    char cname[1024]; /* without gcc's clone suffix (`.isra.0`, `.cold`) */
    snprintf(cname, sizeof cname, "%.*s", (int)strcspn(full, "."), full);
    const char *kind = NULL;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0] && !kind; k++)
        if (strncmp(cname, kinds[k], strlen(kinds[k])) == 0)
            kind = kinds[k];
    const char *scope = kind ? cname + strlen(kind) : NULL;
    if (!scope || !*scope || len < 2)
        return NULL;
    if (kind == kinds[5]) { /* module init: the rest is the module's short name */
        snprintf(buf, len, "%s.<module>", n && n->module ? n->module : scope);
        return buf;
    }
    static const cy_names none = {0};
    if (!n)
        n = &none;
    if (kind == kinds[4]) {
        /* a lambda: named by its wrapper `__pyx_pw_<scope>[id]<this cname>` */
        size_t clen = strlen(cname);
        for (size_t i = 0; i < n->nsymbols; i++) {
            const char *s = n->symbols[i];
            size_t slen = strlen(s);
            if (slen > clen + 9 && strncmp(s, "__pyx_pw_", 9) == 0 && strcmp(s + slen - clen, cname) == 0 &&
                s[slen - clen - 1] == '_') {
                char *dot = demangle(n, s, buf, len) ? strrchr(buf, '.') : NULL;
                if (dot && (size_t)(dot - buf) + sizeof ".lambda" <= len) {
                    strcpy(dot, ".lambda");
                    return buf;
                }
            }
        }
    }
    /* the module's own prefix is known: only its scopes are to be read */
    size_t plen = n->prefix ? strlen(n->prefix) : 0;
    int with_module = plen && strncmp(scope, n->prefix, plen) == 0;
    const char *rest = with_module ? scope + plen : scope;
    reading out[64], cur = {0};
    int nout = 0;
    readings(rest, kind != kinds[2] && kind != kinds[4], &cur, out, &nout, 64);
    const reading *best = NULL;
    const char *owner = NULL;
    for (int i = 0; i < nout; i++) {
        reading *r = &out[i];
        const char *r_owner = NULL;
        weigh(n, kind, scope, r);
        if (kind == kinds[3]) { /* a generator's body: `<k>generator<n>` */
            if (r->counter < 2 || !is_digits_after(r->name, "generator")) {
                r->score = -100;
            } else {
                size_t scope_len = (size_t)(r->terminal - scope);
                r_owner = function_with_id(n, "__pyx_pw_", scope, scope_len, r->counter - 1);
                if (!r_owner)
                    r_owner = function_with_id(n, "__pyx_pf_", scope, scope_len, r->counter - 2);
                r->score += r_owner ? 4 : 0;
            }
        }
        if (!best || r->score > best->score) {
            best = r;
            owner = r_owner;
        }
    }
    if (!best || best->score <= -100)
        return NULL;
    const char *last = best->name;
    if (kind == kinds[3])
        last = owner ? python_name(owner, "") : "genexpr";
    else if (kind == kinds[4] && is_digits_after(last, "lambda"))
        last = "lambda";
    else
        last = python_name(last, "");
    if (!with_module && best->nseg == 0 && !n->module)
        return NULL;
    return compose(n, with_module || !best->nseg, best, last, buf, len);
}

const char *cy_display_name(const cy_names *n, const char *cname, char *buf, size_t len)
{
    if (!cname)
        return NULL;
    if (n) {
        uint32_t *slot = cya_map_get(&n->index, hash_string(cname));
        if (slot && strcmp(n->entries[*slot].cname, cname) == 0) {
            snprintf(buf, len, "%s", n->entries[*slot].qualified);
            return buf;
        }
    }
    return demangle(n, cname, buf, len);
}

int cy_is_cython_source(const char *file)
{
    if (!file)
        return 0;
    size_t n = strlen(file);
    return n > 4 && (strcmp(file + n - 4, ".pyx") == 0 || strcmp(file + n - 4, ".pxd") == 0 ||
                     strcmp(file + n - 4, ".pxi") == 0);
}

int cy_is_wrapper(const char *cname)
{
    return cname && strncmp(cname, "__pyx_pw_", 9) == 0;
}

int cy_is_utility(const char *cname)
{
    return cname && strncmp(cname, "__Pyx_", 6) == 0;
}

struct cy_sources {
    char **paths;
    long *lines; /* -1: unreadable */
    size_t len, cap, cap_lines;
};

cy_sources *cy_sources_new(void) { return calloc(1, sizeof(cy_sources)); }

void cy_sources_free(cy_sources *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->len; i++)
        free(s->paths[i]);
    free(s->paths);
    free(s->lines);
    free(s);
}

static long count_lines(const char *path)
{
    FILE *f = open_regular(path);
    if (!f)
        return -1;
    long n = 0;
    int last = '\n', c;
    while ((c = getc(f)) != EOF) {
        if (c == '\n')
            n++;
        last = c;
    }
    fclose(f);
    return last == '\n' ? n : n + 1;
}

int cy_line_exists(cy_sources *s, const char *file, int line)
{
    if (!s || !file)
        return 1;
    for (size_t i = 0; i < s->len; i++)
        if (strcmp(s->paths[i], file) == 0)
            return s->lines[i] < 0 || line <= s->lines[i];
    char *copy = strdup(file);
    if (!copy || !cya_grow((void **)&s->lines, &s->cap_lines, s->len + 1, sizeof *s->lines) ||
        !cya_grow((void **)&s->paths, &s->cap, s->len + 1, sizeof *s->paths)) {
        free(copy);
        return 1;
    }
    s->paths[s->len] = copy;
    s->lines[s->len] = count_lines(file);
    s->len++;
    return s->lines[s->len - 1] < 0 || line <= s->lines[s->len - 1];
}

/* ---- generated C files: Cython's source-position comments ---- */

typedef struct cy_mark {
    uint32_t c_line; /* 1-based line of the position comment */
    uint32_t source; /* index into sources */
    uint32_t line;   /* the .pyx line */
    char *def_name;  /* the function a def/cdef/cpdef line defines (the comment quotes it), or NULL */
} cy_mark;

struct cy_cfile {
    char *path;
    char **sources;
    size_t nsources, cap_sources;
    cy_mark *marks; /* in C line order */
    size_t nmarks, cap_marks;
    int has_line_directives;
};

#define CFILE_MAX_BYTES ((off_t)512 << 20)

/* A regular file (following links) of plausible size. */
static int regular_file(const char *path, off_t max)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= max;
}

static int c_file_ok(const char *path) { return regular_file(path, CFILE_MAX_BYTES); }

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
}

/* `written` (as the position comment names it, relative to where Cython ran) as a file
 * that exists: tried in each anchor folder and the folders above it. malloc'd; a copy
 * of `written` when none exists. */
static char *resolve_source(const char *written, const char *const *anchors, size_t nanchors)
{
    if (written[0] != '/') {
        int depth = 4;
        for (const char *q = written; *q; q++)
            depth += *q == '/';
        const char *names[1] = {written};
        for (size_t a = 0; a < nanchors; a++) {
            char *found = find_above(anchors[a], depth, names, 1, c_file_ok);
            if (found)
                return found;
        }
    }
    return strdup(written);
}

/* Whether the first line of the file says "Generated by Cython" (read before the rest). */
static int says_generated_by_cython(const char *path)
{
    FILE *f = open_regular(path);
    if (!f)
        return 0;
    char head[512];
    int ok = fgets(head, sizeof head, f) != NULL && strstr(head, "Generated by Cython") != NULL;
    fclose(f);
    return ok;
}

/* Whether `text` is the generated C of module `module` (dotted; NULL: only its last
 * part `short_name` is known). */
static int defines_module(const char *text, const char *module, const char *short_name)
{
    const char *head_end = memchr(text, '\n', strnlen(text, 4096));
    size_t head = head_end ? (size_t)(head_end - text) : strnlen(text, 4096);
    char first[4097];
    memcpy(first, text, head);
    first[head] = '\0';
    if (!strstr(first, "Generated by Cython"))
        return 0;
    char want[600];
    snprintf(want, sizeof want, "PyInit_%s(", short_name);
    if (!strstr(text, want))
        return 0;
    const char *define = strstr(text, "\n#define __Pyx_MODULE_NAME \"");
    if (define && module) {
        define += strlen("\n#define __Pyx_MODULE_NAME \"");
        size_t len = strcspn(define, "\"\n");
        if (strlen(module) != len || strncmp(define, module, len) != 0)
            return 0;
    }
    return 1;
}

#define MARKED_LINE "# <<<<<<<<<<<<<<"

/* The name a quoted source line defines (`def gen(int n):`, `cdef char* f(...)`,
 * `cpdef int meth(self)`), malloc'd; NULL when it defines none. */
static char *defined_name(const char *text, size_t len)
{
    const char *end = text + len, *q = text;
    while (q < end && (*q == ' ' || *q == '*'))
        q++;
    if (end - q > 6 && strncmp(q, "async ", 6) == 0)
        q += 6;
    size_t word = strspn(q, "abcdefghijklmnopqrstuvwxyz");
    if (!((word == 3 && strncmp(q, "def", 3) == 0) || (word == 4 && strncmp(q, "cdef", 4) == 0) ||
          (word == 5 && strncmp(q, "cpdef", 5) == 0)) || q + word >= end || q[word] != ' ')
        return NULL;
    const char *paren = memchr(q, '(', (size_t)(end - q));
    const char *hash = memchr(q, '#', (size_t)(end - q));
    if (!paren || (hash && hash < paren))
        return NULL;
    const char *name_end = paren;
    while (name_end > q && name_end[-1] == ' ')
        name_end--;
    const char *name = name_end;
    while (name > q && (isalnum((unsigned char)name[-1]) || name[-1] == '_'))
        name--;
    if (name == name_end || isdigit((unsigned char)*name) || name <= q + word)
        return NULL;
    return strndup(name, (size_t)(name_end - name));
}

static cy_cfile *cfile_open(const char *c_path, const char *module, const char *short_name, const char *so_dir)
{
    if (!regular_file(c_path, CFILE_MAX_BYTES) || !says_generated_by_cython(c_path))
        return NULL;
    char *text = read_whole(c_path);
    if (!text)
        return NULL;
    if (!defines_module(text, module, short_name)) {
        free(text);
        return NULL;
    }
    cy_cfile *f = calloc(1, sizeof *f);
    char *real = realpath(c_path, NULL);
    if (!f || !(f->path = real ? real : strdup(c_path))) {
        free(f);
        free(real);
        free(text);
        return NULL;
    }
    f->has_line_directives = strstr(text, "\n#line ") != NULL;
    char *c_dir = dir_of(f->path);
    const char *anchors[2] = {c_dir, so_dir};
    uint32_t c_line = 1, pending = 0; /* the mark whose quoted line is still to come (+1) */
    for (char *p = text; *p; c_line++) {
        char *eol = strchr(p, '\n');
        if (!eol)
            eol = p + strlen(p);
        const char *q = p;
        while (q < eol && (*q == ' ' || *q == '\t'))
            q++;
        if (pending && c_line - f->marks[pending - 1].c_line > 12) {
            pending = 0;
        } else if (pending && eol - q >= 2 && strncmp(q, "*/", 2) == 0) {
            pending = 0;
        } else if (pending && (size_t)(eol - q) >= strlen(MARKED_LINE) &&
                   strncmp(eol - strlen(MARKED_LINE), MARKED_LINE, strlen(MARKED_LINE)) == 0) {
            f->marks[pending - 1].def_name = defined_name(q, (size_t)(eol - q) - strlen(MARKED_LINE));
            pending = 0;
        }
        if (eol - q > 6 && strncmp(q, "/* \"", 4) == 0) {
            const char *name = q + 4, *close = memchr(name, '"', (size_t)(eol - name));
            const char *digits = close ? close + 2 : NULL;
            const char *end = eol > q && eol[-1] == '\r' ? eol - 1 : eol;
            int ok = close && close > name && close[1] == ':' && digits < end;
            for (const char *d = digits; ok && d < end; d++)
                ok = isdigit((unsigned char)*d);
            if (ok) {
                size_t nlen = (size_t)(close - name), s;
                for (s = 0; s < f->nsources; s++) /* few sources: the module's .pyx, its .pxd/.pxi */
                    if (strlen(f->sources[s]) == nlen && strncmp(f->sources[s], name, nlen) == 0)
                        break;
                if (s == f->nsources) {
                    char *written = strndup(name, nlen);
                    if (!written || !CYA_PUSH(f->sources, f->nsources, f->cap_sources, written)) {
                        free(written);
                        break;
                    }
                }
                cy_mark m = {c_line, (uint32_t)s, (uint32_t)strtoul(digits, NULL, 10), NULL};
                if (!CYA_PUSH(f->marks, f->nmarks, f->cap_marks, m))
                    break;
                pending = (uint32_t)f->nmarks;
            }
        }
        p = *eol ? eol + 1 : eol;
    }
    /* the comments name sources as Cython was given them: find the files */
    for (size_t s = 0; s < f->nsources; s++) {
        char *resolved = resolve_source(f->sources[s], anchors, 2);
        if (resolved) {
            free(f->sources[s]);
            f->sources[s] = resolved;
        }
    }
    free(c_dir);
    free(text);
    return f;
}

cy_cfile *cy_cfile_find(const char *so_path, const char *module, const char *dwarf_c_path)
{
    if (!so_path || !*so_path)
        return NULL;
    char *so_real = realpath(so_path, NULL);
    const char *so = so_real ? so_real : so_path;
    const char *base = strrchr(so, '/') ? strrchr(so, '/') + 1 : so;
    char short_name[256];
    snprintf(short_name, sizeof short_name, "%.*s", (int)strcspn(base, "."), base);
    char *so_dir = dir_of(so);
    cy_cfile *f = NULL;
    if (dwarf_c_path && *dwarf_c_path)
        f = cfile_open(dwarf_c_path, module, short_name, so_dir);
    /* beside the module, then `<above>[/src]/<package path>/<short>.c` in the folders above */
    char package[1024] = "";
    if (module && strrchr(module, '.')) {
        snprintf(package, sizeof package, "%.*s", (int)(strrchr(module, '.') - module), module);
        for (char *c = package; *c; c++)
            if (*c == '.')
                *c = '/';
    }
    int levels = 4;
    for (const char *c = package; *c; c++)
        levels += *c == '/';
    levels += *package ? 1 : 0;
    char *above = so_dir ? strdup(so_dir) : NULL;
    static const char *const suffixes[] = {".c", ".cpp"};
    for (int level = 0; !f && above && level <= levels; level++) {
        for (int in_src = 0; !f && in_src < 2; in_src++)
            for (size_t k = 0; !f && k < 2; k++) {
                char candidate[4096];
                int n;
                if (level == 0 && !in_src)
                    n = snprintf(candidate, sizeof candidate, "%s/%s%s", above, short_name, suffixes[k]);
                else if (level == 0)
                    continue;
                else
                    n = snprintf(candidate, sizeof candidate, "%s%s/%s%s%s%s", above, in_src ? "/src" : "", package,
                                 *package ? "/" : "", short_name, suffixes[k]);
                if (n > 0 && (size_t)n < sizeof candidate && access(candidate, R_OK) == 0)
                    f = cfile_open(candidate, module, short_name, so_dir);
            }
        char *slash = strrchr(above, '/');
        if (!slash || slash == above)
            break;
        *slash = '\0';
    }
    free(above);
    free(so_dir);
    free(so_real);
    return f;
}

void cy_cfile_free(cy_cfile *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nsources; i++)
        free(f->sources[i]);
    free(f->sources);
    for (size_t i = 0; i < f->nmarks; i++)
        free(f->marks[i].def_name);
    free(f->marks);
    free(f->path);
    free(f);
}

const char *cy_cfile_path(const cy_cfile *f) { return f ? f->path : NULL; }

int cy_cfile_has_line_directives(const cy_cfile *f) { return f && f->has_line_directives; }

static const cy_mark *mark_at(const cy_cfile *f, int c_line)
{
    if (!f || c_line <= 0 || !f->nmarks)
        return NULL;
    size_t lo = 0, hi = f->nmarks;
    while (lo < hi) { /* first mark below c_line */
        size_t mid = (lo + hi) / 2;
        if (f->marks[mid].c_line <= (uint32_t)c_line)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? &f->marks[lo - 1] : NULL;
}

const char *cy_cfile_def_name(const cy_cfile *f, int c_line)
{
    const cy_mark *m = mark_at(f, c_line);
    return m ? m->def_name : NULL;
}

int cy_cfile_position(const cy_cfile *f, int c_line, const char **pyx, int *line)
{
    const cy_mark *m = mark_at(f, c_line);
    if (!m)
        return 0;
    *pyx = f->sources[m->source];
    *line = (int)m->line;
    return 1;
}

int cy_is_generator_body(const char *cname) { return cname && strncmp(cname, "__pyx_gb_", 9) == 0; }
