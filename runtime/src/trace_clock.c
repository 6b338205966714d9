/* trace_clock.c: the time stamps of events, in ns since the capture started.
 *
 * Two clocks, chosen at start from the time resolution asked for:
 *  - ticking (resolution >= CYT_TICKING_MIN_NS; the default is 1 ms): a clock thread
 *    stores the elapsed time, rounded down to whole ticks, into cyt_clock_now once a tick.
 *    An event's time is one relaxed load of that word: no rdtsc (about 11 ns in a VM) on
 *    the hot path, and a stream whose time field is almost always "unchanged", which
 *    compresses to nothing.
 *  - exact (finer resolutions): the TSC, when the kernel itself uses it as its clock
 *    source, else CLOCK_MONOTONIC; rounded down to a power of two of ns.
 *
 * Either way an allocation reads the clock after the allocator returned and a free before
 * the block is released. So when one thread frees a block and another thread is handed the
 * same address, the free's time is <= the allocation's time: for the exact clock because
 * the TSC is synchronised, for the ticking clock because both threads read one memory word
 * and the allocator's lock orders the two reads (coherence). The reader relies on this to
 * order the events of one address across threads (capture_merge.c).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "trace_internal.h"

int cyt_clock_ticking;
_Atomic uint64_t cyt_clock_now;
uint64_t cyt_time_mask;
uint64_t cyt_time_unit = 1;
unsigned cyt_time_shift;
uint64_t cyt_start_mono;
int cyt_tsc_ok;
uint64_t cyt_tsc0, cyt_tsc_mult;

static pthread_mutex_t tick_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tick_wake;
static int ticker_running, ticker_stopping;
static pthread_t ticker_thread; /* stored by pthread_create before the thread runs; 0: none */

uint64_t cyt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Once per process: is the TSC the kernel's clock source, and how many ns is a tick? */
static void calibrate_tsc(void) {
    static int done;
    if (done) return;
    done = 1;
    char source[32] = "";
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
    if (f != NULL) {
        if (fgets(source, sizeof source, f) == NULL) source[0] = 0;
        fclose(f);
    }
    if (strncmp(source, "tsc", 3) != 0 || getenv("CYTOOL_PROFILE_NO_TSC") != NULL) return;
    uint64_t ns0 = cyt_now(), t0 = __builtin_ia32_rdtsc(), ns1, t1;
    do {
        ns1 = cyt_now();
        t1 = __builtin_ia32_rdtsc();
    } while (ns1 - ns0 < 2000000); /* 2 ms */
    if (t1 <= t0) return;
    cyt_tsc_mult = (uint64_t)(((unsigned __int128)(ns1 - ns0) << 32) / (t1 - t0));
    cyt_tsc_ok = cyt_tsc_mult != 0;
}

static void *ticker_main(void *arg) {
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* no handler ever runs on this thread */
    cyt_guard = 1;
    pthread_mutex_lock(&tick_lock);
    while (!ticker_stopping) {
        uint64_t elapsed = cyt_now() - cyt_start_mono;
        uint64_t tick = elapsed - elapsed % cyt_time_unit;
        atomic_store_explicit(&cyt_clock_now, tick, memory_order_relaxed);
        uint64_t next = cyt_start_mono + tick + cyt_time_unit; /* no drift: aligned to the start */
        struct timespec deadline = {(time_t)(next / 1000000000u), (long)(next % 1000000000u)};
        pthread_cond_timedwait(&tick_wake, &tick_lock, &deadline);
    }
    pthread_mutex_unlock(&tick_lock);
    return NULL;
}

/* The exact clock, rounded down to a power of two of ns at most resolution_ns. */
static void use_exact_clock(uint64_t resolution_ns) {
    calibrate_tsc(); /* (2 ms of spinning, once per process: only the exact clock needs it) */
    uint64_t unit = 1;
    unsigned shift = 0;
    while (unit * 2 <= resolution_ns) unit *= 2, shift++;
    cyt_time_unit = unit;
    cyt_time_shift = shift;
    cyt_time_mask = unit - 1;
    cyt_clock_ticking = 0;
}

void cyt_clock_start(uint64_t resolution_ns) {
    cyt_start_mono = cyt_now();
    cyt_tsc0 = __builtin_ia32_rdtsc();
    atomic_store(&cyt_clock_now, 0);
    if (resolution_ns < CYT_TICKING_MIN_NS) {
        use_exact_clock(resolution_ns);
        return;
    }
    cyt_time_unit = resolution_ns > CYT_TICKING_MAX_NS ? CYT_TICKING_MAX_NS : resolution_ns;
    cyt_time_mask = 0;
    cyt_time_shift = 0;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&tick_wake, &attr);
    pthread_condattr_destroy(&attr);
    ticker_stopping = 0;
    if (pthread_create(&ticker_thread, NULL, ticker_main, NULL) != 0) {
        /* no thread to spare (RLIMIT_NPROC, say): time every event exactly instead; the
         * header says which clock was used */
        __atomic_store_n(&ticker_thread, 0, __ATOMIC_RELAXED);
        pthread_cond_destroy(&tick_wake);
        use_exact_clock(resolution_ns);
        return;
    }
    pthread_setname_np(ticker_thread, "cytool-clock");
    ticker_running = 1;
    cyt_clock_ticking = 1;
}

void cyt_clock_stop(void) {
    if (!ticker_running) return;
    pthread_mutex_lock(&tick_lock);
    ticker_stopping = 1;
    pthread_cond_signal(&tick_wake);
    pthread_mutex_unlock(&tick_lock);
    pthread_join(ticker_thread, NULL);
    __atomic_store_n(&ticker_thread, 0, __ATOMIC_RELAXED); /* its id may be reused by a new thread */
    pthread_cond_destroy(&tick_wake);
    ticker_running = 0;
    /* events recorded from now on (none: tracing is off) would read the exact clock */
    cyt_clock_ticking = 0;
}

int cyt_clock_is_self(void) {
    pthread_t t = __atomic_load_n(&ticker_thread, __ATOMIC_RELAXED);
    return t != 0 && pthread_equal(t, pthread_self());
}

void cyt_clock_after_fork_child(void) {
    /* the clock thread did not survive the fork; its lock may have been held */
    pthread_mutex_init(&tick_lock, NULL);
    __atomic_store_n(&ticker_thread, 0, __ATOMIC_RELAXED);
    ticker_running = 0;
    ticker_stopping = 0;
    cyt_clock_ticking = 0;
}
