"""Stops made by `cytool.breakpoint()` in the program (cytool/inline_break.py, cytool/debug.pxd).

Owns telling such a stop (a SIGTRAP the program raised on itself, from the C function
`cytool_breakpoint_stop` of a Cython module or from cytool/inline_break.py's Python code)
from any other, finding the breakpoint's caller - the Cython frame or Python frame that
called it - returning to a Cython caller (the breakpoint's own frames finish), selecting
it and saying where it is, so that the cy-* commands start there.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import gdb  # type: ignore

import cytool_gdb_frames as frames
import cytool_gdb_state as state
from cytool_gdb_debuginfo import c_name

C_STOP = "cytool_breakpoint_stop"
PYTHON_FILE = "cytool/inline_break.py"
PREFIX = "cytool.breakpoint(), "


SIGTRAP = 5


def is_breakpoint_signal(event: Optional["gdb.StopEvent"]) -> bool:
    """A SIGTRAP the thread sent itself (gdb reports it as a plain stop, not a signal's)."""
    if isinstance(event, gdb.BreakpointEvent) or event is None:
        return False
    if isinstance(event, gdb.SignalEvent):
        return getattr(event, "stop_signal", "") == "SIGTRAP"
    try:
        return int(gdb.parse_and_eval("$_siginfo.si_signo")) == SIGTRAP
    except (gdb.error, RuntimeError):
        return False


def caller() -> Optional[Tuple["gdb.Frame", Optional[Tuple[str, int, str]]]]:
    """(Cython frame, None) or (eval frame, (file, line, function) of the Python caller) of
    the cytool.breakpoint() this thread stopped in; None when it is not in one.
    The breakpoint's own Python frames may share one C eval frame (3.11+) or each have
    their own (3.9, 3.10): all of them are passed over, whichever C frame runs them."""
    inside = False
    for frame in frames.frames():
        try:
            name = frame.name() or ""
        except gdb.error:
            name = ""
        python = frames.python_frames_in(frame) if "EvalFrame" in name else []
        if not inside:
            if c_name(name) == C_STOP:
                inside = True
                continue
            own = [index for index, found in enumerate(python) if found[0].endswith(PYTHON_FILE)]
            if not own:
                continue
            inside = True
            python = python[own[-1] + 1:]
        elif frames.cython_function(frame) is not None:
            return frame, None
        python = [found for found in python if not found[0].endswith(PYTHON_FILE)]
        if python:
            return frame, python[0]
    return None


def _return_to(caller: "gdb.Frame") -> "gdb.Frame":
    """Let the breakpoint's own frames return (gdb's finish, frame by frame, of those newer
    than the Cython caller), so that the caller is the newest frame and cy-next/cy-step go
    on from its line; the caller as it is when that cannot be done."""
    for _ in range(32):
        try:
            newest = gdb.newest_frame()
            if newest == caller:
                return newest
            frame = newest
            while frame is not None and frame.older() != caller:
                frame = frame.older()
            if frame is None:
                break
            frame.select()
            gdb.execute("set suppress-cli-notifications on", to_string=True)
            try:
                gdb.execute("finish", to_string=True)
            finally:
                gdb.execute("set suppress-cli-notifications off", to_string=True)
        except gdb.error:
            break
    return caller


def report() -> bool:
    """Say where the breakpoint is and select its frame; False when this stop is not one."""
    found = caller()
    if found is None:
        return False
    frame, python = found
    if python is None:
        frame = _return_to(frame)
        frame.select()
        frames.print_location(frame, PREFIX, stop=True)
        return True
    frame.select()
    filename, line, function = python
    print(f"{PREFIX}{os.path.basename(filename)}:{line} in {function}() [Python]{frames.thread_tag()}")
    text = frames.python_source(filename, line)
    if text:
        print(f"{line:>6}    {text}")
    from cytool_gdb_tui import show_python_source

    if os.path.isfile(filename):
        show_python_source(filename, line)
    return True
