/* trace_writer.c: the capture file. Writes the uncompressed header, then compresses each
 * submitted chunk of records into one independent LZ4 frame (with content checksum) and
 * appends it. Chunks come from threads whose buffers filled up; a background thread does
 * the compression and the write(2)s so the traced threads only queue a pointer.
 * The queue has a byte limit: producers wait when the disk cannot keep up (the writer never
 * waits for a traced thread, so this cannot deadlock). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <lz4frame.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "trace_internal.h"

typedef struct chunk {
    struct chunk *next;
    uint8_t *data;
    size_t len;
} chunk;

#define QUEUE_LIMIT (64u << 20) /* bytes queued before producers wait */

static int out_fd = -1;
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_nonempty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t queue_space = PTHREAD_COND_INITIALIZER;
static chunk *queue_head, *queue_tail;
static size_t queue_bytes;
static int writer_closing, writer_running;
static pthread_t writer_thread; /* stored by pthread_create before the thread runs; 0: none */

static pthread_mutex_t io_lock = PTHREAD_MUTEX_INITIALIZER; /* the compressor and the fd */
static LZ4F_cctx *cctx;
static uint8_t *zbuf;
static size_t zcap;
static _Atomic uint64_t frames_written, bytes_written;
CYT_TLS int cyt_is_writer;

uint64_t cyt_writer_frames(void) { return atomic_load(&frames_written); }
uint64_t cyt_writer_bytes(void) { return atomic_load(&bytes_written); }

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        atomic_fetch_add(&bytes_written, (uint64_t)w);
    }
    return 0;
}

/* Compress one chunk into one frame and append it. Caller holds io_lock. */
static int write_frame(const uint8_t *data, size_t len) {
    if (out_fd < 0 || cctx == NULL) return -1;
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof prefs);
    prefs.frameInfo.blockSizeID = LZ4F_max256KB;
    prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    prefs.frameInfo.contentSize = len;
    prefs.compressionLevel = cyt_compression_level;
    size_t bound = LZ4F_compressFrameBound(len, &prefs);
    if (bound > zcap) {
        uint8_t *n = realloc(zbuf, bound);
        if (n == NULL) return -1;
        zbuf = n;
        zcap = bound;
    }
    size_t pos = LZ4F_compressBegin(cctx, zbuf, zcap, &prefs);
    if (LZ4F_isError(pos)) return -1;
    size_t r = LZ4F_compressUpdate(cctx, zbuf + pos, zcap - pos, data, len, NULL);
    if (LZ4F_isError(r)) return -1;
    pos += r;
    r = LZ4F_compressEnd(cctx, zbuf + pos, zcap - pos, NULL);
    if (LZ4F_isError(r)) return -1;
    pos += r;
    if (write_all(out_fd, zbuf, pos) != 0) return -1;
    atomic_fetch_add(&frames_written, 1);
    return 0;
}

int cyt_writer_write_now(const uint8_t *data, size_t len) {
    pthread_mutex_lock(&io_lock);
    int r = write_frame(data, len);
    pthread_mutex_unlock(&io_lock);
    return r;
}

static void *writer_main(void *arg) {
    (void)arg;
    cyt_guard = 1; /* nothing this thread allocates is traced */
    cyt_is_writer = 1;
    pthread_mutex_lock(&queue_lock);
    for (;;) {
        while (queue_head == NULL && !writer_closing) {
            /* once a second, ask every thread to flush what it holds at its next event, so a
             * killed process loses at most about a second of events */
            struct timespec deadline;
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_sec += 1;
            if (pthread_cond_timedwait(&queue_nonempty, &queue_lock, &deadline) == ETIMEDOUT) {
                atomic_fetch_add(&cyt_flush_epoch, 1);
                pthread_mutex_unlock(&queue_lock);
                cyt_threads_flush_idle(); /* its chunks are written right here (cyt_is_writer) */
                pthread_mutex_lock(&queue_lock);
            }
        }
        chunk *list = queue_head;
        queue_head = queue_tail = NULL;
        if (list == NULL && writer_closing) break;
        pthread_mutex_unlock(&queue_lock);
        while (list != NULL) {
            chunk *next = list->next;
            pthread_mutex_lock(&io_lock);
            if (write_frame(list->data, list->len) != 0) cyt_count_dropped(0);
            pthread_mutex_unlock(&io_lock);
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

void cyt_writer_submit(uint8_t *data, size_t len) {
    int saved = cyt_guard;
    cyt_guard = 1;
    chunk *c = malloc(sizeof *c);
    if (c == NULL) {
        free(data);
        cyt_count_dropped(1);
        cyt_guard = saved;
        return;
    }
    c->next = NULL;
    c->data = data;
    c->len = len;
    pthread_mutex_lock(&queue_lock);
    if (!writer_running || cyt_is_writer) { /* no writer (stopping, a child that does not follow), or
                                              * the writer itself (idle flushes): write here */
        pthread_mutex_unlock(&queue_lock);
        cyt_writer_write_now(data, len);
        free(data);
        free(c);
        cyt_guard = saved;
        return;
    }
    while (queue_bytes > QUEUE_LIMIT && writer_running && !writer_closing)
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
    out_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out_fd < 0) {
        cyt_set_error("cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    atomic_store(&frames_written, 0);
    atomic_store(&bytes_written, 0);
    if (cctx == NULL && LZ4F_isError(LZ4F_createCompressionContext(&cctx, LZ4F_VERSION))) {
        cctx = NULL;
        cyt_set_error("cannot create an LZ4 compression context");
        goto fail;
    }
    cyt_buf header = {0};
    if (build_header(&header, header_flags, parent_pid) != 0 || write_all(out_fd, header.data, header.len) != 0) {
        cyt_buf_free(&header);
        cyt_set_error("cannot write the header of %s: %s", path, strerror(errno));
        goto fail;
    }
    cyt_buf_free(&header);
    queue_head = queue_tail = NULL;
    queue_bytes = 0;
    writer_closing = 0;
    if (pthread_create(&writer_thread, NULL, writer_main, NULL) != 0) {
        __atomic_store_n(&writer_thread, 0, __ATOMIC_RELAXED);
        cyt_set_error("cannot start the writer thread");
        goto fail;
    }
    writer_running = 1;
    return 0;
fail:
    close(out_fd);
    out_fd = -1;
    return -1;
}

void cyt_writer_close(void) {
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
    pthread_mutex_lock(&io_lock);
    if (out_fd >= 0) {
        fsync(out_fd);
        close(out_fd);
    }
    out_fd = -1;
    pthread_mutex_unlock(&io_lock);
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
    if (out_fd >= 0) close(out_fd);
    out_fd = -1;
    cctx = NULL; /* may have been in use by the parent's writer: make a new one */
    zbuf = NULL;
    zcap = 0;
}
