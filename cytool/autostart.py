"""`CYTOOL_PROFILE=path python anything.py`: trace any Python process of this
environment, from its start.

The file `cytool-autostart.pth` that cytool installs into site-packages runs
`import cytool.autostart` at interpreter start-up when CYTOOL_PROFILE is set (Python's
`site` module executes `import` lines of .pth files). We start a Tracker (native stacks
and Python frames) into that path, or into `<path>.<pid>` when the file exists already
(a program that starts others, which inherit the variable, never overwrites a capture;
`<path>.<pid>.2`, `.3` ... after an exec: cytrace_unused_path in the C library),
and stop it at exit. Options come from the environment, as for the C library:
CYTOOL_PROFILE_FOLLOW_FORK, CYTOOL_PROFILE_NATIVE_UNWIND, CYTOOL_PROFILE_TIME_RESOLUTION,
CYTOOL_PROFILE_COMPRESSION, CYTOOL_PROFILE_TRACE_PYTHON_ALLOCATORS.
When tracing cannot start, one line on stderr says why and the program runs untraced.
"""
from __future__ import annotations

import os
import sys


def _flag(name: str) -> bool:
    value = os.environ.get(name, "")
    return value not in ("", "0")


def _start() -> None:
    path = os.environ.get("CYTOOL_PROFILE", "")
    if not path:
        return
    # libcytrace starts on its own when it loads with CYTOOL_PROFILE set (native frames
    # only); hide the variable while we load it, then start with Python frames ourselves.
    os.environ.pop("CYTOOL_PROFILE", None)
    try:
        from cytool import _cytrace  # noqa: F401
    except ImportError as error:
        print(f"cytool: CYTOOL_PROFILE is set but tracing cannot start: {error}", file=sys.stderr)
        return
    finally:
        os.environ["CYTOOL_PROFILE"] = path
    if _cytrace.is_active():
        return
    try:  # never an existing file: an earlier program of this process (before an exec) wrote it, or another process
        path = _cytrace.unused_capture_path(path)
    except OSError as error:
        print(f"cytool: CYTOOL_PROFILE is set but tracing cannot start: {path}: {error.strerror}", file=sys.stderr)
        return
    from cytool.errors import CytoolError
    from cytool.tracker import Tracker

    resolution = os.environ.get("CYTOOL_PROFILE_TIME_RESOLUTION")
    compression = os.environ.get("CYTOOL_PROFILE_COMPRESSION")
    try:
        Tracker(
            path,
            follow_fork=_flag("CYTOOL_PROFILE_FOLLOW_FORK"),
            trace_python_allocators=_flag("CYTOOL_PROFILE_TRACE_PYTHON_ALLOCATORS"),
            native_unwind=_flag("CYTOOL_PROFILE_NATIVE_UNWIND"),
            time_resolution_ns=int(resolution) if resolution else None,
            compression_level=int(compression) if compression else 0,
            parent_pid=os.getppid(),  # a traced program's child (subprocess, spawn, xdist): one tree in merged reports
        ).start()
    except (CytoolError, ValueError, OSError) as error:
        message = error.render() if isinstance(error, CytoolError) else str(error)
        print(f"cytool: CYTOOL_PROFILE is set but tracing cannot start: {message}", file=sys.stderr)


_start()
