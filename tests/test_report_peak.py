"""Which moment is the peak (runtime/src/analyze_replay.c): the first moment live bytes
reach their highest value; when they reach that same value again later, the first one
still wins. Hand-written captures, exact figures."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "reports"))

from capture_writer import CaptureWriter, pc_word  # noqa: E402

from cytool.analysis import load_profile  # noqa: E402


def write(path: Path, events) -> None:
    with CaptureWriter(path, time_resolution_ns=1000) as w:
        w.object(1, 0x7F0000000000, "/nonexistent/m.so", b"", [(0x7F0000000000, 0x7F0000010000)])
        for sid in (1, 2, 3):
            w.stack(sid, [pc_word(0x7F0000000000 + 0x100 * sid)])
        w.batch(0, 0, events)
        w.end(100_000)


def by_stack(profile):
    return {s.frames[0].function: s.metrics for s in profile.stacks if s.frames}


def test_the_first_of_two_equal_peaks_wins(tmp_path: Path) -> None:
    path = tmp_path / "ties.cytrace"
    write(path, [
        ("malloc", 1000, 0x1000, 100, 1),  # A: live 100
        ("malloc", 1000, 0x2000, 50, 2),   # B: live 150, the first peak (t = 2 us)
        ("free", 1000, 0x1000, 0, 0),      # live 50
        ("malloc", 1000, 0x3000, 100, 3),  # C: live 150 again (t = 4 us): a tie, not a new peak
        ("free", 1000, 0x2000, 0, 0),
        ("free", 1000, 0x3000, 0, 0),
    ])
    profile = load_profile(path, native_frames=True)
    assert profile.totals.peak_bytes == 150 and profile.totals.peak_count == 2
    assert profile.peak_time_ns == 2000
    stacks = by_stack(profile)
    assert (stacks["m.so+0x100"].peak_bytes, stacks["m.so+0x200"].peak_bytes, stacks["m.so+0x300"].peak_bytes) == (100, 50, 0)


def test_a_later_higher_peak_wins(tmp_path: Path) -> None:
    path = tmp_path / "higher.cytrace"
    write(path, [
        ("malloc", 1000, 0x1000, 100, 1), ("malloc", 1000, 0x2000, 50, 2), ("free", 1000, 0x1000, 0, 0),
        ("malloc", 1000, 0x3000, 101, 3),  # live 151: higher by one byte
    ])
    profile = load_profile(path, native_frames=True)
    assert profile.totals.peak_bytes == 151 and profile.peak_time_ns == 4000
    stacks = by_stack(profile)
    assert (stacks["m.so+0x100"].peak_bytes, stacks["m.so+0x200"].peak_bytes, stacks["m.so+0x300"].peak_bytes) == (0, 50, 101)
