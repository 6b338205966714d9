"""Offline model of capture encodings (issue 14, target 1): re-encodes the events of a real
format-4 capture (runtime/FORMAT.md) in candidate encodings and compressors, and prints the
bytes per event of each, per column, plus the compressors' CPU per event. Nothing here is
used by cytool; it is how a new BATCH encoding is chosen before it is built.

    python bench/capture_encodings.py CAPTURE [--batches N] [--modes f4,batch,thread,...]

Needs the PyPI packages `lz4` and `zstandard` (not cytool dependencies: install them in a
scratch venv). A capture of the mixed workload: `cytool profile -o mixed.cytrace
bench/mixed_workload.pyx -- 2000000`.

The events are re-encoded one batch at a time, as the tracer writes them (a thread's batch
is a 5 ms or 256 KiB slice of its events), into six columns: heads, times, address codes,
address deltas, sizes, stacks (format 4 has no code column: every address is a delta). Each
batch is compressed on its own, whole (as one frame) or column by column ("split").

Modes (the address columns; heads, times, sizes and stacks are format 4's):
- `f4`: format 4, every address a delta from the batch's previous address, 16-byte units.
- `batch`: prediction with state reset at every batch: an allocation whose address is one of
  the last PRED_DEPTH blocks freed in its size class (glibc's tcache and pymalloc's free
  lists are LIFO) is a 1-byte code (its position); a free of a block this thread allocated
  (and the state still knows) is its age in allocations; the rest are deltas from the last
  such delta-coded address.
- `thread`: the same with the state kept across a thread's batches (a reader must then
  decode a thread's batches in order from the last batch that reset the state).
- `thread-kfN`: state reset every N batches of a thread (bounded re-decoding after a lost
  batch, parallel decoding from reset points).
- `thread-dmB`: the tracer's table of live blocks as a direct-mapped table of 2^B slots
  (lossy: a block whose slot was taken is a delta), as a tracer would keep it.
- `thread-waysB`: the same table 4-way set-associative (2^B slots, the oldest allocation
  of a full set gives way).
"""
from __future__ import annotations

import argparse
import collections
import re
import struct
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

try:
    import lz4.frame
    import zstandard
except ImportError:
    raise SystemExit("capture_encodings.py needs the PyPI packages lz4 and zstandard (pip install lz4 zstandard)")

M64 = (1 << 64) - 1
PRED_DEPTH = 4
Event = Tuple[int, int, int, Optional[int], Optional[int]]  # kind, dt (units), address, size, stack id


def get_varint(b: bytes, p: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        c = b[p]
        p += 1
        value |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return value, p


def get_string(b: bytes, p: int) -> int:
    n, p = get_varint(b, p)
    return p + n


def read_frames(path: str) -> Tuple[int, List[bytes]]:
    """(file size, the decompressed LZ4 frames of a format-4 capture)."""
    data = open(path, "rb").read()
    if data[:8] != b"CYTRACE\0" or struct.unpack_from("<I", data, 8)[0] != 4:
        raise SystemExit(f"{path}: not a format-4 cytool capture")
    rest = data[16 + struct.unpack_from("<I", data, 12)[0]:]
    frames = []
    while rest:
        d = lz4.frame.LZ4FrameDecompressor()
        frames.append(d.decompress(rest))
        rest = d.unused_data
    return len(data), frames


def skip_record(r: bytes, p: int, kind: int) -> int:
    """The offset after a non-BATCH record's fields (FORMAT.md section 3)."""
    def varints(p: int, n: int) -> int:
        for _ in range(n):
            _, p = get_varint(r, p)
        return p
    if kind == 0x01:
        p = get_string(r, get_string(r, varints(p, 2)))
        n, p = get_varint(r, p)
        return varints(p, 2 * n + 1)
    if kind == 0x02:
        return varints(p, 3)
    if kind == 0x03:
        return get_string(r, get_string(r, varints(p, 2)))
    if kind == 0x04:
        p = varints(p, 2)
        n, p = get_varint(r, p)
        cut, p = get_varint(r, varints(p, n))
        return varints(p, 1) if cut else p
    if kind == 0x05:
        return get_string(r, varints(p, 2))
    if kind == 0x06:
        p = varints(p, 1)
        n, p = get_varint(r, p)
        return varints(p, 2 * n)
    if kind == 0x07:
        return get_string(r, varints(p, 4))
    if kind == 0x08:
        return varints(get_string(r, get_string(r, varints(p, 3))), 1)
    if kind == 0x7E:
        return varints(p, 6)
    if kind == 0x7F:
        return varints(p, 1)
    raise SystemExit(f"unknown record type {kind:#x}")


def read_batches(frames: List[bytes]) -> List[Tuple[int, List[Event]]]:
    """(thread id, events) of every BATCH, in file order."""
    batches = []
    for r in frames:
        p = 0
        while p < len(r):
            kind = r[p]
            p += 1
            if kind != 0x10:
                p = skip_record(r, p, kind)
                continue
            head = []
            for _ in range(6):
                v, p = get_varint(r, p)
                head.append(v)
            tid, n = head[0], head[5]
            lens = []
            for _ in range(4):
                v, p = get_varint(r, p)
                lens.append(v)
            heads = r[p:p + n]
            tp = p + n
            ap = tp + lens[0]
            sp = ap + lens[1]
            kp = sp + lens[2]
            p = kp + lens[3]
            events: List[Event] = []
            address, last_stack = 0, None
            for h in heads:
                k, dt, size, stack = h & 0x3F, 0, None, None
                if h & 0x40:
                    dt, tp = get_varint(r, tp)
                z, ap = get_varint(r, ap)
                v = z >> 1
                v = (v >> 1) ^ -(v & 1)
                address = (address + (v * 16 if z & 1 == 0 else v)) & M64
                if k < 32 or k == 34:
                    size, sp = get_varint(r, sp)
                if k < 32:
                    if h & 0x80:
                        stack = last_stack
                    else:
                        stack, kp = get_varint(r, kp)
                        last_stack = stack
                events.append((k, dt, address, size, stack))
            batches.append((tid, events))
    return batches


def put_varint(out: bytearray, v: int) -> None:
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def put_delta(out: bytearray, d: int) -> None:
    """Format 4's address delta: 16-byte units when aligned, a flag in bit 0."""
    d &= M64
    d = d - (1 << 64) if d >> 63 else d
    if d % 16 == 0:
        v, flag = d // 16, 0
    else:
        v, flag = d, 1
    put_varint(out, (((v << 1) ^ (v >> 63)) & M64) << 1 | flag)


def size_class(kind: int, size: int) -> int:
    """pymalloc's 8-byte classes for PyMem MEM/OBJ, glibc's 16-byte chunk sizes otherwise."""
    if kind in (12, 13, 36, 37):
        return 128 + min((size + 7) >> 3, 127)
    return min((size + 23) >> 4, 127)


def table_slot(address: int, bits: int) -> int:
    return (((address >> 4) * 0x9E3779B97F4A7C15) & M64) >> (64 - bits)


def encode(events: List[Event], mode: str, state: Dict) -> Tuple[List[bytearray], collections.Counter]:
    """The six columns of one batch, and counts of prediction hits and misses."""
    cols = [bytearray() for _ in range(6)]
    heads, times, codes, deltas, sizes, stacks = cols
    hits: collections.Counter = collections.Counter()
    if not mode.startswith("thread"):
        state.clear()
    m = re.search(r"kf(\d+)", mode)
    if m:
        state["batches"] = state.get("batches", 0) + 1
        if state["batches"] % int(m.group(1)) == 0:
            state.clear()
    m = re.search(r"dm(\d+)", mode)
    bits = int(m.group(1)) if m else 0
    m = re.search(r"ways(\d+)", mode)
    set_bits = int(m.group(1)) - 2 if m else 0  # 4 ways: 2^(B-2) sets
    table = state.setdefault("table", {})  # address (or slot) -> (address, allocation ordinal, class)
    lifo = state.setdefault("lifo", collections.defaultdict(list))
    ordinal = state.get("ordinal", 0)
    last = last_delta = 0
    last_stack = None
    for kind, dt, address, size, stack in events:
        h = kind
        if dt:
            h |= 0x40
            put_varint(times, dt)
        if kind < 32:
            if stack == last_stack:
                h |= 0x80
            else:
                put_varint(stacks, stack)
                last_stack = stack
        heads.append(h)
        if size is not None:
            put_varint(sizes, size)
        if mode == "f4":
            put_delta(deltas, address - last)
            last = address
            continue
        coded = False
        if kind < 32 and kind not in (10, 14):  # an allocation (not a mapping)
            c = size_class(kind, size)
            recent = lifo[c]
            for i in range(min(PRED_DEPTH, len(recent))):
                if recent[-1 - i] == address:
                    del recent[-1 - i]
                    codes.append(i)
                    hits[f"alloc hit {i}"] += 1
                    coded = True
                    break
            if not coded:
                codes.append(PRED_DEPTH)
                hits["alloc miss"] += 1
            if set_bits:
                ways = table.setdefault(table_slot(address, set_bits), [])
                ways[:] = [w for w in ways if w[0] != address]
                if len(ways) == 4:
                    ways.remove(min(ways, key=lambda w: w[1]))
                ways.append((address, ordinal, c))
            else:
                table[table_slot(address, bits) if bits else address] = (address, ordinal, c)
            ordinal += 1
        elif kind >= 32 and kind != 34:  # a free (not a munmap)
            key = table_slot(address, set_bits or bits) if set_bits or bits else address
            entry = table.get(key)
            if set_bits:
                entry = next((w for w in entry or () if w[0] == address), None)
            if entry is not None and entry[0] == address:
                if set_bits:
                    table[key].remove(entry)
                else:
                    del table[key]
                put_varint(codes, (ordinal - 1 - entry[1]) << 1)
                recent = lifo[entry[2]]
                recent.append(address)
                del recent[:-PRED_DEPTH]
                hits["free hit"] += 1
                coded = True
            else:
                codes.append(1)
                hits["free miss"] += 1
        if not coded:
            put_delta(deltas, address - last_delta)
            last_delta = address
    state["ordinal"] = ordinal
    return cols, hits


COLUMN_NAMES = ("heads", "times", "codes", "deltas", "sizes", "stacks")


def compressors() -> Dict[str, Callable[[bytes], int]]:
    found: Dict[str, Callable[[bytes], int]] = {
        "lz4": lambda b: len(lz4.frame.compress(b, block_size=lz4.frame.BLOCKSIZE_MAX256KB, content_checksum=True,
                                                block_linked=False)),
    }
    for level in (-1, 1, 3):
        z = zstandard.ZstdCompressor(level=level, write_checksum=True)
        found[f"zstd {level}"] = (lambda z: lambda b: len(z.compress(b)))(z)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture")
    parser.add_argument("--batches", type=int, default=0, help="the first N batches only (0: all)")
    parser.add_argument("--modes", default="f4,batch,thread,thread-kf16,thread-kf64,thread-dm14,thread-dm16")
    args = parser.parse_args()
    file_size, frames = read_frames(args.capture)
    batches = read_batches(frames)
    nall = sum(len(e) for _, e in batches)
    if args.batches:
        batches = batches[:args.batches]
    nev = sum(len(e) for _, e in batches)
    print(f"{args.capture}: {file_size:,} bytes, {nall:,} events, {file_size / nall:.3f} B/event; "
          f"modelled: {len(batches)} batches, {nev:,} events")
    comp = compressors()
    print("| mode | " + " | ".join(comp) + " | " + " | ".join(f"{c} split" for c in comp) + " | zstd 1 by column: "
          + ", ".join(COLUMN_NAMES) + " |")
    print("|---" * (2 * len(comp) + 2) + "|")
    for mode in args.modes.split(","):
        whole: collections.Counter = collections.Counter()
        split: collections.Counter = collections.Counter()
        by_column: collections.Counter = collections.Counter()
        hits: collections.Counter = collections.Counter()
        states: Dict[int, Dict] = collections.defaultdict(dict)
        for tid, events in batches:
            cols, h = encode(events, mode, states[tid])
            hits.update(h)
            joined = bytes(b"".join(cols))
            for name, f in comp.items():
                whole[name] += f(joined)
                split[name] += sum(f(bytes(c)) for c in cols if c)
            for i, c in enumerate(cols):
                if c:
                    by_column[i] += comp["zstd 1"](bytes(c))
        print(f"| {mode} | " + " | ".join(f"{whole[n] / nev:.3f}" for n in comp) + " | "
              + " | ".join(f"{split[n] / nev:.3f}" for n in comp) + " | "
              + ", ".join(f"{by_column[i] / nev:.3f}" for i in range(6)) + " |")
        if hits:
            print("    " + ", ".join(f"{k} {v / nev:.3f}" for k, v in sorted(hits.items())) + " (per event)")
    biggest = max(batches, key=lambda b: len(b[1]))
    joined = bytes(b"".join(encode(biggest[1], "batch", {})[0]))
    print(f"CPU, the largest batch ({len(biggest[1]):,} events, {len(joined):,} bytes), through the Python bindings:")
    for name, f in comp.items():
        start, runs = time.process_time(), 0
        while time.process_time() - start < 0.5:
            f(joined)
            runs += 1
        per = (time.process_time() - start) / runs
        print(f"  {name}: {per * 1e3:.3f} ms a batch, {per / len(biggest[1]) * 1e9:.1f} ns/event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
