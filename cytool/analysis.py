"""Aggregate a capture into a Profile: libcyanalyze symbolises and replays the events in
C (per stack metrics), this module groups them per source line (self and inclusive).

    profile = load_profile("out.cytrace")
    for line in profile.lines(): line.file, line.line, line.self.bytes, line.inclusive.count
"""
from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from cytool.capture import Capture, LoadedObject, Takeover, WriteLoss, _AnalyzeOptions, library, read_capture
from cytool.errors import CytoolError
from cytool.helper_calls import helper_options

# Frames of a Cython function: at a .pyx line, or at a line of its generated C when no
# .pyx line is known ("cython-c"); both are the program's own code.
CYTHON_KINDS = ("pyx", "cython-c")
USER_KINDS = CYTHON_KINDS + ("python",)

METRIC_NAMES = (
    "bytes",
    "count",
    "peak_bytes",
    "peak_count",
    "leaked_bytes",
    "leaked_count",
    "temporary_bytes",
    "temporary_count",
)


@dataclass
class Metrics:
    """Allocated (bytes, count), live at the peak, live at the end (leaked), and freed
    right after being allocated (temporary)."""

    bytes: int = 0
    count: int = 0
    peak_bytes: int = 0
    peak_count: int = 0
    leaked_bytes: int = 0
    leaked_count: int = 0
    temporary_bytes: int = 0
    temporary_count: int = 0

    @classmethod
    def from_list(cls, values: Sequence[int]) -> "Metrics":
        return cls(*values)

    def add(self, other: "Metrics") -> None:
        self.bytes += other.bytes
        self.count += other.count
        self.peak_bytes += other.peak_bytes
        self.peak_count += other.peak_count
        self.leaked_bytes += other.leaked_bytes
        self.leaked_count += other.leaked_count
        self.temporary_bytes += other.temporary_bytes
        self.temporary_count += other.temporary_count

    def as_tuple(self) -> Tuple[int, ...]:
        return (self.bytes, self.count, self.peak_bytes, self.peak_count, self.leaked_bytes, self.leaked_count,
                self.temporary_bytes, self.temporary_count)

    def as_dict(self) -> Dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def value(self, metric: str) -> int:
        return int(getattr(self, metric))


@dataclass(frozen=True)
class Location:
    function: str
    file: str
    line: int
    # "pyx", "native", "python", "unknown", "cut" (the middle of a deep stack), "cython-c"
    # (a Cython function at a line of its generated C: no .pyx line is known)
    kind: str
    object: str

    @property
    def is_user(self) -> bool:
        """A line of the program's own source: a .pyx line, a Cython function's
        generated-C line or a Python line."""
        return self.kind in USER_KINDS

    @property
    def is_attributable(self) -> bool:
        """What the C aggregator attributes allocations to: user lines, and raw addresses
        of objects that could not be symbolised (e.g. a module deleted since)."""
        return self.is_user or (self.kind == "unknown" and bool(self.object))

    @property
    def line_key(self) -> Tuple[str, int, str]:
        """Locations that are the same source line share a key."""
        if self.is_user and self.file:
            return (self.file, self.line, "")
        return ("", 0, f"{self.function}\0{self.object}")

    def label(self) -> str:
        if self.is_user and self.file:
            where = f"{Path(self.file).name}:{self.line}" if self.line else Path(self.file).name
            if self.kind == "cython-c":
                where += ", generated C"
            return f"{self.function} ({where})"
        if self.kind == "native" and self.object:
            return f"{self.function} ({Path(self.object).name})"
        return self.function


@dataclass
class StackStats:
    frames: List[Location]  # innermost first
    self_location: Location
    metrics: Metrics


@dataclass
class LineStats:
    """One source line (or one native function when no source line is known)."""

    file: str
    line: int
    function: str
    kind: str
    object: str
    self: Metrics = field(default_factory=Metrics)
    inclusive: Metrics = field(default_factory=Metrics)
    # .pyx lines only: allocations whose innermost .pyx frame is this line, including
    # those made by the Python or library code the line called (what a Cython
    # developer can act on at this line)
    attributed: Metrics = field(default_factory=Metrics)


@dataclass
class ThreadStats:
    id: int
    tid: int
    name: str
    metrics: Metrics


@dataclass
class ProcessStats:
    """One process of a merged report (cytool.process_merge): its capture and its own
    totals. start_time_ns: the capture's start (ns since the epoch); peak_time_ns and
    end_time_ns: from that start; notes: what its own report would warn about."""

    pid: int
    parent_pid: int
    argv: Tuple[str, ...]
    capture_path: Path
    start_time_ns: int
    totals: Metrics
    events: int
    peak_time_ns: int
    end_time_ns: int
    threads: int
    notes: List[str] = field(default_factory=list)


@dataclass
class Profile:
    capture_path: Path
    argv: Tuple[str, ...]
    pid: int
    python_version: str
    time_resolution_ns: int  # events' time unit (0: not recorded, format 1)
    clock: str  # "ticking" (a clock thread's ticks), "exact" (read per event), "" (format 1)
    truncated: bool
    truncation_message: str
    dropped_events: int  # events the tracer could not record (its STATS record)
    symbol_warnings: List[str]
    totals: Metrics
    peak_time_ns: int
    end_time_ns: int
    events: int
    frees: int
    unmatched_frees: int
    replaced_blocks: int  # allocations at an address still live (its free was not seen)
    temporary_window: int
    kinds: Dict[str, Tuple[int, int]]  # kind -> (events, bytes)
    stacks: List[StackStats]
    timeline: List[Tuple[int, int]]  # (time ns, live bytes)
    threads: List[ThreadStats]
    locations: List[Location] = field(default_factory=list)
    # what is missing or doubtful, and why (format 3 captures say most of it)
    missing_events: int = 0  # events the tracer recorded that are not in the file
    lost_events: int = 0  # of the tracer's events, recorded but never written (its STATS record)
    capture_notes: List[str] = field(default_factory=list)  # damaged frames, gaps, repeats
    write_losses: List[WriteLoss] = field(default_factory=list)
    takeovers: List[Takeover] = field(default_factory=list)
    max_frames: int = 0  # frames a stack kept at most (0: not recorded)
    cut_events: int = 0  # allocations whose stack was cut in the middle
    cut_bytes: int = 0
    cut_most: int = 0  # the most frames cut from one stack
    # the flame graph's tree: [location index (-1: root), parent node (-1: root), bytes,
    # peak bytes, leaked bytes, count], parents first (built and pruned in C)
    flame: List[List[int]] = field(default_factory=list)
    # the objects the process loaded (path, build-id): reports find the build records of
    # its modules by build-id (cytool.reports.source)
    objects: List[LoadedObject] = field(default_factory=list)
    _lines: List[LineStats] = field(default_factory=list)
    parent_pid: int = 0
    start_time_ns: int = 0  # the capture's start, ns since the epoch (CLOCK_REALTIME)
    # several processes merged into this report (cytool.process_merge), the root first;
    # empty for the report of one capture
    processes: List[ProcessStats] = field(default_factory=list)
    # tracing started in the running process (cytool attach), at start_time_ns: blocks
    # allocated before are unknown, their frees (in unmatched_frees) are not counted
    attached: bool = False
    # events no order of their tick's threads could place with their block in the right
    # state (capture_merge.c): the tracer never writes such a capture
    order_conflicts: int = 0
    first_order_conflict_ns: int = 0
    # the capture ended when the process replaced its program (an exec that succeeded),
    # this long after its start (None: it did not); the process went on as another capture
    exec_at_ns: Optional[int] = None

    def lines(self) -> List[LineStats]:
        """Per source line (grouped in C): self, inclusive and (for .pyx lines)
        attributed, biggest self bytes first. A line counts once per stack for inclusive
        figures, however often it appears in it."""
        return self._lines

    def notes(self) -> List[str]:
        """What a reader of any report must know first: truncation and missing events,
        write errors, another tracer taking over, stacks cut, frames that could not be
        symbolised."""
        notes = [self.truncation_message] if self.truncated else []
        return notes + self.warnings()

    def warnings(self) -> List[str]:
        """notes() but the truncation message (the JSON report's `warnings`); for a
        merged report, each process's notes, naming its pid."""
        if self.processes:
            return [f"pid {p.pid}: {note}" for p in self.processes for note in p.notes]
        notes = [attached_note(self)] if self.attached else []
        notes += self.capture_notes
        for loss in self.write_losses:
            notes.append(
                f"the capture could not be written from {loss.from_ns / 1e9:.3f} s to {loss.until_ns / 1e9:.3f} s "
                f"({loss.reason}): {loss.events:,} events were lost"
            )
        if self.dropped_events:
            notes.append(f"the tracer could not record {self.dropped_events:,} events: the figures are a lower bound")
        if self.missing_events and not self.truncated:
            notes.append(f"{self.missing_events:,} events the tracer recorded are missing: the figures are a lower bound")
        notes += takeover_notes(self.takeovers)
        if self.order_conflicts:
            notes.append(
                f"{self.order_conflicts:,} events could not be ordered with the other threads' events of their "
                f"clock tick so that each block is allocated and freed in turn (the first in the tick at "
                f"{self.first_order_conflict_ns / 1e9:.3f} s): the capture contradicts itself there, and live and "
                "leaked figures may be off; was it written by another tool or edited?"
            )
        if self.cut_events:
            limit = f"{self.max_frames} frames" if self.max_frames else "the frame limit"
            notes.append(
                f"{self.cut_events:,} allocations had stacks deeper than {limit}: up to {self.cut_most:,} frames were "
                f"cut from the middle of each (shown as \"… frames cut\"); raise the limit to keep them "
                "(`cytool profile --max-frames`, `pytest --cytool-max-frames`, `Tracker(max_frames=)`)"
            )
        return notes + list(self.symbol_warnings)

    def source_files(self) -> List[str]:
        """The .pyx (and Python) files that have allocating lines, biggest first."""
        totals: Dict[str, int] = {}
        for line in self.lines():
            if line.kind in ("pyx", "python") and line.file:
                totals[line.file] = totals.get(line.file, 0) + line.inclusive.bytes
        return sorted(totals, key=lambda f: -totals[f])


def attached_note(profile: "Profile") -> str:
    """What a capture started by cytool attach leaves out, and from when."""
    import time

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(profile.start_time_ns / 1e9))
    frees = f"; {profile.unmatched_frees:,} frees of such blocks were not counted" if profile.unmatched_frees else ""
    return (f"tracing started in the running process at {when} (cytool attach): blocks allocated before then "
            f"are not in the figures{frees}")


def takeover_notes(takeovers: Sequence[Takeover]) -> List[str]:
    """One line per moment another tracer took over (or gave back) the tracer's hooks:
    which functions, of how many objects, and where they now lead."""
    groups: Dict[Tuple[int, str, str, str], List[Takeover]] = {}
    for t in takeovers:
        groups.setdefault((t.time_ns, t.what, t.state, t.target), []).append(t)
    notes = []
    for (time_ns, what, state, target), items in sorted(groups.items()):
        functions = ", ".join(sorted({t.function for t in items}))
        if what == "pymem":
            where = f"the Python allocator domains {', '.join(sorted({t.object for t in items}))}"
        else:
            objects = sorted({Path(t.object).name for t in items})
            shown = ", ".join(objects[:3]) + (f" and {len(objects) - 3} more" if len(objects) > 3 else "")
            where = f"{functions} in {len(objects)} object{'s' if len(objects) != 1 else ''} ({shown})"
        if state == "taken":
            into = f", now leading into {target}" if target else ""
            notes.append(
                f"another tracer took over {where} at {time_ns / 1e9:.3f} s{into}: allocations through them were not "
                "recorded from then on"
            )
        else:
            notes.append(f"{where} lead to cytool's tracer again from {time_ns / 1e9:.3f} s")
    return notes


PACKAGE_DIR = str(Path(__file__).resolve().parent) + "/"
# The launcher's Python frames: cytool's own code, runpy (frozen from 3.11, a file before:
# '*' matches a suffix), and the frozen import machinery that runs a module's init.
# Stacks are cut there (in C), so they start at the program.
RUNNER_PREFIXES = (PACKAGE_DIR, "<frozen runpy", "*/runpy.py", "<frozen importlib")


def tool_prefixes(argv: Sequence[str]) -> Tuple[str, ...]:
    """cytool's own files in a capture's stacks: its package, and the `cytool` console
    script when that is what the process ran (argv: python, .../bin/cytool, ...)."""
    prefixes = [PACKAGE_DIR]
    if len(argv) > 1 and Path(argv[1]).name == "cytool":
        prefixes.append(argv[1])
    return tuple(prefixes)


def exec_notes(capture: Capture) -> List[str]:
    """A capture finished for an exec that worked: the program that replaced the process
    (the truncation message tells of one that failed)."""
    if capture.exec_what is None or capture.exec_failure:
        return []
    return [f"the process replaced its program at {capture.exec_time_ns / 1e9:.3f} s (exec {capture.exec_what}): "
            "the capture ends there"]


def analyze(
    capture: Capture,
    *,
    threads: Optional[Iterable[int]] = None,
    temporary_window: int = 1,
    native_frames: bool = False,
    runner_frames: bool = False,
) -> Profile:
    """Symbolise and aggregate an open capture (heavy lifting in C). Unless
    runner_frames, stacks are cut at the launcher's frames (RUNNER_PREFIXES) outside the
    program's outermost frame; what cytool's launcher allocated on its own is
    `(cytool runner)`, and what cytool's own code allocated inside a program that it did
    not launch (cytool.Tracker starting or stopping) is `(cytool tracer)`. What a test
    framework calls inside a test to check an assertion and explain its failure is one
    frame, `(pytest assertion message)` and the like (cytool.helper_calls), under the
    test's line."""
    lib = library()
    if not hasattr(lib, "cya_analyze_json") or lib.cya_analyze_json.restype is not ctypes.c_void_p:
        raise CytoolError("this libcyanalyze.so has no aggregator", hint="run `make -C runtime`")
    wanted = sorted(set(threads)) if threads is not None else []
    unknown = [t for t in wanted if t not in capture.threads]
    if unknown:
        known = ", ".join(str(t) for t in sorted(capture.threads)) or "none"
        raise CytoolError(
            f"{capture.path}: no thread {', '.join(map(str, unknown))} in this capture",
            hint=f"threads recorded: {known}",
            exit_code=2,
        )
    array = (ctypes.c_uint64 * max(1, len(wanted)))(*wanted)
    argv = capture.header.argv
    helpers = helper_options((f.file, f.function) for f in capture.pyframes.values())
    options = _AnalyzeOptions(
        temporary_window=max(1, temporary_window),
        nthreads=len(wanted),
        threads=ctypes.cast(array, ctypes.POINTER(ctypes.c_uint64)),
        include_native_frames=1 if native_frames else 0,
        runner_prefixes=None if runner_frames else "\n".join(RUNNER_PREFIXES + tool_prefixes(argv)).encode(),
        tool_prefixes=None if runner_frames else "\n".join(tool_prefixes(argv)).encode(),
        helper_calls=helpers[0].encode() or None,
        helper_labels=helpers[1].encode(),
        helper_library=helpers[2].encode(),
    )
    errbuf = ctypes.create_string_buffer(512)
    raw = lib.cya_analyze_json(capture.handle, capture.symbols_handle, ctypes.byref(options), errbuf, len(errbuf))
    if not raw:
        raise CytoolError(f"{capture.path}: cannot analyse the capture: {errbuf.value.decode(errors='replace')}")
    try:
        text = ctypes.string_at(raw).decode("utf-8", "replace")
    finally:
        lib.cya_free(raw)
    data = json.loads(text)
    first_conflict = ctypes.c_uint64()
    order_conflicts = lib.cya_order_conflicts(capture.handle, ctypes.byref(first_conflict))  # found by that merge
    locations = [Location(f, file, line, kind, obj) for f, file, line, kind, obj in data["locations"]]
    stacks = [
        StackStats([locations[i] for i in frames], locations[self_index], Metrics.from_list(metrics))
        for self_index, frames, metrics in data["stacks"]
    ]
    lines = []
    for location, own, inclusive, attributed in data["lines"]:
        where = locations[location]
        lines.append(
            LineStats(where.file, where.line, where.function, where.kind, where.object, Metrics.from_list(own),
                      Metrics.from_list(inclusive), Metrics.from_list(attributed))
        )
    lines.sort(key=lambda s: (-s.self.bytes, -s.inclusive.bytes, s.file, s.line))
    thread_stats = []
    for tid, metrics in data["threads"]:
        info = capture.threads.get(tid)
        thread_stats.append(ThreadStats(tid, info.tid if info else 0, info.name if info else "", Metrics.from_list(metrics)))
    return Profile(
        capture_path=capture.path,
        argv=capture.header.argv,
        pid=capture.header.pid,
        python_version=capture.header.python_version,
        time_resolution_ns=capture.header.time_resolution_ns,
        clock=("ticking" if capture.header.ticking_clock else "exact") if capture.header.version >= 2 else "",
        truncated=capture.truncated,
        truncation_message=capture.truncation_message(),
        dropped_events=capture.stats.dropped if capture.stats else 0,
        symbol_warnings=capture.symbol_warnings,
        totals=Metrics.from_list(data["totals"]),
        peak_time_ns=data["peak_time_ns"],
        end_time_ns=data["end_time_ns"],
        events=data["events"],
        frees=data["frees"],
        unmatched_frees=data["unmatched_frees"],
        replaced_blocks=data["replaced_blocks"],
        temporary_window=data["temporary_window"],
        kinds={k: (v[0], v[1]) for k, v in data["kinds"].items()},
        stacks=stacks,
        timeline=[(t, b) for t, b in data["timeline"]],
        threads=thread_stats,
        locations=locations,
        flame=data["flame"],
        objects=list(capture.objects),
        _lines=lines,
        missing_events=capture.missing_events,
        lost_events=capture.stats.lost if capture.stats else 0,
        capture_notes=list(capture.notes) + exec_notes(capture),
        write_losses=list(capture.write_losses),
        takeovers=list(capture.takeovers),
        max_frames=capture.header.max_frames,
        cut_events=data.get("cut_events", 0),
        cut_bytes=data.get("cut_bytes", 0),
        cut_most=data.get("cut_most", 0),
        parent_pid=capture.header.parent_pid,
        start_time_ns=capture.header.start_time_ns,
        attached=capture.header.attached,
        order_conflicts=int(order_conflicts),
        first_order_conflict_ns=first_conflict.value,
        exec_at_ns=capture.exec_time_ns if capture.exec_what is not None and not capture.exec_failure else None,
    )


def select_threads(spec: Optional[str], capture: Capture) -> Optional[List[int]]:
    """The thread ids that `--threads` names: comma-separated thread names (the Python
    thread's name, else its native name; every thread of that name) or ids. None for no
    filter. Raises CytoolError for a name no thread has."""
    if not spec:
        return None
    wanted: List[int] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        ids = [t.id for t in capture.threads.values() if t.name == item]
        if not ids and item.isdigit():
            ids = [int(item)]
        if not ids:
            names = ", ".join(f"{t.id} ({t.name or '?'})" for t in capture.threads.values()) or "none"
            raise CytoolError(f"{capture.path}: no thread named {item!r}", hint=f"threads recorded: {names}", exit_code=2)
        wanted.extend(ids)
    return wanted


def load_profile(path: Union[str, Path], **options: object) -> Profile:
    """Read, symbolise and aggregate a capture file in one go."""
    with read_capture(path) as capture:
        return analyze(capture, **options)  # type: ignore[arg-type]
