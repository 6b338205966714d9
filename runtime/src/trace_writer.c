/* trace_writer.c: the capture file. Creates it under an exclusive lock, writes the
 * uncompressed header, then compresses each submitted chunk of records into one
 * independent zstd frame (with content checksum) and appends it. Chunks come from threads
 * whose buffers filled up; a background thread does the compression and the write(2)s so
 * the traced threads only queue a pointer. The queue has a byte limit: producers wait when
 * the disk cannot keep up (the writer never waits for a traced thread, so this cannot
 * deadlock).
 *
 * The writer also keeps time: every CYT_FLUSH_INTERVAL_NS (5 ms) it asks every thread to
 * flush at its next event what it holds since CYT_FLUSH_AGE_NS (5 ms) or more, a moment
 * later flushes such events of the threads that did not run, every other tick writes a
 * PROGRESS record (at least once a second: a sign of life), and every 20th tick checks that
 * our hooks are still in place (TAKEOVER records). So SIGKILL loses at most the last ~10 ms
 * of events, and a reader knows when the process was last alive.
 *
 * The program may close every descriptor (a daemon detaching, subprocess's child before its
 * exec) and open other files under the same numbers: before each write the descriptor is
 * checked to still be the capture's (device and inode), and the capture is opened again by
 * its absolute path when it is not. So the capture is never written into another file
 * (short of a close and an open racing between the check and the write) and not lost.
 *
 * A failed write (disk full, file size limit, I/O error) never stops the program: the
 * file is cut back to its last complete frame, stderr says what happened, the chunks that
 * cannot be written are dropped and counted, and writing is tried again (at most every
 * RETRY_NS); the first frame written after an outage is a LOSS record.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <zstd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "trace_internal.h"

typedef struct chunk {
    struct chunk *next;
    uint8_t *data;
    size_t len;
    uint64_t nevents;
} chunk;

#define QUEUE_LIMIT (64u << 20)     /* bytes queued before producers wait */
#define IDLE_GRACE_NS 1000000ull    /* after an epoch bump, busy threads flush themselves */
#define CHECK_EVERY_TICKS 20        /* takeover checks: every 100 ms */
#define PROGRESS_EVERY_TICKS 2      /* progress marks: every 10 ms */
#define RETRY_NS 50000000ull        /* after a failed write, try again at most this often */
#define ALIVE_NS 1000000000ull      /* an idle process still writes a PROGRESS mark this often */

static int out_fd = -1;
static char out_path[4096];    /* as given (messages) */
static char reopen_path[4096]; /* absolute: the program may change directory */
static dev_t out_dev;
static ino_t out_ino;
static char fd_lost[4352]; /* why the capture could not be opened again, or "" */
static char closed_path[4096]; /* the last capture closed (absolute), for cyt_writer_append_closed */
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_nonempty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t queue_space = PTHREAD_COND_INITIALIZER;
static chunk *queue_head, *queue_tail;
static size_t queue_bytes;
static int writer_closing, writer_running;
static pthread_t writer_thread; /* stored by pthread_create before the thread runs; 0: none */

static pthread_mutex_t io_lock = PTHREAD_MUTEX_INITIALIZER; /* the compressor, the fd, the outage */
static ZSTD_CCtx *cctx;
static uint8_t *zbuf;
static size_t zcap;
static uint64_t file_end; /* where the last complete frame ends */
static uint64_t header_end, last_frame_start, last_frame_events; /* the last frame written */
static _Atomic uint64_t frames_written, bytes_written;
CYT_TLS int cyt_is_writer;

/* The outage in progress, and what stderr was told (io_lock). */
static struct {
    int failing;
    uint64_t since_ns, retry_at; /* cyt_now() */
    uint64_t since_capture_ns;   /* the same, since the capture started */
    uint64_t events, frames;     /* lost in this outage */
    char reason[4352];
    uint64_t said_ns;            /* the last failure message (0: none yet) */
    int said_failing;            /* this outage's failure was told: its end will be too */
    uint64_t total_events;       /* lost in every outage of the session */
    uint64_t unsaid_events;      /* lost in outages no message told of yet */
    int closing;                 /* the last records are being written: the summary tells */
} outage;

#define SAY_EVERY_NS 1000000000ull /* stderr hears of a new outage at most once a second */

uint64_t cyt_writer_frames(void) { return atomic_load(&frames_written); }
uint64_t cyt_writer_bytes(void) { return atomic_load(&bytes_written); }

/* A line on stderr without stdio (its lock may be held by a thread waiting for us). */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    if ((size_t)n >= sizeof line) n = sizeof line - 1;
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
    (void)ignored;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int cyt_high_fd(int fd, int cloexec) {
    struct rlimit limit;
    long top = getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY ? (long)limit.rlim_cur : 1024;
    if (top > 65536) top = 65536;
    long floor = top - 64;
    if (floor < 256 || fd >= floor) return fd; /* (a small limit: the program's range is all there is) */
    int high = fcntl(fd, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, (int)floor);
    if (high < 0) return fd;
    close(fd);
    return high;
}

/* The kernel grows a process's descriptor table when a descriptor is put above its size,
 * and in a process of several threads it first waits for an RCU grace period: 8 ms in this
 * VM, paid by the first cyt_high_fd of a start made after the clock thread runs. Grown now,
 * while the process may still have one thread, the table stays grown (for good, and in
 * forked children). */
void cyt_grow_descriptor_table(void) {
    int fd = open("/", O_PATH | O_CLOEXEC);
    if (fd < 0) return;
    int high = cyt_high_fd(fd, 1);
    close(high);
}

/* Whether out_fd is still the capture's, opening the capture again if the program closed
 * it or reused its number (the old number is the program's then: left alone). 0 with
 * errno set (and fd_lost saying why) when the capture cannot be found again. Caller holds
 * io_lock. */
static int capture_fd_ok(void) {
    struct stat st;
    /* (device and inode, and opened write-only: not a descriptor the program opened on it) */
    if (out_fd >= 0 && fstat(out_fd, &st) == 0 && st.st_dev == out_dev && st.st_ino == out_ino &&
        (fcntl(out_fd, F_GETFL) & O_ACCMODE) == O_WRONLY)
        return 1;
    if (reopen_path[0] == '\0') return out_fd >= 0;
    out_fd = -1;
    int fd = open(reopen_path, O_WRONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_dev != out_dev || st.st_ino != out_ino || !S_ISREG(st.st_mode)) {
        snprintf(fd_lost, sizeof fd_lost, "the program closed the capture's file descriptor and %s %s", reopen_path,
                 fd < 0 ? "cannot be opened again" : "is another file now");
        if (fd >= 0) close(fd);
        errno = EBADF;
        return 0;
    }
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    fd = cyt_high_fd(fd, 1); /* (not the lowest free number: the program may be about to take it) */
    (void)flock(fd, LOCK_EX | LOCK_NB); /* (the program's close released it) */
    if (lseek(fd, (off_t)file_end, SEEK_SET) < 0) {
        close(fd);
        errno = EBADF;
        return 0;
    }
    out_fd = fd;
    fd_lost[0] = '\0';
    return 1;
}

/* Compress one chunk into one frame and append it; on failure cut the file back to its
 * last complete frame (errno kept). Caller holds io_lock. */
static int write_frame(const uint8_t *data, size_t len) {
    if (!capture_fd_ok() || cctx == NULL) {
        errno = EBADF;
        return -1;
    }
    /* One zstd frame with its content checksum and no content size (readers grow their
     * buffer as they decompress). Level -1 by default: as fast as LZ4 was on these chunks
     * and 14% smaller on small ones (bench/results/capture_encodings.md); --compression N
     * asks for level N. */
    size_t bound = ZSTD_compressBound(len);
    if (bound > zcap) {
        uint8_t *n = realloc(zbuf, bound);
        if (n == NULL) {
            errno = ENOMEM;
            return -1;
        }
        zbuf = n;
        zcap = bound;
    }
    ZSTD_CCtx_reset(cctx, ZSTD_reset_session_only);
    if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel,
                                            cyt_compression_level > 0 ? cyt_compression_level : -1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0)))
        goto compress_failed;
    size_t pos = ZSTD_compress2(cctx, zbuf, zcap, data, len);
    if (ZSTD_isError(pos)) goto compress_failed;
    int failed = write_all(out_fd, zbuf, pos) != 0;
    if (failed && errno == EBADF && capture_fd_ok()) { /* closed by the program while we wrote: again */
        failed = !(ftruncate(out_fd, (off_t)file_end) == 0 && lseek(out_fd, (off_t)file_end, SEEK_SET) >= 0 &&
                   write_all(out_fd, zbuf, pos) == 0);
        if (failed && errno == 0) errno = EIO;
    }
    if (failed) {
        int saved = errno;
        /* never leave a partial frame in the middle of the file */
        if (capture_fd_ok() && ftruncate(out_fd, (off_t)file_end) == 0) lseek(out_fd, (off_t)file_end, SEEK_SET);
        errno = saved;
        return -1;
    }
    file_end += pos;
    atomic_fetch_add(&bytes_written, (uint64_t)pos);
    atomic_fetch_add(&frames_written, 1);
    return 0;
compress_failed:
    errno = EINVAL;
    return -1;
}

/* Write one chunk, or count it lost (and say so) while the file cannot be written: 0 or
 * -1. During an outage only chunks holding events (or `force`: the last chunks, at stop)
 * are tried, at most every RETRY_NS, each behind the LOSS record in one frame: so a small
 * frame that happens to fit does not end the outage. Caller holds io_lock. */
static int write_chunk_locked(const uint8_t *data, size_t len, uint64_t nevents, int force) {
    uint64_t now = cyt_now();
    if (outage.failing) {
        if (!force && (now < outage.retry_at || nevents == 0)) goto lost;
        cyt_buf both = {0};
        cyt_buf_varint(&both, REC_LOSS);
        cyt_buf_varint(&both, outage.since_capture_ns);
        cyt_buf_varint(&both, cyt_since_start());
        cyt_buf_varint(&both, outage.events);
        cyt_buf_varint(&both, outage.frames);
        cyt_buf_string(&both, outage.reason, strlen(outage.reason));
        cyt_buf_bytes(&both, data, len);
        uint64_t start = file_end;
        int ok = both.data != NULL && write_frame(both.data, both.len) == 0;
        cyt_buf_free(&both);
        if (ok) {
            last_frame_start = start;
            last_frame_events = nevents;
        }
        if (!ok) {
            outage.retry_at = now + RETRY_NS;
            goto lost;
        }
        outage.failing = 0;
        if (outage.said_failing && !outage.closing) {
            say("cytool: writing the capture %s again: %llu events could not be written (%s)\n", out_path,
                (unsigned long long)outage.unsaid_events, outage.reason);
            outage.said_failing = 0;
            outage.unsaid_events = 0;
        }
        return 0;
    }
    uint64_t start = file_end;
    if (write_frame(data, len) == 0) {
        last_frame_start = start;
        last_frame_events = nevents;
        return 0;
    }
    int error = errno;
    outage.failing = 1;
    outage.since_ns = now;
    outage.since_capture_ns = cyt_since_start();
    outage.events = outage.frames = 0;
    snprintf(outage.reason, sizeof outage.reason, "%s", fd_lost[0] ? fd_lost : strerror(error));
    if (outage.said_ns == 0 || now - outage.said_ns >= SAY_EVERY_NS) { /* (flapping: once a second) */
        say("cytool: cannot write the capture %s: %s; events are lost until it can be written again "
            "(the program goes on)\n", out_path, outage.reason);
        outage.said_ns = now;
        outage.said_failing = 1;
    }
    outage.retry_at = now + RETRY_NS;
lost:
    outage.events += nevents;
    outage.frames++;
    outage.total_events += nevents;
    outage.unsaid_events += nevents;
    cyt_count_lost(nevents);
    return -1;
}

/* The writer thread blocks every signal; another thread writing blocks SIGXFSZ for the
 * while: a write past RLIMIT_FSIZE then fails with EFBIG instead of killing a program that
 * did not ask for that signal. */
static int write_chunk(const uint8_t *data, size_t len, uint64_t nevents, int force) {
    sigset_t block, saved;
    if (!cyt_is_writer) {
        sigemptyset(&block);
        sigaddset(&block, SIGXFSZ);
        pthread_sigmask(SIG_BLOCK, &block, &saved);
    }
    pthread_mutex_lock(&io_lock);
    int r = write_chunk_locked(data, len, nevents, force);
    pthread_mutex_unlock(&io_lock);
    if (!cyt_is_writer) pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return r;
}

int cyt_writer_write_now(const uint8_t *data, size_t len) { return write_chunk(data, len, 0, 1); }

/* ---- the writer thread --------------------------------------------------------------- */

static void tick_checks(void) {
    cyt_buf out = {0};
    cyt_patch_check(&out, 0);
    cyt_pymem_check(&out);
    if (out.len > 0) write_chunk(out.data, out.len, 0, 0);
    cyt_buf_free(&out);
}

static void *writer_main(void *arg) {
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* no handler runs here; SIGXFSZ stays pending */
    cyt_guard = 1; /* nothing this thread allocates is traced */
    cyt_is_writer = 1;
    uint64_t next_tick = cyt_now() + CYT_FLUSH_INTERVAL_NS, next_claim = UINT64_MAX, last_mark = cyt_now();
    unsigned ticks = 0;
    pthread_mutex_lock(&queue_lock);
    for (;;) {
        while (queue_head == NULL && !writer_closing) {
            uint64_t now = cyt_now(), deadline = next_tick < next_claim ? next_tick : next_claim;
            if (now >= deadline) break;
            struct timespec until = {(time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u)};
            pthread_cond_timedwait(&queue_nonempty, &queue_lock, &until);
        }
        uint64_t now = cyt_now();
        if (now >= next_tick && !writer_closing) {
            /* every thread flushes at its next event; the idle ones, a moment later */
            atomic_fetch_add(&cyt_flush_epoch, 1);
            next_tick = now + CYT_FLUSH_INTERVAL_NS;
            next_claim = now + IDLE_GRACE_NS;
            if (++ticks % CHECK_EVERY_TICKS == 0) {
                pthread_mutex_unlock(&queue_lock);
                tick_checks();
                pthread_mutex_lock(&queue_lock);
            }
        } else if (now >= next_claim && !writer_closing) {
            next_claim = UINT64_MAX;
            int queued = queue_head != NULL;
            pthread_mutex_unlock(&queue_lock);
            cyt_buf progress = {0};
            /* (its idle flushes go to the queue) */
            cyt_threads_tick(ticks % PROGRESS_EVERY_TICKS == 0 ? &progress : NULL, queued);
            if (progress.len == 0 && now - last_mark >= ALIVE_NS) { /* a sign of life: time only */
                cyt_buf_varint(&progress, REC_PROGRESS);
                cyt_buf_varint(&progress, cyt_since_start());
                cyt_buf_varint(&progress, 0);
            }
            if (progress.len > 0) {
                write_chunk(progress.data, progress.len, 0, 0);
                last_mark = now;
            }
            cyt_buf_free(&progress);
            pthread_mutex_lock(&queue_lock);
        }
        chunk *list = queue_head;
        queue_head = queue_tail = NULL;
        if (list == NULL && writer_closing) break;
        int closing = writer_closing;
        pthread_mutex_unlock(&queue_lock);
        while (list != NULL) {
            chunk *next = list->next;
            write_chunk(list->data, list->len, list->nevents, closing);
            pthread_mutex_lock(&queue_lock);
            queue_bytes -= list->len;
            pthread_cond_broadcast(&queue_space);
            pthread_mutex_unlock(&queue_lock);
            free(list->data);
            free(list);
            list = next;
        }
        pthread_mutex_lock(&queue_lock);
    }
    pthread_mutex_unlock(&queue_lock);
    return NULL;
}

void cyt_writer_submit(uint8_t *data, size_t len, uint64_t nevents) {
    int saved = cyt_guard;
    cyt_guard = 1;
    chunk *c = malloc(sizeof *c);
    if (c == NULL) {
        free(data);
        cyt_count_lost(nevents);
        cyt_guard = saved;
        return;
    }
    c->next = NULL;
    c->data = data;
    c->len = len;
    c->nevents = nevents;
    pthread_mutex_lock(&queue_lock);
    if (!writer_running) { /* no writer (stopping, a child that does not follow): write here */
        pthread_mutex_unlock(&queue_lock);
        write_chunk(data, len, nevents, 1);
        free(data);
        free(c);
        cyt_guard = saved;
        return;
    }
    /* (the writer's own idle flushes are queued too, never waited for: it writes them right
     * after, without keeping the threads it flushed waiting meanwhile) */
    while (queue_bytes > QUEUE_LIMIT && writer_running && !writer_closing && !cyt_is_writer)
        pthread_cond_wait(&queue_space, &queue_lock);
    queue_bytes += len;
    if (queue_tail) queue_tail->next = c;
    else queue_head = c;
    queue_tail = c;
    pthread_cond_signal(&queue_nonempty);
    pthread_mutex_unlock(&queue_lock);
    cyt_guard = saved;
}

/* ---- the header ------------------------------------------------------------------- */

static int read_file(const char *path, cyt_buf *out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    for (;;) {
        if (cyt_buf_reserve(out, 4096) != 0) break;
        ssize_t n = read(fd, out->data + out->len, out->cap - out->len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        out->len += (size_t)n;
    }
    close(fd);
    return 0;
}

static int build_header(cyt_buf *h, unsigned flags, pid_t parent_pid) {
    cyt_buf body = {0};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cyt_buf_varint(&body, (uint64_t)getpid());
    cyt_buf_varint(&body, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
    cyt_buf_varint(&body, flags);

    const char *(*get_version)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "Py_GetVersion");
    const char *version = get_version ? get_version() : "";
    cyt_buf_string(&body, version, strlen(version));

    cyt_buf cmdline = {0};
    read_file("/proc/self/cmdline", &cmdline);
    uint64_t argc = 0;
    for (size_t i = 0; i < cmdline.len; i++) argc += cmdline.data[i] == 0;
    if (cmdline.len > 0 && cmdline.data[cmdline.len - 1] != 0) argc++;
    cyt_buf_varint(&body, argc);
    for (size_t i = 0; i < cmdline.len;) {
        size_t j = i;
        while (j < cmdline.len && cmdline.data[j] != 0) j++;
        cyt_buf_string(&body, (const char *)cmdline.data + i, j - i);
        i = j + 1;
    }
    cyt_buf_free(&cmdline);

    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe);
    cyt_buf_string(&body, exe, n > 0 ? (size_t)n : 0);
    cyt_buf_varint(&body, (uint64_t)parent_pid);
    cyt_buf_varint(&body, cyt_time_unit);
    cyt_buf_varint(&body, cyt_clock_ticking ? CLOCK_KIND_TICKING : CLOCK_KIND_EXACT);
    cyt_buf_varint(&body, (uint64_t)cyt_max_frames);
    if (body.data == NULL) return -1;

    uint8_t fixed[16];
    memcpy(fixed, "CYTRACE\0", 8);
    uint32_t version_le = CAPTURE_FORMAT_VERSION, len_le = (uint32_t)body.len; /* little-endian host (x86-64) */
    memcpy(fixed + 8, &version_le, 4);
    memcpy(fixed + 12, &len_le, 4);
    int r = cyt_buf_bytes(h, fixed, sizeof fixed) | cyt_buf_bytes(h, body.data, body.len);
    cyt_buf_free(&body);
    return r;
}

int cyt_writer_open(const char *path, unsigned header_flags, pid_t parent_pid) {
    /* Not O_TRUNC: the file may be another live tracer's capture. Lock it first, then
     * empty it; the lock goes with the process, however it ends. The fd, file_end and the
     * header are set under io_lock: a thread of the previous session still cutting back a
     * failed write must not truncate or seek this session's file. */
    pthread_mutex_lock(&io_lock);
    /* O_NONBLOCK: a FIFO (or a device) at the path must not block the caller, who may hold
     * the GIL; only a regular file is a capture. */
    out_fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0644);
    struct stat st;
    if (out_fd >= 0 && (fstat(out_fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        close(out_fd);
        out_fd = -1;
        errno = EINVAL;
        cyt_set_error("%s is not a regular file: a capture is written to a file", path);
        pthread_mutex_unlock(&io_lock);
        return -1;
    }
    if (out_fd < 0) {
        cyt_set_error("cannot create %s: %s", path, errno == ENXIO ? "it is a FIFO no process reads" : strerror(errno));
        pthread_mutex_unlock(&io_lock);
        return -1;
    }
    (void)fcntl(out_fd, F_SETFL, fcntl(out_fd, F_GETFL) & ~O_NONBLOCK);
    out_fd = cyt_high_fd(out_fd, 1); /* out of the way of a program that closes and reopens low numbers */
    if (flock(out_fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        close(out_fd);
        out_fd = -1;
        cyt_set_error("%s is being written by another process's tracer", path);
        pthread_mutex_unlock(&io_lock);
        errno = EAGAIN;
        return -1;
    } /* (a file system without locks: written unlocked) */
    snprintf(out_path, sizeof out_path, "%s", path);
    out_dev = st.st_dev;
    out_ino = st.st_ino;
    fd_lost[0] = '\0';
    char resolved[PATH_MAX];
    if (realpath(path, resolved) != NULL && strlen(resolved) < sizeof reopen_path)
        snprintf(reopen_path, sizeof reopen_path, "%s", resolved);
    else
        reopen_path[0] = '\0'; /* (not opened again if closed) */
    atomic_store(&frames_written, 0);
    atomic_store(&bytes_written, 0);
    memset(&outage, 0, sizeof outage);
    file_end = 0;
    if (cctx == NULL && (cctx = ZSTD_createCCtx()) == NULL) {
        cyt_set_error("cannot create a zstd compression context");
        goto fail;
    }
    cyt_buf header = {0};
    sigset_t block, saved;
    sigemptyset(&block);
    sigaddset(&block, SIGXFSZ);
    pthread_sigmask(SIG_BLOCK, &block, &saved);
    int written = ftruncate(out_fd, 0) == 0 && build_header(&header, header_flags, parent_pid) == 0 &&
                  write_all(out_fd, header.data, header.len) == 0;
    int error = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (!written) {
        cyt_buf_free(&header);
        cyt_set_error("cannot write the header of %s: %s", path, strerror(error));
        errno = error;
        goto fail;
    }
    file_end = header_end = last_frame_start = header.len;
    last_frame_events = 0;
    atomic_store(&bytes_written, header.len);
    cyt_buf_free(&header);
    queue_head = queue_tail = NULL;
    queue_bytes = 0;
    writer_closing = 0;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* the writer's deadlines are cyt_now() */
    pthread_cond_init(&queue_nonempty, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&writer_thread, NULL, writer_main, NULL) != 0) {
        __atomic_store_n(&writer_thread, 0, __ATOMIC_RELAXED);
        cyt_set_error("cannot start the writer thread");
        goto fail;
    }
    pthread_setname_np(writer_thread, "cytool-writer");
    writer_running = 1;
    pthread_mutex_unlock(&io_lock);
    return 0;
fail:
    close(out_fd);
    out_fd = -1;
    pthread_mutex_unlock(&io_lock);
    return -1;
}

/* Drain the queue, join the writer, then write the capture's last records (`final`:
 * STATS and END) here. If even they cannot be written (the file is at its size limit, the
 * disk full), the last frame of events is given up for them: an exact account of what is
 * missing is worth more than that frame's events (counted lost, like the others). */
void cyt_writer_close(const uint8_t *final, size_t len) {
    pthread_mutex_lock(&queue_lock);
    int running = writer_running;
    writer_closing = 1;
    pthread_cond_broadcast(&queue_nonempty);
    pthread_cond_broadcast(&queue_space);
    pthread_mutex_unlock(&queue_lock);
    if (running) pthread_join(writer_thread, NULL);
    __atomic_store_n(&writer_thread, 0, __ATOMIC_RELAXED); /* its id may be reused by a new thread */
    pthread_mutex_lock(&queue_lock);
    writer_running = 0;
    pthread_mutex_unlock(&queue_lock);
    sigset_t block, saved;
    sigemptyset(&block);
    sigaddset(&block, SIGXFSZ);
    pthread_sigmask(SIG_BLOCK, &block, &saved);
    pthread_mutex_lock(&io_lock);
    outage.closing = 1;
    if (final != NULL && write_chunk_locked(final, len, 0, 1) != 0 && last_frame_events > 0 &&
        last_frame_start >= header_end && capture_fd_ok() && ftruncate(out_fd, (off_t)last_frame_start) == 0) {
        lseek(out_fd, (off_t)last_frame_start, SEEK_SET);
        file_end = last_frame_start;
        outage.events += last_frame_events;
        outage.total_events += last_frame_events;
        outage.unsaid_events += last_frame_events;
        outage.frames++;
        cyt_count_lost(last_frame_events);
        last_frame_events = 0;
        write_chunk_locked(final, len, 0, 1);
    }
    if (outage.failing || outage.unsaid_events)
        say("cytool: the capture %s is incomplete: %llu events could not be written (%s)\n", out_path,
            (unsigned long long)outage.total_events, outage.reason);
    if (capture_fd_ok() && out_fd >= 0) {
        /* no fsync: the page cache keeps the capture after the process ends (even killed);
         * only a machine crash would lose it, and an fsync costs milliseconds a session
         * (the pytest plugin makes one per test) */
        close(out_fd); /* (releases the lock) */
    }
    out_fd = -1;
    snprintf(closed_path, sizeof closed_path, "%s", reopen_path);
    reopen_path[0] = '\0';
    pthread_mutex_unlock(&io_lock);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
}

int cyt_writer_append_closed(const uint8_t *data, size_t len) {
    sigset_t block, saved;
    sigemptyset(&block);
    sigaddset(&block, SIGXFSZ);
    pthread_sigmask(SIG_BLOCK, &block, &saved);
    pthread_mutex_lock(&io_lock);
    int ok = 0;
    if (out_fd < 0 && closed_path[0]) { /* write_frame opens it again as capture_fd_ok does after a close */
        snprintf(reopen_path, sizeof reopen_path, "%s", closed_path);
        ok = write_frame(data, len) == 0;
        if (out_fd >= 0) {
            fsync(out_fd);
            close(out_fd);
        }
        out_fd = -1;
        reopen_path[0] = '\0';
    }
    pthread_mutex_unlock(&io_lock);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return ok;
}

int cyt_writer_is_self(void) {
    pthread_t t = __atomic_load_n(&writer_thread, __ATOMIC_RELAXED);
    return t != 0 && pthread_equal(t, pthread_self());
}

void cyt_writer_abandon_after_fork(void) {
    /* The writer thread does not exist in the child; its queue holds the parent's events,
     * which the parent writes. Forget them (leaked: freeing half-updated lists is worse). */
    pthread_mutex_init(&queue_lock, NULL);
    pthread_cond_init(&queue_nonempty, NULL);
    pthread_cond_init(&queue_space, NULL);
    pthread_mutex_init(&io_lock, NULL);
    __atomic_store_n(&writer_thread, 0, __ATOMIC_RELAXED);
    queue_head = queue_tail = NULL;
    queue_bytes = 0;
    writer_running = 0;
    writer_closing = 0;
    struct stat st; /* (the parent's lock stays with the parent's descriptor; a number the
                     * program reused is the program's) */
    if (out_fd >= 0 && fstat(out_fd, &st) == 0 && st.st_dev == out_dev && st.st_ino == out_ino) close(out_fd);
    out_fd = -1;
    reopen_path[0] = '\0';
    cctx = NULL; /* may have been in use by the parent's writer: make a new one */
    zbuf = NULL;
    zcap = 0;
}
