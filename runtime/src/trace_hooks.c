/* trace_hooks.c: the functions the patched GOT slots lead to.
 *
 * Each hook calls the real function (through libcytrace's own GOT, which is never
 * patched), then records the event unless the thread's reentrancy guard is held (the
 * tracer's own allocations, or a signal handler interrupting the tracer) or tracing is
 * off. Frees are recorded before the memory is released, so that no other thread can
 * record a new block at that address first. dlopen/dlclose open a new load generation
 * (FORMAT.md) before they run, and rescan the loaded objects after.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "trace_internal.h"

void cyt_record_alloc_fp(int kind, uintptr_t address, size_t size, void *return_address, void *frame_address);

#define RECORDING() (CYT_LIKELY(!cyt_guard) && atomic_load_explicit(&cyt_active, memory_order_relaxed))

/* Call the real function with the guard held: allocators that call other allocators
 * through libc's own PLT (reallocarray -> realloc) must not be recorded twice. */
#define REAL(expr)                                                                                     \
    __extension__({                                                                                    \
        int guard_ = cyt_guard;                                                                        \
        cyt_guard = 1;                                                                                 \
        __typeof__(expr) result_ = (expr);                                                             \
        cyt_guard = guard_;                                                                            \
        result_;                                                                                       \
    })

#define RECORD_ALLOC(kind, ptr, size)                                                                  \
    do {                                                                                               \
        if ((ptr) != NULL && RECORDING()) {                                                            \
            cyt_guard = 1;                                                                             \
            cyt_record_alloc_fp((kind), (uintptr_t)(ptr), (size), __builtin_return_address(0),        \
                                __builtin_frame_address(0));                                           \
            cyt_guard = 0;                                                                             \
        }                                                                                              \
    } while (0)

/* A free timed before the call that released the block (see cyt_record_free_at). */
#define RECORD_FREE_AT(kind, ptr, time)                                                                \
    do {                                                                                               \
        if ((ptr) != 0 && RECORDING()) {                                                               \
            cyt_guard = 1;                                                                             \
            cyt_record_free_at((kind), (uintptr_t)(ptr), (time));                                      \
            cyt_guard = 0;                                                                             \
        }                                                                                              \
    } while (0)

#define RECORD_FREE(kind, ptr)                                                                         \
    do {                                                                                               \
        if ((ptr) != 0 && RECORDING()) {                                                               \
            cyt_guard = 1;                                                                             \
            cyt_record_free((kind), (uintptr_t)(ptr));                                                 \
            cyt_guard = 0;                                                                             \
        }                                                                                              \
    } while (0)

static void *hook_malloc(size_t size) {
    void *p = REAL(malloc(size));
    RECORD_ALLOC(CYTRACE_MALLOC, p, size);
    return p;
}

static void *hook_calloc(size_t n, size_t size) {
    void *p = REAL(calloc(n, size));
    RECORD_ALLOC(CYTRACE_CALLOC, p, n * size);
    return p;
}

static void hook_free(void *p) {
    RECORD_FREE(CYTRACE_FREE, p);
    int guard = cyt_guard;
    cyt_guard = 1;
    free(p);
    cyt_guard = guard;
}

/* Only the old pointer's value is recorded once realloc freed it, never dereferenced. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuse-after-free"
static void *hook_realloc(void *old, size_t size) {
    uintptr_t old_address = (uintptr_t)old;
    uint64_t freed_at = cyt_event_time(); /* before: another thread may get the block at once */
    void *p = REAL(realloc(old, size));
    if (RECORDING()) {
        /* realloc(p, 0) frees p and returns NULL; a failed realloc leaves old alone */
        if (old_address != 0 && (p != NULL || size == 0)) RECORD_FREE_AT(CYTRACE_REALLOC_FREE, old_address, freed_at);
        RECORD_ALLOC(CYTRACE_REALLOC, p, size);
    }
    return p;
}

static void *hook_reallocarray(void *old, size_t n, size_t size) {
    uintptr_t old_address = (uintptr_t)old;
    uint64_t freed_at = cyt_event_time();
    void *p = REAL(reallocarray(old, n, size));
    if (RECORDING()) {
        if (old_address != 0 && (p != NULL || n == 0 || size == 0))
            RECORD_FREE_AT(CYTRACE_REALLOC_FREE, old_address, freed_at);
        RECORD_ALLOC(CYTRACE_REALLOCARRAY, p, n * size);
    }
    return p;
}

#pragma GCC diagnostic pop

static int hook_posix_memalign(void **out, size_t alignment, size_t size) {
    int r = REAL(posix_memalign(out, alignment, size));
    if (r == 0) RECORD_ALLOC(CYTRACE_POSIX_MEMALIGN, *out, size);
    return r;
}

static void *hook_aligned_alloc(size_t alignment, size_t size) {
    void *p = REAL(aligned_alloc(alignment, size));
    RECORD_ALLOC(CYTRACE_ALIGNED_ALLOC, p, size);
    return p;
}

static void *hook_memalign(size_t alignment, size_t size) {
    void *p = REAL(memalign(alignment, size));
    RECORD_ALLOC(CYTRACE_MEMALIGN, p, size);
    return p;
}

static void *hook_valloc(size_t size) {
    void *p = REAL(valloc(size));
    RECORD_ALLOC(CYTRACE_VALLOC, p, size);
    return p;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static void *hook_pvalloc(size_t size) {
    void *p = REAL(pvalloc(size));
    RECORD_ALLOC(CYTRACE_PVALLOC, p, size);
    return p;
}
#pragma GCC diagnostic pop

static void *hook_mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset) {
    void *p = REAL(mmap(addr, length, prot, flags, fd, offset));
    if (p != MAP_FAILED) RECORD_ALLOC(CYTRACE_MMAP, p, length);
    return p;
}

static void *hook_mmap64(void *addr, size_t length, int prot, int flags, int fd, off_t offset) {
    void *p = REAL(mmap(addr, length, prot, flags, fd, offset));
    if (p != MAP_FAILED) RECORD_ALLOC(CYTRACE_MMAP, p, length);
    return p;
}

/* munmap is recorded before the range is released (see the top); one the kernel refuses
 * (EINVAL: an address off a page boundary, length 0) is not recorded. */
static int hook_munmap(void *addr, size_t length) {
    int saved_errno = errno;
    static size_t page_mask;
    if (RECORDING()) {
        if (page_mask == 0) page_mask = (size_t)sysconf(_SC_PAGESIZE) - 1;
        if (length != 0 && ((uintptr_t)addr & page_mask) == 0) {
            cyt_guard = 1;
            cyt_record_munmap((uintptr_t)addr, length);
            cyt_guard = 0;
        }
    }
    errno = saved_errno;
    return REAL(munmap(addr, length));
}

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

/* The old range is released (MUNMAP, unless MREMAP_DONTUNMAP keeps it) and the new one
 * mapped (MREMAP): both after the call, which moves or resizes atomically. */
static void *hook_mremap(void *old, size_t old_size, size_t new_size, int flags, ...) {
    void *new_address = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_address = va_arg(ap, void *);
        va_end(ap);
    }
    void *p = (flags & MREMAP_FIXED) ? REAL(mremap(old, old_size, new_size, flags, new_address))
                                     : REAL(mremap(old, old_size, new_size, flags));
    if (p != MAP_FAILED && RECORDING()) {
        int saved_errno = errno;
        if (!(flags & MREMAP_DONTUNMAP) && old_size != 0) {
            cyt_guard = 1;
            cyt_record_munmap((uintptr_t)old, old_size);
            cyt_guard = 0;
        }
        RECORD_ALLOC(CYTRACE_MREMAP, p, new_size);
        errno = saved_errno;
    }
    return p;
}

/* Before dlopen or dlclose runs: a new load generation (the stacks captured from now on
 * may see objects mapped, or gone, by it). */
static uint64_t new_generation(void) { return atomic_fetch_add(&cyt_load_generation, 1) + 1; }

/* After the set of loaded objects changed: patch the new ones, note the gone ones. */
static void objects_changed(uint64_t generation) {
    if (!atomic_load(&cyt_active)) return;
    int saved = cyt_guard;
    cyt_guard = 1;
    cyt_buf out = {0};
    cyt_objects_rescan(&out, generation);
    if (out.len > 0) cyt_writer_submit(out.data, out.len, 0);
    else cyt_buf_free(&out);
    cyt_guard = saved;
}

/* dlopen searches the DT_RUNPATH/DT_RPATH of its *caller*, which is now libcytrace (none).
 * When a bare name is not found, search the real caller's paths as it would have. */
static void *dlopen_from_caller_paths(const char *file, int mode, const void *caller) {
    struct link_map *lm = NULL;
    Dl_info info;
    if (dladdr1(caller, &info, (void **)&lm, RTLD_DL_LINKMAP) == 0 || lm == NULL || lm->l_ld == NULL) return NULL;
    const char *strtab = NULL, *runpath = NULL, *rpath = NULL;
    uintptr_t runpath_off = 0, rpath_off = 0;
    int has_runpath = 0, has_rpath = 0;
    for (const ElfW(Dyn) *d = lm->l_ld; d->d_tag != DT_NULL; d++) {
        if (d->d_tag == DT_STRTAB) strtab = (const char *)(d->d_un.d_ptr < lm->l_addr ? lm->l_addr + d->d_un.d_ptr : d->d_un.d_ptr);
        if (d->d_tag == DT_RUNPATH) has_runpath = 1, runpath_off = d->d_un.d_val;
        if (d->d_tag == DT_RPATH) has_rpath = 1, rpath_off = d->d_un.d_val;
    }
    if (strtab == NULL) return NULL;
    if (has_runpath) runpath = strtab + runpath_off;
    if (has_rpath) rpath = strtab + rpath_off;
    const char *paths = runpath ? runpath : rpath;
    if (paths == NULL) return NULL;
    char origin[4096];
    const char *name = lm->l_name && lm->l_name[0] ? lm->l_name : info.dli_fname;
    snprintf(origin, sizeof origin, "%s", name ? name : "");
    char *slash = strrchr(origin, '/');
    if (slash) *slash = 0;
    else strcpy(origin, ".");
    while (*paths) {
        size_t n = strcspn(paths, ":");
        char dir[4096], candidate[8192];
        snprintf(dir, sizeof dir, "%.*s", (int)n, paths);
        char *o = strstr(dir, "$ORIGIN");
        int len;
        if (o != NULL) {
            char rest[4096];
            snprintf(rest, sizeof rest, "%s", o + 7);
            *o = 0;
            len = snprintf(candidate, sizeof candidate, "%s%s%s/%s", dir, origin, rest, file);
        } else {
            len = snprintf(candidate, sizeof candidate, "%s/%s", dir, file);
        }
        void *h = len > 0 && (size_t)len < sizeof candidate ? dlopen(candidate, mode) : NULL; /* too long: no such file */
        if (h != NULL) return h;
        paths += n;
        if (*paths == ':') paths++;
    }
    return NULL;
}

static void *hook_dlopen(const char *file, int mode) {
    uint64_t generation = new_generation();
    void *h = dlopen(file, mode);
    if (h == NULL && file != NULL && strchr(file, '/') == NULL) {
        h = dlopen_from_caller_paths(file, mode, __builtin_return_address(0));
        if (h == NULL) dlopen(file, mode); /* leave the original dlerror() text */
    }
    if (h != NULL) objects_changed(generation);
    return h;
}

static int hook_dlclose(void *handle) {
    uint64_t generation = new_generation();
    int r = dlclose(handle);
    objects_changed(generation);
    return r;
}

/* _exit skips atexit: finish the capture first (os._exit in a forked worker is common).
 * Never block here: if the control lock is busy (exit from a signal handler that
 * interrupted a start or stop) the unflushed buffers are lost, the file stays readable. */
static void hook__exit(int status) {
    cyt_stop_for_exit();
    _exit(status);
}

typedef struct hook_entry {
    const char *name;
    void *hook;
    void *real; /* the function itself (through libcytrace's own GOT) */
} hook_entry;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* pvalloc */
const hook_entry cyt_hook_table[] = {
    {"malloc", (void *)hook_malloc, (void *)malloc},
    {"calloc", (void *)hook_calloc, (void *)calloc},
    {"realloc", (void *)hook_realloc, (void *)realloc},
    {"reallocarray", (void *)hook_reallocarray, (void *)reallocarray},
    {"free", (void *)hook_free, (void *)free},
    {"posix_memalign", (void *)hook_posix_memalign, (void *)posix_memalign},
    {"aligned_alloc", (void *)hook_aligned_alloc, (void *)aligned_alloc},
    {"memalign", (void *)hook_memalign, (void *)memalign},
    {"valloc", (void *)hook_valloc, (void *)valloc},
    {"pvalloc", (void *)hook_pvalloc, (void *)pvalloc},
    {"mmap", (void *)hook_mmap, (void *)mmap},
    {"mmap64", (void *)hook_mmap64, (void *)mmap64},
    {"munmap", (void *)hook_munmap, (void *)munmap},
    {"mremap", (void *)hook_mremap, (void *)mremap},
    {"dlopen", (void *)hook_dlopen, (void *)dlopen},
    {"dlclose", (void *)hook_dlclose, (void *)dlclose},
    {"_exit", (void *)hook__exit, (void *)_exit},
    {"_Exit", (void *)hook__exit, (void *)_Exit},
};
#pragma GCC diagnostic pop
const size_t cyt_hook_count = sizeof cyt_hook_table / sizeof cyt_hook_table[0];

/* ---- entry points for the Python extension ----------------------------------------- */

CYTRACE_API int cytrace_guard_enter(void) {
    int previous = cyt_guard;
    cyt_guard = 1;
    return previous;
}

CYTRACE_API void cytrace_guard_exit(int previous) { cyt_guard = previous; }

CYTRACE_API void cytrace_record(int kind, uintptr_t address, size_t size, void *return_address) {
    if (address == 0 || !RECORDING()) return;
    cyt_guard = 1;
    if (kind >= CYTRACE_FREE) cyt_record_free(kind, address);
    else cyt_record_event(kind, address, size, return_address);
    cyt_guard = 0;
}
