"""A few lines of text about one measured piece of work (a test, a doctest example, a
cell): its totals and the .pyx lines responsible, for places with no room for a table
(a pytest report section, doctest output, a limit's failure message)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from cytool.analysis import CYTHON_KINDS, LineStats, Metrics, Profile
from cytool.helper_calls import is_helper_label
from cytool.reports.source import SourceCache, display_name
from cytool.reports.units import human_bytes, human_count

METRIC_WORDS = {"bytes": "allocated", "peak_bytes": "live at the peak", "leaked_bytes": "still live at the end"}


def where(line: LineStats) -> str:
    """`mod.pyx:12` (a file's name and line), else the function or object."""
    if line.file:
        return f"{Path(line.file).name}:{line.line}" if line.line else Path(line.file).name
    return line.function or Path(line.object).name or "?"


def responsible_lines(profile: Profile, metric: str = "bytes", limit: int = 5) -> List[Tuple[LineStats, int]]:
    """The lines to name for `metric` (bytes, peak_bytes, leaked_bytes), biggest first:
    .pyx lines with what they caused (their own allocations and those of the code they
    called) when the profile has any, else the Python lines by their own allocations (and
    what a test framework allocated to check an assertion and explain it, as one row)."""
    pyx = [(l, l.attributed.value(metric)) for l in profile.lines() if l.kind in CYTHON_KINDS]
    chosen = [(l, v) for l, v in pyx if v > 0]
    if not chosen:
        chosen = [(l, l.self.value(metric)) for l in profile.lines()
                  if (l.kind == "python" or is_helper_label(l.function)) and l.self.value(metric) > 0]
    chosen.sort(key=lambda item: (-item[1], item[0].file, item[0].line))
    return chosen[:limit]


def pyx_totals(profile: Profile) -> Metrics:
    """What the .pyx lines caused, together: each allocation counts once, at its
    innermost .pyx frame (so nested .pyx calls are not counted twice)."""
    total = Metrics()
    for line in profile.lines():
        if line.kind in CYTHON_KINDS:
            total.add(line.attributed)
    return total


def pyx_line(profile: Profile) -> str:
    """`.pyx code: 1.0 MiB in 12 blocks, 800 KiB live at the peak, 0 B still live`."""
    m = pyx_totals(profile)
    return (f".pyx code: {human_bytes(m.bytes)} in {human_count(m.count)} blocks, "
            f"{human_bytes(m.peak_bytes)} live at the peak, {human_bytes(m.leaked_bytes)} still live at the end")


def totals_line(profile: Profile) -> str:
    t = profile.totals
    return (f"allocated {human_bytes(t.bytes)} in {human_count(t.count)} blocks, "
            f"peak {human_bytes(t.peak_bytes)}, still live at the end {human_bytes(t.leaked_bytes)}")


def lines_text(profile: Profile, metric: str = "bytes", limit: int = 5, indent: str = "  ") -> List[str]:
    """One line per responsible line: `mod.pyx:12  1.0 MiB  <source text>`."""
    sources = SourceCache(profile)
    rows = []
    chosen = responsible_lines(profile, metric, limit)
    width = max([24] + [len(where(line)) for line, _ in chosen])
    for line, value in chosen:
        text = sources.shown_line(line.file, line.line)[0] if line.kind in ("pyx", "python") else ""
        rows.append(display_name(f"{indent}{where(line):<{width}} {human_bytes(value):>10}  {text}".rstrip()))
    return rows


def brief(profile: Profile, metric: str = "bytes", limit: int = 5) -> str:
    """The totals, then the lines responsible for `metric`, with their source text."""
    text = [totals_line(profile)]
    for note in profile.notes():
        text.append(f"warning: {display_name(note)}")
    rows = lines_text(profile, metric, limit)
    if rows:
        text.append(f"lines by bytes {METRIC_WORDS.get(metric, metric)}:")
        text.extend(rows)
    return "\n".join(text)
