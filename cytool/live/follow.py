"""A capture followed while it is written: libcyanalyze's follower (runtime/src/analyze_follow.c)
through ctypes, and its figures grouped by source line.

    follower = Follower("out.cytrace")
    follower.poll()                       # read what was appended, replay, symbolise
    follower.totals.live_bytes, follower.totals.complete
    for line in follower.lines(thread=None): line.label, line.live_bytes, ...

Each poll reads only the frames written since the last one. Bad files raise CytoolError
with one clear message (not a capture, a newer format, a header not yet written).
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from cytool.analysis import RUNNER_PREFIXES, tool_prefixes
from cytool.capture import FRAME_KINDS, NativeHandle, _Location, _Status, _Thread, _text, library, symbol_search_path
from cytool.errors import CytoolError

_u64 = ctypes.c_uint64


class _FollowCell(ctypes.Structure):
    _fields_ = [
        ("stack_id", _u64),
        ("thread_id", _u64),
        ("live_bytes", _u64),
        ("live_count", _u64),
        ("peak_bytes", _u64),
        ("peak_count", _u64),
        ("alloc_bytes", _u64),
        ("alloc_count", _u64),
    ]


class _FollowTotals(ctypes.Structure):
    _fields_ = [
        ("live_bytes", _u64),
        ("live_count", _u64),
        ("peak_bytes", _u64),
        ("peak_time_ns", _u64),
        ("alloc_bytes", _u64),
        ("alloc_count", _u64),
        ("frees", _u64),
        ("unmatched_frees", _u64),
        ("events", _u64),
        ("time_ns", _u64),
        ("pending", _u64),
        ("late_events", _u64),
        ("file_bytes", _u64),
        ("read_bytes", _u64),
        ("settled_bytes", _u64),
        ("complete", ctypes.c_int),
        ("live", ctypes.c_int),
    ]


def _follow_library() -> ctypes.CDLL:
    lib = library()
    if getattr(lib, "_cytool_follow_ready", False):
        return lib
    size_p = ctypes.POINTER(ctypes.c_size_t)
    prototypes = {
        "cya_follow_open": (ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_char_p, ctypes.c_size_t]),
        "cya_follow_poll": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]),
        "cya_follow_get_totals": (ctypes.POINTER(_FollowTotals), [ctypes.c_void_p]),
        "cya_follow_get_cells": (ctypes.POINTER(_FollowCell), [ctypes.c_void_p, size_p]),
        "cya_follow_get_capture": (ctypes.c_void_p, [ctypes.c_void_p]),
        "cya_follow_get_symbols": (ctypes.c_void_p, [ctypes.c_void_p]),
        "cya_follow_close": (None, [ctypes.c_void_p]),
    }
    for name, (restype, argtypes) in prototypes.items():
        try:
            function = getattr(lib, name)
        except AttributeError:
            raise CytoolError("this libcyanalyze.so cannot follow a capture", hint="run `make -C runtime`") from None
        function.restype = restype
        function.argtypes = argtypes
    lib._cytool_follow_ready = True
    return lib


@dataclass
class Totals:
    """The whole process so far: bytes, counts, times in ns since the capture started."""

    live_bytes: int = 0
    live_count: int = 0
    peak_bytes: int = 0
    peak_time_ns: int = 0
    alloc_bytes: int = 0
    alloc_count: int = 0
    frees: int = 0
    events: int = 0
    time_ns: int = 0
    pending: int = 0  # events read, held back until other threads' earlier events are in
    late_events: int = 0  # events replayed after later ones (a batch written very late)
    file_bytes: int = 0
    read_bytes: int = 0
    settled_bytes: int = 0  # the file before this offset is never read again
    complete: bool = False  # the trailer was read: the writer finished
    writing: bool = False  # a process holds the capture's lock


@dataclass
class LineFigures:
    """One source line (or the function of a frame without one): bytes and counts."""

    function: str
    file: str
    line: int
    kind: str  # "pyx", "python", "native", "unknown", "cython-c", or "" for a pseudo row
    live_bytes: int = 0
    live_count: int = 0
    peak_bytes: int = 0
    peak_count: int = 0
    alloc_bytes: int = 0
    alloc_count: int = 0

    @property
    def where(self) -> str:
        if self.file:
            return f"{Path(self.file).name}:{self.line}" if self.line else Path(self.file).name
        return ""


Site = Tuple[str, str, int, str]  # function, file, line, kind


def _matches(file: str, prefixes: Tuple[str, ...]) -> bool:
    for prefix in prefixes:
        if prefix.startswith("*"):
            if file.endswith(prefix[1:]):
                return True
        elif file.startswith(prefix):
            return True
    return False


class Follower(NativeHandle):
    """A capture read as it grows. `poll()` reads the frames completed since the last
    call; `totals`, `threads()` and `lines()` give the figures so far."""

    def __init__(self, path: Union[str, "os.PathLike[str]"]):
        self.path = Path(path)
        self._lib = _follow_library()
        error = ctypes.c_int(0)
        buffer = ctypes.create_string_buffer(1024)
        handle = self._lib.cya_follow_open(
            os.fsencode(self.path), os.fsencode(symbol_search_path()), ctypes.byref(error), buffer, len(buffer)
        )
        if not handle:
            message = _text(buffer.value) or f"{self.path}: cannot read the capture"
            hints = {
                1: "check the path",
                2: "give it a capture written by `cytool profile` (or cytool.Tracker / CYTOOL_PROFILE)",
                3: "upgrade cytool to read this capture",
                4: "the file is damaged, or its writer has not written the header yet",
            }
            raise CytoolError(message, hint=hints.get(error.value, ""), exit_code=2)
        self._handle: Optional[int] = handle
        self._capture = self._lib.cya_follow_get_capture(handle)
        self._symbols = self._lib.cya_follow_get_symbols(handle)
        header = self._lib.cya_get_header(self._capture).contents
        self.format_version = int(header.version)
        self.pid = int(header.pid)
        self.argv = [_text(header.argv[i]) for i in range(header.argc)]
        self.totals = Totals()
        self._locations: List[Tuple[str, str, int, str, str]] = []
        self._sites: Dict[int, Site] = {}  # stack id -> the line its allocations are charged to
        self._runner_prefixes = RUNNER_PREFIXES + tuple(tool_prefixes(self.argv))

    def _is_runner(self, file: str) -> bool:
        return _matches(file, self._runner_prefixes)

    # -- reading -----------------------------------------------------------------------

    def poll(self) -> None:
        """Read what was appended since the last poll. Raises CytoolError when the file
        cannot be read any more (shrank, I/O error, out of memory)."""
        buffer = ctypes.create_string_buffer(1024)
        if not self._lib.cya_follow_poll(self._require(), buffer, len(buffer)):
            raise CytoolError(f"{self.path}: {_text(buffer.value)}", exit_code=1)
        t = self._lib.cya_follow_get_totals(self._handle).contents
        self.totals = Totals(
            live_bytes=t.live_bytes, live_count=t.live_count, peak_bytes=t.peak_bytes, peak_time_ns=t.peak_time_ns,
            alloc_bytes=t.alloc_bytes, alloc_count=t.alloc_count, frees=t.frees, events=t.events, time_ns=t.time_ns,
            pending=t.pending, late_events=t.late_events, file_bytes=t.file_bytes, read_bytes=t.read_bytes,
            settled_bytes=t.settled_bytes,
            complete=bool(t.complete), writing=bool(t.live),
        )

    def _require(self) -> int:
        if self._handle is None:
            raise CytoolError(f"{self.path}: the follower is closed")
        return self._handle

    @property
    def status_problem(self) -> str:
        status: _Status = self._lib.cya_get_status(self._capture).contents
        return _text(status.problem)

    @property
    def exec_end(self) -> Tuple[str, str]:
        """(the program an exec replaced the process with, why that exec failed): ("", "")
        when the capture was not finished for an exec; the failure is "" when it worked."""
        status: _Status = self._lib.cya_get_status(self._capture).contents
        return (_text(status.exec_what) if status.exec_seen else ""), _text(status.exec_failure)

    @property
    def notes(self) -> List[str]:
        status: _Status = self._lib.cya_get_status(self._capture).contents
        return [line for line in _text(status.notes).splitlines() if line]

    def threads(self) -> List[Tuple[int, str]]:
        """(thread id, name) of every thread seen so far, in order of appearance."""
        count = ctypes.c_size_t()
        table = self._lib.cya_get_threads(self._capture, ctypes.byref(count))
        result = []
        for i in range(count.value):
            thread: _Thread = table[i]
            result.append((int(thread.id), _text(thread.name) or f"thread {thread.id}"))
        return result

    # -- figures by line -------------------------------------------------------------

    def _location(self, index: int) -> Tuple[str, str, int, str, str]:
        if index >= len(self._locations):
            count = ctypes.c_size_t()
            table = self._lib.cya_symbols_locations(self._symbols, ctypes.byref(count))
            for i in range(len(self._locations), count.value):
                loc: _Location = table[i]
                kind = FRAME_KINDS[loc.kind] if loc.kind < len(FRAME_KINDS) else "unknown"
                self._locations.append((_text(loc.function), _text(loc.file), int(loc.line), kind, _text(loc.object)))
        return self._locations[index]

    def site(self, stack_id: int) -> Site:
        """The line a stack's allocations are charged to: its innermost .pyx or Python
        frame outside cytool's launcher, "(cytool runner)" for what the launcher did on
        its own (as the reports do), else its innermost frame."""
        cached = self._sites.get(stack_id)
        if cached is not None:
            return cached
        if stack_id == 0:
            return ("<no stack>", "", 0, "")
        count = ctypes.c_size_t()
        indices = self._lib.cya_symbols_stack(self._symbols, stack_id, ctypes.byref(count))
        frames = [self._location(indices[i]) for i in range(count.value)]
        if not frames:
            return ("<unknown stack>", "", 0, "")  # not defined yet: asked again next time
        chosen: Optional[Site] = None
        user = [f for f in frames if f[3] in ("pyx", "cython-c", "python") or (f[3] == "unknown" and f[4])]
        if user and user[-1][3] == "python" and self._is_runner(user[-1][1]):
            # started by cytool's launcher: the program's frames are the others
            user = [f for f in user if not (f[3] == "python" and self._is_runner(f[1]))]
            if not user:
                chosen = ("(cytool runner)", "", 0, "")
        if chosen is None and user:
            function, file, line, kind, obj = user[0]
            chosen = (function, file if kind != "unknown" else obj, line, kind)
        if chosen is None:
            function, file, line, kind, obj = frames[0]
            chosen = (function, file or obj, line, kind)
        self._sites[stack_id] = chosen
        return chosen

    def lines(self, thread: Optional[int] = None) -> List[LineFigures]:
        """Figures per line so far, of one thread (its id) or of all; unsorted."""
        count = ctypes.c_size_t()
        cells = self._lib.cya_follow_get_cells(self._require(), ctypes.byref(count))
        by_site: Dict[Site, LineFigures] = {}
        for i in range(count.value):
            cell: _FollowCell = cells[i]
            if thread is not None and cell.thread_id != thread:
                continue
            site = self.site(int(cell.stack_id))
            row = by_site.get(site)
            if row is None:
                row = by_site[site] = LineFigures(*site)
            row.live_bytes += cell.live_bytes
            row.live_count += cell.live_count
            row.peak_bytes += cell.peak_bytes
            row.peak_count += cell.peak_count
            row.alloc_bytes += cell.alloc_bytes
            row.alloc_count += cell.alloc_count
        return list(by_site.values())

    def close(self) -> None:
        if self._handle is not None:
            self._lib.cya_follow_close(self._handle)
            self._handle = None
