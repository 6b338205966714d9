/* capture_format.h: the numbers of the capture file format (FORMAT.md), shared by the
 * writer (trace_*.c) and the reader (capture_read.c). */
#ifndef CAPTURE_FORMAT_H
#define CAPTURE_FORMAT_H

#define CAPTURE_FORMAT_VERSION 6

/* Header: how event times were taken (FORMAT.md section 1). */
enum { CLOCK_KIND_EXACT = 0, CLOCK_KIND_TICKING = 1 };

/* Record types (FORMAT.md section 3). */
enum {
    REC_OBJECT = 0x01,
    REC_UNLOAD = 0x02,
    REC_PYFRAME = 0x03,
    REC_STACK = 0x04,
    REC_THREAD = 0x05,
    REC_PROGRESS = 0x06, /* format 3 */
    REC_LOSS = 0x07,     /* format 3 */
    REC_TAKEOVER = 0x08, /* format 3 */
    REC_EXEC = 0x09,        /* format 5 */
    REC_EXEC_FAILED = 0x0A, /* format 5 */
    REC_BATCH = 0x10,
    REC_STATS = 0x7E,
    REC_END = 0x7F,
};

/* What a TAKEOVER record is about. */
enum { TAKEOVER_GOT_SLOT = 0, TAKEOVER_PYMEM = 1 };

/* A BATCH: its columns, in file order ... */
enum { COL_HEAD, COL_TIME, COL_ADDR, COL_SIZE, COL_STACK, NCOLS };

/* ... and an event's head byte: the kind in the low 6 bits, then flags. */
#define EV_KIND_MASK 0x3Fu
#define EV_TIME 0x40u       /* a time delta (in the batch's unit) follows */
#define EV_SAME_STACK 0x80u /* an allocation with the previous allocation's stack id */

/* Every frame starts with these four bytes, little-endian: zstd frames (format 6 on) and
 * LZ4 frames (formats 1 to 5). The reader looks for them to resynchronise after a damaged
 * frame. */
#define ZSTD_FRAME_MAGIC 0xFD2FB528u
#define LZ4_FRAME_MAGIC 0x184D2204u

#endif
