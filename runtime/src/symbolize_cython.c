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
    cy_entry *entries;
    size_t len, cap;
    cya_map index; /* hash(cname) -> entry (first one wins on hash collision: checked) */
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

cy_names *cy_names_load(const char *so_path)
{
    if (!so_path || !*so_path)
        return NULL;
    const char *slash = strrchr(so_path, '/');
    const char *base = slash ? slash + 1 : so_path;
    size_t modlen = strcspn(base, ".");
    char path[4096];
    int n = snprintf(path, sizeof path, "%.*scython_debug/cython_debug_info_%.*s", (int)(base - so_path), so_path,
                     (int)modlen, base);
    if (n < 0 || (size_t)n >= sizeof path)
        return NULL;
    char *xml = read_whole(path);
    if (!xml)
        return NULL;
    cy_names *names = calloc(1, sizeof *names);
    if (!names) {
        free(xml);
        return NULL;
    }
    const char *module_tag = strstr(xml, "<Module ");
    if (module_tag) {
        const char *end = strchr(module_tag, '>');
        names->module = attribute(module_tag, end, "module_name");
        names->source = attribute(module_tag, end, "filename");
    }
    if (!names->module)
        names->module = strndup(base, modlen);
    for (const char *p = xml; (p = strstr(p, "<Function ")) != NULL; p++) {
        const char *end = strchr(p, '>');
        if (!end)
            break;
        cy_entry e = {attribute(p, end, "cname"), attribute(p, end, "qualified_name")};
        if (e.cname && e.qualified && !*e.qualified) { /* the module init function */
            free(e.qualified);
            size_t len = strlen(names->module ? names->module : "") + sizeof ".<module>";
            e.qualified = malloc(len);
            if (e.qualified)
                snprintf(e.qualified, len, "%s.<module>", names->module ? names->module : "");
        }
        uint64_t h = e.cname ? hash_string(e.cname) : 0;
        if (!e.cname || !e.qualified || cya_map_get(&names->index, h) ||
            !CYA_PUSH(names->entries, names->len, names->cap, e) ||
            !cya_map_put(&names->index, h, (uint32_t)(names->len - 1))) {
            free(e.cname);
            free(e.qualified);
        }
    }
    free(xml);
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
    free(n->module);
    free(n->source);
    free(n);
}

const char *cy_names_source(const cy_names *n) { return n ? n->source : NULL; }

/* `__pyx_pf_6symmod_5Klass_2method` -> "symmod.Klass.method": length-prefixed scope
 * names, then the function name, possibly behind a `<counter>` prefix. */
static const char *demangle(const char *full, char *buf, size_t len)
{
    static const char *const prefixes[] = {"__pyx_pf_", "__pyx_pw_", "__pyx_f_", "__pyx_gb_", "__pyx_pymod_exec_"};
    char cname[1024]; /* without gcc's clone suffix (`.isra.0`, `.cold`) */
    snprintf(cname, sizeof cname, "%.*s", (int)strcspn(full, "."), full);
    const char *p = NULL;
    size_t which;
    for (which = 0; which < sizeof prefixes / sizeof prefixes[0]; which++)
        if (strncmp(cname, prefixes[which], strlen(prefixes[which])) == 0) {
            p = cname + strlen(prefixes[which]);
            break;
        }
    if (!p || !*p || len < 2)
        return NULL;
    if (which == 4) { /* module init: the rest is the module name */
        snprintf(buf, len, "%s.<module>", p);
        return buf;
    }
    size_t out = 0;
    buf[0] = '\0';
    int scopes = 0;
    while (isdigit((unsigned char)*p)) {
        char *after;
        unsigned long n = strtoul(p, &after, 10);
        if (n == 0 || strnlen(after, n) < n)
            break;
        const char *next = after + n;
        if (*next != '_' && !isdigit((unsigned char)*next))
            break; /* a counter in front of the function name, not a scope */
        if (strspn(after, "_") >= n)
            break; /* `1__cinit__`: a counter, then a name starting with underscores */
        int w = snprintf(buf + out, len - out, "%s%.*s", scopes ? "." : "", (int)n, after);
        if (w < 0 || (size_t)w >= len - out)
            return NULL;
        out += (size_t)w;
        scopes++;
        p = next;
        if (*p == '_')
            p++;
    }
    if (!scopes)
        return NULL;
    while (isdigit((unsigned char)*p))
        p++;
    if (!*p)
        return NULL;
    int w = snprintf(buf + out, len - out, ".%s", p);
    if (w < 0 || (size_t)w >= len - out)
        return NULL;
    return buf;
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
    return demangle(cname, buf, len);
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
        for (size_t a = 0; a < nanchors; a++) {
            char *dir = anchors[a] ? strdup(anchors[a]) : NULL;
            for (int level = 0; dir && level < depth; level++) {
                char candidate[4096];
                int n = snprintf(candidate, sizeof candidate, "%s/%s", dir, written);
                if (n > 0 && (size_t)n < sizeof candidate && regular_file(candidate, CFILE_MAX_BYTES)) {
                    free(dir);
                    return strdup(candidate);
                }
                char *slash = strrchr(dir, '/');
                if (!slash || slash == dir)
                    break;
                *slash = '\0';
            }
            free(dir);
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
