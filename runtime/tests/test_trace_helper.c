/* test_trace_helper.c: a program that performs known allocations under libcytrace, for
 * tests/test_tracer_*.py and `make sanitize`. Usage:
 *
 *   test_trace_helper CAPTURE MODE [ARGS...]     (CAPTURE "-" = started by CYTOOL_PROFILE)
 *
 *   threads N S T      T threads each malloc N blocks of S bytes, then free them
 *   churn N T          T threads start, allocate N blocks of 777 bytes, end; repeated 5 times
 *   edge               zero-size, huge, realloc(NULL, n), realloc(p, 0), every allocator
 *   fork FOLLOW        parent mallocs 3x 1111 bytes, child mallocs 5x 2222 bytes and, 5 ms
 *                      later, 1x 3333 bytes
 *   signal N           N mallocs of 333 bytes while a 50 us timer's handler mmaps/munmaps
 *   exit N / _exit N   N mallocs of 444 bytes, then exit(0) or _exit(0) without stopping
 *   dlopen LIB N       dlopen LIB, call its lib_alloc(N, 555), dlclose it
 *   forever            allocate and free until killed (prints "ready" once frames exist)
 *   trickle            one malloc of 4242 bytes every 100 ms until killed, printing "tick I"
 *   idle               a thread mallocs 10x 4343 bytes and blocks; main prints "allocated"
 *                      and sleeps, allocating nothing, until killed
 *   bursts T SECONDS   T threads allocate bursts of 5151-byte blocks between pauses of up to
 *                      2.5 s (so the writer flushes them while idle), prints "total N"
 *   restart R T        T threads ("ring 1" ..) allocate (and start short-lived threads)
 *                      while the main thread starts and stops tracing R times, into
 *                      CAPTURE.0 .. CAPTURE.R-1; a round lasts 20 ms and until every thread
 *                      has done 100 operations with tracing on (10 s at most)
 *   handoff N          a producer thread mallocs N blocks of 1717 bytes and hands each to a
 *                      consumer thread that frees it (through a small locked ring)
 *   forkstorm F T      T threads start short-lived allocating threads without pause while the
 *                      main thread forks F times, following each child, which allocates and
 *                      exits; every stack comes from libunwind (CYTRACE_NATIVE_UNWIND); a child
 *                      stuck for 5 s is killed and ends the storm ("forks N",
 *                      "failed_children N", "stuck_children N")
 *   deep D MAX UNWIND  deep_recurse() calls itself D levels deep and mallocs 6161 bytes at the
 *                      bottom, with at most MAX frames kept per stack (UNWIND 1: libunwind)
 *   names              threads named natively: "native-early" before it allocates, "renamed"
 *                      after its first flush, and one never named (prints "tid_<name> TID")
 *   takeover HOW       mallocs 100x 7001 bytes, then overwrites its own GOT slot of malloc
 *                      (as another tracer would), mallocs 100x 7002, gives the slot back (HOW
 *                      "hook": what it held, "real": libc's malloc, as memray does), mallocs
 *                      100x 7003; 300 ms between the steps (the tracer checks every 100 ms)
 *   steady             a thread mallocs a block of 100000 + i bytes every 1 ms (i = 0, 1, 2 ...)
 *                      until killed, printing "made I" every 20 blocks
 *
 * CYTOOL_PROFILE_TIME_RESOLUTION=NS in the environment sets the time resolution of the
 * started capture (as for the environment start).
 * It prints "KEY VALUE" lines the tests compare with the capture.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cytrace.h"

static const char *capture;
static void *volatile sink;

/* Make a block escape, so the compiler cannot delete a malloc/free pair. */
static void *keep(void *p) {
    sink = p;
    return p;
}

static void start(unsigned options) {
    if (strcmp(capture, "-") == 0) return;
    const char *resolution = getenv("CYTOOL_PROFILE_TIME_RESOLUTION");
    if (resolution != NULL && resolution[0] != 0) cytrace_set_time_resolution(strtoull(resolution, NULL, 10));
    if (cytrace_start(capture, options) != 0) {
        fprintf(stderr, "cytrace_start: %s\n", cytrace_last_error());
        exit(3);
    }
}

static void stop(void) {
    if (cytrace_stop() != 0) {
        fprintf(stderr, "cytrace_stop: not tracing\n");
        exit(4);
    }
    struct cytrace_stats s;
    cytrace_get_stats(&s);
    printf("stats_events %llu\nstats_dropped %llu\n", (unsigned long long)s.events, (unsigned long long)s.dropped);
}

/* Kept out of line so the stack's innermost frame is this function. */
__attribute__((noinline)) void **worker_allocate(size_t n, size_t size) {
    void **blocks = calloc(n, sizeof *blocks);
    for (size_t i = 0; i < n; i++) {
        blocks[i] = keep(malloc(size));
        memset(blocks[i], 1, size < 16 ? size : 16);
    }
    return blocks;
}

__attribute__((noinline)) void worker_release(void **blocks, size_t n) {
    for (size_t i = 0; i < n; i++) free(blocks[i]);
    free(blocks);
}

typedef struct job {
    size_t n, size;
} job;

static void *worker(void *arg) {
    job *j = arg;
    void **blocks = worker_allocate(j->n, j->size);
    worker_release(blocks, j->n);
    return NULL;
}

static void run_threads(size_t n, size_t size, int nthreads) {
    pthread_t *threads = calloc((size_t)nthreads, sizeof *threads);
    job j = {n, size};
    for (int t = 0; t < nthreads; t++) pthread_create(&threads[t], NULL, worker, &j);
    for (int t = 0; t < nthreads; t++) pthread_join(threads[t], NULL);
    free(threads);
}

__attribute__((noinline)) static void mode_edge(void) {
    void *zero = malloc(0);
    printf("zero %p\n", zero);
    void *huge = malloc(SIZE_MAX / 2);
    printf("huge %p\n", huge);
    volatile size_t huge_count = SIZE_MAX / 4;
    void *hugec = calloc(huge_count, 4);
    printf("hugec %p\n", hugec);
    void *volatile null_pointer = NULL;
    void *r = realloc(null_pointer, 1234);
    printf("realloc_null %p\n", r);
    void *r2 = realloc(r, 100000);
    printf("realloc_grow %p\n", r2);
    void *r3 = realloc(r2, 0);
    printf("realloc_zero %p\n", r3);
    void *c = calloc(10, 123);
    printf("calloc %p\n", c);
    void *pm = NULL;
    posix_memalign(&pm, 64, 1000);
    printf("posix_memalign %p\n", pm);
    void *aa = aligned_alloc(128, 1024);
    printf("aligned_alloc %p\n", aa);
    void *ma = memalign(256, 2000);
    printf("memalign %p\n", ma);
    void *va = valloc(3000);
    printf("valloc %p\n", va);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    void *pva = pvalloc(5000);
#pragma GCC diagnostic pop
    printf("pvalloc %p\n", pva);
    void *ra = reallocarray(null_pointer, 7, 11);
    printf("reallocarray %p\n", ra);
    void *m = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap %p\n", m);
    void *m2 = mremap(m, 65536, 131072, MREMAP_MAYMOVE);
    printf("mremap %p\n", m2);
    munmap(m2, 131072);
    free(NULL);
    free(zero);
    free(c);
    free(pm);
    free(aa);
    free(ma);
    free(va);
    free(pva);
    free(ra);
}

/* Until every other thread of the process is asleep (state S in /proc: blocked in a wait),
 * at most 2 s. */
static void wait_until_other_threads_sleep(void) {
    char self[32];
    snprintf(self, sizeof self, "%d", (int)gettid());
    for (int tries = 0; tries < 2000; tries++) {
        int awake = 0;
        DIR *tasks = opendir("/proc/self/task");
        if (tasks == NULL) return;
        struct dirent *d;
        while ((d = readdir(tasks)) != NULL) {
            if (d->d_name[0] == '.' || strcmp(d->d_name, self) == 0) continue;
            char path[300], line[512] = "";
            snprintf(path, sizeof path, "/proc/self/task/%s/stat", d->d_name);
            FILE *f = fopen(path, "re");
            if (f == NULL) continue;
            if (fgets(line, sizeof line, f) == NULL) line[0] = 0;
            fclose(f);
            const char *end = strrchr(line, ')'); /* the name may hold spaces and parentheses */
            if (end != NULL && end[1] == ' ' && end[2] != 'S') awake++;
        }
        closedir(tasks);
        if (awake == 0) return;
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
}

__attribute__((noinline)) static void mode_fork(int follow) {
    start(follow ? CYTRACE_FOLLOW_FORK : 0);
    void *kept[3];
    for (int i = 0; i < 3; i++) kept[i] = keep(malloc(1111));
    fflush(stdout);
    /* Let the tracer's threads finish starting first: under ASan (GCC 12's has no fork
     * interceptor) a fork while another thread is inside its allocator leaves the child's
     * allocator locked. The tracer itself does not need this (forkstorm tests that). */
    wait_until_other_threads_sleep();
    pid_t pid = fork();
    if (pid == 0) {
        void *child[5];
        for (int i = 0; i < 5; i++) child[i] = keep(malloc(2222));
        for (int i = 0; i < 5; i++) free(child[i]);
        struct timespec pause = {0, 5000000}; /* then 5 ms later, one more: the child's clock ticks */
        nanosleep(&pause, NULL);
        free(keep(malloc(3333)));
        printf("child_pid %d\ntracing_in_child %d\n", (int)getpid(), cytrace_is_active());
        fflush(stdout);
        exit(0); /* atexit stops the child's own capture when following */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("child_status %d\n", status);
    for (int i = 0; i < 3; i++) free(kept[i]);
    stop();
}

static volatile sig_atomic_t handled;

static void on_timer(int sig) {
    (void)sig;
    void *m = mmap(NULL, 12288, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) munmap(m, 12288);
    handled++;
}

__attribute__((noinline)) static void mode_signal(size_t n) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_timer;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 50}, {0, 50}};
    start(0);
    setitimer(ITIMER_REAL, &it, NULL);
    for (size_t i = 0; i < n; i++) free(keep(malloc(333)));
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    stop();
    printf("handled %d\n", (int)handled);
}

static volatile int stress_running = 1;

static void *short_lived(void *arg) {
    (void)arg;
    pthread_setname_np(pthread_self(), "short lived"); /* not its parent's "ring N" */
    for (int i = 0; i < 100; i++) free(keep(malloc(48)));
    return NULL;
}

static _Atomic long stress_ops[64]; /* operations each stress thread has done */

static void *stress_thread(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg, me = seed - 1; /* seeds 1 .. T */
    char name[16];
    snprintf(name, sizeof name, "ring %u", seed);
    pthread_setname_np(pthread_self(), name);
    void *ring[64] = {0};
    long i = 0;
    while (stress_running) {
        int slot = (int)(rand_r(&seed) % 64);
        switch (rand_r(&seed) % 4) {
        case 0: free(ring[slot]); ring[slot] = keep(malloc(rand_r(&seed) % 5000)); break;
        case 1: ring[slot] = keep(realloc(ring[slot], rand_r(&seed) % 9000)); break;
        case 2: free(ring[slot]); ring[slot] = keep(calloc(3, rand_r(&seed) % 100)); break;
        default: free(ring[slot]); ring[slot] = NULL; break;
        }
        atomic_store_explicit(&stress_ops[me], ++i, memory_order_relaxed);
        if (i % 20000 == 0) {
            pthread_t t;
            if (pthread_create(&t, NULL, short_lived, NULL) == 0) pthread_join(t, NULL);
        }
    }
    for (int k = 0; k < 64; k++) free(ring[k]);
    return NULL;
}

static void mode_restart(int rounds, int nthreads) {
    pthread_t threads[64];
    if (nthreads > 64) nthreads = 64;
    for (int t = 0; t < nthreads; t++) pthread_create(&threads[t], NULL, stress_thread, (void *)(uintptr_t)(t + 1));
    char path[4096];
    for (int r = 0; r < rounds; r++) {
        snprintf(path, sizeof path, "%s.%d", capture, r);
        if (cytrace_start(path, 0) != 0) {
            fprintf(stderr, "cytrace_start: %s\n", cytrace_last_error());
            exit(3);
        }
        long before[64];
        for (int t = 0; t < nthreads; t++) before[t] = atomic_load(&stress_ops[t]);
        struct timespec pause = {0, 20000000}, tick = {0, 1000000};
        nanosleep(&pause, NULL);
        /* On a loaded machine a runnable thread can wait 100 ms and more for a CPU (seen:
         * rounds of 20 ms in which none of the six ran): wait until each has done 100
         * operations, almost all of them recorded, so every capture has every thread. */
        for (int waited = 0; waited < 10000; waited++) {
            int t = 0;
            while (t < nthreads && atomic_load(&stress_ops[t]) - before[t] >= 100) t++;
            if (t == nthreads) break;
            nanosleep(&tick, NULL);
        }
        if (cytrace_stop() != 0) exit(4);
    }
    stress_running = 0;
    for (int t = 0; t < nthreads; t++) pthread_join(threads[t], NULL);
    printf("rounds %d\n", rounds);
}

static _Atomic long bursts_total;
static volatile int bursts_running = 1;

static void *bursts_thread(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (bursts_running) {
        int n = 1 + (int)(rand_r(&seed) % 500);
        for (int i = 0; i < n; i++) free(keep(malloc(5151)));
        atomic_fetch_add(&bursts_total, n);
        struct timespec pause = {0, (long)(rand_r(&seed) % 2500) * 1000000L};
        while (pause.tv_nsec >= 1000000000L) {
            pause.tv_sec++;
            pause.tv_nsec -= 1000000000L;
        }
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static void mode_bursts(int nthreads, int seconds) {
    pthread_t threads[64];
    if (nthreads > 64) nthreads = 64;
    start(0);
    for (int t = 0; t < nthreads; t++) pthread_create(&threads[t], NULL, bursts_thread, (void *)(uintptr_t)(t + 7));
    sleep((unsigned)seconds);
    bursts_running = 0;
    for (int t = 0; t < nthreads; t++) pthread_join(threads[t], NULL);
    stop();
    printf("total %ld\n", (long)atomic_load(&bursts_total));
}

static void *idle_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 10; i++) keep(malloc(4343));
    printf("allocated\n");
    fflush(stdout);
    for (;;) pause();
    return NULL;
}

static void *forever_thread(void *arg) {
    (void)arg;
    for (;;) free(keep(malloc(99)));
    return NULL;
}

/* ---- handoff: blocks made in one thread and freed in another ---------------------- */

#define RING 64
static struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    void *slots[RING];
    size_t head, tail; /* head: next to take; tail: next to fill */
} handoff = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 0};

__attribute__((noinline)) static void *handoff_make(void) { return keep(malloc(1717)); }

static void *handoff_producer(void *arg) {
    size_t n = *(size_t *)arg;
    for (size_t i = 0; i < n; i++) {
        void *p = handoff_make();
        pthread_mutex_lock(&handoff.lock);
        while (handoff.tail - handoff.head == RING) pthread_cond_wait(&handoff.changed, &handoff.lock);
        handoff.slots[handoff.tail++ % RING] = p;
        pthread_cond_broadcast(&handoff.changed);
        pthread_mutex_unlock(&handoff.lock);
    }
    return NULL;
}

static void *handoff_consumer(void *arg) {
    size_t n = *(size_t *)arg;
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&handoff.lock);
        while (handoff.tail == handoff.head) pthread_cond_wait(&handoff.changed, &handoff.lock);
        void *p = handoff.slots[handoff.head++ % RING];
        pthread_cond_broadcast(&handoff.changed);
        pthread_mutex_unlock(&handoff.lock);
        free(p);
    }
    return NULL;
}

static void mode_handoff(size_t n) {
    start(0);
    pthread_t producer, consumer;
    pthread_create(&consumer, NULL, handoff_consumer, &n);
    pthread_create(&producer, NULL, handoff_producer, &n);
    pthread_join(producer, NULL);
    pthread_join(consumer, NULL);
    stop();
}

/* ---- forkstorm: forks while other threads are inside the tracer ------------------------ */

static volatile int storm_running = 1;

/* Allocate at the bottom of a call chain DEPTH deep through 256 call sites chosen at random:
 * more return addresses than libunwind's shared cache holds (128), so unwinds keep missing
 * it and spend their time in its locked slow path. The distinct instruction after each call
 * keeps the compiler from merging the call sites. */
#define STORM_CASE(n)                                                                              \
    case n:                                                                                        \
        storm_descend(seed, depth - 1);                                                            \
        __asm__ volatile("mov $" #n ", %%eax" ::: "eax");                                          \
        break;
#define STORM_CASES16(h)                                                                           \
    STORM_CASE(0x##h##0) STORM_CASE(0x##h##1) STORM_CASE(0x##h##2) STORM_CASE(0x##h##3)            \
    STORM_CASE(0x##h##4) STORM_CASE(0x##h##5) STORM_CASE(0x##h##6) STORM_CASE(0x##h##7)            \
    STORM_CASE(0x##h##8) STORM_CASE(0x##h##9) STORM_CASE(0x##h##a) STORM_CASE(0x##h##b)            \
    STORM_CASE(0x##h##c) STORM_CASE(0x##h##d) STORM_CASE(0x##h##e) STORM_CASE(0x##h##f)

__attribute__((noinline)) static void storm_descend(unsigned *seed, int depth) {
    if (depth == 0) {
        free(keep(malloc(16 + rand_r(seed) % 4000)));
        return;
    }
    switch (rand_r(seed) % 256) {
        STORM_CASES16(0) STORM_CASES16(1) STORM_CASES16(2) STORM_CASES16(3)
        STORM_CASES16(4) STORM_CASES16(5) STORM_CASES16(6) STORM_CASES16(7)
        STORM_CASES16(8) STORM_CASES16(9) STORM_CASES16(a) STORM_CASES16(b)
        STORM_CASES16(c) STORM_CASES16(d) STORM_CASES16(e) STORM_CASES16(f)
    }
}

static void *storm_burst(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < 20; i++) storm_descend(&seed, 24);
    return NULL;
}

/* Short-lived threads: libunwind's first unwinds in a thread take its internal locks. */
static void *storm_thread(void *arg) {
    uintptr_t seed = (uintptr_t)arg;
    /* lowest priority, on the main thread's CPU: whenever the main thread wakes up to fork,
     * it preempts a storm thread wherever it is, inside libunwind included */
    struct sched_param idle = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
    while (storm_running) {
        pthread_t t;
        if (pthread_create(&t, NULL, storm_burst, (void *)seed++) == 0) pthread_join(t, NULL);
    }
    return NULL;
}

/* Wait up to 5 s for the child: 0 if it exited 0, 1 if it failed, 2 if it was stuck (and
 * is killed). */
static int reap_or_kill(pid_t pid) {
    for (int waited_ms = 0; waited_ms < 5000; waited_ms++) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return 2;
}

__attribute__((noinline)) static void mode_forkstorm(int forks, int nthreads) {
    pthread_t threads[64];
    if (nthreads > 64) nthreads = 64;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu() < 0 ? 0 : sched_getcpu(), &one);
    sched_setaffinity(0, sizeof one, &one); /* the threads started below inherit it */
    start(CYTRACE_FOLLOW_FORK | CYTRACE_NATIVE_UNWIND); /* every stack from libunwind */
    for (int t = 0; t < nthreads; t++) pthread_create(&threads[t], NULL, storm_thread, (void *)(uintptr_t)(t + 3));
    int outcomes[3] = {0, 0, 0};
    for (int f = 0; f < forks; f++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int i = 0; i < 100; i++) free(keep(malloc(6161)));
            _exit(0); /* the _exit hook finishes the child's capture */
        }
        if (pid > 0) outcomes[reap_or_kill(pid)]++;
        if (outcomes[2] > 0) break; /* one hang is enough to know */
    }
    storm_running = 0;
    for (int t = 0; t < nthreads; t++) pthread_join(threads[t], NULL);
    stop();
    printf("forks %d\nfailed_children %d\nstuck_children %d\n", outcomes[0] + outcomes[1] + outcomes[2], outcomes[1], outcomes[2]);
}

/* ---- deep: a native stack deeper than the frame limit -------------------------------- */

__attribute__((noinline)) void deep_recurse(int depth) {
    if (depth <= 1) {
        free(keep(malloc(6161)));
        return;
    }
    deep_recurse(depth - 1);
    __asm__ volatile("" ::: "memory"); /* not a tail call: every level keeps its frame */
}

/* ---- names: native thread names ------------------------------------------------------ */

static void *named_early(void *arg) {
    (void)arg;
    prctl(PR_SET_NAME, "native-early", 0, 0, 0);
    printf("tid_native-early %d\n", (int)gettid());
    for (int i = 0; i < 10; i++) free(keep(malloc(3131)));
    return NULL;
}

static void *named_late(void *arg) {
    (void)arg;
    printf("tid_renamed %d\n", (int)gettid());
    for (int i = 0; i < 10; i++) free(keep(malloc(3232)));
    struct timespec pause = {0, 50000000};
    nanosleep(&pause, NULL); /* the writer flushes this idle thread, under its first name */
    prctl(PR_SET_NAME, "renamed", 0, 0, 0);
    for (int i = 0; i < 10; i++) free(keep(malloc(3232)));
    return NULL;
}

static void *unnamed(void *arg) {
    (void)arg;
    printf("tid_unnamed %d\n", (int)gettid());
    for (int i = 0; i < 10; i++) free(keep(malloc(3333)));
    return NULL;
}

static void mode_names(void) {
    prctl(PR_SET_NAME, "helper-main", 0, 0, 0);
    start(0);
    pthread_t t[3];
    pthread_create(&t[0], NULL, named_early, NULL);
    pthread_create(&t[1], NULL, named_late, NULL);
    pthread_create(&t[2], NULL, unnamed, NULL);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    stop();
}

/* ---- takeover: another "tracer" rewrites our GOT slot of malloc ----------------------- */

/* The address of this program's GOT/PLT slot for `name` (its JUMP_SLOT relocation). */
static uintptr_t *own_got_slot(const char *name) {
    struct link_map *main_map = dlopen(NULL, RTLD_NOW);
    if (main_map == NULL) return NULL;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const ElfW(Rela) *jmprel = NULL;
    size_t pltrelsz = 0;
    for (const ElfW(Dyn) *d = main_map->l_ld; d->d_tag != DT_NULL; d++) {
        uintptr_t ptr = d->d_un.d_ptr < main_map->l_addr ? main_map->l_addr + d->d_un.d_ptr : d->d_un.d_ptr;
        if (d->d_tag == DT_SYMTAB) symtab = (const ElfW(Sym) *)ptr;
        if (d->d_tag == DT_STRTAB) strtab = (const char *)ptr;
        if (d->d_tag == DT_JMPREL) jmprel = (const ElfW(Rela) *)ptr;
        if (d->d_tag == DT_PLTRELSZ) pltrelsz = d->d_un.d_val;
    }
    for (size_t i = 0; jmprel && symtab && strtab && i < pltrelsz / sizeof *jmprel; i++)
        if (strcmp(strtab + symtab[ELF64_R_SYM(jmprel[i].r_info)].st_name, name) == 0)
            return (uintptr_t *)(main_map->l_addr + jmprel[i].r_offset);
    return NULL;
}

static void *(*real_malloc)(size_t); /* what the slot would lead to without any tracer */
static void *other_tracer_malloc(size_t size) { return real_malloc(size); }

static void write_slot(uintptr_t *slot, uintptr_t value) {
    uintptr_t page = (uintptr_t)slot & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1);
    mprotect((void *)page, (size_t)sysconf(_SC_PAGESIZE), PROT_READ | PROT_WRITE);
    *slot = value;
}

static void mode_takeover(const char *how) {
    struct timespec pause = {0, 300000000};
    start(0);
    for (int i = 0; i < 100; i++) free(keep(malloc(7001)));
    uintptr_t *slot = own_got_slot("malloc");
    if (slot == NULL) {
        fprintf(stderr, "no GOT slot for malloc\n");
        exit(6);
    }
    uintptr_t ours = *slot;
    real_malloc = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "malloc");
    write_slot(slot, (uintptr_t)other_tracer_malloc);
    nanosleep(&pause, NULL);
    for (int i = 0; i < 100; i++) free(keep(malloc(7002)));
    write_slot(slot, strcmp(how, "real") == 0 ? (uintptr_t)real_malloc : ours);
    nanosleep(&pause, NULL);
    for (int i = 0; i < 100; i++) free(keep(malloc(7003)));
    stop();
}

/* ---- steady: allocations at a known pace, until killed --------------------------------- */

static void *steady_thread(void *arg) {
    (void)arg;
    struct timespec pause = {0, 1000000};
    for (long i = 0;; i++) {
        keep(malloc(100000 + (size_t)i));
        if (i % 20 == 0) {
            printf("made %ld\n", i);
            fflush(stdout);
        }
        nanosleep(&pause, NULL);
    }
    return NULL;
}

/* ---- exec: allocations, then an exec by one of the exec functions ---------------------- */

static int mode_exec(const char *how, const char *target) {
    start(0);
    for (int i = 0; i < 9; i++) keep(malloc(6161)); /* still in the buffer at the exec */
    char *const args[] = {(char *)target, NULL};
    char *const env[] = {"CYTOOL_EXEC_TEST=1", NULL};
    if (strcmp(how, "execl") == 0) execl(target, target, (char *)NULL);
    else if (strcmp(how, "execlp") == 0) execlp(target, target, (char *)NULL);
    else if (strcmp(how, "execle") == 0) execle(target, target, (char *)NULL, env);
    else if (strcmp(how, "execvpe") == 0) execvpe(target, args, env);
    else if (strcmp(how, "execve") == 0) execve(target, args, env);
    fprintf(stderr, "exec %s %s: %s\n", how, target, strerror(errno));
    return 7;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s CAPTURE MODE [ARGS]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    capture = argv[1];
    const char *mode = argv[2];
    if (strcmp(mode, "threads") == 0 && argc == 6) {
        start(0);
        run_threads(strtoul(argv[3], NULL, 10), strtoul(argv[4], NULL, 10), atoi(argv[5]));
        stop();
    } else if (strcmp(mode, "churn") == 0 && argc == 5) {
        start(0);
        for (int round = 0; round < 5; round++) run_threads(strtoul(argv[3], NULL, 10), 777, atoi(argv[4]));
        stop();
    } else if (strcmp(mode, "edge") == 0) {
        start(0);
        mode_edge();
        stop();
    } else if (strcmp(mode, "fork") == 0 && argc == 4) {
        mode_fork(atoi(argv[3]));
    } else if (strcmp(mode, "signal") == 0 && argc == 4) {
        mode_signal(strtoul(argv[3], NULL, 10));
    } else if ((strcmp(mode, "exit") == 0 || strcmp(mode, "_exit") == 0) && argc == 4) {
        start(0);
        size_t n = strtoul(argv[3], NULL, 10);
        for (size_t i = 0; i < n; i++) free(keep(malloc(444)));
        printf("done %zu\n", n);
        fflush(stdout);
        if (mode[0] == '_') _exit(0);
        exit(0);
    } else if (strcmp(mode, "exec") == 0 && argc == 5) {
        return mode_exec(argv[3], argv[4]);
    } else if (strcmp(mode, "dlopen") == 0 && argc == 5) {
        start(0);
        void *lib = dlopen(argv[3], RTLD_NOW);
        if (lib == NULL) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            return 5;
        }
        void (*lib_alloc)(size_t, size_t) = (void (*)(size_t, size_t))dlsym(lib, "lib_alloc");
        lib_alloc(strtoul(argv[4], NULL, 10), 555);
        dlclose(lib);
        free(keep(malloc(556))); /* after dlclose: still traced, no crash */
        stop();
    } else if (strcmp(mode, "deep") == 0 && argc == 6) {
        cytrace_set_max_frames(atoi(argv[4]));
        start(atoi(argv[5]) ? CYTRACE_NATIVE_UNWIND : 0);
        deep_recurse(atoi(argv[3]));
        stop();
    } else if (strcmp(mode, "names") == 0) {
        mode_names();
    } else if (strcmp(mode, "takeover") == 0 && argc == 4) {
        mode_takeover(argv[3]);
    } else if (strcmp(mode, "steady") == 0) {
        start(0);
        pthread_t t;
        pthread_create(&t, NULL, steady_thread, NULL);
        for (;;) pause();
    } else if (strcmp(mode, "forkstorm") == 0 && argc == 5) {
        mode_forkstorm(atoi(argv[3]), atoi(argv[4]));
    } else if (strcmp(mode, "handoff") == 0 && argc == 4) {
        mode_handoff(strtoul(argv[3], NULL, 10));
    } else if (strcmp(mode, "restart") == 0 && argc == 5) {
        mode_restart(atoi(argv[3]), atoi(argv[4]));
    } else if (strcmp(mode, "bursts") == 0 && argc == 5) {
        mode_bursts(atoi(argv[3]), atoi(argv[4]));
    } else if (strcmp(mode, "idle") == 0) {
        start(0);
        pthread_t t;
        pthread_create(&t, NULL, idle_thread, NULL);
        for (;;) pause();
    } else if (strcmp(mode, "trickle") == 0) {
        start(0);
        struct timespec pause = {0, 100000000};
        for (long i = 1;; i++) {
            keep(malloc(4242));
            printf("tick %ld\n", i);
            fflush(stdout);
            nanosleep(&pause, NULL);
        }
    } else if (strcmp(mode, "forever") == 0) {
        start(0);
        pthread_t t;
        pthread_create(&t, NULL, forever_thread, NULL);
        struct cytrace_stats s;
        for (;;) {
            free(keep(malloc(98)));
            cytrace_get_stats(&s);
            if (s.frames_flushed >= 3) {
                printf("ready\n");
                fflush(stdout);
                break;
            }
        }
        for (;;) free(keep(malloc(98)));
    } else {
        fprintf(stderr, "unknown mode or wrong arguments: %s\n", mode);
        return 2;
    }
    return 0;
}
