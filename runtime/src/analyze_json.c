/* analyze_json.c: serialises an aggregated profile as the compact JSON document that
 * cytool/analysis.py loads (cya_analyze_json). Metrics travel as arrays in the order
 * of METRIC_NAMES below; only locations and stacks with allocations are written. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze_internal.h"

static const char *const KIND_NAMES[64] = {
    [CYA_MALLOC] = "malloc", [CYA_CALLOC] = "calloc", [CYA_REALLOC] = "realloc",
    [CYA_REALLOCARRAY] = "reallocarray", [CYA_POSIX_MEMALIGN] = "posix_memalign",
    [CYA_ALIGNED_ALLOC] = "aligned_alloc", [CYA_MEMALIGN] = "memalign", [CYA_VALLOC] = "valloc",
    [CYA_PVALLOC] = "pvalloc", [CYA_MMAP] = "mmap", [CYA_MREMAP] = "mremap", [CYA_PYMEM_RAW] = "pymem_raw",
    [CYA_PYMEM_MEM] = "pymem_mem", [CYA_PYMEM_OBJ] = "pymem_obj", [CYA_FREE] = "free",
    [CYA_REALLOC_FREE] = "realloc_free", [CYA_MUNMAP] = "munmap", [CYA_PYMEM_RAW_FREE] = "pymem_raw_free",
    [CYA_PYMEM_MEM_FREE] = "pymem_mem_free", [CYA_PYMEM_OBJ_FREE] = "pymem_obj_free",
};

static const char *const FRAME_KIND_NAMES[] = {"pyx", "native", "python", "unknown", "cut", "cython-c"};

typedef struct out {
    char *buf;
    size_t len, cap;
    int failed;
} out;

static void put(out *o, const char *s, size_t n)
{
    if (o->failed)
        return;
    if (!cya_grow((void **)&o->buf, &o->cap, o->len + n + 1, 1)) {
        o->failed = 1;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

static void puts_(out *o, const char *s) { put(o, s, strlen(s)); }

static void putf(out *o, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void put_string(out *o, const char *s)
{
    put(o, "\"", 1);
    const char *run = s;
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        put(o, run, (size_t)(s - run));
        if (ch == '"')
            puts_(o, "\\\"");
        else if (ch == '\\')
            puts_(o, "\\\\");
        else
            putf(o, "\\u%04x", ch);
        run = s + 1;
    }
    if (s)
        put(o, run, (size_t)(s - run));
    put(o, "\"", 1);
}

static void put_metrics(out *o, const cya_metrics *m)
{
    putf(o, "[%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",", m->bytes, m->count, m->peak_bytes, m->peak_count);
    putf(o, "%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 "]", m->leaked_bytes, m->leaked_count, m->temp_bytes,
         m->temp_count);
}

static int interesting(const cya_metrics *m) { return m->count || m->leaked_count || m->peak_count; }

static void put_table(out *o, const char *name, const cya_metrics *table, size_t n)
{
    putf(o, ",\n\"%s\":[", name);
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        if (!interesting(&table[i]))
            continue;
        putf(o, "%s\n[%zu,", first ? "" : ",", i);
        put_metrics(o, &table[i]);
        put(o, "]", 1);
        first = 0;
    }
    put(o, "]", 1);
}

static void serialise(out *o, const cya_profile *p)
{
    const cya_capture *c = p->capture;
    puts_(o, "{\"metric_names\":[\"bytes\",\"count\",\"peak_bytes\",\"peak_count\",\"leaked_bytes\","
             "\"leaked_count\",\"temporary_bytes\",\"temporary_count\"],\n\"totals\":");
    put_metrics(o, &p->totals);
    putf(o, ",\n\"peak_time_ns\":%" PRIu64 ",\"end_time_ns\":%" PRIu64 ",\"events\":%zu", p->peak_time_ns,
         c->status.end_time_ns, c->nevents);
    putf(o, ",\"frees\":%" PRIu64 ",\"unmatched_frees\":%" PRIu64 ",\"replaced_blocks\":%" PRIu64
            ",\"temporary_window\":%u",
         p->frees, p->unmatched_frees, p->replaced_blocks, p->temporary_window);
    putf(o, ",\n\"cut_events\":%" PRIu64 ",\"cut_bytes\":%" PRIu64 ",\"cut_most\":%" PRIu64, p->cut_events,
         p->cut_bytes, p->cut_most);
    puts_(o, ",\n\"kinds\":{");
    int first = 1;
    for (int k = 0; k < 64; k++) {
        if (!p->kind_count[k] || !KIND_NAMES[k])
            continue;
        putf(o, "%s\"%s\":[%" PRIu64 ",%" PRIu64 "]", first ? "" : ",", KIND_NAMES[k], p->kind_count[k],
             p->kind_bytes[k]);
        first = 0;
    }
    puts_(o, "},\n\"locations\":[");
    size_t nl = p->nsymlocs + CYA_NPSEUDO;
    for (size_t i = 0; i < nl; i++) {
        const cya_location *l = cya_profile_location(p, (uint32_t)i);
        puts_(o, i ? ",\n[" : "\n[");
        put_string(o, l->function);
        put(o, ",", 1);
        put_string(o, l->file);
        putf(o, ",%u,\"%s\",", l->line, FRAME_KIND_NAMES[l->kind <= CYA_FRAME_CYTHON_C ? l->kind : CYA_FRAME_UNKNOWN]);
        put_string(o, l->object);
        put(o, "]", 1);
    }
    put(o, "]", 1);
    put_table(o, "self", p->self, nl);
    put_table(o, "inclusive", p->inclusive, nl);
    puts_(o, ",\n\"stacks\":[");
    first = 1;
    for (size_t s = 0; s < p->nstacks; s++) {
        const cya_pstack *st = &p->stacks[s];
        if (!interesting(&st->m))
            continue;
        putf(o, "%s\n[%u,[", first ? "" : ",", st->self);
        for (uint64_t j = 0; j < st->count; j++)
            putf(o, "%s%u", j ? "," : "", p->frames[st->offset + j]);
        puts_(o, "],");
        put_metrics(o, &st->m);
        put(o, "]", 1);
        first = 0;
    }
    puts_(o, "],\n\"lines\":[");
    first = 1;
    for (size_t i = 0; i < p->nlines; i++) {
        if (!interesting(&p->line_self[i]) && !interesting(&p->line_inclusive[i]))
            continue;
        putf(o, "%s\n[%u,", first ? "" : ",", p->line_location[i]);
        put_metrics(o, &p->line_self[i]);
        put(o, ",", 1);
        put_metrics(o, &p->line_inclusive[i]);
        put(o, ",", 1);
        put_metrics(o, &p->line_attributed[i]);
        put(o, "]", 1);
        first = 0;
    }
    puts_(o, "],\n\"flame\":[");
    /* kept nodes only, renumbered; parents keep coming before children */
    uint32_t *renumber = malloc((p->nflame ? p->nflame : 1) * sizeof *renumber);
    if (!renumber) {
        o->failed = 1;
        return;
    }
    uint32_t next = 0;
    for (size_t i = 0; i < p->nflame; i++) {
        const cya_flame_node *f = &p->flame[i];
        if (!f->kept)
            continue;
        renumber[i] = next;
        putf(o, "%s[%ld,%ld,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 "]", next ? ",\n" : "\n",
             f->location == UINT32_MAX ? -1L : (long)f->location, f->parent == UINT32_MAX ? -1L : (long)renumber[f->parent],
             f->values[0], f->values[1], f->values[2], f->values[3]);
        next++;
    }
    free(renumber);
    puts_(o, "],\n\"timeline\":[");
    for (size_t i = 0; i < p->ntimeline; i++)
        putf(o, "%s[%" PRIu64 ",%" PRIu64 "]", i ? "," : "", p->timeline[i].time_ns, p->timeline[i].live_bytes);
    puts_(o, "],\n\"threads\":[");
    for (size_t i = 0; i < p->nthreads; i++) {
        putf(o, "%s[%" PRIu64 ",", i ? "," : "", p->threads[i].id);
        put_metrics(o, &p->threads[i].m);
        put(o, "]", 1);
    }
    puts_(o, "]}\n");
}

CYA_API char *cya_analyze_json(const cya_capture *capture, const cya_symbols *symbols,
                               const cya_analyze_options *options, char *errbuf, size_t errlen)
{
    char dummy[1];
    if (!errbuf || !errlen) {
        errbuf = dummy;
        errlen = sizeof dummy;
    }
    errbuf[0] = '\0';
    cya_profile p;
    if (!cya_profile_build(&p, capture, symbols, options, errbuf, errlen)) {
        cya_profile_free(&p);
        return NULL;
    }
    out o = {0};
    serialise(&o, &p);
    cya_profile_free(&p);
    if (o.failed) {
        free(o.buf);
        snprintf(errbuf, errlen, "out of memory while writing the profile");
        return NULL;
    }
    return o.buf;
}
