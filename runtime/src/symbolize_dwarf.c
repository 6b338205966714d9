/* symbolize_dwarf.c: one shared object's debug information through elfutils' libdwfl,
 * offline (the process is gone): the file is reported at the load bias the capture
 * recorded, its build-id is checked against the captured one, and an address becomes
 * its chain of inline frames (function, file, line), innermost first.
 *
 * Cost: libdwfl's symbol lookup scans the whole symbol table and dwarf_getscopes walks
 * the compile unit, each per address. So symbols go into a sorted table built once per
 * object, and inline chains are expanded only in Cython modules (objects with `__pyx_`
 * symbols), where .pyx lines live; elsewhere (libpython, libc) an address gets its
 * symbol and its line-table entry. (Functions found through DWARF scopes carry their
 * source names; a C++ module's symbol table holds mangled ones.) */
#define _GNU_SOURCE
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <gelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "symbolize_internal.h"

typedef struct sym_entry {
    uint64_t start, size;
    const char *name; /* owned by libdwfl */
} sym_entry;

struct sym_dwarf {
    Dwfl *dwfl;
    Dwfl_Module *module;
    int has_lines;
    int cython;        /* has __pyx_ symbols: expand inline frames */
    char *module_name; /* a Cython module's dotted name (its __pyx_module_is_main_ symbol) */
    sym_entry *syms;   /* function symbols sorted by start */
    size_t nsyms;
};

static int sym_cmp(const void *a, const void *b)
{
    const sym_entry *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* `pkg__sub__mod` (how Cython writes a dotted name into a C identifier: each '.' becomes
 * "__") -> "pkg.sub.mod". The last part is the file's own name (`short_name`, e.g.
 * `_speedups` in `pkg___speedups`), which settles where its leading underscores belong. */
static char *dotted_module_name(const char *mangled, const char *short_name)
{
    size_t len = strlen(mangled), slen = strlen(short_name);
    size_t head = len; /* the part before the last one */
    if (slen && len > slen + 2 && strcmp(mangled + len - slen, short_name) == 0 &&
        strncmp(mangled + len - slen - 2, "__", 2) == 0)
        head = len - slen - 2;
    else if (strcmp(mangled, short_name) == 0)
        head = 0;
    char *out = malloc(len + 2), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < head; i++) {
        if (mangled[i] == '_' && i + 1 < head && mangled[i + 1] == '_' && i > 0) {
            *o++ = '.';
            i++;
        } else {
            *o++ = mangled[i];
        }
    }
    if (head < len) {
        if (head)
            *o++ = '.';
        memcpy(o, mangled + len - slen, slen);
        o += slen;
    }
    *o = '\0';
    return out;
}

static void load_symbols(sym_dwarf *d, const char *path)
{
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char short_name[256];
    snprintf(short_name, sizeof short_name, "%.*s", (int)strcspn(base, "."), base);
    int n = dwfl_module_getsymtab(d->module);
    if (n <= 0)
        return;
    d->syms = malloc((size_t)n * sizeof *d->syms);
    if (!d->syms)
        return;
    for (int i = 1; i < n; i++) {
        GElf_Sym sym;
        GElf_Addr addr;
        const char *name = dwfl_module_getsym_info(d->module, i, &sym, &addr, NULL, NULL, NULL);
        if (!name || !*name || sym.st_shndx == SHN_UNDEF)
            continue;
        if (!d->module_name && strncmp(name, "__pyx_module_is_main_", 21) == 0 && name[21])
            d->module_name = dotted_module_name(name + 21, short_name);
        if (GELF_ST_TYPE(sym.st_info) != STT_FUNC)
            continue;
        if (strstr(name, "__pyx_") || strstr(name, "__Pyx_")) /* C++ modules: mangled */
            d->cython = 1;
        d->syms[d->nsyms++] = (sym_entry){addr, sym.st_size, name};
    }
    qsort(d->syms, d->nsyms, sizeof *d->syms, sym_cmp);
}

static const char *symbol_at(const sym_dwarf *d, uint64_t pc)
{
    size_t lo = 0, hi = d->nsyms;
    while (lo < hi) { /* first symbol starting after pc */
        size_t mid = (lo + hi) / 2;
        if (d->syms[mid].start <= pc)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* aliases share a start: any one whose extent covers pc will do */
    for (size_t i = lo; i-- > 0 && d->syms[i].start == d->syms[lo - 1].start;)
        if (pc < d->syms[i].start + (d->syms[i].size ? d->syms[i].size : 1))
            return d->syms[i].name;
    return NULL;
}

static char *debuginfo_path = NULL;
static const Dwfl_Callbacks callbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .section_address = dwfl_offline_section_address,
    .debuginfo_path = &debuginfo_path,
};

sym_dwarf *sym_dwarf_open(const char *path, uint64_t bias, const uint8_t *build_id, size_t build_id_len,
                          enum sym_state *state)
{
    sym_dwarf *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    *state = SYM_OK;
    if (!path || !*path || access(path, R_OK) != 0) {
        *state = SYM_MISSING;
        return d;
    }
    /* only a regular file is handed to libdwfl (which would block opening a FIFO, or read
     * a device for ever): a capture may name any path */
    int fd = cya_open_regular(path);
    if (fd < 0) {
        *state = SYM_UNREADABLE;
        return d;
    }
    close(fd);
    d->dwfl = dwfl_begin(&callbacks);
    if (!d->dwfl) {
        *state = SYM_UNREADABLE;
        return d;
    }
    dwfl_report_begin(d->dwfl);
    d->module = dwfl_report_elf(d->dwfl, path, path, -1, bias, true);
    dwfl_report_end(d->dwfl, NULL, NULL);
    if (!d->module) {
        *state = SYM_UNREADABLE;
        return d;
    }
    if (build_id_len) {
        const unsigned char *bits = NULL;
        GElf_Addr vaddr;
        Dwarf_Addr elf_bias;
        dwfl_module_getelf(d->module, &elf_bias);
        int n = dwfl_module_build_id(d->module, &bits, &vaddr);
        if (n <= 0 || (size_t)n != build_id_len || memcmp(bits, build_id, build_id_len) != 0) {
            *state = SYM_CHANGED;
            d->module = NULL; /* its DWARF describes another build: do not use it */
            return d;
        }
    }
    Dwarf_Addr dbias;
    d->has_lines = dwfl_module_getdwarf(d->module, &dbias) != NULL;
    load_symbols(d, path);
    return d;
}

void sym_dwarf_close(sym_dwarf *d)
{
    if (!d)
        return;
    if (d->dwfl)
        dwfl_end(d->dwfl);
    free(d->syms);
    free(d->module_name);
    free(d);
}

int sym_dwarf_is_cython(const sym_dwarf *d) { return d && d->module && d->cython; }

const char *sym_dwarf_module_name(const sym_dwarf *d) { return d ? d->module_name : NULL; }

size_t sym_dwarf_nsymbols(const sym_dwarf *d) { return d ? d->nsyms : 0; }

const char *sym_dwarf_symbol_name(const sym_dwarf *d, size_t i) { return d && i < d->nsyms ? d->syms[i].name : NULL; }

const char *sym_dwarf_comp_dir(sym_dwarf *d, uint64_t pc)
{
    if (!d || !d->module)
        return NULL;
    Dwarf_Addr bias = 0;
    Dwarf_Die *cu = dwfl_module_addrdie(d->module, pc, &bias);
    if (!cu)
        return NULL;
    Dwarf_Attribute attr;
    return dwarf_formstring(dwarf_attr(cu, DW_AT_comp_dir, &attr));
}

int sym_dwarf_has_lines(sym_dwarf *d) { return d && d->module && d->has_lines; }

static const char *die_name(Dwarf_Die *die)
{
    Dwarf_Attribute attr;
    const char *name = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_name, &attr));
    if (!name)
        name = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_linkage_name, &attr));
    return name;
}

/* The file and line an inlined subroutine was called from. */
static void call_site(Dwarf_Die *cu, Dwarf_Die *inlined, const char **file, int *line)
{
    Dwarf_Attribute attr;
    Dwarf_Word index = 0, lineno = 0;
    *file = NULL;
    *line = 0;
    if (dwarf_formudata(dwarf_attr(inlined, DW_AT_call_line, &attr), &lineno) == 0)
        *line = (int)lineno;
    Dwarf_Files *files;
    size_t nfiles;
    if (dwarf_formudata(dwarf_attr(inlined, DW_AT_call_file, &attr), &index) == 0 &&
        dwarf_getsrcfiles(cu, &files, &nfiles) == 0 && index < nfiles)
        *file = dwarf_filesrc(files, index, NULL, NULL);
}

int sym_dwarf_lookup(sym_dwarf *d, uint64_t pc, raw_frame *out, int max)
{
    if (!d || !d->module || max <= 0)
        return 0;
    const char *file = NULL;
    int line = 0;
    Dwfl_Line *dl = dwfl_module_getsrc(d->module, pc);
    if (dl)
        file = dwfl_lineinfo(dl, NULL, &line, NULL, NULL, NULL);
    int n = 0;
    Dwarf_Addr bias = 0;
    Dwarf_Die *cu = d->cython ? dwfl_module_addrdie(d->module, pc, &bias) : NULL;
    if (cu) {
        /* dwarf_getscopes follows an inlined instance into its abstract definition;
         * the concrete chain of callers comes from dwarf_getscopes_die on the
         * innermost function scope. */
        Dwarf_Die *scopes = NULL, innermost;
        int nscopes = dwarf_getscopes(cu, pc - bias, &scopes);
        int found = 0;
        for (int i = 0; i < nscopes && !found; i++) {
            int tag = dwarf_tag(&scopes[i]);
            if (tag == DW_TAG_inlined_subroutine || tag == DW_TAG_subprogram) {
                innermost = scopes[i];
                found = 1;
            }
        }
        free(scopes);
        scopes = NULL;
        nscopes = found ? dwarf_getscopes_die(&innermost, &scopes) : 0;
        for (int i = 0; i < nscopes && n < max; i++) {
            int tag = dwarf_tag(&scopes[i]);
            if (tag != DW_TAG_inlined_subroutine && tag != DW_TAG_subprogram)
                continue;
            int decl = 0;
            out[n].cname = die_name(&scopes[i]);
            out[n].file = file;
            out[n].line = line;
            out[n].decl_line = dwarf_decl_line(&scopes[i], &decl) == 0 ? decl : 0;
            n++;
            if (tag == DW_TAG_subprogram)
                break;
            call_site(cu, &scopes[i], &file, &line);
        }
        free(scopes);
    }
    if (n == 0) { /* no DWARF scope: the symbol table, and whatever line we have */
        out[0].cname = symbol_at(d, pc);
        out[0].file = file;
        out[0].line = line;
        out[0].decl_line = 0;
        n = out[0].cname || file ? 1 : 0;
    } else if (!out[n - 1].cname) {
        out[n - 1].cname = symbol_at(d, pc);
    }
    return n;
}
