"""What the reader (runtime/src/capture_read.c) says about a capture that is not whole:
a frame dropped, repeated or corrupted in the middle, events recorded but never written,
the tracer's progress marks at a kill, write losses, another tracer taking over, and the
format 3 records that let it tell (batch ordinals, load generations, cut stacks).
Captures are written by the test writer (tests/fixtures/reports/capture_writer.py), one
batch per frame, so that a frame can be taken out or repeated."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "reports"))

from capture_writer import CaptureWriter, pc_word, py_word  # noqa: E402

from cytool.analysis import analyze  # noqa: E402
from cytool.capture import read_capture  # noqa: E402

EventSpec = Tuple[str, int, int, int, int]


def batch_events(thread: int, k: int) -> List[EventSpec]:
    """Batch k of a thread: 10 mallocs of (1000 * thread + k) bytes and 10 frees."""
    base = 0x100000 * thread + 0x1000 * k
    size = 1000 * thread + k
    return [("malloc", 1, base + 16 * i, size, 1) for i in range(10)] + [("free", 1, base + 16 * i, 0, 0) for i in range(10)]


@pytest.fixture(params=[4, 6], ids=["lz4-frames", "zstd-frames"])
def version(request: pytest.FixtureRequest) -> int:
    """The frame-level tests run on both frame kinds: LZ4 (formats 1 to 5), zstd (6, the tracer's)."""
    return request.param


def write_frames(path: Path, version: int, nbatches: int = 6) -> List[bytes]:
    """A complete capture of two threads, each batch in its own frame; returns the
    header and the frames (bytes) so a test can rearrange them."""
    w = CaptureWriter(path, version=version)
    w.stack(1, [pc_word(0x1000)])
    w.thread(1, 11, "alpha")
    w.thread(2, 22, "beta")
    w.flush()
    for k in range(nbatches):
        for thread in (1, 2):
            w.batch(thread, k * 100, batch_events(thread, k))
            w.flush()
    w.stats(2 * nbatches * 20, 0, 1, 2 + 2 * nbatches)
    w.end(10000)
    w.close()
    data = path.read_bytes()
    offsets = w.frame_offsets + [len(data)]
    header = data[: offsets[0]]
    return [header] + [data[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def sizes(path: Path) -> List[int]:
    with read_capture(path) as capture:
        return sorted({e.size for e in capture.events if e.kind == "malloc"})


def test_the_whole_capture_is_clean(tmp_path: Path, version: int) -> None:
    path = tmp_path / "whole.cytrace"
    write_frames(path, version)
    with read_capture(path) as capture:
        assert capture.complete and not capture.truncated and capture.notes == []
        assert capture.missing_events == 0 and capture.missing_batches == 0 and capture.duplicate_batches == 0
        assert len(capture.events) == 240


def test_a_dropped_frame_in_the_middle_is_a_gap_with_its_event_count(tmp_path: Path, version: int) -> None:
    path = tmp_path / "gap.cytrace"
    parts = write_frames(path, version)
    # parts: header, definitions, then (thread 1, thread 2) per batch; drop thread 2's batch 3
    dropped = 2 + 2 * 3 + 1
    path.write_bytes(b"".join(parts[:dropped] + parts[dropped + 1:]))
    with read_capture(path) as capture:
        assert capture.complete and capture.truncated
        assert len(capture.events) == 220
        assert capture.missing_batches == 1 and capture.missing_events == 20
        assert capture.notes == ["thread 2 (beta): batch 3 is missing: 20 events lost"]
        assert "1 batch of events missing" in capture.truncation_message()
        assert "20 that the tracer recorded are missing" in capture.truncation_message()
        # the batches after the gap were read, in their order
        beta = [e.size for e in capture.events if e.thread_id == 2 and e.kind == "malloc"]
        assert beta == [2000 + k for k in (0, 1, 2, 4, 5) for _ in range(10)]
        profile = analyze(capture)
    assert profile.truncated and profile.missing_events == 20
    assert profile.notes()[1:2] == ["thread 2 (beta): batch 3 is missing: 20 events lost"]


def test_a_repeated_frame_is_read_once_and_said(tmp_path: Path, version: int) -> None:
    path = tmp_path / "dup.cytrace"
    parts = write_frames(path, version)
    repeated = 2 + 2 * 2  # thread 1's batch 2
    path.write_bytes(b"".join(parts[: repeated + 1] + [parts[repeated]] + parts[repeated + 1:]))
    with read_capture(path) as capture:
        assert capture.complete and not capture.truncated
        assert len(capture.events) == 240  # not 260
        assert capture.duplicate_batches == 1 and capture.missing_events == 0
        assert capture.notes == ["thread 1 (alpha): 1 batch read twice (20 events; a repeated frame?): the copies were ignored"]
        profile = analyze(capture)
    assert profile.totals.count == 120
    assert profile.warnings() == capture.notes


def test_repeated_definitions_are_read_once_and_said(tmp_path: Path, version: int) -> None:
    path = tmp_path / "defs.cytrace"
    parts = write_frames(path, version)
    path.write_bytes(b"".join(parts[:2] + [parts[1]] + parts[2:]))
    with read_capture(path) as capture:
        assert len(capture.raw_stacks) == 1 and len(capture.threads) == 2
        offset = len(parts[0]) + len(parts[1])
        assert capture.notes == [f"the frame at byte {offset} repeats 1 record read before (a repeated frame?): read once"]


def test_a_corrupted_frame_in_the_middle_is_skipped_and_reading_goes_on(tmp_path: Path, version: int) -> None:
    path = tmp_path / "bad.cytrace"
    parts = write_frames(path, version)
    broken = 2 + 2 * 4  # thread 1's batch 4
    damaged = bytearray(parts[broken])
    damaged[len(damaged) // 2] ^= 0x5A
    path.write_bytes(b"".join(parts[:broken] + [bytes(damaged)] + parts[broken + 1:]))
    offset = sum(len(p) for p in parts[:broken])
    with read_capture(path) as capture:
        assert capture.complete and capture.truncated
        assert capture.damaged_frames == 1
        assert len(capture.events) == 220
        assert capture.missing_batches == 1 and capture.missing_events == 20
        assert capture.notes[0].startswith(f"the frame at byte {offset} is damaged (")
        assert capture.notes[1] == "thread 1 (alpha): batch 4 is missing: 20 events lost"
        assert sizes(path)[-1] == 2005  # thread 2's last batch, after the damage


def test_garbage_between_frames_is_skipped(tmp_path: Path, version: int) -> None:
    path = tmp_path / "garbage.cytrace"
    parts = write_frames(path, version)
    path.write_bytes(b"".join(parts[:5] + [b"\x00\x01garbage\x02" * 3] + parts[5:]))
    with read_capture(path) as capture:
        assert capture.complete and len(capture.events) == 240 and capture.missing_events == 0
        assert capture.damaged_frames == 1
        assert capture.notes == [f"30 bytes at byte {sum(len(p) for p in parts[:5])} are not a frame: skipped"]


def test_every_frame_dropped_in_turn_is_noticed(tmp_path: Path, version: int) -> None:
    path = tmp_path / "each.cytrace"
    parts = write_frames(path, version, nbatches=3)
    for i in range(1, len(parts)):
        variant = tmp_path / f"without{i}.cytrace"
        variant.write_bytes(b"".join(parts[:i] + parts[i + 1:]))
        with read_capture(variant) as capture:
            assert capture.truncated, i
            assert capture.truncation_message(), i


def test_events_never_written_are_counted_from_ordinals_and_stats(tmp_path: Path) -> None:
    """Batches 1 and 2 of a thread could not be written (a LOSS record says why); the
    next batch's first ordinal shows 30 events missing; STATS agrees."""
    path = tmp_path / "loss.cytrace"
    with CaptureWriter(path) as w:
        w.stack(1, [pc_word(0x1000)])
        w.thread(1, 11, "main")
        w.batch(1, 0, batch_events(1, 0))
        w.flush()
        w.loss(2_000_000, 3_000_000, 30, 2, "No space left on device")
        w.batch(1, 300, batch_events(1, 3), seq=3, first=50)
        w.stats(70, 0, 1, 5, lost=30)
        w.end(5_000_000)
    with read_capture(path) as capture:
        assert capture.truncated and capture.complete
        assert capture.missing_batches == 2 and capture.missing_events == 30
        assert capture.stats.lost == 30
        assert capture.notes == ["thread 1 (main): 2 batches missing (the first: 1 to 2): 30 events lost"]
        (loss,) = capture.write_losses
        assert (loss.from_ns, loss.until_ns, loss.events, loss.frames, loss.reason) == (
            2_000_000, 3_000_000, 30, 2, "No space left on device")
        profile = analyze(capture)
    assert "the capture could not be written from 0.002 s to 0.003 s (No space left on device): 30 events were lost" \
        in profile.notes()


def test_a_killed_capture_counts_the_events_of_its_last_progress_mark(tmp_path: Path) -> None:
    """No END: the process was killed. Its last PROGRESS mark says thread 1 had recorded 45
    events and thread 2 12, of which 40 and 0 reached the file."""
    path = tmp_path / "killed.cytrace"
    with CaptureWriter(path) as w:
        w.stack(1, [pc_word(0x1000)])
        w.thread(1, 11, "main")
        w.batch(1, 0, batch_events(1, 0))
        w.batch(1, 100, batch_events(1, 1))
        w.progress(1_500_000, [(1, 30)])
        w.progress(2_500_000, [(1, 45), (2, 12)])
    with read_capture(path) as capture:
        assert capture.truncated and not capture.complete
        assert capture.last_progress_ns == 2_500_000
        assert capture.missing_events == 5 + 12
        assert sorted(capture.notes) == ["thread 1 (main): its last 5 recorded events are not in the file",
                                         "thread 2 (?): its last 12 recorded events are not in the file"]
        message = capture.truncation_message()
        assert "killed or crashed after 0.003 s" in message or "killed or crashed after 0.002 s" in message
        assert "40 events read, 17 that the tracer recorded are missing" in message
        assert "last ~10 ms" in message


def test_a_capture_being_written_is_said_to_be(tmp_path: Path) -> None:
    import fcntl

    path = tmp_path / "live.cytrace"
    with CaptureWriter(path) as w:
        w.batch(1, 0, batch_events(1, 0))
    with open(path, "rb+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with read_capture(path) as capture:
            assert capture.live and capture.truncated
            assert "still being written by a running process" in capture.truncation_message()
    with read_capture(path) as capture:
        assert not capture.live


def test_missing_object_records_are_noticed(tmp_path: Path) -> None:
    path = tmp_path / "objects.cytrace"
    with CaptureWriter(path) as w:
        w.object(1, 0, "/nonexistent/a.so", b"", [(0x1000, 0x2000)])
        w.object(3, 0, "/nonexistent/c.so", b"", [(0x5000, 0x6000)])
        w.stats(0, objects=4)
        w.end(10)
    with read_capture(path) as capture:
        assert capture.truncated
        assert capture.notes == ["2 of the 4 loaded objects the tracer described are missing (a frame lost?): "
                                 "their frames show as raw addresses"]


def test_takeover_records(tmp_path: Path) -> None:
    path = tmp_path / "takeover.cytrace"
    with CaptureWriter(path) as w:
        w.object(1, 0, "/usr/lib/libfoo.so", b"", [(0x1000, 0x2000)])
        w.object(2, 0, "/usr/lib/libbar.so", b"", [(0x3000, 0x4000)])
        w.takeover(500_000_000, 0, 1, "malloc", "/opt/other/tracer.so")
        w.takeover(500_000_000, 0, 1, "free", "/opt/other/tracer.so")
        w.takeover(500_000_000, 0, 2, "malloc", "/opt/other/tracer.so")
        w.takeover(700_000_000, 1, 2, "PyObject_Malloc", "/opt/other/tracer.so")
        w.takeover(900_000_000, 0, 1, "malloc", "", state=0)
        w.end(10)
    with read_capture(path) as capture:
        assert [(t.what, t.object, t.function, t.state) for t in capture.takeovers] == [
            ("got", "/usr/lib/libfoo.so", "malloc", "taken"), ("got", "/usr/lib/libfoo.so", "free", "taken"),
            ("got", "/usr/lib/libbar.so", "malloc", "taken"), ("pymem", "obj", "PyObject_Malloc", "taken"),
            ("got", "/usr/lib/libfoo.so", "malloc", "restored"),
        ]
        profile = analyze(capture)
    assert profile.warnings() == [
        "another tracer took over free, malloc in 2 objects (libbar.so, libfoo.so) at 0.500 s, now leading into "
        "/opt/other/tracer.so: allocations through them were not recorded from then on",
        "another tracer took over the Python allocator domains obj at 0.700 s, now leading into /opt/other/tracer.so: "
        "allocations through them were not recorded from then on",
        "malloc in 1 object (libfoo.so) lead to cytool's tracer again from 0.900 s",
    ]


def test_load_generations_tell_objects_at_one_address_apart(tmp_path: Path) -> None:
    """liba.so is mapped at 0x7f00_0000_0000 from generation 1 and unloaded at 2; libb.so
    is mapped at the same address from 3. A stack of generation 1 is liba's, one of
    generation 3 libb's, whatever order the records come in."""
    path = tmp_path / "generations.cytrace"
    base = 0x7F0000000000
    with CaptureWriter(path) as w:
        w.object(1, base, "/nonexistent/liba.so", b"", [(base, base + 0x10000)], generation=1)
        w.stack(1, [pc_word(base + 0x1234)], generation=1)
        w.unload(1, 100, generation=2)
        w.object(2, base, "/nonexistent/libb.so", b"", [(base, base + 0x10000)], generation=3)
        w.stack(2, [pc_word(base + 0x1234)], generation=3)
        w.stack(3, [pc_word(base + 0x1234)], generation=7)
        w.batch(1, 0, [("malloc", 1, 0x10, 8, 1), ("malloc", 1, 0x20, 9, 2), ("malloc", 1, 0x30, 10, 3)])
        w.end(1000)
    with read_capture(path) as capture:
        frames = {sid: capture.stacks[sid][0].function for sid in (1, 2, 3)}
        assert frames == {1: "liba.so+0x1234", 2: "libb.so+0x1234", 3: "libb.so+0x1234"}
        assert capture.objects[0].unload_generation == 2 and capture.objects[1].unload_generation is None
        assert capture.stack_info[1].generation == 1


def test_a_cut_stack_shows_where_frames_were_dropped(tmp_path: Path) -> None:
    path = tmp_path / "cut.cytrace"
    with CaptureWriter(path, max_frames=16) as w:
        w.pyframe(1, 10, "inner", "/x.py")
        w.pyframe(2, 20, "middle", "/x.py")
        w.pyframe(3, 30, "outer", "/x.py")
        w.stack(1, [py_word(1), py_word(2), py_word(3)], cut=997, cut_at=2)
        w.stack(2, [py_word(1), py_word(3)])
        w.batch(1, 0, [("malloc", 1, 0x10, 100, 1), ("malloc", 1, 0x20, 50, 2), ("malloc", 1, 0x30, 100, 1)])
        w.end(10)
    with read_capture(path) as capture:
        assert capture.header.max_frames == 16
        assert capture.stack_info[1].cut == 997 and capture.stack_info[1].cut_at == 2
        assert [(f.function, f.kind) for f in capture.stacks[1]] == [
            ("inner", "python"), ("middle", "python"), ("… frames cut", "cut"), ("outer", "python")]
        profile = analyze(capture)
    assert (profile.cut_events, profile.cut_bytes, profile.cut_most) == (2, 200, 997)
    assert profile.warnings() == [
        "2 allocations had stacks deeper than 16 frames: up to 997 frames were cut from the middle of each "
        "(shown as \"… frames cut\"); raise the limit to keep them (`cytool profile --max-frames`, "
        "`pytest --cytool-max-frames`, `Tracker(max_frames=)`)"]
    # inclusive figures of the outer frames count the cut stacks; self goes to the innermost
    outer = next(l for l in profile.lines() if l.function == "outer")
    inner = next(l for l in profile.lines() if l.function == "inner")
    assert outer.inclusive.count == 3 and inner.self.count == 3


@pytest.mark.parametrize("version", [1, 2])
def test_older_formats_still_read(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.cytrace"
    with CaptureWriter(path, version=version) as w:
        w.object(1, 0x7F0000000000, "/nonexistent/m.so", b"", [(0x7F0000000000, 0x7F0000010000)])
        w.stack(1, [pc_word(0x7F0000000100)])
        w.thread(0, 5, "main")
        w.batch(0, 0, [("malloc", 1, 0x10, 8, 1), ("mmap", 1, 0x7F1000000000, 8192, 1),
                       ("munmap", 1, 0x7F1000001000, 4096, 0), ("free", 1, 0x10, 0, 0)])
        w.stats(4)
        w.end(100)
    with read_capture(path) as capture:
        assert capture.complete and not capture.truncated and capture.header.version == version
        assert capture.header.max_frames == 0 and capture.missing_events == 0
        assert capture.stack_info[1] == capture.stack_info[1].__class__((pc_word(0x7F0000000100),), 0, 0, 0)
        profile = analyze(capture, native_frames=True)
    # a format 2 munmap releases exactly its range too: half of the mapping is left
    assert profile.totals.leaked_bytes == 4096 and profile.totals.leaked_count == 1
