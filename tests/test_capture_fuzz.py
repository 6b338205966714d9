"""The reader, symboliser and aggregator never crash on damaged captures: records mangled
before compression (so the LZ4 checksums pass and the record parser sees the damage),
and files cut at every kind of place. Runs in a child process so a crash is a failure."""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "reports"))

from capture_writer import CaptureWriter, lz4_frame, pc_word, py_word  # noqa: E402

CHECK = r"""
import sys
from cytool.capture import read_capture
from cytool.analysis import analyze
from cytool.errors import CytoolError
outcomes = {"ok": 0, "truncated": 0, "rejected": 0}
for path in sys.argv[1:]:
    try:
        with read_capture(path) as capture:
            profile = analyze(capture)
            profile.lines()
            list(capture.events)
            capture.stacks
            outcomes["truncated" if capture.truncated else "ok"] += 1
    except CytoolError:
        outcomes["rejected"] += 1
print(outcomes)
"""


def body_records() -> bytes:
    """A valid record stream with every record type."""
    scratch = CaptureWriter.__new__(CaptureWriter)
    scratch.pending = bytearray()
    scratch.object(1, 0x7F0000000000, "/nonexistent/mod.so", b"\x01\x02", [(0x7F0000000000, 0x7F0000100000)])
    scratch.pyframe(1, 3, "f", "/x.py")
    scratch.stack(1, [pc_word(0x7F0000001000), py_word(1)])
    scratch.thread(0, 7, "main")
    scratch.batch(0, 0, [("malloc", 1, 0x1000, 10, 1), ("realloc_free", 1, 0x1000, 0, 0), ("realloc", 0, 0x2000, 20, 1),
                         ("mmap", 1, 0x7F1000000000, 4096, 1), ("munmap", 1, 0x7F1000000000, 4096, 0), ("free", 1, 0x2000, 0, 0)])
    scratch.unload(1, 50)
    scratch.stats(6, 0, 1, 1)
    scratch.end(100)
    return bytes(scratch.pending)


def test_damaged_captures_never_crash(tmp_path: Path) -> None:
    rng = random.Random(1234)
    good = body_records()
    paths = []
    for i in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            choice = rng.random()
            pos = rng.randrange(len(data))
            if choice < 0.5:
                data[pos] = rng.randrange(256)
            elif choice < 0.7:
                del data[pos:pos + rng.randint(1, 8)]
            elif choice < 0.85:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                data[pos] = 0xFF  # a varint that never ends
        path = tmp_path / f"mangled{i}.cytrace"
        with CaptureWriter(path) as w:
            w.raw(bytes(data))
        paths.append(str(path))
    # files cut at every byte of a small valid capture (header, frame header, block, checksum)
    whole = tmp_path / "whole.cytrace"
    with CaptureWriter(whole) as w:
        w.raw(good)
    raw = whole.read_bytes()
    for cut in range(0, len(raw)):
        path = tmp_path / f"cut{cut}.cytrace"
        path.write_bytes(raw[:cut])
        paths.append(str(path))
    # trailing garbage after a complete capture, and a frame of garbage compressed properly
    tail = tmp_path / "tail.cytrace"
    tail.write_bytes(raw + b"\x00garbage")
    garbage = tmp_path / "garbage.cytrace"
    garbage.write_bytes(raw[: len(raw) - len(lz4_frame(good))] + lz4_frame(bytes(range(256)) * 4))
    paths += [str(tail), str(garbage)]
    result = subprocess.run([sys.executable, "-c", CHECK, *paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = eval(result.stdout.strip().splitlines()[-1])
    assert sum(outcomes.values()) == len(paths)
    assert outcomes["truncated"] > 0 and outcomes["rejected"] > 0 and outcomes["ok"] > 0
