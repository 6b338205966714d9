"""Which lines and stacks a report shows, in what order, for a mode (bytes, peak, leaks)."""
from __future__ import annotations

from typing import List

from cytool.analysis import CYTHON_KINDS, LineStats, Profile, StackStats


def ranked_lines(profile: Profile, mode: str = "bytes") -> List[LineStats]:
    """Lines with something in `mode` (self or inclusive), biggest self value first."""
    lines = [l for l in profile.lines() if l.self.value(mode) or l.inclusive.value(mode) or (mode == "bytes" and l.inclusive.count)]
    return sorted(lines, key=lambda l: (-l.self.value(mode), -l.inclusive.value(mode), l.file, l.line, l.function))


def ranked_stacks(profile: Profile, mode: str = "bytes") -> List[StackStats]:
    stacks = [s for s in profile.stacks if s.metrics.value(mode) or (mode == "bytes" and s.metrics.count)]
    return sorted(stacks, key=lambda s: -s.metrics.value(mode))


def ranked_pyx_lines(profile: Profile, mode: str = "bytes") -> List[LineStats]:
    """.pyx lines (and Cython functions' generated-C lines where no .pyx line is known)
    by what they are responsible for (attributed: their own allocations and those of the
    Python and library code they called), biggest first."""
    lines = [l for l in profile.lines() if l.kind in CYTHON_KINDS and (l.attributed.value(mode) or (mode == "bytes" and l.attributed.count))]
    return sorted(lines, key=lambda l: (-l.attributed.value(mode), -l.self.value(mode), l.file, l.line))
