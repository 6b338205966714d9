"""Mappings are accounted by address range, as the kernel does (analyze_mappings.c): a
munmap of the head, the tail, a hole in the middle or across several adjacent mappings, a
mapping over a live range (MAP_FIXED), mremap growing (moving) and shrinking. The program
(tests/fixtures/tracer/mappings.pyx) runs under `cytool profile`; every mapping line's
bytes, leaked and peak figures are checked exactly, and the address-range set itself on
hand-written captures."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "reports"))

from capture_writer import CaptureWriter, pc_word  # noqa: E402

from cytool.analysis import LineStats, Profile, load_profile  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tracer" / "mappings.pyx"
MB = 1 << 20


def marked_lines() -> Dict[str, int]:
    lines = {}
    for number, text in enumerate(FIXTURE.read_text().splitlines(), 1):
        if "# MAP " in text:
            lines[text.split("# MAP ")[1].split()[0]] = number
    return lines


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Profile:
    import subprocess

    work = tmp_path_factory.mktemp("mappings")
    capture = work / "maps.cytrace"
    proc = subprocess.run([sys.executable, "-m", "cytool", "profile", "--no-summary", "-o", str(capture), str(FIXTURE)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300, cwd=work)
    assert proc.returncode == 0, proc.stderr
    return load_profile(capture)


def line(profile: Profile, number: int) -> LineStats:
    (found,) = [l for l in profile.lines() if l.file.endswith("mappings.pyx") and l.line == number]
    return found


# name: (bytes mapped, bytes left at the end, bytes live at the peak)
EXPECTED = {
    "head": (8 * MB, 6 * MB, 6 * MB),
    "tail": (4 * MB, 3 * MB, 3 * MB),
    "hole": (6 * MB, 4 * MB, 4 * MB),
    "span_outer": (9 * MB, 4 * MB, 4 * MB),
    "span_inner": (3 * MB, 0, 0),
    "full": (5 * MB, 0, 0),
    "grow_old": (1 * MB, 0, 0),
    "grow_new": (3 * MB, 3 * MB, 3 * MB),
    "shrink_old": (4 * MB, 0, 4 * MB),
    "shrink_new": (1 * MB, 1 * MB, 0),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_mapping_line_is_exact(profile: Profile, name: str) -> None:
    mapped, left, at_peak = EXPECTED[name]
    stats = line(profile, marked_lines()[name]).self
    assert (stats.bytes, stats.count) == (mapped, 1)
    assert (stats.leaked_bytes, stats.leaked_count) == (left, 1 if left else 0)
    assert (stats.peak_bytes, stats.peak_count) == (at_peak, 1 if at_peak else 0)


def test_totals_and_kinds(profile: Profile) -> None:
    mappings = [l for l in profile.lines() if l.file.endswith("mappings.pyx") and l.line in marked_lines().values()]
    helper = line(profile, marked_lines()["helper"]).self  # the refused case's mapping
    assert (helper.bytes, helper.leaked_bytes, helper.peak_bytes) == (MB, 0, 0)
    assert sum(l.self.bytes for l in mappings) == 44 * MB + MB
    assert sum(l.self.leaked_bytes for l in mappings) == 21 * MB
    assert sum(l.self.peak_bytes for l in mappings) == 24 * MB
    # only the program calls mremap (the interpreter's arenas come and go by mmap/munmap)
    assert profile.kinds["mremap"] == (2, 4 * MB)


def write_ranges(path: Path, events) -> None:
    with CaptureWriter(path) as w:
        w.stack(1, [pc_word(0x1000)])
        w.stack(2, [pc_word(0x2000)])
        w.batch(0, 0, events)
        w.end(100)


def test_a_munmap_across_adjacent_mappings_releases_exactly_what_it_covers(tmp_path: Path) -> None:
    from cytool.analysis import analyze
    from cytool.capture import read_capture

    base, page = 0x7F0000000000, 4096
    path = tmp_path / "ranges.cytrace"
    # three adjacent mappings of 4 pages, a munmap from the middle of the first to the
    # middle of the third, a munmap of nothing mapped, and a new mapping over the rest of
    # the first (MAP_FIXED) that replaces it
    write_ranges(path, [
        ("mmap", 1, base, 4 * page, 1), ("mmap", 1, base + 4 * page, 4 * page, 2),
        ("mmap", 1, base + 8 * page, 4 * page, 1),
        ("munmap", 1, base + 2 * page, 8 * page, 0),
        ("munmap", 1, base + 100 * page, page, 0),
        ("mmap", 1, base, page, 2),
    ])
    with read_capture(path) as capture:
        profile = analyze(capture, native_frames=True)
    totals = profile.totals
    assert (totals.bytes, totals.count) == (13 * page, 4)
    # the munmap took pages 2-9 and the new mapping replaced page 0: left are page 1 of the
    # first, pages 10-11 of the third, and the new page 0
    assert (totals.leaked_bytes, totals.leaked_count) == (4 * page, 3)
    assert (totals.peak_bytes, totals.peak_count) == (12 * page, 3)
    assert profile.kinds["munmap"] == (2, 8 * page)
    assert profile.unmatched_frees == 1 and profile.frees == 1  # the second mapping went whole
