/* trace_hooks.c: the functions the patched GOT slots lead to.
 *
 * Each hook calls the real function (through libcytrace's own GOT, which is never
 * patched), then records the event unless the thread's reentrancy guard is held (the
 * tracer's own allocations, or a signal handler interrupting the tracer) or tracing is
 * off. Frees are recorded before the memory is released, so that no other thread can
 * record a new block at that address first. dlopen/dlclose open a new load generation
 * (FORMAT.md) before they run, and rescan the loaded objects after. _exit and the exec
 * family finish the capture before the process ends or is replaced.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
    cyt_stop_for_exit(NULL);
    _exit(status);
}

/* ---- exec ------------------------------------------------------------------------------
 * An exec replaces the program and the tracer with it: the events still in the threads'
 * buffers and the writer's queue would be lost, and the capture would have no end (as if
 * killed). So the capture is finished first, as at _exit. An exec that fails returns to a
 * program no longer traced, so the usual failures (no such file, not executable: os.execvp
 * tries each PATH entry in turn) are checked first and do not end the capture; a failure
 * past that check (a bad executable format, E2BIG, ENOMEM) is said on stderr. */

/* Would the kernel start `path`? (a regular file we may execute: the checks behind
 * ENOENT, EACCES, ENOTDIR, which are most failed execs) */
static int exec_could_start(const char *path) {
    struct stat st;
    return path != NULL && stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* The same for a file looked up in PATH as execvp does (a name with a slash is a path). */
static int exec_could_start_in_path(const char *file) {
    if (file == NULL || file[0] == 0) return 0;
    if (strchr(file, '/') != NULL) return exec_could_start(file);
    const char *path = getenv("PATH");
    if (path == NULL) path = "/bin:/usr/bin"; /* glibc's default */
    char candidate[4096];
    size_t flen = strlen(file);
    for (const char *dir = path;; dir++) {
        const char *end = strchr(dir, ':');
        size_t dlen = end ? (size_t)(end - dir) : strlen(dir);
        if (dlen + 1 + flen + 1 <= sizeof candidate) {
            size_t n = 0;
            if (dlen == 0) candidate[n++] = '.'; /* an empty entry is the current directory */
            memcpy(candidate + n, dir, dlen);
            n += dlen;
            candidate[n++] = '/';
            memcpy(candidate + n, file, flen + 1);
            if (exec_could_start(candidate)) return 1;
        }
        if (end == NULL) return 0;
        dir = end;
    }
}

/* Before an exec of `what` that can start: finish the capture. 1 if it did (tracing is
 * over); said on stderr if the tracer was asked to (cytool profile, whose own report will
 * not come: its process is the one replaced). */
static int finish_before_exec(int could_start, const char *what) {
    if (!could_start || !atomic_load_explicit(&cyt_active, memory_order_relaxed)) return 0;
    char capture[4096];
    snprintf(capture, sizeof capture, "%s", cytrace_path());
    int say = (cyt_options & CYTRACE_SAY_EXEC) != 0;
    if (!cyt_stop_for_exit(what ? what : "(null)")) return 0;
    if (say)
        fprintf(stderr, "cytool: process %d replaces its program (exec %s): %s is complete up to here; report "
                "with: cytool report %s\n", (int)getpid(), what ? what : "(null)", capture, capture);
    return 1;
}

/* The exec returned: it failed after the capture was finished. The capture says so (an
 * EXEC_FAILED frame after its END: reports call it incomplete), and stderr. */
static void exec_failed(const char *what, int finished) {
    if (!finished) return;
    int saved = errno;
    int noted = cyt_note_exec_failed(cyt_since_start(), saved);
    fprintf(stderr, "cytool: exec of %s failed (%s) after the capture was finished for it: process %d is no longer "
            "traced%s\n", what ? what : "(null)", strerror(saved), (int)getpid(),
            noted ? " (the capture says so)" : "");
    errno = saved;
}

static int hook_execve(const char *path, char *const argv[], char *const envp[]) {
    int finished = finish_before_exec(exec_could_start(path), path);
    int r = execve(path, argv, envp);
    exec_failed(path, finished);
    return r;
}

static int hook_execv(const char *path, char *const argv[]) {
    int finished = finish_before_exec(exec_could_start(path), path);
    int r = execv(path, argv);
    exec_failed(path, finished);
    return r;
}

static int hook_execvp(const char *file, char *const argv[]) {
    int finished = finish_before_exec(exec_could_start_in_path(file), file);
    int r = execvp(file, argv);
    exec_failed(file, finished);
    return r;
}

static int hook_execvpe(const char *file, char *const argv[], char *const envp[]) {
    int finished = finish_before_exec(exec_could_start_in_path(file), file);
    int r = execvpe(file, argv, envp);
    exec_failed(file, finished);
    return r;
}

static int hook_fexecve(int fd, char *const argv[], char *const envp[]) {
    struct stat st;
    int finished = finish_before_exec(fstat(fd, &st) == 0 && S_ISREG(st.st_mode), "a file descriptor");
    int r = fexecve(fd, argv, envp);
    exec_failed("a file descriptor", finished);
    return r;
}

/* The execl family: the arguments into an argv array, then the execv one. */
#define COLLECT_ARGS(arg0, argv, after)                                                                \
    size_t count_ = 1;                                                                                 \
    va_list ap_;                                                                                       \
    va_start(ap_, arg0);                                                                               \
    while (va_arg(ap_, char *) != NULL) count_++;                                                      \
    va_end(ap_);                                                                                       \
    char *argv[count_ + 1];                                                                            \
    argv[0] = (char *)(arg0);                                                                          \
    va_start(ap_, arg0);                                                                               \
    for (size_t i_ = 1; i_ <= count_; i_++) argv[i_] = va_arg(ap_, char *);                            \
    after;                                                                                             \
    va_end(ap_)

static int hook_execl(const char *path, const char *arg0, ...) {
    COLLECT_ARGS(arg0, argv, (void)0);
    return hook_execv(path, argv);
}

static int hook_execlp(const char *file, const char *arg0, ...) {
    COLLECT_ARGS(arg0, argv, (void)0);
    return hook_execvp(file, argv);
}

static int hook_execle(const char *path, const char *arg0, ...) {
    char *const *envp;
    COLLECT_ARGS(arg0, argv, envp = va_arg(ap_, char *const *));
    return hook_execve(path, argv, envp);
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
    {"execve", (void *)hook_execve, (void *)execve},
    {"execv", (void *)hook_execv, (void *)execv},
    {"execvp", (void *)hook_execvp, (void *)execvp},
    {"execvpe", (void *)hook_execvpe, (void *)execvpe},
    {"fexecve", (void *)hook_fexecve, (void *)fexecve},
    {"execl", (void *)hook_execl, (void *)execl},
    {"execlp", (void *)hook_execlp, (void *)execlp},
    {"execle", (void *)hook_execle, (void *)execle},
};
#pragma GCC diagnostic pop
const size_t cyt_hook_count = sizeof cyt_hook_table / sizeof cyt_hook_table[0];

/* ---- libunwind's descriptors -----------------------------------------------------------
 * libunwind (x86-64, 1.6) tells readable memory apart by writing a byte of it into a pipe
 * of its own and reading it back; it makes that pipe with pipe2 at the lowest free numbers,
 * and makes it again (closing the old numbers first) when a read fails. A program that
 * closes every descriptor and opens files then has libunwind read from its files, write
 * stack bytes into them and close them. So libunwind's pipe2 (its own GOT slot only) gets
 * numbers from the top of the descriptor range, out of the program's way. */
static int hook_unwinder_pipe2(int fds[2], int flags) {
    int made[2];
    if (pipe2(made, flags) != 0) return -1;
    for (int i = 0; i < 2; i++) {
        int high = cyt_high_fd(made[i], (flags & O_CLOEXEC) != 0);
        if (high >= 0) made[i] = high;
    }
    fds[0] = made[0];
    fds[1] = made[1];
    return 0;
}

const hook_entry cyt_unwinder_hook_table[] = {
    {"pipe2", (void *)hook_unwinder_pipe2, (void *)pipe2},
};
const size_t cyt_unwinder_hook_count = sizeof cyt_unwinder_hook_table / sizeof cyt_unwinder_hook_table[0];

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
