"""The streamed reader and aggregator (runtime/src/capture_merge.c, capture_pipe.c,
analyze_replay.c): events are decoded again from their frames, batch by batch, when they
are merged and replayed. A batch written out of order is merged at its place; a capture
large enough to be decoded on a second thread gives exact figures across the buffers it
is handed over in (the munmap-before-mremap lookahead, the peak); the events are only
made into one array when asked for."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "reports"))

from capture_writer import CaptureWriter, pc_word  # noqa: E402

from cytool.analysis import analyze  # noqa: E402
from cytool.capture import read_capture  # noqa: E402

PIPE_EVENTS = 16384  # events per buffer handed between the two threads (capture_pipe.c)


def thread_batches(thread: int, base: int, nbatches: int, per_batch: int) -> List[Tuple[int, list]]:
    """(t0, events) per batch: a malloc and its free per pair, sizes by position."""
    out = []
    for b in range(nbatches):
        events = []
        for i in range(per_batch // 2):
            address = base + 0x100 * ((b * per_batch + i) % 50)
            events.append(("malloc", 1, address, 16 + i % 7 + thread, 1))
            events.append(("free", 1, address, 0, 0))
        out.append((b * 10_000, events))
    return out


def write_threads(path: Path, late: bool) -> None:
    """Two threads, four batches each, one frame per batch; `late`: thread 1's second
    batch comes last in the file, after every other frame."""
    one = thread_batches(1, 0x10000, 4, 40)
    two = thread_batches(2, 0x90000, 4, 30)
    with CaptureWriter(path) as w:
        w.object(1, 0, "/nonexistent/mod.so", b"", [(0x1000, 0x2000)])
        w.stack(1, [pc_word(0x1100)])
        w.thread(1, 101, "one")
        w.thread(2, 102, "two")
        w.flush()
        held = None
        for k in range(4):
            for thread, batches in ((1, one), (2, two)):
                t0, events = batches[k]
                if late and thread == 1 and k == 1:
                    held = (t0, events)
                    continue
                w.batch(thread, t0, events, seq=k, first=k * len(events))
                w.flush()
        if held:
            w.batch(1, held[0], held[1], seq=1, first=len(held[1]))
            w.flush()
        w.end(100)


def test_a_batch_written_after_later_batches_is_merged_at_its_place(tmp_path: Path) -> None:
    in_order, late = tmp_path / "order.cytrace", tmp_path / "late.cytrace"
    write_threads(in_order, late=False)
    write_threads(late, late=True)
    with read_capture(in_order) as a, read_capture(late) as b:
        assert len(a.events) == len(b.events) == 4 * 40 + 4 * 30
        assert not b.truncated and b.missing_batches == 0 and b.duplicate_batches == 0
        assert [tuple(e) for e in a.events] == [tuple(e) for e in b.events]
        times = [e.time_ns for e in b.events]
        assert times == sorted(times)
        pa, pb = analyze(a), analyze(b)
        assert pa.totals == pb.totals and pa.timeline == pb.timeline and pa.peak_time_ns == pb.peak_time_ns
        assert pb.totals.temporary_count == 4 * 20 + 4 * 15  # every block freed by its thread's next event


def test_events_are_counted_without_being_made(tmp_path: Path) -> None:
    path = tmp_path / "count.cytrace"
    write_threads(path, late=True)
    with read_capture(path) as capture:
        assert len(capture.events) == 280
        assert {t: info.nevents for t, info in capture.threads.items()} == {1: 160, 2: 120}
        profile = analyze(capture)  # streamed: the event array is not needed
        assert profile.events == 280
        assert capture.events._address is None
        assert capture.events[-1].kind == "free"  # made on first access


def test_figures_stay_exact_across_the_buffers_of_the_second_thread(tmp_path: Path) -> None:
    """~70,000 events: decoded on a second thread and handed over in buffers of
    PIPE_EVENTS. A munmap that is the last event of a buffer, followed (first event of the
    next buffer) by its mremap, is a move, not a temporary block; the high-water mark is
    in the third buffer (the first small block after the big one) and its per-stack
    figures are exact."""
    path = tmp_path / "big.cytrace"
    events: list = []

    def pad_to(index: int) -> None:  # malloc/free pairs (temporary) until `index` events
        while len(events) < index:
            address = 0x100000 + 0x40 * (len(events) % 64)
            events.append(("malloc", 1, address, 32, 1))
            events.append(("free", 0, address, 0, 0))

    pad_to(PIPE_EVENTS - 2)
    events.append(("mmap", 1, 0x7000_0000, 8192, 2))
    assert len(events) == PIPE_EVENTS - 1
    # the last event of the first buffer: without its mremap, a temporary mapping
    events.append(("munmap", 1, 0x7000_0000, 8192, 0))
    events.append(("mremap", 0, 0x7100_0000, 16384, 2))  # the first of the second
    pad_to(2 * PIPE_EVENTS + 101)
    events.append(("malloc", 1, 0x9000_0000, 1 << 20, 3))  # the high-water mark
    pad_to(3 * PIPE_EVENTS + 500)
    events.append(("free", 1, 0x9000_0000, 0, 0))
    pad_to(4 * PIPE_EVENTS + 7)
    with CaptureWriter(path) as w:
        w.object(1, 0, "/nonexistent/mod.so", b"", [(0x1000, 0x4000)])
        for sid, pc in ((1, 0x1100), (2, 0x2200), (3, 0x3300)):
            w.stack(sid, [pc_word(pc)])
        w.thread(0, 100, "main")
        for start in range(0, len(events), 5000):  # batches of 5,000 events, one frame each
            w.batch(0, start, events[start:start + 5000])
            w.flush()
        w.end(10 ** 9)
    pairs = (len(events) - 5) // 2
    with read_capture(path) as capture:
        assert len(capture.events) == len(events) > 4 * PIPE_EVENTS
        profile = analyze(capture, native_frames=True)
    by_size = {s.metrics.bytes: s.metrics for s in profile.stacks}
    small, mapping, big = by_size[32 * pairs], by_size[8192 + 16384], by_size[1 << 20]
    assert small.temporary_count == pairs and small.count == pairs
    assert mapping.temporary_count == 0 and mapping.leaked_bytes == 16384 and mapping.leaked_count == 1
    assert big.peak_bytes == 1 << 20 and big.peak_count == 1 and big.leaked_bytes == 0
    assert mapping.peak_bytes == 16384 and mapping.peak_count == 1
    assert small.peak_count == 1 and small.peak_bytes == 32
    assert profile.totals.peak_bytes == (1 << 20) + 16384 + 32
    assert profile.kinds["munmap"] == (1, 8192)


def test_a_capture_cut_after_it_was_opened_is_an_error_not_a_wrong_answer(tmp_path: Path) -> None:
    import pytest

    from cytool.errors import CytoolError

    path = tmp_path / "cut.cytrace"
    write_threads(path, late=False)
    with read_capture(path) as capture:
        with open(path, "r+b") as f:  # the events are read again from the file: now gone
            f.truncate(64)
        with pytest.raises(CytoolError, match="cannot analyse the capture: .*shorter than when it was read"):
            analyze(capture)
        with pytest.raises(CytoolError, match="cannot decode its 280 events again"):
            capture.events[0]
