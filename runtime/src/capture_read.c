/* capture_read.c: the capture file reader (formats 1 to 3, runtime/FORMAT.md).
 *
 * Owns: checking the header (magic, version), walking the body's frames (skipping a
 * damaged one and resynchronising on the next frame magic), decoding records, reading
 * each definition once however often it is repeated, resolving ids once the whole file is
 * read, and saying what is missing: the frames skipped, the batches absent or repeated,
 * and the events recorded but not in the file (from batch ordinals, PROGRESS and STATS).
 *
 * Events are not kept: the first reading checks every batch and notes where it lies (one
 * cya_batch_ref per batch, per thread); a batch's events are decoded again from its frame
 * when they are streamed (cya_batch_load, for capture_merge.c). So memory grows with the
 * number of batches, definitions and threads, not with the number of events. The file is
 * mapped read-only for the first reading (pages behind it dropped as it goes) and kept open
 * for the second; everything handed out is copied into the capture.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <lz4frame.h>
#include <zstd.h>
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

/* Readable zero bytes after a decompressed frame, so that column varints need no bound
 * check per byte (a varint is ten bytes at most). */
#define FRAME_PADDING 16

/* A bounded cursor over bytes; `bad` is set on the first read past the end. */
typedef struct cursor {
    const uint8_t *p, *end;
    int bad;
} cursor;

static uint64_t get_varint_slow(cursor *c)
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

/* LEB128; the common cases (one byte, or ten bytes left to read) without a bound check
 * per byte. */
static inline uint64_t get_varint(cursor *c)
{
    const uint8_t *p = c->p;
    if (p < c->end && !(*p & 0x80)) {
        c->p = p + 1;
        return *p;
    }
    if (c->end - p < 10)
        return get_varint_slow(c);
    uint64_t v = 0;
    for (unsigned i = 0; i < 10; i++) {
        uint8_t b = p[i];
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            c->p = p + i + 1;
            return v;
        }
    }
    c->bad = 1; /* more than ten bytes */
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
    /* the frame being decoded: where it lies in the file, its decompressed records */
    uint64_t frame_pos, frame_len, nbatches_read;
    const uint8_t *frame_data;
    cya_event *scratch; /* one batch's events, checked and dropped (format 1) */
    size_t scratch_cap;
    uint32_t *scan_ids; /* a batch's stack ids as they change */
    size_t cap_scan_ids;
    /* stack ids used by events: a bitmap for small ids, a map for the others */
    uint64_t *used_bits;
    size_t used_words;
    cya_map used_big;
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

/* Room for n more events in *ev, capped by what `bytes` of input can hold (every event
 * takes at least `per_event` bytes). */
static int reserve_events(cya_event **ev, size_t len, size_t *cap, uint64_t n, size_t bytes, size_t per_event)
{
    uint64_t most = bytes / per_event;
    return cya_grow((void **)ev, cap, len + (n < most ? n : most), sizeof(cya_event));
}

/* The result of decoding a batch's events. */
enum { DECODE_BAD = 0, DECODE_OK = 1, DECODE_NOMEM = -1 };

static int push_event(cya_event **ev, size_t *len, size_t *cap, cya_event *e, uint64_t time, uint64_t address,
                      unsigned kind, uint64_t tid)
{
    e->time_ns = time;
    e->address = address;
    e->kind = (uint8_t)kind;
    e->thread_id = (uint32_t)tid;
    return CYA_PUSH(*ev, *len, *cap, *e);
}

/* Format 1: one row per event (kind, time delta in ns, address delta, size, stack). */
static int decode_events_v1(cursor *cur, cya_event **ev, size_t *len, size_t *cap, uint64_t tid, uint64_t t,
                            uint64_t n)
{
    if (!reserve_events(ev, *len, cap, n, (size_t)(cur->end - cur->p), 2))
        return DECODE_NOMEM;
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
            return DECODE_BAD;
        if (!push_event(ev, len, cap, &e, t, addr, kind, tid))
            return DECODE_NOMEM;
    }
    return DECODE_OK;
}

/* What the first reading keeps of a batch's events: nothing but these figures. */
typedef struct batch_scan {
    uint64_t stackless, max_time;
    uint32_t *ids; /* stack ids as they change, to be noted by the caller */
    size_t nids, cap_ids;
} batch_scan;

/* A varint of a column, read without a bound check: the frame buffer has FRAME_PADDING
 * readable bytes after its end, and the caller checks that no column was read past its
 * end. A varint longer than ten bytes sets *bad. */
static inline uint64_t column_varint(const uint8_t **pp, int *bad)
{
    const uint8_t *p = *pp;
    uint64_t b = *p++;
    if (!(b & 0x80)) {
        *pp = p;
        return b;
    }
    uint64_t v = b & 0x7f;
    for (unsigned shift = 7; shift < 70; shift += 7) {
        b = *p++;
        v |= (b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *pp = p;
            return v;
        }
    }
    *bad = 1;
    *pp = p;
    return 0;
}

static inline uint64_t column_svarint(const uint8_t **pp, int *bad)
{
    uint64_t a = column_varint(pp, bad);
    return (uint64_t)((int64_t)(a >> 1) ^ -(int64_t)(a & 1));
}

/* Format 4's address delta (FORMAT.md): bit 0 of the first byte says bytes (1) or 16-byte
 * units (0); the zigzag value is the first byte's bits 1-6, then (high bit set) a varint
 * of the rest. */
static inline uint64_t column_address_delta(const uint8_t **pp, int *bad)
{
    const uint8_t *p = *pp;
    uint8_t first = *p++;
    uint64_t z = (first >> 1) & 0x3f;
    if (first & 0x80) {
        uint64_t rest = column_varint(&p, bad);
        if (rest >> 58)
            *bad = 1;
        z |= rest << 6;
    }
    *pp = p;
    uint64_t v = (z >> 1) ^ -(z & 1);
    return (first & 1) ? v : v << 4;
}

/* Format 2: five columns (heads, times, addresses, sizes, stacks); every column must be
 * used up exactly. Stores the events on *ev, or (scan) only takes the figures. */
static inline __attribute__((always_inline)) int
decode_v2(cursor *cur, cya_event **ev, size_t *len, size_t *cap, batch_scan *scan, uint64_t tid, uint64_t t,
          uint64_t unit, uint64_t n, int aligned_deltas)
{
    uint64_t clen[NCOLS];
    clen[COL_HEAD] = n;
    for (int c = COL_TIME; c < NCOLS; c++)
        clen[c] = get_varint(cur);
    const uint8_t *p[NCOLS], *end[NCOLS];
    for (int c = 0; c < NCOLS; c++) {
        if (cur->bad || clen[c] > (uint64_t)(cur->end - cur->p))
            return DECODE_BAD;
        p[c] = cur->p;
        end[c] = cur->p + clen[c];
        cur->p += clen[c];
    }
    cya_event *out = NULL;
    if (!scan) {
        if (!cya_grow((void **)ev, cap, *len + (size_t)n, sizeof(cya_event)))
            return DECODE_NOMEM;
        out = *ev + *len;
    }
    const uint8_t *ph = p[COL_HEAD], *pt = p[COL_TIME], *pa = p[COL_ADDR], *ps = p[COL_SIZE], *pk = p[COL_STACK];
    const uint8_t *et = end[COL_TIME], *ea = end[COL_ADDR], *es = end[COL_SIZE], *ek = end[COL_STACK];
    uint64_t addr = 0, stack = UINT64_MAX, last_noted = 0;
    int bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t size = 0;
        uint32_t stack_id = 0;
        unsigned head = *ph++, kind = head & EV_KIND_MASK;
        if (head & EV_TIME)
            t += column_varint(&pt, &bad) * unit;
        addr += aligned_deltas ? column_address_delta(&pa, &bad) : column_svarint(&pa, &bad);
        if (is_alloc_kind(kind)) {
            size = column_varint(&ps, &bad);
            if (!(head & EV_SAME_STACK))
                stack = column_varint(&pk, &bad);
            else if (stack == UINT64_MAX) /* "the same stack" before any stack */
                return DECODE_BAD;
            stack_id = (uint32_t)stack;
        } else if (!is_free_kind(kind) || (head & EV_SAME_STACK)) {
            return DECODE_BAD;
        } else if (kind == CYA_MUNMAP) {
            size = column_varint(&ps, &bad);
        }
        if (bad | (pt > et) | (pa > ea) | (ps > es) | (pk > ek))
            return DECODE_BAD;
        if (scan) {
            if (t > scan->max_time)
                scan->max_time = t;
            scan->stackless += !stack_id && is_alloc_kind(kind) && addr;
            if (stack_id && stack_id != last_noted) {
                if (!CYA_PUSH(scan->ids, scan->nids, scan->cap_ids, stack_id))
                    return DECODE_NOMEM;
                last_noted = stack_id;
            }
        } else {
            out[i] = (cya_event){t, addr, size, stack_id, (uint32_t)tid, (uint8_t)kind, {0}};
        }
    }
    if (pt != et || pa != ea || ps != es || pk != ek)
        return DECODE_BAD;
    if (!scan)
        *len += (size_t)n;
    return DECODE_OK;
}

static int decode_events_v2(cursor *cur, cya_event **ev, size_t *len, size_t *cap, uint64_t tid, uint64_t t,
                            uint64_t unit, uint64_t n, int aligned_deltas)
{
    return decode_v2(cur, ev, len, cap, NULL, tid, t, unit, n, aligned_deltas);
}

/* How many varints a column holds, if it is a whole number of them each at most ten
 * bytes long; else UINT64_MAX. Reads eight bytes at a time: a varint ends at each byte
 * without the high bit. */
static uint64_t count_varints(const uint8_t *p, size_t len)
{
    uint64_t count = 0;
    unsigned run = 0; /* bytes with the high bit since the last varint's end */
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        uint64_t ends = ~w & 0x8080808080808080ULL; /* little-endian: byte k at bit 8k+7 */
        if (!ends) {
            run += 8;
            if (run >= 10)
                return UINT64_MAX;
            continue;
        }
        unsigned first = (unsigned)__builtin_ctzll(ends) / 8, last = (63u - (unsigned)__builtin_clzll(ends)) / 8;
        if (run + first >= 10)
            return UINT64_MAX;
        count += ((ends >> 7) * 0x0101010101010101ULL) >> 56; /* one per byte; runs inside a word are short */
        run = 7 - last;
    }
    for (; i < len; i++) {
        if (p[i] & 0x80) {
            if (++run >= 10)
                return UINT64_MAX;
        } else {
            count++;
            run = 0;
        }
    }
    return run ? UINT64_MAX : count;
}

/* The first reading of a format 2/3 batch: the same verdict and figures as decode_v2 with
 * a scan, faster: the heads are checked and counted, the address and size columns only
 * counted, the time and stack columns decoded (the stack column's ids are noted). A batch
 * that may hold an allocation without a stack is decoded in full (its addresses matter). */
static int scan_events_v2(cursor *cur, batch_scan *scan, uint64_t t, uint64_t unit, uint64_t n, int aligned_deltas)
{
    cursor save = *cur;
    uint64_t clen[NCOLS];
    clen[COL_HEAD] = n;
    for (int c = COL_TIME; c < NCOLS; c++)
        clen[c] = get_varint(cur);
    const uint8_t *col[NCOLS];
    for (int c = 0; c < NCOLS; c++) {
        if (cur->bad || clen[c] > (uint64_t)(cur->end - cur->p))
            return DECODE_BAD;
        col[c] = cur->p;
        cur->p += clen[c];
    }
    uint64_t ntimes = 0, nsizes = 0, nstacks = 0;
    int any_stack = 0, first_timed = n > 0 && (col[COL_HEAD][0] & EV_TIME);
    for (uint64_t i = 0; i < n; i++) {
        unsigned head = col[COL_HEAD][i], kind = head & EV_KIND_MASK;
        ntimes += (head & EV_TIME) != 0;
        if (is_alloc_kind(kind)) {
            nsizes++;
            if (!(head & EV_SAME_STACK)) {
                nstacks++;
                any_stack = 1;
            } else if (!any_stack) {
                return DECODE_BAD;
            }
        } else if (!is_free_kind(kind) || (head & EV_SAME_STACK)) {
            return DECODE_BAD;
        } else if (kind == CYA_MUNMAP) {
            nsizes++;
        }
    }
    if (count_varints(col[COL_ADDR], (size_t)clen[COL_ADDR]) != n ||
        count_varints(col[COL_SIZE], (size_t)clen[COL_SIZE]) != nsizes ||
        count_varints(col[COL_TIME], (size_t)clen[COL_TIME]) != ntimes ||
        count_varints(col[COL_STACK], (size_t)clen[COL_STACK]) != nstacks)
        return DECODE_BAD;
    /* the stack ids (an id 0, no stack: decode in full, its addresses matter) */
    const uint8_t *p = col[COL_STACK];
    int bad = 0;
    uint64_t last_noted = 0;
    size_t noted = scan->nids;
    for (uint64_t i = 0; i < nstacks; i++) {
        uint32_t id = (uint32_t)column_varint(&p, &bad);
        if (!id) {
            scan->nids = noted;
            *cur = save;
            return decode_v2(cur, NULL, NULL, NULL, scan, 0, t, unit, n, aligned_deltas);
        }
        if (id != last_noted) {
            if (!CYA_PUSH(scan->ids, scan->nids, scan->cap_ids, id))
                return DECODE_NOMEM;
            last_noted = id;
        }
    }
    /* times: every event's time is t0 plus the deltas of the timed events up to it */
    p = col[COL_TIME];
    uint64_t most = 0;
    if (n && !first_timed)
        most = t;
    for (uint64_t i = 0; i < ntimes; i++) {
        t += column_varint(&p, &bad) * unit;
        if (t > most)
            most = t;
    }
    if (n && most > scan->max_time)
        scan->max_time = most;
    return bad ? DECODE_BAD : DECODE_OK;
}

/* A BATCH record's fields (after the type byte). */
typedef struct batch_head {
    uint64_t tid, seq, first, t, unit, n;
} batch_head;

static int read_batch_head(cursor *cur, uint32_t version, batch_head *h)
{
    int v2 = version >= 2;
    h->tid = get_varint(cur);
    h->seq = v2 ? get_varint(cur) : 0;
    h->first = version >= 3 ? get_varint(cur) : 0;
    h->t = get_varint(cur);
    h->unit = v2 ? get_varint(cur) : 1;
    h->n = get_varint(cur);
    return !cur->bad && h->unit != 0;
}

/* Decode a batch's events (after its head) onto *ev. */
static int decode_batch_events(cursor *cur, uint32_t version, const batch_head *h, cya_event **ev, size_t *len,
                               size_t *cap)
{
    return version >= 2 ? decode_events_v2(cur, ev, len, cap, h->tid, h->t, h->unit, h->n, version >= 4)
                        : decode_events_v1(cur, ev, len, cap, h->tid, h->t, h->n);
}

#define USED_BITS_MAX (1u << 27) /* stack ids below this are noted in a bitmap (16 MiB at most) */

/* Note that an event used stack id `id`. 0 when out of memory. */
static int note_used_stack(reader *r, uint32_t id)
{
    if (id < USED_BITS_MAX) {
        size_t word = id / 64;
        if (word >= r->used_words) {
            size_t n = r->used_words ? r->used_words : 64;
            while (n <= word)
                n *= 2;
            uint64_t *bits = realloc(r->used_bits, n * sizeof *bits);
            if (!bits)
                return 0;
            memset(bits + r->used_words, 0, (n - r->used_words) * sizeof *bits);
            r->used_bits = bits;
            r->used_words = n;
        }
        r->used_bits[word] |= 1ull << (id % 64);
        return 1;
    }
    return cya_map_get(&r->used_big, id) || cya_map_put(&r->used_big, id, 1);
}

/* Check a batch and note where it lies; its events are dropped (read again when streamed). */
static int decode_batch(reader *r, cursor *cur)
{
    uint32_t version = r->cap->header.version;
    uint64_t offset = (uint64_t)(cur->p - r->frame_data);
    batch_head h;
    if (!read_batch_head(cur, version, &h))
        return 0;
    long slot = thread_slot(r, h.tid);
    if (slot < 0) {
        r->out_of_memory = 1;
        return 0;
    }
    batch_scan scan = {0, 0, r->scan_ids, 0, r->cap_scan_ids};
    size_t n = 0;
    int got;
    if (version >= 2) { /* only the figures: the events are decoded again when streamed */
        got = scan_events_v2(cur, &scan, h.t, h.unit, h.n, version >= 4);
        r->scan_ids = scan.ids;
        r->cap_scan_ids = scan.cap_ids;
        n = (size_t)h.n;
    } else {
        got = decode_batch_events(cur, version, &h, &r->scratch, &n, &r->scratch_cap);
        for (size_t i = 0; got == DECODE_OK && i < n; i++) {
            const cya_event *e = &r->scratch[i];
            if (e->time_ns > scan.max_time)
                scan.max_time = e->time_ns;
            scan.stackless += !e->stack_id && e->kind < CYA_FREE && e->address;
            if (e->stack_id && (!scan.nids || scan.ids[scan.nids - 1] != e->stack_id)) {
                if (!CYA_PUSH(scan.ids, scan.nids, scan.cap_ids, e->stack_id))
                    got = DECODE_NOMEM;
                r->scan_ids = scan.ids;
                r->cap_scan_ids = scan.cap_ids;
            }
        }
    }
    if (got != DECODE_OK) { /* a malformed batch is dropped whole */
        if (got == DECODE_NOMEM)
            r->out_of_memory = 1;
        return 0;
    }
    cya_batch_ref ref = {version >= 2 ? h.seq : h.t, h.first, r->frame_pos, r->frame_len, offset, n,
                         scan.stackless, scan.max_time, r->nbatches_read++};
    for (size_t i = 0; i < scan.nids; i++)
        if (!note_used_stack(r, scan.ids[i])) {
            r->out_of_memory = 1;
            return 0;
        }
    cya_run *rn = &r->runs[slot];
    if (!CYA_PUSH(rn->batches, rn->nbatches, rn->cap_batches, ref)) {
        r->out_of_memory = 1;
        return 0;
    }
    rn->len += n;
    return 1;
}

/* How decompressing one frame ended. */
enum { INFLATE_DONE, INFLATE_CUT, INFLATE_DAMAGED, INFLATE_NO_MEMORY };

/* The decompressors of both frame kinds: zstd frames (format 6 on), LZ4 frames (before). */
typedef struct inflater {
    LZ4F_dctx *lz4;
    ZSTD_DCtx *zstd;
} inflater;

static int inflater_init(inflater *z)
{
    z->zstd = ZSTD_createDCtx();
    if (!z->zstd || LZ4F_isError(LZ4F_createDecompressionContext(&z->lz4, LZ4F_VERSION))) {
        z->lz4 = NULL;
        ZSTD_freeDCtx(z->zstd);
        z->zstd = NULL;
        return 0;
    }
    return 1;
}

static void inflater_free(inflater *z)
{
    if (z->lz4)
        LZ4F_freeDecompressionContext(z->lz4);
    ZSTD_freeDCtx(z->zstd);
    z->lz4 = NULL;
    z->zstd = NULL;
}

static int has_magic(const uint8_t *p, size_t avail, uint32_t magic)
{
    return avail >= 4 && ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24) == magic;
}

/* Decompress the frame (zstd or LZ4, by its magic) at `src` (at most `avail` bytes) into
 * *out (grown as needed): INFLATE_DONE (the whole frame: *consumed bytes read, *produced
 * written), INFLATE_CUT (the bytes end inside the frame), INFLATE_DAMAGED (*error names
 * the library's complaint; the content checksum is checked) or INFLATE_NO_MEMORY. */
static int inflate_frame(inflater *z, const uint8_t *src, size_t avail, uint8_t **out, size_t *out_cap,
                         size_t *consumed, size_t *produced, const char **error) {
    size_t in_off = 0, out_len = 0;
    int state;
    int zstd = has_magic(src, avail, ZSTD_FRAME_MAGIC);
    if (zstd)
        ZSTD_DCtx_reset(z->zstd, ZSTD_reset_session_only);
    else
        LZ4F_resetDecompressionContext(z->lz4);
    for (;;) {
        if (*out_cap - out_len < (1u << 16) && !cya_grow((void **)out, out_cap, out_len + (1u << 16), 1)) {
            state = INFLATE_NO_MEMORY;
            break;
        }
        size_t dsz = *out_cap - out_len, ssz = avail - in_off, ret;
        if (zstd) {
            ZSTD_outBuffer o = {*out + out_len, dsz, 0};
            ZSTD_inBuffer i = {src + in_off, ssz, 0};
            ret = ZSTD_decompressStream(z->zstd, &o, &i);
            if (ZSTD_isError(ret)) {
                *error = ZSTD_getErrorName(ret);
                state = INFLATE_DAMAGED;
                break;
            }
            dsz = o.pos;
            ssz = i.pos;
        } else {
            ret = LZ4F_decompress(z->lz4, *out + out_len, &dsz, src + in_off, &ssz, NULL);
            if (LZ4F_isError(ret)) {
                *error = LZ4F_getErrorName(ret);
                state = INFLATE_DAMAGED;
                break;
            }
        }
        in_off += ssz;
        out_len += dsz;
        if (ret == 0) {
            state = INFLATE_DONE;
            break;
        }
        if (in_off >= avail && dsz == 0) {
            state = INFLATE_CUT;
            break;
        }
    }
    *consumed = in_off;
    *produced = out_len;
    return state;
}

/* ---- the second reading: one batch's events, decoded again from its frame ---------- */

struct cya_batch_loader {
    const cya_capture *c;
    inflater z;
    uint8_t *in, *out;
    size_t in_cap, out_cap, out_len;
    uint64_t frame_pos; /* the frame in `out`; UINT64_MAX: none */
};

cya_batch_loader *cya_batch_loader_new(const cya_capture *c)
{
    cya_batch_loader *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->c = c;
    l->frame_pos = UINT64_MAX;
    if (!inflater_init(&l->z)) {
        free(l);
        return NULL;
    }
    return l;
}

void cya_batch_loader_free(cya_batch_loader *l)
{
    if (!l)
        return;
    inflater_free(&l->z);
    free(l->in);
    free(l->out);
    free(l);
}

/* Read and decompress the frame at [pos, pos + len) into l->out: NULL, or what failed. */
static const char *load_frame(cya_batch_loader *l, uint64_t pos, uint64_t len)
{
    if (l->frame_pos == pos)
        return NULL;
    l->frame_pos = UINT64_MAX;
    if (!cya_grow((void **)&l->in, &l->in_cap, len ? len : 1, 1))
        return "out of memory";
    for (uint64_t got = 0; got < len;) {
        ssize_t n = pread(l->c->fd, l->in + got, len - got, (off_t)(pos + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? strerror(errno) : "the file is shorter than when it was read";
        got += (uint64_t)n;
    }
    size_t in_off = 0;
    const char *error = NULL;
    switch (inflate_frame(&l->z, l->in, len, &l->out, &l->out_cap, &in_off, &l->out_len, &error)) {
    case INFLATE_NO_MEMORY:
        return "out of memory";
    case INFLATE_DAMAGED:
        return "the frame no longer decodes (the file changed since it was read)";
    case INFLATE_CUT:
        return "the frame is cut short (the file changed since it was read)";
    }
    if (!cya_grow((void **)&l->out, &l->out_cap, l->out_len + FRAME_PADDING, 1))
        return "out of memory";
    memset(l->out + l->out_len, 0, FRAME_PADDING);
    l->frame_pos = pos;
    return NULL;
}

int cya_batch_load(cya_batch_loader *l, const cya_batch_ref *b, uint64_t thread_id, cya_event **events,
                   size_t *len, size_t *cap, char *errbuf, size_t errlen)
{
    const char *why = load_frame(l, b->frame_pos, b->frame_len);
    if (!why) {
        why = "the batch no longer decodes (the file changed since it was read)";
        if (b->offset >= 1 && b->offset <= l->out_len && l->out[b->offset - 1] == REC_BATCH) {
            cursor cur = {l->out + b->offset, l->out + l->out_len, 0};
            batch_head h;
            size_t before = *len;
            uint32_t version = l->c->header.version;
            if (read_batch_head(&cur, version, &h) && h.tid == thread_id) {
                int got = decode_batch_events(&cur, version, &h, events, len, cap);
                if (got == DECODE_NOMEM)
                    why = "out of memory";
                else if (got == DECODE_OK && *len - before == b->len)
                    return 1;
            }
            *len = before;
        }
    }
    snprintf(errbuf, errlen, "reading the events of the frame at byte %llu again: %s",
             (unsigned long long)b->frame_pos, why);
    return 0;
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
    case REC_EXEC: {
        if (c->header.version < 5)
            break;
        uint64_t time = get_varint(cur);
        const char *what = get_string(cur, NULL);
        if (cur->bad) {
            free((void *)what);
            return 0;
        }
        r->repeats += c->status.exec_seen;
        free(c->exec_what);
        c->exec_what = (char *)what;
        c->status.exec_seen = 1;
        c->status.exec_time_ns = time;
        return 1;
    }
    case REC_EXEC_FAILED: {
        if (c->header.version < 5)
            break;
        (void)get_varint(cur); /* time: the exec's, as far as the capture goes */
        (void)get_varint(cur); /* errno */
        const char *reason = get_string(cur, NULL);
        if (cur->bad) {
            free((void *)reason);
            return 0;
        }
        free(c->exec_failure);
        c->exec_failure = (char *)reason;
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
    uint64_t batches = 0;
    r->repeats = 0;
    r->frame_data = data;
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
        batches += *start == REC_BATCH;
    }
    /* Definitions read before, with batches: the definitions a thread wrote again for its
     * batches (the first definer had not flushed yet); a repeated batch is found and said
     * when the batches are ordered. Without batches: a repeated frame, said here. */
    if (r->repeats && batches == 0)
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

/* The magic of the capture's frames: zstd from format 6 on, LZ4 before. */
static uint32_t frame_magic(const cya_capture *c)
{
    return c->header.version >= 6 ? ZSTD_FRAME_MAGIC : LZ4_FRAME_MAGIC;
}

/* The offset of the next frame magic (`frame_magic`) at or after `from`, or len. */
static size_t next_magic(const uint8_t *buf, size_t len, size_t from, uint32_t frame_magic)
{
    const uint8_t magic[4] = {frame_magic & 0xff, (frame_magic >> 8) & 0xff, (frame_magic >> 16) & 0xff,
                              frame_magic >> 24};
    if (from >= len)
        return len;
    const uint8_t *hit = memmem(buf + from, len - from, magic, sizeof magic);
    return hit ? (size_t)(hit - buf) : len;
}

#define DROP_BEHIND (16u << 20) /* bytes read between two drops of the pages behind */

/* Walk the LZ4 frames of the body. A frame that cannot be decoded is skipped: reading goes
 * on at the next frame magic after its start (FORMAT.md section 2). */
static void read_body(reader *r, const uint8_t *buf, size_t len, size_t pos)
{
    cya_capture *c = r->cap;
    inflater z;
    if (!inflater_init(&z)) {
        set_problem(c, "cannot create the decompression contexts");
        c->status.truncated = 1;
        return;
    }
    uint8_t *out = NULL;
    size_t out_cap = 0, dropped = 0;
    c->status.recovered_bytes = pos;
    while (pos < len && !r->out_of_memory) {
        size_t start = next_magic(buf, len, pos, frame_magic(c));
        if (start != pos) { /* bytes that are no frame: damage, or a frame cut at its magic */
            if (start == len && c->status.complete) {
                set_problem(c, "%zu bytes after the END record were ignored", len - pos);
                add_note(c, "%zu bytes after the end of the capture were ignored", len - pos);
                break;
            }
            if (start == len && len - pos < 4) {
                set_problem(c, "the file ends inside the frame starting at byte %zu", pos);
                add_note(c, "the file ends inside the frame starting at byte %zu (%zu bytes)", pos, len - pos);
                c->status.truncated = 1;
                break;
            }
            set_problem(c, "%zu bytes at byte %zu are not a frame", start - pos, pos);
            add_note(c, "%zu bytes at byte %zu are not a frame: skipped", start - pos, pos);
            c->status.damaged_frames++;
            pos = start;
            continue;
        }
        size_t in_off = 0, out_len = 0;
        const char *error = NULL;
        int state = inflate_frame(&z, buf + pos, len - pos, &out, &out_cap, &in_off, &out_len, &error);
        if (state == INFLATE_NO_MEMORY) {
            set_problem(c, "out of memory while decompressing");
            r->out_of_memory = 1;
            break;
        }
        int done = state == INFLATE_DONE, cut = state == INFLATE_CUT;
        if (!done) {
            size_t next = next_magic(buf, len, pos + 1, frame_magic(c));
            if (cut && next == len) { /* the last frame, cut short: the writer was stopped */
                set_problem(c, "the file ends inside the frame starting at byte %zu", pos);
                add_note(c, "the file ends inside the frame starting at byte %zu (%zu bytes)", pos, len - pos);
                c->status.truncated = 1;
                break;
            }
            set_problem(c, "the frame starting at byte %zu is damaged (%s)", pos, error ? error : "cut short");
            add_note(c, "the frame at byte %zu is damaged (%s): skipped", pos, error ? error : "cut short");
            c->status.damaged_frames++;
            pos = next;
            continue;
        }
        c->status.frames++;
        r->frame_pos = pos;
        r->frame_len = in_off;
        if (!cya_grow((void **)&out, &out_cap, out_len + FRAME_PADDING, 1)) {
            set_problem(c, "out of memory while decompressing");
            r->out_of_memory = 1;
            break;
        }
        memset(out + out_len, 0, FRAME_PADDING);
        if (!decode_frame(r, out, out_len, pos))
            c->status.damaged_frames++;
        pos += in_off;
        c->status.recovered_bytes += in_off;
        if (pos - dropped >= DROP_BEHIND) { /* read once: its pages need not stay mapped */
            size_t upto = pos & ~(size_t)4095;
            madvise((void *)(buf + dropped), upto - dropped, MADV_DONTNEED);
            dropped = upto;
        }
    }
    free(out);
    inflater_free(&z);
    if (!c->status.complete) {
        c->status.truncated = 1;
        if (c->status.live)
            set_problem(c, "no END record: the capture is still being written by a running process");
        else
            set_problem(c, "no END record: the traced process did not finish writing (killed?)");
    }
    if (c->status.damaged_frames)
        c->status.truncated = 1;
    if (c->exec_failure && c->exec_failure[0]) { /* the program went on, untraced */
        c->status.truncated = 1;
        set_problem(c, "tracing ended at an exec of %s that failed (%s): the program went on untraced",
                    c->exec_what ? c->exec_what : "?", c->exec_failure);
    }
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

static int index_segments(cya_capture *c);

static int finish(reader *r)
{
    cya_capture *c = r->cap;
    if (!check_runs(r))
        return 0;
    /* the events' count and end, and the allocations without a stack (format 3: the
     * tracer's stack table was full, it always has at least the caller's address
     * otherwise), from the batches kept */
    uint64_t stackless = 0, last_time = 0;
    c->nevents = 0;
    for (size_t i = 0; i < c->nthreads; i++) {
        const cya_run *rn = &r->runs[i];
        c->threads[i].nevents = rn->len;
        c->nevents += rn->len;
        for (size_t j = 0; j < rn->nbatches; j++) {
            stackless += rn->batches[j].stackless;
            if (rn->batches[j].len && rn->batches[j].max_time > last_time)
                last_time = rn->batches[j].max_time;
        }
    }
    if (!c->status.complete && c->nevents)
        c->status.end_time_ns = last_time;
    else if (c->status.complete && c->nevents && last_time > c->status.end_time_ns)
        c->status.end_time_ns = last_time;
    /* ids used but never defined */
    cya_map seen = {0};
    for (size_t w = 0; w < r->used_words; w++)
        for (uint64_t bits = r->used_bits[w]; bits; bits &= bits - 1) {
            uint64_t id = w * 64 + (uint64_t)__builtin_ctzll(bits);
            c->status.missing_stacks += !cya_map_get(&c->stack_index, id);
        }
    for (size_t j = 0; j < r->used_big.cap; j++)
        if (r->used_big.keys[j] != CYA_MAP_EMPTY)
            c->status.missing_stacks += !cya_map_get(&c->stack_index, r->used_big.keys[j]);
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
    if (!index_segments(c))
        return 0;
    c->status.problem = c->problem;
    c->status.notes = c->notes ? c->notes : "";
    c->status.exec_what = c->exec_what ? c->exec_what : "";
    c->status.exec_failure = c->exec_failure ? c->exec_failure : "";
    return 1;
}

/* The objects' segments sorted by start, for address lookups (again when objects were
 * added). 0 when out of memory. */
static int index_segments(cya_capture *c)
{
    size_t nseg = 0;
    for (size_t i = 0; i < c->nobjects; i++)
        nseg += c->objects[i].nsegments;
    free(c->segrefs);
    c->nsegrefs = 0;
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
    cya_capture *c = calloc(1, sizeof *c);
    if (c)
        c->fd = fd;
    else
        close(fd);
    reader r;
    memset(&r, 0, sizeof r);
    r.cap = c;
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
    if (c) {
        c->runs = r.runs; /* kept: the batches are read again when events are streamed */
    } else if (r.runs) {
        free(r.runs);
    }
    free(r.scratch);
    free(r.scan_ids);
    free(r.used_bits);
    cya_map_free(&r.used_big);
    if (buf)
        munmap((void *)buf, len);
    if (*error != CYA_OK) {
        cya_close(c);
        return NULL;
    }
    return c;
}

/* ---- follow mode: a capture still being written, read as it grows ------------------- */

#define FOLLOW_CHUNK (64u << 20) /* the most bytes read into memory at once */

/* The reader's state kept between two reads, and the bytes read but not yet decoded. */
typedef struct follower_state {
    reader r;
    inflater z;
    uint8_t *in, *out;
    size_t in_cap, out_cap;
    uint64_t nobjects_indexed;
} follower_state;

cya_capture *cya_capture_follow(const char *path, int *error, char *errbuf, size_t errlen)
{
    *error = CYA_OK;
    int fd = cya_open_regular(path);
    if (fd < 0) {
        *error = CYA_E_IO;
        snprintf(errbuf, errlen, "%s: %s", path,
                 errno == EISDIR ? "is a directory, not a capture" : errno == EINVAL ? "not a regular file" : strerror(errno));
        return NULL;
    }
    uint8_t head[1 << 16];
    ssize_t n = pread(fd, head, sizeof head, 0);
    if (n < 0) {
        *error = CYA_E_IO;
        snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    cya_capture *c = calloc(1, sizeof *c);
    follower_state *f = calloc(1, sizeof *f);
    if (!c || !f || !inflater_init(&f->z)) {
        *error = CYA_E_NOMEM;
        snprintf(errbuf, errlen, "out of memory");
        free(f);
        free(c);
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->follow = f;
    f->r.cap = c;
    size_t body = 0;
    if (!parse_header(c, head, (size_t)n, &body, error, errbuf, errlen, path)) {
        cya_close(c);
        return NULL;
    }
    c->follow_pos = body;
    c->status.recovered_bytes = body;
    c->status.problem = c->problem;
    c->status.notes = "";
    c->status.exec_what = c->status.exec_failure = "";
    return c;
}

/* Decode the complete frames of buf (file bytes [base, base + len)); `more`: the file goes
 * on after buf. Returns the bytes used up (a frame not complete in buf is left for later). */
static size_t follow_frames(follower_state *f, const uint8_t *buf, size_t len, uint64_t base, int more)
{
    reader *r = &f->r;
    cya_capture *c = r->cap;
    size_t pos = 0;
    while (pos < len && !r->out_of_memory) {
        if (c->status.complete && !has_magic(buf + pos, len - pos, frame_magic(c)))
            break; /* (after END only a frame may come: EXEC_FAILED's) */
        size_t start = next_magic(buf, len, pos, frame_magic(c));
        if (start != pos) { /* bytes that are no frame: damage, or a magic not yet whole */
            size_t skip = start == len ? (len - pos > 3 ? len - 3 : pos) : start;
            if (skip == pos)
                break;
            set_problem(c, "%zu bytes at byte %llu are not a frame", skip - pos, (unsigned long long)(base + pos));
            add_note(c, "%zu bytes at byte %llu are not a frame: skipped", skip - pos, (unsigned long long)(base + pos));
            c->status.damaged_frames++;
            c->status.truncated = 1;
            pos = skip;
            continue;
        }
        size_t in_off = 0, out_len = 0;
        const char *error = NULL;
        int state = inflate_frame(&f->z, buf + pos, len - pos, &f->out, &f->out_cap, &in_off, &out_len, &error);
        if (state == INFLATE_NO_MEMORY) {
            set_problem(c, "out of memory while decompressing");
            r->out_of_memory = 1;
            break;
        }
        int done = state == INFLATE_DONE, cut = state == INFLATE_CUT;
        if (cut) /* not complete yet: the writer is still writing it (or more is to be read) */
            break;
        if (!done) {
            size_t next = next_magic(buf, len, pos + 1, frame_magic(c));
            if (next == len && !more)
                next = len > pos + 4 ? len - 3 : pos + 1;
            set_problem(c, "the frame starting at byte %llu is damaged (%s)", (unsigned long long)(base + pos),
                        error ? error : "cut short");
            add_note(c, "the frame at byte %llu is damaged (%s): skipped", (unsigned long long)(base + pos),
                     error ? error : "cut short");
            c->status.damaged_frames++;
            c->status.truncated = 1;
            pos = next;
            continue;
        }
        c->status.frames++;
        r->frame_pos = base + pos;
        r->frame_len = in_off;
        if (!cya_grow((void **)&f->out, &f->out_cap, out_len + FRAME_PADDING, 1)) {
            set_problem(c, "out of memory while decompressing");
            r->out_of_memory = 1;
            break;
        }
        memset(f->out + out_len, 0, FRAME_PADDING);
        if (!decode_frame(r, f->out, out_len, (size_t)(base + pos))) {
            c->status.damaged_frames++;
            c->status.truncated = 1;
        }
        pos += in_off;
        c->status.recovered_bytes += in_off;
    }
    return pos;
}

int cya_capture_follow_read(cya_capture *c, uint64_t *grew, char *errbuf, size_t errlen)
{
    follower_state *f = c->follow;
    *grew = 0;
    struct stat st;
    if (fstat(c->fd, &st) < 0) {
        snprintf(errbuf, errlen, "%s", strerror(errno));
        return 0;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < c->follow_pos) {
        snprintf(errbuf, errlen, "the capture shrank to %llu bytes, below the %llu already read (it was replaced?)",
                 (unsigned long long)size, (unsigned long long)c->follow_pos);
        return 0;
    }
    c->status.file_bytes = size;
    /* a writer holds an exclusive lock while it writes (FORMAT.md section 1) */
    if (flock(c->fd, LOCK_SH | LOCK_NB) == 0) {
        c->status.live = 0;
        (void)flock(c->fd, LOCK_UN);
    } else {
        c->status.live = errno == EWOULDBLOCK;
    }
    while (c->follow_pos < size && !c->status.complete && !f->r.out_of_memory) {
        uint64_t want = size - c->follow_pos;
        if (want > FOLLOW_CHUNK)
            want = FOLLOW_CHUNK;
        if (!cya_grow((void **)&f->in, &f->in_cap, (size_t)want, 1)) {
            snprintf(errbuf, errlen, "out of memory");
            return 0;
        }
        size_t got = 0;
        while (got < want) {
            ssize_t n = pread(c->fd, f->in + got, (size_t)(want - got), (off_t)(c->follow_pos + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                snprintf(errbuf, errlen, "%s", strerror(errno));
                return 0;
            }
            if (n == 0)
                break;
            got += (size_t)n;
        }
        int more = c->follow_pos + got < size;
        size_t used = follow_frames(f, f->in, got, c->follow_pos, more);
        c->follow_pos += used;
        *grew += used;
        if (!used && (!more || got < want))
            break; /* a frame still being written */
        if (!used) { /* one frame larger than a chunk: read it whole */
            if (want >= size - c->follow_pos)
                break;
            snprintf(errbuf, errlen, "a frame at byte %llu is larger than %u MiB", (unsigned long long)c->follow_pos,
                     FOLLOW_CHUNK >> 20);
            return 0;
        }
    }
    if (f->r.out_of_memory) {
        snprintf(errbuf, errlen, "out of memory while reading the capture");
        return 0;
    }
    c->runs = f->r.runs;
    for (size_t i = 0; i < c->nthreads; i++) {
        if (!c->threads[i].name && !(c->threads[i].name = strdup(""))) {
            snprintf(errbuf, errlen, "out of memory");
            return 0;
        }
        c->threads[i].nevents = f->r.runs[i].len;
    }
    if (c->nobjects != f->nobjects_indexed) {
        if (!index_segments(c)) {
            snprintf(errbuf, errlen, "out of memory");
            return 0;
        }
        f->nobjects_indexed = c->nobjects;
    }
    c->status.problem = c->problem;
    c->status.notes = c->notes ? c->notes : "";
    c->status.exec_what = c->exec_what ? c->exec_what : "";
    c->status.exec_failure = c->exec_failure ? c->exec_failure : "";
    return 1;
}

static void follow_free(cya_capture *c)
{
    follower_state *f = c->follow;
    if (!f)
        return;
    if (!c->runs)
        c->runs = f->r.runs;
    free(f->r.scratch);
    free(f->r.scan_ids);
    free(f->r.used_bits);
    cya_map_free(&f->r.used_big);
    inflater_free(&f->z);
    free(f->in);
    free(f->out);
    free(f);
    c->follow = NULL;
}

CYA_API void cya_close(cya_capture *c)
{
    if (!c)
        return;
    follow_free(c);
    free((void *)c->header.python_version);
    free((void *)c->header.executable);
    if (c->argv)
        for (uint64_t i = 0; i < c->header.argc; i++)
            free(c->argv[i]);
    free(c->argv);
    free(c->events);
    if (c->runs)
        for (size_t i = 0; i < c->nthreads; i++)
            free(c->runs[i].batches);
    free(c->runs);
    if (c->fd >= 0)
        close(c->fd);
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
    free(c->exec_what);
    free(c->exec_failure);
    cya_map_free(&c->object_index);
    cya_map_free(&c->thread_index);
    cya_map_free(&c->pyframe_index);
    cya_map_free(&c->stack_index);
    free(c->segrefs);
    free(c);
}

CYA_API const cya_header *cya_get_header(const cya_capture *c) { return &c->header; }
CYA_API const cya_status *cya_get_status(const cya_capture *c) { return &c->status; }

typedef struct event_sink {
    cya_event *events;
    size_t len, cap;
} event_sink;

static int sink_events(void *ctx, const cya_event *events, size_t n)
{
    event_sink *s = ctx;
    if (!cya_grow((void **)&s->events, &s->cap, s->len + n, sizeof *s->events))
        return 0;
    memcpy(s->events + s->len, events, n * sizeof *events);
    s->len += n;
    return 1;
}

CYA_API size_t cya_count_events(const cya_capture *c) { return c->nevents; }

CYA_API uint64_t cya_order_conflicts(const cya_capture *c, uint64_t *first_ns)
{
    if (first_ns)
        *first_ns = c->first_order_conflict_ns;
    return c->order_conflicts;
}

CYA_API const cya_event *cya_get_events(const cya_capture *cc, size_t *count)
{
    cya_capture *c = (cya_capture *)cc; /* the events are made on first use */
    if (!c->events_made) {
        event_sink sink = {NULL, 0, 0};
        char err[256];
        if (!cya_grow((void **)&sink.events, &sink.cap, c->nevents ? c->nevents : 1, sizeof *sink.events) ||
            !cya_merge_stream(c, sink_events, &sink, err, sizeof err)) {
            free(sink.events);
            *count = 0;
            return NULL;
        }
        c->events = sink.events;
        c->events_made = 1;
    }
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
