/* symbolize_internal.h: pieces shared by the symboliser's files.
 *   symbolize_dwarf.c   one object's DWARF through libdwfl: pc -> inline chain
 *   symbolize_cython.c  Cython names: the cython_debug XML, demangling, helper files,
 *                       generated C files' source-position comments
 *   symbolize_stacks.c  the location table, folding, and the public cya_symbol* API
 */
#ifndef SYMBOLIZE_INTERNAL_H
#define SYMBOLIZE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "capture_internal.h"

/* ---- symbolize_dwarf.c ---- */

enum sym_state {
    SYM_OK = 0,        /* DWARF (or at least a symbol table) is available */
    SYM_MISSING = 1,   /* the file no longer exists */
    SYM_CHANGED = 2,   /* the file's build-id differs from the one captured */
    SYM_UNREADABLE = 3 /* exists but libdwfl cannot use it */
};

typedef struct sym_dwarf sym_dwarf;

/* One frame of an inline chain, innermost first. Strings belong to libdw. */
typedef struct raw_frame {
    const char *cname; /* C function name (DWARF or symbol table), NULL if none */
    const char *file;  /* NULL if no line info */
    int line;
    int decl_line;     /* the C line where the function is defined (DWARF), 0 if unknown */
} raw_frame;

/* Open `path` as the object loaded at `bias`; *state says what happened. Never NULL
 * unless out of memory (a failed object still answers lookups with nothing). */
sym_dwarf *sym_dwarf_open(const char *path, uint64_t bias, const uint8_t *build_id, size_t build_id_len,
                          enum sym_state *state);
void sym_dwarf_close(sym_dwarf *d);
/* Describe address `pc` (already adjusted for return addresses); fills at most `max`
 * frames, innermost first, and returns how many (0: nothing known). */
int sym_dwarf_lookup(sym_dwarf *d, uint64_t pc, raw_frame *out, int max);
/* Whether the object has DWARF line information at all. */
int sym_dwarf_has_lines(sym_dwarf *d);
/* Whether the object is a Cython module (has `__pyx_`/`__Pyx_` functions). */
int sym_dwarf_is_cython(const sym_dwarf *d);
/* A Cython module's dotted name from its `__pyx_module_is_main_<name>` symbol; NULL if none. */
const char *sym_dwarf_module_name(const sym_dwarf *d);
/* The object's function symbols (by address; names owned by the object), for telling
 * Cython's C names apart (symbolize_cython.c). */
size_t sym_dwarf_nsymbols(const sym_dwarf *d);
const char *sym_dwarf_symbol_name(const sym_dwarf *d, size_t i);
/* The compilation directory (DW_AT_comp_dir) of the compile unit holding `pc`; NULL if none. */
const char *sym_dwarf_comp_dir(sym_dwarf *d, uint64_t pc);

/* ---- symbolize_cython.c ---- */

typedef struct cy_names cy_names;

/* How the Cython module at `so_path` names its C functions: the cname -> qualified name
 * table of its debug XML when one is found (`cython_debug/cython_debug_info_<module>`
 * beside the module or in a folder above it, `<module>` short or dotted; else the one
 * cytool's module index names for the object's build-id: `<root>/index/<hex>.json` for
 * each search pattern `<root>/entries/<glob>`), and its function symbols (`symbols`, for
 * demangling names the XML lacks). `module` is the dotted name (NULL: unknown). NULL
 * only when out of memory. */
cy_names *cy_names_load(const char *so_path, const char *module, const uint8_t *build_id, size_t build_id_len,
                        const char *search, const sym_dwarf *symbols);
void cy_names_free(cy_names *n);
/* 1 when the module's debug XML was found. */
int cy_names_has_xml(const cy_names *n);
/* The Cython name of C function `cname`, as Cython's tracebacks give it
 * ("mod.Klass.method", "mod.outer.inner", "mod.f.genexpr", "mod.f.lambda", a generator's
 * body named for its def), written into buf; returns buf, or NULL when cname is not a
 * Cython function. n may be NULL. */
const char *cy_display_name(const cy_names *n, const char *cname, char *buf, size_t len);
/* The absolute .pyx path the XML names for this module (NULL if unknown). */
const char *cy_names_source(const cy_names *n);
/* 1 when `file` is a Cython source (.pyx, .pxd, .pxi). */
int cy_is_cython_source(const char *file);
/* 1 for C wrapper functions whose frame duplicates the Cython function they call. */
int cy_is_wrapper(const char *cname);
/* 1 for Cython's utility functions (`__Pyx_...`): never the user's line, even when the
 * DWARF says .pyx (code after the last #line directive inherits its file). */
int cy_is_utility(const char *cname);

/* A generated C file read for Cython's source-position comments (a comment opening with
 * `"pkg/mod.pyx":N` before the C code of each statement): which .pyx line a C line belongs to, for modules
 * compiled without `#line` directives. */
typedef struct cy_cfile cy_cfile;
/* The generated C file of Cython module `module` (dotted, or NULL when unknown) loaded
 * from `so_path`: `dwarf_c_path` (where its DWARF says it was compiled; may be NULL) if
 * that is it, else `<short>.c`/`.cpp` beside the module or in a project folder above it
 * (`build/lib.X/pkg/mod.so` with `pkg/mod.c`, also under `src/`). A file is taken only
 * when it is a regular file, says "Generated by Cython" in its first lines and defines
 * this module (its PyInit_ and __Pyx_MODULE_NAME). NULL when none is. */
cy_cfile *cy_cfile_find(const char *so_path, const char *module, const char *dwarf_c_path);
void cy_cfile_free(cy_cfile *f);
const char *cy_cfile_path(const cy_cfile *f);
/* 1 when the C file has `#line` directives (its DWARF lines are .pyx lines already). */
int cy_cfile_has_line_directives(const cy_cfile *f);
/* The .pyx path (resolved to a file that exists when one is found) and line whose code C
 * line `c_line` is: the last position comment above it. 0 when there is none. */
int cy_cfile_position(const cy_cfile *f, int c_line, const char **pyx, int *line);
/* The name the source line quoted by that comment defines (`def gen(...)`: "gen"), or NULL:
 * names a generator's body (`__pyx_gb_..._2generator`) from the line above its C definition. */
const char *cy_cfile_def_name(const cy_cfile *f, int c_line);
/* 1 for the C body of a generator, coroutine or async function (`__pyx_gb_`). */
int cy_is_generator_body(const char *cname);

/* Line counts of source files, read once each: a line past the end of its file is a
 * leftover of #line (C code after the last directive), not a real .pyx line. */
typedef struct cy_sources cy_sources;
cy_sources *cy_sources_new(void);
void cy_sources_free(cy_sources *s);
/* 1 when `file` has a line `line`, or when the file cannot be read (benefit of doubt). */
int cy_line_exists(cy_sources *s, const char *file, int line);

/* ---- symbolize_stacks.c ---- */

/* Symbolise the stacks (and note the objects) the capture gained since the symbols were
 * made or last extended (a capture followed as it grows). 0 when out of memory. */
int cya_symbols_extend(cya_symbols *s);

#endif
