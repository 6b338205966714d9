"""`cytool.Tracker`: record every allocation of this process into a capture file.

    with cytool.Tracker("out.cytrace"):
        work()

Tracing covers all threads and every loaded library (their GOT/PLT slots are rewritten
while the tracker is active and restored when it stops). Python frames are recorded so
pure-Python callers show above the native ones. The capture is read back with
`cytool.capture.read_capture` or reported with `cytool report`.
"""
from __future__ import annotations

import atexit
import errno
import os
from pathlib import Path
from types import FrameType, TracebackType
from typing import Dict, Optional, Type, Union

from cytool.errors import CytoolError

_atexit_registered = False


class CaptureInUseError(CytoolError):
    """Another process is tracing into the capture path (it holds the file's lock)."""

    def __init__(self, path: Path):
        super().__init__(
            f"{path}: another process is writing a capture there right now",
            hint="choose another path, or wait for that process to finish",
            exit_code=2,
        )
        self.path = path


_cytrace_module = None  # the extension once imported: no import machinery runs (and allocates) while tracing


def _driver():
    global _cytrace_module
    if _cytrace_module is not None:
        return _cytrace_module
    try:
        from cytool import _cytrace
    except ImportError as error:
        raise CytoolError(
            f"the tracer extension cytool._cytrace is not built ({error})",
            hint="run `make -C runtime` and `python setup.py build_ext --inplace` (or reinstall cytool)",
        ) from None
    _cytrace_module = _cytrace
    return _cytrace


class frame_pinned:
    """`with frame_pinned(sys._getframe()):` while the block runs, that frame (of this
    thread: cytool's code that runs the measured code, suspended in that call until the
    block ends) is pinned: the tracer's check of an allocation's Python frames stops there
    instead of comparing every frame outside it (pytest's and pluggy's, the launcher's)
    again at each allocation; with record_outside=False the frames outside it are not
    recorded at all (stacks end at it). Nothing happens when the tracer extension is not loaded
    (nothing traces). A class, not a generator: its own frames are cytool's, so what
    they allocate inside a measurement is the tracer's row, not contextlib's lines."""

    def __init__(self, frame: FrameType, record_outside: bool = True) -> None:
        self.pin = getattr(_cytrace_module, "pin_frame", None)
        self.frame: Optional[FrameType] = frame
        self.record_outside = record_outside

    def __enter__(self) -> None:
        if self.pin is not None:
            self.pin(self.frame, self.record_outside)

    def __exit__(self, *exc: object) -> None:
        if self.pin is not None:
            self.pin(None)
        self.frame = None


def _after_fork_in_child() -> None:
    # Forget the parent's other threads; a child that does not follow also drops the
    # Python-frame profiler (the C tracer stopped itself already).
    try:
        from cytool import _cytrace

        _cytrace._after_fork_child()
    except Exception:
        pass


def _stop_at_exit() -> None:
    # Stop before the interpreter finalises, while the Python frames we point at still exist.
    try:
        from cytool import _cytrace

        if _cytrace.is_active():
            _cytrace.stop()
    except Exception:
        pass


class Tracker:
    """Context manager (or start()/stop()) around a tracing session.

    path: the capture file (created or truncated).
    follow_fork: a forked child writes its own capture `<path>.<child pid>`; otherwise
        the child stops tracing and leaves the file to the parent.
    trace_python_allocators: also record the PyMem RAW/MEM/OBJ domains (pymalloc); their
        blocks then appear as pymem_* events instead of the malloc/mmap underneath.
    python_frames: record the Python frames above the native ones (read from the
        interpreter's frames at each allocation; no profile function, so a program's own
        profiler and tracer are left alone).
    native_unwind: always unwind with libunwind, even through frame-pointer code.
    time_resolution_ns: event time resolution (None: the tracer's default, 1 ms,
        _cytrace.DEFAULT_TIME_RESOLUTION_NS). From 100 us up a clock
        thread ticks and an event costs one memory read for its time; events of different
        threads within one tick are interleaved evenly, every address keeping a possible
        history of allocations and frees. Below 100 us each event reads the TSC (rounded
        down to a power of two of ns): exact order across threads, larger captures.
    compression_level: zstd level of the capture frames, 0 (fast, default: zstd's -1) or 1..12 (smaller,
        with 1 MiB of event buffer per thread instead of 256 KiB).
    max_frames: the most frames a stack keeps (native and Python together; default
        _cytrace.DEFAULT_MAX_FRAMES, 1024; 16 to 65536). A deeper stack keeps its innermost
        and outermost frames, and reports say how many were cut from its middle.
    say_exec: when the program replaces itself (exec), say on stderr that the capture is
        finished and how to report it (the capture is finished at an exec either way).
    parent_pid: the pid of the process that started this one, when it is traced too
        (CYTOOL_PROFILE's autostart gives it): a merged report puts this capture under it.

    The capture is locked while tracing: start() raises CaptureInUseError when another
    process is tracing into the same path. Write errors (disk full, ...) never stop the
    program: they are said on stderr, counted (stats "lost") and recorded in the capture.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        follow_fork: bool = False,
        trace_python_allocators: bool = False,
        python_frames: bool = True,
        native_unwind: bool = False,
        time_resolution_ns: Optional[int] = None,
        compression_level: int = 0,
        max_frames: Optional[int] = None,
        say_exec: bool = False,
        parent_pid: int = 0,
    ) -> None:
        self.path = Path(path)
        self.follow_fork = follow_fork
        self.trace_python_allocators = trace_python_allocators
        self.python_frames = python_frames
        self.native_unwind = native_unwind
        self.time_resolution_ns = time_resolution_ns
        self.compression_level = compression_level
        self.max_frames = max_frames
        self.say_exec = say_exec
        self.parent_pid = parent_pid
        self.stats: Optional[Dict[str, int]] = None

    def start(self) -> "Tracker":
        global _atexit_registered
        driver = _driver()
        if driver.is_active():
            raise CytoolError(
                f"already tracing into {driver.path()}",
                hint="one tracer per process: stop the other Tracker (or unset CYTOOL_PROFILE) first",
            )
        python_frames = self.python_frames
        settings: Dict[str, int] = {} if self.time_resolution_ns is None else {"time_resolution_ns": self.time_resolution_ns}
        if self.max_frames is not None:
            if not driver.MIN_MAX_FRAMES <= self.max_frames <= driver.MAX_MAX_FRAMES:
                raise CytoolError(
                    f"max_frames must be between {driver.MIN_MAX_FRAMES} and {driver.MAX_MAX_FRAMES}, not {self.max_frames}"
                )
            settings["max_frames"] = self.max_frames
        if self.say_exec:
            settings["say_exec"] = True
        if self.parent_pid:
            settings["parent_pid"] = self.parent_pid
        if os.path.exists(self.path) and not os.path.isfile(self.path):
            # opening a FIFO to write would block this program until someone reads it
            raise CytoolError(f"{self.path}: not a regular file (a FIFO, a device?); a capture is written to a file",
                              hint="give another path")
        try:
            driver.start(
                os.fspath(self.path),
                follow_fork=self.follow_fork,
                trace_python_allocators=self.trace_python_allocators,
                python_frames=python_frames,
                native_unwind=self.native_unwind,
                compression_level=self.compression_level,
                **settings,
            )
        except OSError as error:
            if error.errno == errno.EAGAIN:
                raise CaptureInUseError(self.path) from None
            raise CytoolError(f"{self.path}: {error.strerror or error}", hint="check that the directory exists and is writable") from None
        if not _atexit_registered:
            atexit.register(_stop_at_exit)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork_in_child)
            _atexit_registered = True
        return self

    def stop(self) -> Optional[Dict[str, int]]:
        """Finish the capture; returns the tracer's counts: events (recorded), dropped (could
        not be recorded), lost (recorded but not written), stacks, frames, bytes."""
        stats = _driver().stop()
        if stats is not None:
            self.stats = dict(stats)
        return self.stats

    @property
    def active(self) -> bool:
        return bool(_driver().is_active())

    def __enter__(self) -> "Tracker":
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()
