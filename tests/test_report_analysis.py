"""Aggregation (runtime/src/analyze_*.c through cytool.analysis) on hand-written captures
whose every number is known: allocated, peak, leaked, temporary; self and inclusive."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "reports"))

from capture_writer import CaptureWriter, py_word  # noqa: E402

from cytool.analysis import load_profile  # noqa: E402
from cytool.errors import CytoolError  # noqa: E402


def write_known(path: Path) -> None:
    """Python frames only (no native objects needed):
    stack 1: alloc() at a.py:10 called from main() at a.py:20
    stack 2: grow()  at a.py:30 called from main() at a.py:21
    stack 3: main()  at a.py:22 directly
    """
    with CaptureWriter(path) as w:
        w.pyframe(1, 10, "alloc", "/src/a.py")
        w.pyframe(2, 20, "main", "/src/a.py")
        w.pyframe(3, 30, "grow", "/src/a.py")
        w.pyframe(4, 21, "main", "/src/a.py")
        w.pyframe(5, 22, "main", "/src/a.py")
        w.stack(1, [py_word(1), py_word(2)])
        w.stack(2, [py_word(3), py_word(4)])
        w.stack(3, [py_word(5)])
        w.thread(0, 100, "MainThread")
        w.thread(1, 101, "worker")
        w.batch(0, 0, [
            ("malloc", 1, 0x1000, 100, 1),      # A1 live to end: leaked
            ("malloc", 1, 0x2000, 100, 1),      # A2 freed right away: temporary
            ("free", 1, 0x2000, 0, 0),
            ("malloc", 1, 0x3000, 16, 2),       # B1
            ("realloc_free", 1, 0x3000, 0, 0),  # realloc grows B1 -> B2 (not temporary: window 1 counts the free itself?)
            ("realloc", 0, 0x4000, 64, 2),      # B2 live at peak
            ("calloc", 1, 0x5000, 1000, 3),     # C1 live at peak, freed later
        ])
        w.batch(1, 10, [
            ("malloc", 1, 0x9000, 7, 3),        # worker: leaked, live at peak
        ])
        w.batch(0, 20, [
            ("free", 1, 0x5000, 0, 0),          # C1 freed: peak was 100+64+1000+7
            ("free", 1, 0x4000, 0, 0),
            ("free", 1, 0xdead, 0, 0),          # unknown address
        ])
        w.end(100)


def test_totals_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "known.cytrace"
    write_known(path)
    profile = load_profile(path)
    t = profile.totals
    assert (t.bytes, t.count) == (100 + 100 + 16 + 64 + 1000 + 7, 6)
    assert (t.peak_bytes, t.peak_count) == (100 + 64 + 1000 + 7, 4)
    assert (t.leaked_bytes, t.leaked_count) == (107, 2)
    # freed as the next event of their thread: A2 and C1 (the worker's malloc in between
    # is another thread's event); B1 was moved by realloc: grown, not temporary
    assert (t.temporary_bytes, t.temporary_count) == (1100, 2)
    assert profile.unmatched_frees == 1 and profile.frees == 4
    assert profile.kinds["malloc"] == (4, 223) and profile.kinds["calloc"] == (1, 1000)
    assert profile.kinds["realloc"] == (1, 64) and profile.kinds["free"][0] == 4
    lines = {(Path(l.file).name, l.line): l for l in profile.lines()}
    alloc = lines[("a.py", 10)]
    assert alloc.function == "alloc" and (alloc.self.bytes, alloc.self.count) == (200, 2)
    assert alloc.self.leaked_bytes == 100 and alloc.self.temporary_count == 1
    assert alloc.inclusive.bytes == 200
    caller = lines[("a.py", 20)]
    assert caller.self.bytes == 0 and caller.inclusive.bytes == 200 and caller.inclusive.leaked_count == 1
    direct = lines[("a.py", 22)]
    assert (direct.self.bytes, direct.self.count, direct.self.peak_bytes) == (1007, 2, 1007)
    assert direct.self.leaked_bytes == 7
    grow = lines[("a.py", 30)]
    assert (grow.self.bytes, grow.self.count, grow.self.peak_bytes, grow.self.leaked_bytes) == (80, 2, 64, 0)
    assert profile.lines()[0].line == 22  # biggest self bytes first
    assert profile.timeline[-1][1] == 107
    assert max(b for _, b in profile.timeline) == t.peak_bytes


def test_thread_filter(tmp_path: Path) -> None:
    path = tmp_path / "known.cytrace"
    write_known(path)
    worker = load_profile(path, threads=[1])
    assert (worker.totals.bytes, worker.totals.count, worker.totals.leaked_bytes) == (7, 1, 7)
    assert [(t.id, t.name, t.metrics.bytes) for t in worker.threads] == [(1, "worker", 7)]
    with pytest.raises(CytoolError, match="no thread 5 in this capture"):
        load_profile(path, threads=[5])


def test_temporary_window(tmp_path: Path) -> None:
    path = tmp_path / "window.cytrace"
    with CaptureWriter(path) as w:
        w.batch(0, 0, [
            ("malloc", 1, 0x10, 8, 0),
            ("malloc", 1, 0x20, 8, 0),
            ("free", 1, 0x20, 0, 0),  # the next event
            ("free", 1, 0x10, 0, 0),  # three events later
        ])
        w.end(10)
    assert load_profile(path).totals.temporary_count == 1
    assert load_profile(path, temporary_window=2).totals.temporary_count == 1
    assert load_profile(path, temporary_window=3).totals.temporary_count == 2
    (line,) = load_profile(path).lines()
    assert line.function == "<no stack>" and line.self.count == 2


def test_truncated_capture_is_analysed(tmp_path: Path) -> None:
    path = tmp_path / "trunc.cytrace"
    with CaptureWriter(path) as w:
        w.batch(0, 0, [("malloc", 1, 0x10, 8, 5)])
    profile = load_profile(path)
    assert profile.truncated and "it has no end" in profile.truncation_message
    (line,) = profile.lines()
    assert line.function == "<unknown stack>" and line.self.leaked_bytes == 8


def test_null_addresses_are_not_blocks(tmp_path: Path) -> None:
    path = tmp_path / "null.cytrace"
    with CaptureWriter(path) as w:
        w.batch(0, 0, [
            ("malloc", 1, 0, 1 << 40, 0),  # failed: returned NULL
            ("free", 1, 0, 0, 0),          # free(NULL)
            ("realloc", 1, 0x10, 8, 0),    # realloc(NULL, 8)
            ("free", 1, 0x10, 0, 0),
        ])
        w.end(10)
    profile = load_profile(path)
    assert (profile.totals.count, profile.totals.bytes) == (1, 8)
    assert profile.unmatched_frees == 0 and profile.totals.peak_bytes == 8


def test_one_line_under_two_names_counts_once(tmp_path: Path) -> None:
    """Locations that are the same file:line are one line, even under different names,
    and a stack passing through it twice (recursion) counts once inclusively."""
    path = tmp_path / "names.cytrace"
    with CaptureWriter(path) as w:
        w.pyframe(1, 5, "inner", "/src/r.py")
        w.pyframe(2, 9, "recurse", "/src/r.py")
        w.pyframe(3, 9, "recurse_alias", "/src/r.py")
        w.stack(1, [py_word(1), py_word(2), py_word(3), py_word(2)])
        w.batch(0, 0, [("malloc", 1, 0x10, 100, 1), ("malloc", 1, 0x20, 50, 1)])
        w.end(10)
    lines = {(l.file, l.line): l for l in load_profile(path).lines()}
    assert set(lines) == {("/src/r.py", 5), ("/src/r.py", 9)}
    assert (lines[("/src/r.py", 9)].inclusive.bytes, lines[("/src/r.py", 9)].inclusive.count) == (150, 2)
    assert (lines[("/src/r.py", 5)].self.bytes, lines[("/src/r.py", 9)].self.bytes) == (150, 0)
