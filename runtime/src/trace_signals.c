/* trace_signals.c: the capture finished, not cut, when a signal ends the process.
 *
 * SIGTERM, SIGHUP and SIGINT left at their default disposition end the process at once:
 * no atexit, so the capture would read as "killed or crashed" and lose its last ~10 ms
 * (a multiprocessing pool ends its workers with SIGTERM). While tracing, each of them that
 * has the default disposition gets a handler, which only notes the signal and wakes a
 * thread of ours (sem_post is async-signal-safe), then returns: the interrupted code may
 * hold a lock the stop needs (the allocator's own, inside a real free), so it must go on.
 * That thread runs the usual stop (or waits for the one under way: a process ending on its
 * own), puts the default disposition back and sends the signal again: the process ends as
 * it would have, by that signal, a few milliseconds later.
 * A program's own handler is never replaced (Python's SIGINT handler stays), one the
 * program installs later replaces ours, and the stop puts the default back where ours
 * still is.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "trace_internal.h"

static const int finishing_signals[] = {SIGTERM, SIGHUP, SIGINT};
#define NSIGNALS (sizeof finishing_signals / sizeof finishing_signals[0])

static int installed[NSIGNALS];  /* (control_lock) our handler is on that signal */
static sem_t finish_request;     /* posted by the handler */
static _Atomic int pending;      /* the signal to end by, once the capture is finished */
static _Atomic int quit;         /* the session ended: the finisher returns */
static pthread_t finisher_thread;
static pid_t finisher_pid;       /* the process whose finisher runs (0: none; threads do not survive fork) */

/* The signal's default action: the process ends as it would have without us. */
static void end_by(int sig) {
    struct sigaction plain;
    memset(&plain, 0, sizeof plain);
    plain.sa_handler = SIG_DFL;
    sigemptyset(&plain.sa_mask);
    sigaction(sig, &plain, NULL);
    kill(getpid(), sig); /* (to the process: a thread that has it unblocked takes it) */
}

static void *finisher(void *unused) {
    (void)unused;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* no handler ever runs on this thread */
    cyt_guard = 1;                          /* and nothing it does is traced */
    for (;;) {
        while (sem_wait(&finish_request) != 0 && errno == EINTR) {
        }
        if (atomic_load(&pending)) {
            cytrace_stop(); /* (-1 when another thread stopped it meanwhile: finished too) */
            end_by(atomic_load(&pending));
        } else if (atomic_load(&quit)) {
            return NULL;
        }
    }
}

static void on_signal(int sig) {
    int saved_errno = errno;
    if (finisher_pid == getpid() && (atomic_load(&cyt_active) || atomic_load(&cyt_stopping))) {
        /* (during a stop, at exit or an exec: the finisher's stop waits for it to end) */
        int none = 0;
        if (atomic_compare_exchange_strong(&pending, &none, sig)) sem_post(&finish_request);
        /* (a second signal while finishing: the first one ends the process) */
    } else {
        end_by(sig); /* not tracing (any more): as if we were not here */
    }
    errno = saved_errno;
}

void cyt_signals_start(void) {
    if (finisher_pid != getpid()) { /* none in this process (a forked child's is its parent's) */
        pthread_attr_t attr;
        atomic_store(&pending, 0);
        atomic_store(&quit, 0);
        if (sem_init(&finish_request, 0, 0) != 0 || pthread_attr_init(&attr) != 0) return;
        pthread_attr_setstacksize(&attr, 256 << 10);
        int created = pthread_create(&finisher_thread, &attr, finisher, NULL) == 0;
        pthread_attr_destroy(&attr);
        memset(installed, 0, sizeof installed); /* (a child's dispositions are its parent's: looked at again) */
        if (!created) return; /* then a signal ends the process as before: a cut capture */
        finisher_pid = getpid();
    }
    for (size_t i = 0; i < NSIGNALS; i++) {
        struct sigaction old;
        if (sigaction(finishing_signals[i], NULL, &old) != 0) continue;
        if (old.sa_handler == on_signal && !(old.sa_flags & SA_SIGINFO)) {
            installed[i] = 1; /* (inherited through fork) */
            continue;
        }
        if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) continue; /* the program's own */
        struct sigaction ours;
        memset(&ours, 0, sizeof ours);
        ours.sa_handler = on_signal;
        sigfillset(&ours.sa_mask);
        ours.sa_flags = SA_RESTART;
        installed[i] = sigaction(finishing_signals[i], &ours, NULL) == 0;
    }
}

void cyt_signals_end_finisher(void) {
    if (finisher_pid != getpid() || pthread_equal(pthread_self(), finisher_thread)) return;
    if (atomic_load(&pending)) return; /* finishing for a signal: the process is about to end by it */
    atomic_store(&quit, 1);
    sem_post(&finish_request);
    pthread_join(finisher_thread, NULL);
    finisher_pid = 0;
}

void cyt_signals_stop(void) {
    for (size_t i = 0; i < NSIGNALS; i++) {
        if (!installed[i]) continue;
        installed[i] = 0;
        struct sigaction current;
        if (sigaction(finishing_signals[i], NULL, &current) != 0) continue;
        if (current.sa_handler != on_signal || (current.sa_flags & SA_SIGINFO)) continue; /* the program's since */
        struct sigaction plain;
        memset(&plain, 0, sizeof plain);
        plain.sa_handler = SIG_DFL;
        sigemptyset(&plain.sa_mask);
        sigaction(finishing_signals[i], &plain, NULL);
    }
}
