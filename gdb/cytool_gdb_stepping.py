"""Execution control on .pyx lines: cy-next, cy-step, cy-finish, cy-until, cy-cont, cy-run.

Owns the stepping loops. They use gdb's own `next`/`finish` (which already walk `.pyx`
lines, thanks to the #line directives) and decide when to stop from what gdb reports:
the stop events (a user breakpoint or a signal ends any step) and the frames (still in
the starting Cython function, returned to a Cython caller, back in Python). `cy-step`
steps into Cython functions by planting internal breakpoints at the first statement of
every Cython function for the duration of one step, so it never wanders through
CPython's call machinery.
"""
from __future__ import annotations

import os
from typing import List, Optional

import gdb  # type: ignore

import cytool_gdb_breakpoints as breakpoints
import cytool_gdb_state as state
from cytool_gdb_frames import (cython_function, frames, location, newest_frame, print_location,
                               python_frames_in, selected_cython_frame)

MAX_STEPS = 20000
_last_stop: Optional["gdb.StopEvent"] = None
stepping = False  # True while a cy-* command drives execution: the stop printer stays quiet


def on_stop(event: "gdb.StopEvent") -> None:
    global _last_stop
    _last_stop = event


def _execute(command: str) -> Optional["gdb.StopEvent"]:
    global _last_stop, stepping
    _last_stop = None
    stepping = True
    # gdb would print every intermediate stop of a cy-* step; we report the last one
    try:
        quiet = gdb.parameter("suppress-cli-notifications")
    except (gdb.error, RuntimeError):
        quiet = None
    if quiet is False:
        gdb.execute("set suppress-cli-notifications on", to_string=True)
    try:
        gdb.execute(command, to_string=True)
    finally:
        stepping = False
        if quiet is False:
            gdb.execute("set suppress-cli-notifications off", to_string=True)
    return _last_stop


def _alive() -> bool:
    try:
        thread = gdb.selected_thread()
    except gdb.error:
        return False
    return thread is not None and thread.is_valid() and newest_frame() is not None


def _user_stop(event: Optional["gdb.StopEvent"]) -> bool:
    """A stop that must end any stepping: a user's breakpoint or a signal."""
    if isinstance(event, gdb.SignalEvent):
        return True
    if isinstance(event, gdb.BreakpointEvent):
        for breakpoint in event.breakpoints:
            owner = breakpoints.owner_of(breakpoint)
            if owner is not None and owner.internal:
                continue
            if isinstance(breakpoint, gdb.FinishBreakpoint):
                continue
            if breakpoint.type == gdb.BP_BREAKPOINT and breakpoint.visible:
                return True
    return False


def _entry_stop(event: Optional["gdb.StopEvent"]) -> bool:
    if isinstance(event, gdb.BreakpointEvent):
        for breakpoint in event.breakpoints:
            owner = breakpoints.owner_of(breakpoint)
            if owner is not None and owner.internal:
                return True
    return False


def _on_stack(frame: "gdb.Frame") -> bool:
    for other in frames():
        if other == frame:
            return True
    return False


def _in_cython_module(frame: "gdb.Frame") -> bool:
    try:
        library = gdb.solib_name(frame.pc())
    except gdb.error:
        return False
    if not library:
        return False
    base = os.path.basename(library)
    return any(base.startswith(m.name + ".") for m in state.modules())


def _is_eval_frame(frame: "gdb.Frame") -> bool:
    try:
        name = frame.name() or ""
    except gdb.error:
        return False
    return "EvalFrame" in name


def report(prefix: str = "") -> None:
    """Say where we stopped: a Cython frame, or the Python code we returned to."""
    if isinstance(_last_stop, gdb.BreakpointEvent) and not prefix:
        for breakpoint in _last_stop.breakpoints:
            owner = breakpoints.owner_of(breakpoint)
            if owner is not None and not owner.internal:
                prefix = f"Cython breakpoint {owner.number}, "
                break
    if not _alive():
        print("The program is not being run.")
        return
    frame = newest_frame()
    assert frame is not None
    if cython_function(frame) is not None:
        frame.select()
        print_location(frame, prefix)
        return
    for other in frames():
        if cython_function(other) is not None:
            break
        python = python_frames_in(other) if _is_eval_frame(other) else []
        if python:
            filename, line, function = python[0]
            print(f"{prefix}returned to Python: {filename}:{line} in {function}()")
            return
    path, line = location(frame)
    if path and _is_user_c(frame):
        print(f"{prefix}{os.path.basename(path)}:{line} in {frame.name() or '??'}() (C)")
        text = state.source_line(path, line).strip()
        if text:
            print(f"{line:>6}    {text}")
        return
    print(f"{prefix}stopped in {frame.name() or '??'}() (C code)")


def _require_running() -> "gdb.Frame":
    if not _alive():
        raise state.CyError("The program is not being run (start it with cy-run).")
    return selected_cython_frame()


def _leave_non_cython() -> Optional["gdb.StopEvent"]:
    """After a return: finish out of wrappers and CPython call machinery up to a Cython
    frame or to the interpreter's eval loop (Python code)."""
    event = None
    for _ in range(64):
        if not _alive():
            return event
        frame = newest_frame()
        if frame is None or cython_function(frame) is not None or _is_eval_frame(frame):
            return event
        if frame.older() is None:
            return event
        event = _execute("finish")
        if _user_stop(event):
            return event
    return event


_NOT_USER_C = ("libc.", "libc-", "libm.", "libpython", "ld-linux", "libpthread", "libdl.", "libstdc++", "libgcc")


def _is_user_c(frame: "gdb.Frame") -> bool:
    """A C function with line information that is neither CPython, libc nor Cython's
    helper code: something the .pyx calls on purpose (cdef extern)."""
    try:
        sal = frame.find_sal()
        library = gdb.solib_name(frame.pc())
    except gdb.error:
        return False
    if sal is None or sal.symtab is None or not library:
        return False
    name = os.path.basename(sal.symtab.filename)
    if name in ("cython_utility", "(tree fragment)") or name.endswith((".pyx", ".pxi", ".pxd")):
        return False
    return not os.path.basename(library).startswith(_NOT_USER_C)


def step_lines(into: bool = False, until: bool = False, c_functions: bool = False) -> None:
    """cy-next (into=False), cy-step (into=True; c_functions: also into user C code),
    cy-until (until=True)."""
    start = _require_running()
    start.select()
    _, start_line = location(start)
    placed: List[breakpoints.CyBreakpoint] = []
    if into:
        for module in state.modules():
            placed.extend(breakpoints.break_at_function_entries(module))
    try:
        for _ in range(MAX_STEPS):
            event = _execute("step" if c_functions else "next")
            if not _alive():
                return
            if _user_stop(event) or (into and _entry_stop(event)):
                break
            frame = newest_frame()
            assert frame is not None
            if c_functions and frame != start and _on_stack(start) and cython_function(frame) is None:
                if _is_user_c(frame):
                    break
                event = _execute("finish")  # Cython's helpers, CPython: back out and go on
                if not _alive():
                    return
                if _user_stop(event) or _entry_stop(event):
                    break
                continue
            if frame == start:
                path, line = location(frame)
                function = cython_function(frame)
                if path is None or function is None:
                    continue
                if line == start_line or (until and line < start_line):
                    continue
                if line == function.lineno:
                    continue  # prologue/epilogue code carries the def line (line 1: module init)
                if function.lines and not function.covers(path, line):
                    continue  # a line number #line left over on C-only code
                break
            if _on_stack(start):
                # deeper than where we started (a call gdb's next did not step over, e.g.
                # through the interpreter): finish back out rather than walk CPython's lines
                event = _execute("finish")
                if not _alive():
                    return
                if _user_stop(event) or (into and _entry_stop(event)):
                    break
                continue
            # the starting function returned
            if cython_function(frame) is not None:
                break
            event = _leave_non_cython()
            break
    finally:
        for breakpoint in placed:
            breakpoint.delete()
    report()


def finish() -> None:
    newest = newest_frame() if _alive() else None
    if newest is not None and cython_function(newest) is None and _is_user_c(newest):
        frame = newest  # stopped in a C function by cy-step -c: finish that
    else:
        frame = _require_running()
    frame.select()
    event = _execute("finish")
    if _alive() and not _user_stop(event):
        _leave_non_cython()
    report()


def until_line(spec: str) -> None:
    frame = _require_running()
    frame.select()
    target = breakpoints.create(spec, internal=True)
    if target.pending:
        target.delete()
        raise state.CyError(f"cannot place {spec}: its module is not loaded")
    try:
        try:
            guard = gdb.FinishBreakpoint(frame, internal=True)
        except (ValueError, gdb.error):
            guard = None
        _execute("continue")
        if guard is not None and guard.is_valid():
            guard.delete()
        if _alive() and cython_function(newest_frame()) is None:
            _leave_non_cython()
    finally:
        target.delete()
    report()


def cont() -> None:
    if not _alive():
        raise state.CyError("The program is not being run (start it with cy-run).")
    gdb.execute("continue")


def run(arguments: str) -> None:
    gdb.execute(("run " + arguments).strip())
