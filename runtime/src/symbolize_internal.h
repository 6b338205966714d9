/* symbolize_internal.h: pieces shared by the symboliser's files.
 *   symbolize_dwarf.c   one object's DWARF through libdwfl: pc -> inline chain
 *   symbolize_cython.c  Cython names: the cython_debug XML, demangling, helper files
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

/* ---- symbolize_cython.c ---- */

typedef struct cy_names cy_names;

/* The cname -> qualified name table of a Cython module at `so_path`, from
 * <dir>/cython_debug/cython_debug_info_<module>; NULL when there is none. */
cy_names *cy_names_load(const char *so_path);
void cy_names_free(cy_names *n);
/* The Cython name of C function `cname` ("mod.Klass.method"), written into buf;
 * returns buf, or NULL when cname is not a Cython function. */
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

/* Line counts of source files, read once each: a line past the end of its file is a
 * leftover of #line (C code after the last directive), not a real .pyx line. */
typedef struct cy_sources cy_sources;
cy_sources *cy_sources_new(void);
void cy_sources_free(cy_sources *s);
/* 1 when `file` has a line `line`, or when the file cannot be read (benefit of doubt). */
int cy_line_exists(cy_sources *s, const char *file, int line);

#endif
