/* capture_pipe.c: the event stream on two cores.
 *
 * Owns: running cya_merge_stream (decompressing, decoding and merging the batches) on a
 * second thread while the calling thread consumes the merged events, through a few
 * fixed buffers handed back and forth: the consumer gets the same events, in the same
 * order, as cya_merge_stream would give it on one thread (in chunks of another size). Memory: PIPE_BUFFERS buffers of
 * PIPE_EVENTS events. Falls back to one thread when no thread can be started.
 */
#include <pthread.h>
#include <stdio.h>

#include "capture_internal.h"

#define PIPE_BUFFERS 4
#define PIPE_EVENTS 16384 /* events per buffer (640 KiB) */

typedef struct pipe_buffer {
    cya_event events[PIPE_EVENTS];
    size_t len;
} pipe_buffer;

typedef struct pipe {
    const cya_capture *c;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    pipe_buffer *buffers;
    size_t head, count; /* the filled buffers: a ring from head */
    size_t filling;     /* the producer's buffer (not in the ring) */
    int done, stop, ok; /* producer finished (ok: without error); consumer stopped */
    char errbuf[256];
} pipe;

/* Producer: copy a chunk into buffers, publishing each one as it fills. */
static int pipe_emit(void *ctx, const cya_event *events, size_t n)
{
    pipe *p = ctx;
    while (n > 0) {
        pipe_buffer *b = &p->buffers[p->filling];
        size_t take = PIPE_EVENTS - b->len < n ? PIPE_EVENTS - b->len : n;
        memcpy(b->events + b->len, events, take * sizeof *events);
        b->len += take;
        events += take;
        n -= take;
        if (b->len == PIPE_EVENTS) {
            pthread_mutex_lock(&p->lock);
            p->count++; /* the filling buffer is the next in the ring */
            pthread_cond_broadcast(&p->changed);
            while (p->count == PIPE_BUFFERS && !p->stop)
                pthread_cond_wait(&p->changed, &p->lock);
            int stop = p->stop;
            p->filling = (p->head + p->count) % PIPE_BUFFERS;
            pthread_mutex_unlock(&p->lock);
            if (stop)
                return 0;
            p->buffers[p->filling].len = 0;
        }
    }
    return 1;
}

static void *producer(void *arg)
{
    pipe *p = arg;
    int ok = cya_merge_stream(p->c, pipe_emit, p, p->errbuf, sizeof p->errbuf);
    pthread_mutex_lock(&p->lock);
    if (ok && p->buffers[p->filling].len)
        p->count++; /* the last, partly filled buffer */
    p->ok = ok;
    p->done = 1;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int cya_merge_stream_pipelined(const cya_capture *c, cya_emit_fn emit, void *ctx, char *errbuf, size_t errlen)
{
    if (c->nevents < 4 * PIPE_EVENTS) /* not worth a thread */
        return cya_merge_stream(c, emit, ctx, errbuf, errlen);
    pipe *p = calloc(1, sizeof *p);
    pipe_buffer *buffers = p ? malloc(PIPE_BUFFERS * sizeof *buffers) : NULL;
    if (!buffers) {
        free(p);
        return cya_merge_stream(c, emit, ctx, errbuf, errlen);
    }
    p->c = c;
    p->buffers = buffers;
    p->buffers[0].len = 0;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->changed, NULL);
    pthread_t thread;
    if (pthread_create(&thread, NULL, producer, p) != 0) {
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->changed);
        free(buffers);
        free(p);
        return cya_merge_stream(c, emit, ctx, errbuf, errlen);
    }
    int consumer_ok = 1;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (p->count == 0 && !p->done)
            pthread_cond_wait(&p->changed, &p->lock);
        if (p->count == 0) { /* done, and nothing left */
            pthread_mutex_unlock(&p->lock);
            break;
        }
        pipe_buffer *b = &p->buffers[p->head];
        pthread_mutex_unlock(&p->lock);
        consumer_ok = emit(ctx, b->events, b->len);
        pthread_mutex_lock(&p->lock);
        p->head = (p->head + 1) % PIPE_BUFFERS;
        p->count--;
        if (!consumer_ok)
            p->stop = 1;
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->lock);
        if (!consumer_ok)
            break;
    }
    pthread_join(thread, NULL);
    int ok = consumer_ok && p->ok;
    if (!consumer_ok)
        snprintf(errbuf, errlen, "%s", "");
    else if (!p->ok)
        snprintf(errbuf, errlen, "%s", p->errbuf);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->changed);
    free(buffers);
    free(p);
    return ok;
}
