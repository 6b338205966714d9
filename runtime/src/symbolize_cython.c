/* symbolize_cython.c: Cython's names for C functions.
 *
 * Owns reading the `cython_debug/cython_debug_info_<module>` XML that `cython --gdb`
 * writes beside the build (Function elements: cname -> qualified_name), demangling
 * `__pyx_pf_/__pyx_pw_/__pyx_f_` names when there is no XML, and telling Cython sources
 * and wrapper functions apart. The XML is flat and machine-written, so a small scanner
 * for `<Function ...>` start tags is enough. */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
static const char *demangle(const char *cname, char *buf, size_t len)
{
    static const char *const prefixes[] = {"__pyx_pf_", "__pyx_pw_", "__pyx_f_", "__pyx_pymod_exec_"};
    const char *p = NULL;
    size_t which;
    for (which = 0; which < sizeof prefixes / sizeof prefixes[0]; which++)
        if (strncmp(cname, prefixes[which], strlen(prefixes[which])) == 0) {
            p = cname + strlen(prefixes[which]);
            break;
        }
    if (!p || !*p || len < 2)
        return NULL;
    if (which == 3) { /* module init: the rest is the module name */
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
