/* capture_read.c: the capture file reader (formats 1 to 3, runtime/FORMAT.md).
 *
 * Owns: checking the header (magic, version), walking the body's LZ4 frames (skipping a
 * damaged one and resynchronising on the next frame magic), decoding records into
 * per-thread event runs (ordered and merged by capture_merge.c), reading each definition
 * once however often it is repeated, resolving ids once the whole file is read, and
 * saying what is missing: the frames skipped, the batches absent or repeated, and the
 * events recorded but not in the file (from batch ordinals, PROGRESS and STATS).
 * The file is mapped read-only; everything handed out is copied into the capture.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <lz4frame.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capture_format.h"
#include "capture_internal.h"

static const char MAGIC[8] = {'C', 'Y', 'T', 'R', 'A', 'C', 'E', '\0'};

_Static_assert(CYA_FORMAT_VERSION == CAPTURE_FORMAT_VERSION, "the reader knows the format the tracer writes");

/* A bounded cursor over bytes; `bad` is set on the first read past the end. */
typedef struct cursor {
    const uint8_t *p, *end;
    int bad;
} cursor;

static uint64_t get_varint(cursor *c)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (c->p >= c->end) {
            c->bad = 1;
            return 0;
        }
        uint8_t b = *c->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return v;
    }
    c->bad = 1;
    return 0;
}

static int64_t get_svarint(cursor *c)
{
    uint64_t v = get_varint(c);
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static uint8_t get_u8(cursor *c)
{
    if (c->p >= c->end) {
        c->bad = 1;
        return 0;
    }
    return *c->p++;
}

static uint32_t get_u32(cursor *c)
{
    if (c->end - c->p < 4) {
        c->bad = 1;
        return 0;
    }
    uint32_t v = (uint32_t)c->p[0] | (uint32_t)c->p[1] << 8 | (uint32_t)c->p[2] << 16 | (uint32_t)c->p[3] << 24;
    c->p += 4;
    return v;
}

/* A string field as a fresh NUL-terminated copy (NULL with c->bad on error). */
static char *get_string(cursor *c, size_t *length)
{
    uint64_t n = get_varint(c);
    if (c->bad || n > (uint64_t)(c->end - c->p)) {
        c->bad = 1;
        return NULL;
    }
    char *s = malloc(n + 1);
    if (!s) {
        c->bad = 1;
        return NULL;
    }
    memcpy(s, c->p, n);
    s[n] = '\0';
    c->p += n;
    if (length)
        *length = n;
    return s;
}

typedef struct reader {
    cya_capture *cap;
    cya_run *runs; /* parallel to cap->threads */
    size_t cap_runs;
    int out_of_memory;
    uint64_t repeats;       /* definitions of the current frame read before (a repeated frame) */
    uint64_t stats_objects; /* STATS (format 3): OBJECT records the tracer wrote */
} reader;

static void set_problem(cya_capture *c, const char *fmt, ...)
{
    if (c->problem[0])
        return; /* keep the first */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->problem, sizeof c->problem, fmt, ap);
    va_end(ap);
}

#define MAX_NOTES 20

/* One line of status.notes (at most MAX_NOTES; the rest are counted). */
static void add_note(cya_capture *c, const char *fmt, ...)
{
    c->nnotes++;
    if (c->nnotes > MAX_NOTES)
        return;
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = sizeof line - 1;
    if (!cya_grow((void **)&c->notes, &c->notes_cap, c->notes_len + (size_t)n + 2, 1))
        return;
    memcpy(c->notes + c->notes_len, line, (size_t)n);
    c->notes_len += (size_t)n;
    c->notes[c->notes_len++] = '\n';
    c->notes[c->notes_len] = '\0';
}

/* Index of thread `id`, created on first sight (a BATCH may precede its THREAD record). */
static long thread_slot(reader *r, uint64_t id)
{
    cya_capture *c = r->cap;
    uint32_t *slot = cya_map_get(&c->thread_index, id);
    if (slot)
        return *slot;
    cya_thread t = {.id = id, .tid = 0, .name = NULL, .nevents = 0};
    if (!CYA_PUSH(c->threads, c->nthreads, c->cap_threads, t))
        return -1;
    if (!cya_grow((void **)&r->runs, &r->cap_runs, c->nthreads, sizeof *r->runs))
        return -1;
    memset(&r->runs[c->nthreads - 1], 0, sizeof(cya_run));
    if (!cya_map_put(&c->thread_index, id, (uint32_t)(c->nthreads - 1)))
        return -1;
    return (long)(c->nthreads - 1);
}

static int is_alloc_kind(unsigned kind) { return kind >= CYA_MALLOC && kind <= CYA_MREMAP; }
static int is_free_kind(unsigned kind) { return kind >= CYA_FREE && kind <= CYA_PYMEM_OBJ_FREE; }

/* Reserve room for n more events in a run, capped by what `bytes` of input can hold
 * (every event takes at least `per_event` bytes). */
static int reserve_events(reader *r, cya_run *rn, uint64_t n, size_t bytes, size_t per_event)
{
    uint64_t most = bytes / per_event;
    if (!cya_grow((void **)&rn->events, &rn->cap, rn->len + (n < most ? n : most), sizeof(cya_event))) {
        r->out_of_memory = 1;
        return 0;
    }
    return 1;
}

/* Complete an event (size and stack already set) and append it to its thread's run. */
static int push_event(reader *r, cya_run *rn, cya_event *e, uint64_t time, uint64_t address, unsigned kind,
                      uint64_t tid)
{
    e->time_ns = time;
    e->address = address;
    e->kind = (uint8_t)kind;
    e->thread_id = (uint32_t)tid;
    if (!CYA_PUSH(rn->events, rn->len, rn->cap, *e)) {
        r->out_of_memory = 1;
        return 0;
    }
    return 1;
}

/* Format 1: one row per event (kind, time delta in ns, address delta, size, stack). */
static int decode_events_v1(reader *r, cursor *cur, cya_run *rn, uint64_t tid, uint64_t t, uint64_t n)
{
    if (!reserve_events(r, rn, n, (size_t)(cur->end - cur->p), 2))
        return 0;
    uint64_t addr = 0;
    for (uint64_t i = 0; i < n; i++) {
        cya_event e;
        memset(&e, 0, sizeof e);
        unsigned kind = get_u8(cur);
        t += get_varint(cur);
        addr += (uint64_t)get_svarint(cur);
        if (is_alloc_kind(kind)) {
            e.size = get_varint(cur);
            e.stack_id = (uint32_t)get_varint(cur);
        } else if (kind == CYA_MUNMAP) {
            e.size = get_varint(cur);
        } else if (!is_free_kind(kind)) {
            cur->bad = 1;
        }
        if (cur->bad)
            return 0;
        if (!push_event(r, rn, &e, t, addr, kind, tid))
            return 0;
    }
    return 1;
}

/* Format 2: five columns (heads, times, addresses, sizes, stacks); every column must be
 * used up exactly. */
static int decode_events_v2(reader *r, cursor *cur, cya_run *rn, uint64_t tid, uint64_t t, uint64_t unit, uint64_t n)
{
    uint64_t len[NCOLS];
    len[COL_HEAD] = n;
    for (int c = COL_TIME; c < NCOLS; c++)
        len[c] = get_varint(cur);
    cursor col[NCOLS];
    for (int c = 0; c < NCOLS; c++) {
        if (cur->bad || len[c] > (uint64_t)(cur->end - cur->p))
            return 0;
        col[c] = (cursor){cur->p, cur->p + len[c], 0};
        cur->p += len[c];
    }
    if (!reserve_events(r, rn, n, (size_t)len[COL_HEAD], 1))
        return 0;
    uint64_t addr = 0, stack = UINT64_MAX;
    for (uint64_t i = 0; i < n; i++) {
        cya_event e;
        memset(&e, 0, sizeof e);
        unsigned head = get_u8(&col[COL_HEAD]), kind = head & EV_KIND_MASK;
        if (head & EV_TIME)
            t += get_varint(&col[COL_TIME]) * unit;
        addr += (uint64_t)get_svarint(&col[COL_ADDR]);
        if (is_alloc_kind(kind)) {
            e.size = get_varint(&col[COL_SIZE]);
            if (!(head & EV_SAME_STACK))
                stack = get_varint(&col[COL_STACK]);
            else if (stack == UINT64_MAX) /* "the same stack" before any stack */
                return 0;
            e.stack_id = (uint32_t)stack;
        } else if (!is_free_kind(kind) || (head & EV_SAME_STACK)) {
            return 0;
        } else if (kind == CYA_MUNMAP) {
            e.size = get_varint(&col[COL_SIZE]);
        }
        for (int c = 0; c < NCOLS; c++)
            if (col[c].bad)
                return 0;
        if (!push_event(r, rn, &e, t, addr, kind, tid))
            return 0;
    }
    for (int c = 0; c < NCOLS; c++)
        if (col[c].p != col[c].end)
            return 0;
    return 1;
}

static int decode_batch(reader *r, cursor *cur)
{
    int v2 = r->cap->header.version >= 2;
    uint64_t tid = get_varint(cur);
    uint64_t seq = v2 ? get_varint(cur) : 0;
    uint64_t first = r->cap->header.version >= 3 ? get_varint(cur) : 0;
    uint64_t t = get_varint(cur);
    uint64_t unit = v2 ? get_varint(cur) : 1;
    uint64_t n = get_varint(cur);
    if (cur->bad || unit == 0)
        return 0;
    long slot = thread_slot(r, tid);
    if (slot < 0) {
        r->out_of_memory = 1;
        return 0;
    }
    cya_run *rn = &r->runs[slot];
    cya_batch_ref ref = {v2 ? seq : t, first, rn->len, 0};
    if (!(v2 ? decode_events_v2(r, cur, rn, tid, t, unit, n) : decode_events_v1(r, cur, rn, tid, t, n))) {
        rn->len = ref.start; /* a malformed batch is dropped whole */
        return 0;
    }
    ref.len = rn->len - ref.start;
    if (!CYA_PUSH(rn->batches, rn->nbatches, rn->cap_batches, ref)) {
        r->out_of_memory = 1;
        return 0;
    }
    return 1;
}

static int decode_object(reader *r, cursor *cur)
{
    cya_capture *c = r->cap;
    cya_object o;
    memset(&o, 0, sizeof o);
    o.id = get_varint(cur);
    o.load_bias = get_varint(cur);
    o.path = get_string(cur, NULL);
    size_t blen = 0;
    o.build_id = (const uint8_t *)get_string(cur, &blen);
    o.build_id_len = blen;
    o.nsegments = get_varint(cur);
    o.unload_time_ns = -1;
    if (!cur->bad && o.nsegments > (uint64_t)(cur->end - cur->p))
        cur->bad = 1;
    uint64_t *segs = NULL;
    if (!cur->bad) {
        segs = malloc((o.nsegments ? o.nsegments : 1) * 2 * sizeof *segs);
        if (!segs)
            cur->bad = 1;
        for (uint64_t i = 0; !cur->bad && i < o.nsegments * 2; i++)
            segs[i] = get_varint(cur);
    }
    o.segments = segs;
    o.load_generation = c->header.version >= 3 ? get_varint(cur) : 0;
    o.unload_generation = UINT64_MAX;
    if (!cur->bad && cya_map_get(&c->object_index, o.id)) { /* a repeated frame: read once */
        r->repeats++;
        free((void *)o.path);
        free((void *)o.build_id);
        free(segs);
        return 1;
    }
    if (cur->bad || !CYA_PUSH(c->objects, c->nobjects, c->cap_objects, o) ||
        !cya_map_put(&c->object_index, o.id, (uint32_t)(c->nobjects - 1))) {
        free((void *)o.path);
        free((void *)o.build_id);
        free(segs);
        return 0;
    }
    return 1;
}

static int decode_record(reader *r, cursor *cur)
{
    cya_capture *c = r->cap;
    int v3 = c->header.version >= 3;
    unsigned type = get_u8(cur);
    switch (type) {
    case REC_OBJECT:
        return decode_object(r, cur);
    case REC_UNLOAD: {
        uint64_t id = get_varint(cur), t = get_varint(cur);
        uint64_t generation = v3 ? get_varint(cur) : UINT64_MAX;
        if (cur->bad)
            return 0;
        uint32_t *slot = cya_map_get(&c->object_index, id);
        if (slot) {
            c->objects[*slot].unload_time_ns = (int64_t)t;
            c->objects[*slot].unload_generation = generation;
        }
        return 1;
    }
    case REC_PYFRAME: {
        cya_pyframe f;
        f.id = get_varint(cur);
        f.line = get_varint(cur);
        f.function = get_string(cur, NULL);
        f.file = get_string(cur, NULL);
        if (!cur->bad && cya_map_get(&c->pyframe_index, f.id)) { /* repeated: read once */
            r->repeats++;
            free((void *)f.function);
            free((void *)f.file);
            return 1;
        }
        if (cur->bad || !CYA_PUSH(c->pyframes, c->npyframes, c->cap_pyframes, f) ||
            !cya_map_put(&c->pyframe_index, f.id, (uint32_t)(c->npyframes - 1))) {
            free((void *)f.function);
            free((void *)f.file);
            return 0;
        }
        return 1;
    }
    case REC_STACK: {
        cya_stack s;
        memset(&s, 0, sizeof s);
        s.id = get_varint(cur);
        s.generation = v3 ? get_varint(cur) : 0;
        s.nframes = get_varint(cur);
        if (cur->bad || s.nframes > (uint64_t)(cur->end - cur->p))
            return 0;
        uint64_t *words = malloc((s.nframes ? s.nframes : 1) * sizeof *words);
        if (!words)
            return 0;
        for (uint64_t i = 0; i < s.nframes; i++)
            words[i] = get_varint(cur);
        s.frames = words;
        if (v3) {
            s.cut = get_varint(cur);
            s.cut_at = s.cut ? get_varint(cur) : 0;
            if (s.cut_at > s.nframes)
                cur->bad = 1;
        }
        if (!cur->bad && cya_map_get(&c->stack_index, s.id)) { /* repeated: read once */
            r->repeats++;
            free(words);
            return 1;
        }
        if (cur->bad || !CYA_PUSH(c->stacks, c->nstacks, c->cap_stacks, s) ||
            !cya_map_put(&c->stack_index, s.id, (uint32_t)(c->nstacks - 1))) {
            free(words);
            return 0;
        }
        return 1;
    }
    case REC_THREAD: {
        uint64_t id = get_varint(cur), tid = get_varint(cur);
        char *name = get_string(cur, NULL);
        if (cur->bad)
            return 0;
        long slot = thread_slot(r, id);
        if (slot < 0) {
            free(name);
            r->out_of_memory = 1;
            return 0;
        }
        c->threads[slot].tid = tid;
        free((void *)c->threads[slot].name);
        c->threads[slot].name = name;
        return 1;
    }
    case REC_PROGRESS: {
        if (!v3)
            break;
        uint64_t t = get_varint(cur), n = get_varint(cur);
        if (cur->bad || n > (uint64_t)(cur->end - cur->p))
            return 0;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t id = get_varint(cur), events = get_varint(cur);
            if (cur->bad)
                return 0;
            long slot = thread_slot(r, id);
            if (slot < 0) {
                r->out_of_memory = 1;
                return 0;
            }
            if (events > r->runs[slot].progress)
                r->runs[slot].progress = events;
        }
        if (t > c->status.last_progress_ns)
            c->status.last_progress_ns = t;
        return 1;
    }
    case REC_LOSS: {
        if (!v3)
            break;
        cya_loss l;
        l.from_ns = get_varint(cur);
        l.until_ns = get_varint(cur);
        l.events = get_varint(cur);
        l.frames = get_varint(cur);
        l.reason = get_string(cur, NULL);
        if (!cur->bad) /* a repeated frame repeats the record: read once */
            for (size_t i = 0; i < c->nlosses; i++)
                if (c->losses[i].from_ns == l.from_ns && c->losses[i].until_ns == l.until_ns &&
                    c->losses[i].events == l.events) {
                    r->repeats++;
                    free((void *)l.reason);
                    return 1;
                }
        if (cur->bad || !CYA_PUSH(c->losses, c->nlosses, c->cap_losses, l)) {
            free((void *)l.reason);
            return 0;
        }
        return 1;
    }
    case REC_TAKEOVER: {
        if (!v3)
            break;
        cya_takeover t;
        t.time_ns = get_varint(cur);
        t.what = (uint32_t)get_varint(cur);
        t.object = get_varint(cur);
        t.function = get_string(cur, NULL);
        t.target = get_string(cur, NULL);
        t.state = (uint32_t)get_varint(cur);
        if (!cur->bad)
            for (size_t i = 0; i < c->ntakeovers; i++) {
                const cya_takeover *o = &c->takeovers[i];
                if (o->time_ns == t.time_ns && o->what == t.what && o->object == t.object && o->state == t.state &&
                    strcmp(o->function, t.function) == 0) {
                    r->repeats++;
                    free((void *)t.function);
                    free((void *)t.target);
                    return 1;
                }
            }
        if (cur->bad || !CYA_PUSH(c->takeovers, c->ntakeovers, c->cap_takeovers, t)) {
            free((void *)t.function);
            free((void *)t.target);
            return 0;
        }
        return 1;
    }
    case REC_BATCH:
        return decode_batch(r, cur);
    case REC_STATS:
        r->repeats += c->status.has_stats;
        c->status.stats_events = get_varint(cur);
        c->status.stats_dropped = get_varint(cur);
        c->status.stats_stacks = get_varint(cur);
        c->status.stats_frames = get_varint(cur);
        c->status.stats_lost = v3 ? get_varint(cur) : 0;
        r->stats_objects = v3 ? get_varint(cur) : 0;
        c->status.has_stats = !cur->bad;
        return !cur->bad;
    case REC_END:
        r->repeats += c->status.complete;
        c->status.end_time_ns = get_varint(cur);
        c->status.complete = !cur->bad;
        return !cur->bad;
    default:
        break;
    }
    set_problem(c, "unknown record type 0x%02x", type);
    return 0;
}

/* Decode the records of one decompressed frame. A malformed record ends the frame: the
 * records before it stay, the rest of the frame is skipped (and noted); 0 then. */
static int decode_frame(reader *r, const uint8_t *data, size_t len, size_t frame_offset)
{
    cursor cur = {data, data + len, 0};
    r->repeats = 0;
    while (cur.p < cur.end) {
        const uint8_t *start = cur.p;
        if (!decode_record(r, &cur)) {
            if (r->out_of_memory) {
                set_problem(r->cap, "out of memory while reading");
                return 0;
            }
            set_problem(r->cap, "malformed record (type 0x%02x) at offset %zu of the frame starting at byte %zu",
                        *start, (size_t)(start - data), frame_offset);
            add_note(r->cap,
                     "the frame at byte %zu holds a malformed record (type 0x%02x at offset %zu): the rest of the "
                     "frame was skipped",
                     frame_offset, *start, (size_t)(start - data));
            return 0;
        }
        r->cap->status.records++;
    }
    if (r->repeats)
        add_note(r->cap, "the frame at byte %zu repeats %llu record%s read before (a repeated frame?): read once",
                 frame_offset, (unsigned long long)r->repeats, r->repeats == 1 ? "" : "s");
    return 1;
}

static int parse_header(cya_capture *c, const uint8_t *buf, size_t len, size_t *body, int *error, char *errbuf,
                        size_t errlen, const char *path)
{
    if (len < sizeof MAGIC || memcmp(buf, MAGIC, sizeof MAGIC) != 0) {
        *error = CYA_E_NOT_CAPTURE;
        snprintf(errbuf, errlen, "%s: not a cytool capture (no CYTRACE header)", path);
        return 0;
    }
    cursor cur = {buf + 8, buf + len, 0};
    uint32_t version = get_u32(&cur);
    uint32_t hlen = get_u32(&cur);
    if (cur.bad) {
        *error = CYA_E_HEADER;
        snprintf(errbuf, errlen, "%s: the capture header is cut short (%zu bytes)", path, len);
        return 0;
    }
    if (version > CYA_FORMAT_VERSION) {
        *error = CYA_E_NEWER;
        snprintf(errbuf, errlen, "%s: written by a newer cytool: format %u, this reader knows %d", path,
                 version, CYA_FORMAT_VERSION);
        return 0;
    }
    if (version == 0) {
        *error = CYA_E_HEADER;
        snprintf(errbuf, errlen, "%s: invalid capture format version 0", path);
        return 0;
    }
    if (hlen > len - 16) {
        *error = CYA_E_HEADER;
        snprintf(errbuf, errlen, "%s: the capture header is cut short (%zu of %u bytes)", path, len - 16,
                 (unsigned)hlen);
        return 0;
    }
    cursor h = {buf + 16, buf + 16 + hlen, 0};
    cya_header *hd = &c->header;
    hd->version = version;
    hd->pid = get_varint(&h);
    hd->start_time_ns = get_varint(&h);
    hd->flags = get_varint(&h);
    hd->python_version = get_string(&h, NULL);
    hd->argc = get_varint(&h);
    if (!h.bad && hd->argc > hlen) /* every string takes at least a byte */
        h.bad = 1;
    if (!h.bad) {
        c->argv = calloc(hd->argc + 1, sizeof *c->argv);
        if (!c->argv)
            h.bad = 1;
        for (uint64_t i = 0; !h.bad && i < hd->argc; i++)
            c->argv[i] = get_string(&h, NULL);
        hd->argv = (const char *const *)c->argv;
    }
    hd->executable = get_string(&h, NULL);
    hd->parent_pid = get_varint(&h);
    if (version >= 2) {
        hd->time_resolution_ns = get_varint(&h);
        hd->clock = (uint32_t)get_varint(&h);
    }
    if (version >= 3)
        hd->max_frames = get_varint(&h);
    /* bytes after the known fields are future fields: skipped */
    if (h.bad) {
        *error = CYA_E_HEADER;
        snprintf(errbuf, errlen, "%s: the capture header is malformed", path);
        return 0;
    }
    *body = 16 + (size_t)hlen;
    return 1;
}

/* The offset of the next LZ4 frame magic at or after `from`, or len. */
static size_t next_magic(const uint8_t *buf, size_t len, size_t from)
{
    static const uint8_t magic[4] = {LZ4_FRAME_MAGIC & 0xff, (LZ4_FRAME_MAGIC >> 8) & 0xff,
                                     (LZ4_FRAME_MAGIC >> 16) & 0xff, LZ4_FRAME_MAGIC >> 24};
    if (from >= len)
        return len;
    const uint8_t *hit = memmem(buf + from, len - from, magic, sizeof magic);
    return hit ? (size_t)(hit - buf) : len;
}

/* Walk the LZ4 frames of the body. A frame that cannot be decoded is skipped: reading goes
 * on at the next frame magic after its start (FORMAT.md section 2). */
static void read_body(reader *r, const uint8_t *buf, size_t len, size_t pos)
{
    cya_capture *c = r->cap;
    LZ4F_dctx *dctx = NULL;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION))) {
        set_problem(c, "cannot create an LZ4 decompression context");
        c->status.truncated = 1;
        return;
    }
    uint8_t *out = NULL;
    size_t out_cap = 0;
    c->status.recovered_bytes = pos;
    while (pos < len && !r->out_of_memory) {
        size_t start = next_magic(buf, len, pos);
        if (start != pos) { /* bytes that are no frame: damage, or a frame cut at its magic */
            if (start == len && c->status.complete) {
                set_problem(c, "%zu bytes after the END record were ignored", len - pos);
                add_note(c, "%zu bytes after the end of the capture were ignored", len - pos);
                break;
            }
            if (start == len && len - pos < 4) {
                set_problem(c, "the file ends inside the LZ4 frame starting at byte %zu", pos);
                add_note(c, "the file ends inside the frame starting at byte %zu (%zu bytes)", pos, len - pos);
                c->status.truncated = 1;
                break;
            }
            set_problem(c, "%zu bytes at byte %zu are not an LZ4 frame", start - pos, pos);
            add_note(c, "%zu bytes at byte %zu are not a frame: skipped", start - pos, pos);
            c->status.damaged_frames++;
            pos = start;
            continue;
        }
        size_t in_off = 0, out_len = 0;
        int done = 0, cut = 0;
        const char *error = NULL;
        for (;;) {
            if (out_cap - out_len < (1u << 16) &&
                !cya_grow((void **)&out, &out_cap, out_len + (1u << 16), 1)) {
                set_problem(c, "out of memory while decompressing");
                r->out_of_memory = 1;
                break;
            }
            size_t dsz = out_cap - out_len, ssz = len - pos - in_off;
            size_t ret = LZ4F_decompress(dctx, out + out_len, &dsz, buf + pos + in_off, &ssz, NULL);
            if (LZ4F_isError(ret)) {
                error = LZ4F_getErrorName(ret);
                break;
            }
            in_off += ssz;
            out_len += dsz;
            if (ret == 0) {
                done = 1;
                break;
            }
            if (pos + in_off >= len && dsz == 0) {
                cut = 1;
                break;
            }
        }
        if (r->out_of_memory)
            break;
        if (!done) {
            LZ4F_resetDecompressionContext(dctx);
            size_t next = next_magic(buf, len, pos + 1);
            if (cut && next == len) { /* the last frame, cut short: the writer was stopped */
                set_problem(c, "the file ends inside the LZ4 frame starting at byte %zu", pos);
                add_note(c, "the file ends inside the frame starting at byte %zu (%zu bytes)", pos, len - pos);
                c->status.truncated = 1;
                break;
            }
            set_problem(c, "the LZ4 frame starting at byte %zu is damaged (%s)", pos, error ? error : "cut short");
            add_note(c, "the frame at byte %zu is damaged (%s): skipped", pos, error ? error : "cut short");
            c->status.damaged_frames++;
            pos = next;
            continue;
        }
        c->status.frames++;
        if (!decode_frame(r, out, out_len, pos))
            c->status.damaged_frames++;
        pos += in_off;
        c->status.recovered_bytes += in_off;
    }
    free(out);
    LZ4F_freeDecompressionContext(dctx);
    if (!c->status.complete) {
        c->status.truncated = 1;
        if (c->status.live)
            set_problem(c, "no END record: the capture is still being written by a running process");
        else
            set_problem(c, "no END record: the traced process did not finish writing (killed?)");
    }
    if (c->status.damaged_frames)
        c->status.truncated = 1;
}

static int segref_cmp(const void *a, const void *b)
{
    const struct cya_segment_ref *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static const char *thread_name(const cya_capture *c, size_t i)
{
    return c->threads[i].name && c->threads[i].name[0] ? c->threads[i].name : "?";
}

/* Order each thread's batches; note repeats, gaps and events missing (FORMAT.md section 2). */
static int check_runs(reader *r)
{
    cya_capture *c = r->cap;
    int by_sequence = c->header.version >= 2, ordinals = c->header.version >= 3;
    uint64_t present = 0;
    for (size_t i = 0; i < c->nthreads; i++) {
        cya_run_order f;
        if (!cya_order_run(&r->runs[i], by_sequence, ordinals, &f))
            return 0;
        present += r->runs[i].len;
        c->status.duplicate_batches += f.duplicates;
        c->status.missing_batches += f.missing_batches;
        c->status.missing_events += f.missing_events;
        unsigned long long id = (unsigned long long)c->threads[i].id;
        if (f.duplicates)
            add_note(c, "thread %llu (%s): %llu batch%s read twice (%llu events; a repeated frame?): the copies "
                        "were ignored", id, thread_name(c, i), (unsigned long long)f.duplicates,
                     f.duplicates == 1 ? "" : "es", (unsigned long long)f.duplicate_events);
        if (f.missing_batches) {
            char events[64] = "";
            if (ordinals)
                snprintf(events, sizeof events, ": %llu events lost",
                         (unsigned long long)(f.missing_events - f.tail_events));
            if (f.gaps == 1 && f.first_gap_from == f.first_gap_to)
                add_note(c, "thread %llu (%s): batch %llu is missing%s", id, thread_name(c, i),
                         (unsigned long long)f.first_gap_from, events);
            else
                add_note(c, "thread %llu (%s): %llu batches missing (the first: %llu to %llu)%s", id, thread_name(c, i),
                         (unsigned long long)f.missing_batches, (unsigned long long)f.first_gap_from,
                         (unsigned long long)f.first_gap_to, events);
        }
        if (f.tail_events)
            add_note(c, "thread %llu (%s): its last %llu recorded events are not in the file", id, thread_name(c, i),
                     (unsigned long long)f.tail_events);
    }
    if (c->status.has_stats && c->header.version >= 2) {
        uint64_t accounted = present + c->status.missing_events;
        if (c->status.stats_events > accounted) {
            uint64_t more = c->status.stats_events - accounted;
            c->status.missing_events += more;
            char why[96] = " (a frame lost?)";
            if (c->status.stats_lost)
                snprintf(why, sizeof why, " (it could not write %llu)", (unsigned long long)c->status.stats_lost);
            add_note(c, "the tracer recorded %llu events but %llu of them are in the file: %llu are missing%s",
                     (unsigned long long)c->status.stats_events, (unsigned long long)present,
                     (unsigned long long)(c->status.stats_events - present), why);
        } else if (c->status.stats_events < present) {
            add_note(c, "the file holds %llu events but the tracer recorded only %llu",
                     (unsigned long long)present, (unsigned long long)c->status.stats_events);
        }
    }
    /* object ids are 1, 2, 3 ... in a format 3 capture: a hole, or fewer than STATS says,
     * is a frame of OBJECT records lost (those objects' frames show as raw addresses) */
    if (c->header.version >= 3) {
        uint64_t most = r->stats_objects;
        for (size_t i = 0; i < c->nobjects; i++)
            if (c->objects[i].id > most)
                most = c->objects[i].id;
        if (most > c->nobjects) {
            add_note(c, "%llu of the %llu loaded objects the tracer described are missing (a frame lost?): their "
                        "frames show as raw addresses", (unsigned long long)(most - c->nobjects), (unsigned long long)most);
            c->status.truncated = 1;
        }
    }
    if (c->status.missing_batches || c->status.missing_events)
        c->status.truncated = 1;
    return 1;
}

static int finish(reader *r)
{
    cya_capture *c = r->cap;
    if (!check_runs(r) || !cya_merge_runs(c, r->runs))
        return 0;
    if (!c->status.complete && c->nevents)
        c->status.end_time_ns = c->events[c->nevents - 1].time_ns;
    else if (c->status.complete && c->nevents && c->events[c->nevents - 1].time_ns > c->status.end_time_ns)
        c->status.end_time_ns = c->events[c->nevents - 1].time_ns;
    /* ids used but never defined; allocations without a stack (format 3: the tracer's
     * stack table was full, it always has at least the caller's address otherwise) */
    cya_map seen = {0};
    uint64_t stackless = 0;
    for (size_t i = 0; i < c->nevents; i++) {
        uint32_t id = c->events[i].stack_id;
        stackless += !id && c->events[i].kind < CYA_FREE && c->events[i].address;
        if (id && !cya_map_get(&c->stack_index, id) && !cya_map_get(&seen, id)) {
            if (!cya_map_put(&seen, id, 1)) {
                cya_map_free(&seen);
                return 0;
            }
            c->status.missing_stacks++;
        }
    }
    cya_map_free(&seen);
    if (stackless && c->header.version >= 3)
        add_note(c, "%llu allocations have no stack: the tracer's stack table was full", (unsigned long long)stackless);
    for (size_t i = 0; i < c->nstacks; i++)
        for (uint64_t j = 0; j < c->stacks[i].nframes; j++) {
            uint64_t w = c->stacks[i].frames[j];
            if ((w & 1) && !cya_map_get(&c->pyframe_index, w >> 1) && !cya_map_get(&seen, w >> 1)) {
                if (!cya_map_put(&seen, w >> 1, 1)) {
                    cya_map_free(&seen);
                    return 0;
                }
                c->status.missing_pyframes++;
            }
        }
    cya_map_free(&seen);
    if (c->status.missing_stacks || c->status.missing_pyframes) {
        char what[128];
        if (c->status.missing_stacks && c->status.missing_pyframes)
            snprintf(what, sizeof what, "%llu stacks and %llu Python frames", (unsigned long long)c->status.missing_stacks,
                     (unsigned long long)c->status.missing_pyframes);
        else if (c->status.missing_stacks)
            snprintf(what, sizeof what, "%llu stack%s", (unsigned long long)c->status.missing_stacks,
                     c->status.missing_stacks == 1 ? "" : "s");
        else
            snprintf(what, sizeof what, "%llu Python frame%s", (unsigned long long)c->status.missing_pyframes,
                     c->status.missing_pyframes == 1 ? "" : "s");
        add_note(c, "%s used but never defined (a frame lost, or the process killed?) show as <unknown>", what);
        c->status.truncated = 1;
    }
    if (c->nnotes > MAX_NOTES) {
        size_t more = c->nnotes - MAX_NOTES;
        c->nnotes = MAX_NOTES;
        add_note(c, "... and %zu more such notes", more);
    }
    for (size_t i = 0; i < c->nthreads; i++)
        if (!c->threads[i].name) {
            char *unnamed = strdup("");
            if (!unnamed)
                return 0;
            c->threads[i].name = unnamed;
        }
    size_t nseg = 0;
    for (size_t i = 0; i < c->nobjects; i++)
        nseg += c->objects[i].nsegments;
    c->segrefs = malloc((nseg ? nseg : 1) * sizeof *c->segrefs);
    if (!c->segrefs)
        return 0;
    for (size_t i = 0; i < c->nobjects; i++)
        for (uint64_t j = 0; j < c->objects[i].nsegments; j++) {
            struct cya_segment_ref s = {c->objects[i].segments[2 * j], c->objects[i].segments[2 * j + 1],
                                        (uint32_t)i};
            if (s.end <= s.start)
                continue;
            if (s.end - s.start > c->longest_segment)
                c->longest_segment = s.end - s.start;
            c->segrefs[c->nsegrefs++] = s;
        }
    qsort(c->segrefs, c->nsegrefs, sizeof *c->segrefs, segref_cmp);
    c->status.problem = c->problem;
    c->status.notes = c->notes ? c->notes : "";
    return 1;
}

int cya_open_regular(const char *path)
{
    if (!path || !*path) {
        errno = ENOENT;
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return -1;
    struct stat st;
    memset(&st, 0, sizeof st);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int why = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        close(fd);
        errno = why;
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

CYA_API cya_capture *cya_open(const char *path, int *error, char *errbuf, size_t errlen)
{
    int dummy;
    char dummybuf[1];
    if (!error)
        error = &dummy;
    if (!errbuf || !errlen) {
        errbuf = dummybuf;
        errlen = sizeof dummybuf;
    }
    *error = CYA_OK;
    errbuf[0] = '\0';
    int fd = cya_open_regular(path);
    if (fd < 0) {
        *error = CYA_E_IO;
        snprintf(errbuf, errlen, "%s: %s", path,
                 errno == EISDIR ? "is a directory, not a capture" : errno == EINVAL ? "not a regular file" : strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        *error = CYA_E_IO;
        snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    /* a tracer writing the capture holds an exclusive lock on it (FORMAT.md section 1) */
    int live = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    size_t len = (size_t)st.st_size;
    const uint8_t *buf = NULL;
    if (len) {
        void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            *error = CYA_E_IO;
            snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
            close(fd);
            return NULL;
        }
        madvise(m, len, MADV_SEQUENTIAL);
        buf = m;
    }
    close(fd);
    cya_capture *c = calloc(1, sizeof *c);
    reader r = {c, NULL, 0, 0, 0, 0};
    size_t body = 0;
    if (!c) {
        *error = CYA_E_NOMEM;
        snprintf(errbuf, errlen, "out of memory");
    } else if (parse_header(c, buf ? buf : (const uint8_t *)"", len, &body, error, errbuf, errlen, path)) {
        c->status.file_bytes = len;
        c->status.live = live;
        read_body(&r, buf, len, body);
        if (!finish(&r)) {
            *error = CYA_E_NOMEM;
            snprintf(errbuf, errlen, "%s: out of memory while reading the capture", path);
        }
    }
    if (r.runs) {
        for (size_t i = 0; c && i < c->nthreads; i++) {
            free(r.runs[i].events);
            free(r.runs[i].batches);
        }
        free(r.runs);
    }
    if (buf)
        munmap((void *)buf, len);
    if (*error != CYA_OK) {
        cya_close(c);
        return NULL;
    }
    return c;
}

CYA_API void cya_close(cya_capture *c)
{
    if (!c)
        return;
    free((void *)c->header.python_version);
    free((void *)c->header.executable);
    if (c->argv)
        for (uint64_t i = 0; i < c->header.argc; i++)
            free(c->argv[i]);
    free(c->argv);
    free(c->events);
    for (size_t i = 0; i < c->nobjects; i++) {
        free((void *)c->objects[i].path);
        free((void *)c->objects[i].build_id);
        free((void *)c->objects[i].segments);
    }
    free(c->objects);
    for (size_t i = 0; i < c->nthreads; i++)
        free((void *)c->threads[i].name);
    free(c->threads);
    for (size_t i = 0; i < c->npyframes; i++) {
        free((void *)c->pyframes[i].function);
        free((void *)c->pyframes[i].file);
    }
    free(c->pyframes);
    for (size_t i = 0; i < c->nstacks; i++)
        free((void *)c->stacks[i].frames);
    free(c->stacks);
    for (size_t i = 0; i < c->nlosses; i++)
        free((void *)c->losses[i].reason);
    free(c->losses);
    for (size_t i = 0; i < c->ntakeovers; i++) {
        free((void *)c->takeovers[i].function);
        free((void *)c->takeovers[i].target);
    }
    free(c->takeovers);
    free(c->notes);
    cya_map_free(&c->object_index);
    cya_map_free(&c->thread_index);
    cya_map_free(&c->pyframe_index);
    cya_map_free(&c->stack_index);
    free(c->segrefs);
    free(c);
}

CYA_API const cya_header *cya_get_header(const cya_capture *c) { return &c->header; }
CYA_API const cya_status *cya_get_status(const cya_capture *c) { return &c->status; }

CYA_API const cya_event *cya_get_events(const cya_capture *c, size_t *count)
{
    *count = c->nevents;
    return c->events;
}

CYA_API const cya_object *cya_get_objects(const cya_capture *c, size_t *count)
{
    *count = c->nobjects;
    return c->objects;
}

CYA_API const cya_thread *cya_get_threads(const cya_capture *c, size_t *count)
{
    *count = c->nthreads;
    return c->threads;
}

CYA_API const cya_pyframe *cya_get_pyframes(const cya_capture *c, size_t *count)
{
    *count = c->npyframes;
    return c->pyframes;
}

CYA_API const cya_stack *cya_get_stacks(const cya_capture *c, size_t *count)
{
    *count = c->nstacks;
    return c->stacks;
}

CYA_API const cya_stack *cya_find_stack(const cya_capture *c, uint64_t id)
{
    uint32_t *slot = cya_map_get(&c->stack_index, id);
    return slot ? &c->stacks[*slot] : NULL;
}

CYA_API const cya_pyframe *cya_find_pyframe(const cya_capture *c, uint64_t id)
{
    uint32_t *slot = cya_map_get(&c->pyframe_index, id);
    return slot ? &c->pyframes[*slot] : NULL;
}

CYA_API const cya_loss *cya_get_losses(const cya_capture *c, size_t *count)
{
    *count = c->nlosses;
    return c->losses;
}

CYA_API const cya_takeover *cya_get_takeovers(const cya_capture *c, size_t *count)
{
    *count = c->ntakeovers;
    return c->takeovers;
}

/* Was object o mapped at load generation g? (FORMAT.md, "Load generations") */
static int loaded_at(const cya_object *o, uint64_t g)
{
    return o->load_generation <= g && (o->unload_generation == UINT64_MAX || o->unload_generation >= g);
}

/* Of the objects whose segments contain addr: the latest loaded at `generation` (any
 * generation when UINT64_MAX), else the latest loaded at all. Objects come in the order
 * they were seen, so a larger index is a later load. */
static const cya_object *find_object(const cya_capture *c, uint64_t addr, uint64_t generation)
{
    size_t lo = 0, hi = c->nsegrefs;
    while (lo < hi) { /* first segment starting after addr */
        size_t mid = (lo + hi) / 2;
        if (c->segrefs[mid].start <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    long best = -1, best_at = -1;
    /* segments of objects loaded at different times may overlap: look back as far as the
     * longest segment reaches */
    for (size_t i = lo; i-- > 0 && addr - c->segrefs[i].start < c->longest_segment;) {
        if (addr >= c->segrefs[i].end)
            continue;
        long object = (long)c->segrefs[i].object;
        if (object > best)
            best = object;
        if (object > best_at && (generation == UINT64_MAX || loaded_at(&c->objects[object], generation)))
            best_at = object;
    }
    if (best_at >= 0)
        return &c->objects[best_at];
    return best >= 0 ? &c->objects[best] : NULL;
}

CYA_API const cya_object *cya_find_object(const cya_capture *c, uint64_t addr)
{
    return find_object(c, addr, UINT64_MAX);
}

CYA_API const cya_object *cya_find_object_at(const cya_capture *c, uint64_t addr, uint64_t generation)
{
    return find_object(c, addr, generation);
}

CYA_API void cya_free(void *p) { free(p); }
