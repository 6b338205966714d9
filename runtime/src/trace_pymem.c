/* trace_pymem.c: tracing the PyMem RAW/MEM/OBJ domains (CYTRACE_PYMEM).
 *
 * Wrappers installed with PyMem_SetAllocator record PYMEM_* events around the
 * interpreter's own allocators; the reentrancy guard is held while the original runs, so
 * the malloc/mmap it does underneath is not recorded a second time. libcytrace does not
 * link libpython: the few functions needed are looked up with dlsym, and installing is
 * refused unless the interpreter is initialised and the calling thread holds the GIL.
 * PyMemAllocatorEx is {ctx, malloc, calloc, realloc, free} in every CPython since 3.5.
 *
 * Another tracer may install its own allocators over ours (memray's
 * trace_python_allocators): cyt_pymem_check notes it as a TAKEOVER record, and stopping
 * leaves a domain that is no longer ours alone.
 */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "trace_internal.h"

typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t n, size_t size);
    void *(*realloc)(void *ctx, void *p, size_t size);
    void (*free)(void *ctx, void *p);
} pymem_allocator;

typedef struct {
    int domain; /* PYMEM_DOMAIN_RAW 0, MEM 1, OBJ 2 */
    int alloc_kind, free_kind;
    pymem_allocator original;
} domain_hook;

static domain_hook domains[3] = {
    {0, CYTRACE_PYMEM_RAW, CYTRACE_PYMEM_RAW_FREE, {0}},
    {1, CYTRACE_PYMEM_MEM, CYTRACE_PYMEM_MEM_FREE, {0}},
    {2, CYTRACE_PYMEM_OBJ, CYTRACE_PYMEM_OBJ_FREE, {0}},
};
static int installed;
static void (*set_allocator)(int domain, pymem_allocator *allocator);
static void (*get_allocator)(int domain, pymem_allocator *allocator);
static int check_without_gil; /* reading the allocators takes no lock before 3.13 */
static int foreign[3];        /* the domain's allocator was last seen not to be ours */

static void *pm_malloc(void *ctx, size_t size) {
    domain_hook *d = ctx;
    int guard = cytrace_guard_enter();
    void *p = d->original.malloc(d->original.ctx, size);
    cytrace_guard_exit(guard);
    if (!guard) cytrace_record(d->alloc_kind, (uintptr_t)p, size, __builtin_return_address(0));
    return p;
}

static void *pm_calloc(void *ctx, size_t n, size_t size) {
    domain_hook *d = ctx;
    int guard = cytrace_guard_enter();
    void *p = d->original.calloc(d->original.ctx, n, size);
    cytrace_guard_exit(guard);
    if (!guard) cytrace_record(d->alloc_kind, (uintptr_t)p, n * size, __builtin_return_address(0));
    return p;
}

static void *pm_realloc(void *ctx, void *old, size_t size) {
    domain_hook *d = ctx;
    uintptr_t old_address = (uintptr_t)old;
    uint64_t freed_at = cyt_event_time(); /* before: the RAW domain's block may go to another thread at once */
    int guard = cytrace_guard_enter();
    void *p = d->original.realloc(d->original.ctx, old, size);
    cytrace_guard_exit(guard);
    if (!guard && p != NULL) {
        if (old_address && atomic_load_explicit(&cyt_active, memory_order_relaxed)) { /* as cytrace_record */
            cyt_guard = 1;
            cyt_record_free_at(d->free_kind, old_address, freed_at);
            cyt_guard = 0;
        }
        cytrace_record(d->alloc_kind, (uintptr_t)p, size, __builtin_return_address(0));
    }
    return p;
}

static void pm_free(void *ctx, void *p) {
    domain_hook *d = ctx;
    if (p != NULL) cytrace_record(d->free_kind, (uintptr_t)p, 0, NULL);
    int guard = cytrace_guard_enter();
    d->original.free(d->original.ctx, p);
    cytrace_guard_exit(guard);
}

static int is_ours(int i, const pymem_allocator *a) { return a->ctx == &domains[i] && a->malloc == pm_malloc; }

CYTRACE_API int cytrace_pymem_install(void) {
    if (installed) return 0;
    get_allocator = (void (*)(int, pymem_allocator *))dlsym(RTLD_DEFAULT, "PyMem_GetAllocator");
    set_allocator = (void (*)(int, pymem_allocator *))dlsym(RTLD_DEFAULT, "PyMem_SetAllocator");
    int (*is_initialized)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "Py_IsInitialized");
    int (*gil_check)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "PyGILState_Check");
    if (!get_allocator || !set_allocator || !is_initialized || !gil_check) {
        cyt_set_error("no Python interpreter in this process: cannot trace the PyMem domains");
        return -1;
    }
    if (!is_initialized() || !gil_check()) {
        cyt_set_error("the PyMem domains can only be traced from a thread holding the GIL");
        return -1;
    }
    for (int i = 0; i < 3; i++) {
        get_allocator(domains[i].domain, &domains[i].original);
        pymem_allocator mine = {&domains[i], pm_malloc, pm_calloc, pm_realloc, pm_free};
        set_allocator(domains[i].domain, &mine);
        foreign[i] = 0;
    }
    /* Python 3.13 guards the allocators with a mutex of the runtime's: only with the GIL */
    const unsigned long *version = (const unsigned long *)dlsym(RTLD_DEFAULT, "Py_Version");
    check_without_gil = version == NULL || *version < 0x030D0000;
    installed = 1;
    return 0;
}

/* Caller holds the GIL (stop), or reading without it is safe (check_without_gil). */
static void check_domains(cyt_buf *out) {
    static const char *const names[3] = {"PyMem_RawMalloc", "PyMem_Malloc", "PyObject_Malloc"};
    for (int i = 0; i < 3; i++) {
        pymem_allocator now;
        get_allocator(domains[i].domain, &now);
        int theirs = !is_ours(i, &now);
        if (theirs == foreign[i]) continue;
        foreign[i] = theirs;
        Dl_info where;
        const char *target = "";
        if (theirs && dladdr((void *)now.malloc, &where) && where.dli_fname) target = where.dli_fname;
        cyt_buf_varint(out, REC_TAKEOVER);
        cyt_buf_varint(out, cyt_since_start());
        cyt_buf_varint(out, TAKEOVER_PYMEM);
        cyt_buf_varint(out, (uint64_t)domains[i].domain);
        cyt_buf_string(out, names[i], strlen(names[i]));
        cyt_buf_string(out, target, strlen(target));
        cyt_buf_varint(out, (uint64_t)theirs);
    }
}

void cyt_pymem_check(cyt_buf *out) {
    if (installed && (check_without_gil || cyt_writer_is_self() == 0)) check_domains(out);
}

CYTRACE_API void cytrace_pymem_uninstall(void) {
    if (!installed) return;
    for (int i = 0; i < 3; i++) {
        pymem_allocator now;
        get_allocator(domains[i].domain, &now);
        if (is_ours(i, &now)) set_allocator(domains[i].domain, &domains[i].original); /* else not ours to undo */
    }
    installed = 0;
}
