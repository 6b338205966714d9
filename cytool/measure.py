"""Trace one piece of work in this process and read back its profile: what the pytest
plugin (a test), `cytool test --profile` (a doctest example) and the notebook magics (a
cell or a statement) share.

    with Measurement() as measured:
        work()
    profile = measured.profile()     # cytool.analysis.Profile, analysed once
    measured.discard()               # the capture is a temporary file unless `keep_as`

One tracer runs per process: a Measurement cannot start while another tracer (a
Tracker, `cytool profile`, CYTOOL_PROFILE) is active; it says so (TracerBusy).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Optional, Type

from cytool.errors import CytoolError

if TYPE_CHECKING:
    from cytool.analysis import Profile


class TracerBusy(CytoolError):
    """Another tracer session is active in this process."""


def tracer_active() -> Optional[str]:
    """The capture path of the tracer session active in this process, or None."""
    try:
        from cytool import _cytrace
    except ImportError:
        return None
    return str(_cytrace.path()) if _cytrace.is_active() else None


class Measurement:
    """Context manager tracing the work inside it.

    keep_as: the capture's path (kept); None: a temporary file that discard() removes.
    trace_python_allocators: record Python's object allocator (pymalloc) block by block,
        so that small objects count by themselves (not as the arenas they live in): the
        right measure for limits and leaks.
    max_frames: the most frames a stack keeps (None: the tracer's default, 1024). Raises TracerBusy on entry when another
        tracer is active, CytoolError when the tracer cannot start.
    """

    def __init__(self, keep_as: Optional[Path] = None, *, trace_python_allocators: bool = True,
                 max_frames: Optional[int] = None):
        self.keep_as = Path(keep_as) if keep_as is not None else None
        self.trace_python_allocators = trace_python_allocators
        self.max_frames = max_frames
        self.capture_path: Optional[Path] = None
        self._tracker = None
        self._profile: Optional["Profile"] = None

    def start(self) -> "Measurement":
        from cytool.tracker import Tracker

        busy = tracer_active()
        if busy is not None:
            raise TracerBusy(
                f"another tracer is already recording this process (into {busy})",
                hint="one tracer per process: do not combine this with `cytool profile`, a cytool.Tracker or CYTOOL_PROFILE",
            )
        if self.keep_as is not None:
            self.keep_as.parent.mkdir(parents=True, exist_ok=True)
            path = self.keep_as
        else:
            handle, name = tempfile.mkstemp(prefix="cytool-", suffix=".cytrace")
            os.close(handle)
            path = Path(name)
        self.capture_path = path
        self._tracker = Tracker(path, trace_python_allocators=self.trace_python_allocators, max_frames=self.max_frames)
        self._tracker.start()
        return self

    def stop(self) -> None:
        if self._tracker is not None and self._tracker.active:
            self._tracker.stop()
        self._tracker = None

    def __enter__(self) -> "Measurement":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()

    def profile(self) -> "Profile":
        """The capture, symbolised and aggregated (once). CytoolError if unreadable."""
        if self._profile is None:
            if self.capture_path is None:
                raise CytoolError("nothing was measured")
            from cytool.analysis import load_profile

            self._profile = load_profile(self.capture_path)
        return self._profile

    def discard(self) -> None:
        """Remove a temporary capture (a kept one stays)."""
        self.stop()
        if self.keep_as is None and self.capture_path is not None:
            try:
                self.capture_path.unlink()
            except OSError:
                pass
