"""Execution control on .pyx lines: cy-next, cy-step, cy-finish, cy-until, cy-cont, cy-run.

Owns the stepping loops. They use gdb's own `next`/`finish` (which already walk `.pyx`
lines, thanks to the #line directives) and decide when to stop from what gdb reports:
the stop events (a user breakpoint or a signal ends any step) and the frames (still in
the starting Cython function, returned to a Cython caller, back in Python). A line is
stopped on once per pass, as Python would: the jump code Cython emits at the end of an
`if` branch under the `if` line is walked through, and `cy-next` over a `yield` waits
for the same generator to be resumed. `cy-step` steps into Cython functions by planting
internal breakpoints after the set-up of every Cython function for the duration of one
step, and into Python functions through the agent (cytool_gdb_python); at a Python stop
the same commands step Python lines until control returns to Cython.
"""
from __future__ import annotations

import os
from typing import List, Optional

import gdb  # type: ignore

import cytool_gdb_breakpoints as breakpoints
import cytool_gdb_inline_break as inline_break
import cytool_gdb_placement as placement
import cytool_gdb_python as pylevel
import cytool_gdb_state as state
from cytool_gdb_debuginfo import c_name, is_branch_header
from cytool_gdb_frames import (cython_function, frames, is_agent_file, is_wrapper_frame, location, newest_frame,
                               print_location, python_frames_in, selected_cython_frame, thread_tag)

MAX_STEPS = 20000
_last_stop: Optional["gdb.StopEvent"] = None
stepping = False  # True while a cy-* command drives execution: the stop printer stays quiet
_stop_points: List["gdb.Breakpoint"] = []  # internal stops planted to act with the GIL held
# numbers of gdb's own (user-visible) breakpoints the last stop hit, read when it happened:
# a temporary one (tbreak, start) is deleted before the cy-* command looks at the event
_last_stop_gdb_breakpoints: List[int] = []


def on_stop(event: "gdb.StopEvent") -> None:
    global _last_stop, _last_stop_gdb_breakpoints
    if pylevel.calling:
        return
    _last_stop = event
    _last_stop_gdb_breakpoints = [b.number for b in getattr(event, "breakpoints", ()) if _is_gdb_user_breakpoint(b)]


def _is_gdb_user_breakpoint(breakpoint: "gdb.Breakpoint") -> bool:
    """One of gdb's own breakpoints that the user set (break, tbreak), not cytool's."""
    return breakpoint.is_valid() and breakpoint.type == gdb.BP_BREAKPOINT and breakpoint.visible and \
        breakpoint.number > 0 and breakpoints.owner_of(breakpoint) is None and \
        not isinstance(breakpoint, gdb.FinishBreakpoint)


def _execute(command: str, capture: bool = True) -> Optional["gdb.StopEvent"]:
    """Run a gdb execution command with its stop printing off; the stop event it ended on."""
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
        gdb.execute(command, to_string=capture)
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
    """A stop that must end any stepping: a user's breakpoint (Cython, Python or gdb's) or a signal."""
    if isinstance(event, gdb.SignalEvent):
        return True
    if pylevel.is_stop_event(event) and pylevel.current is not None and pylevel.current.reason == "breakpoint":
        return True
    if isinstance(event, gdb.BreakpointEvent):
        if event is _last_stop and _last_stop_gdb_breakpoints:
            return True
        for breakpoint in event.breakpoints:
            if not breakpoint.is_valid():
                continue
            owner = breakpoints.owner_of(breakpoint)
            if owner is not None and not owner.internal:
                return True
            if _is_gdb_user_breakpoint(breakpoint):
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


def _is_eval_frame(frame: "gdb.Frame") -> bool:
    """The interpreter's evaluation loop (3.9-3.13), where Python frames run."""
    try:
        return frame.name() == "_PyEval_EvalFrameDefault"
    except gdb.error:
        return False


# -- reporting ------------------------------------------------------------------------------


def report(prefix: str = "", event: Optional["gdb.StopEvent"] = None) -> None:
    """Say where we stopped: a Cython frame, a Python stop, or the Python code we returned to."""
    event = event if event is not None else _last_stop
    if not _alive():
        return  # gdb said how the program exited
    if pylevel.is_stop_event(event) and pylevel.current is not None:
        print_python_stop(pylevel.current)
        return
    if inline_break.is_breakpoint_signal(event) and inline_break.report():
        return
    if isinstance(event, gdb.BreakpointEvent) and not prefix:
        for breakpoint in event.breakpoints:
            owner = breakpoints.owner_of(breakpoint)
            if owner is not None and not owner.internal:
                prefix = f"Cython breakpoint {owner.number}, "
                break
        if not prefix and event is _last_stop and _last_stop_gdb_breakpoints:
            prefix = f"Breakpoint {_last_stop_gdb_breakpoints[0]}, "  # one of gdb's own
    frame = newest_frame()
    assert frame is not None
    if isinstance(event, gdb.BreakpointEvent) and _report_inlined_entry(event, frame, prefix):
        return
    frame = _outside_inlined_helpers(frame)
    if cython_function(frame) is not None:
        frame.select()
        print_location(frame, prefix, stop=True)
        return
    for other in frames():
        if cython_function(other) is not None:
            break
        python = [p for p in python_frames_in(other) if not is_agent_file(p[0])] if _is_eval_frame(other) else []
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
    where = f" at {os.path.basename(path)}:{line}" if path else ""
    print(f"{prefix}stopped in {frame.name() or '??'}(){where} (C code)")


def _report_inlined_entry(event: "gdb.BreakpointEvent", frame: "gdb.Frame", prefix: str) -> bool:
    """A stop at a Cython breakpoint's address where an inlined copy of its function is
    entered: gdb shows the caller there (its frame for the copy starts one instruction on,
    and a copy of one instruction has no such place), so the stop is told as the copy's:
    `mod.pyx:3 in sq() (inlined into helper())`, or `mod.pyx:3 in work()` when the caller
    is the function's own Python wrapper (a module without debug XML names both alike).
    False when that is not the case."""
    try:
        pc = frame.pc()
    except gdb.error:
        return False
    for hit in event.breakpoints:
        if not isinstance(hit, breakpoints.Location) or hit.address != pc:
            continue
        function = hit.function
        if c_name(frame.name()) == function.cname or function.cname not in placement.function_names_at(pc):
            continue
        plan = hit.owner.plan  # (the line asked for: the entry's own row may carry the caller's)
        line = plan.line if plan is not None else gdb.find_pc_line(pc).line
        path = function.source or ""
        if not line or not path:
            continue
        level = placement.optimisation_level_at(pc)
        suffix = f" [{level} build]" if level != "-O0" else ""
        caller = cython_function(frame)
        into = f" (inlined into {caller.display_name}())" if caller not in (None, function) else ""
        print(f"{prefix}{os.path.basename(path)}:{line} in {function.display_name}(){into}{suffix}")
        text = state.source_text(path, line)
        if text:
            print(f"{line:>6}    {text.strip()}")
        return True
    return False


def _outside_inlined_helpers(frame: "gdb.Frame") -> "gdb.Frame":
    """The Cython frame a stop is in when gdb shows it inside C code inlined there (an
    optimised build: Cython's __Pyx_* helpers inlined into the function; gdb shows the
    inlined frame once an inferior call, such as arming the Python agent, reset its view);
    the frame itself otherwise."""
    outer = frame
    try:
        while outer is not None and outer.type() == gdb.INLINE_FRAME and cython_function(outer) is None:
            outer = outer.older()
    except gdb.error:
        return frame
    if outer is not None and outer != frame and cython_function(outer) is not None:
        return outer
    return frame


def print_python_stop(stop: "pylevel.PythonStop") -> None:
    prefix = f"Python breakpoint {stop.number}, " if stop.reason == "breakpoint" and stop.number else ""
    print(f"{prefix}{stop.describe()} [Python]{thread_tag()}")
    text = state.source_line(stop.filename, stop.line).strip()
    if text:
        print(f"{stop.line:>6}    {text}")
    from cytool_gdb_tui import show_python_source

    show_python_source(stop.filename, stop.line)


def _require_running() -> "gdb.Frame":
    if not _alive():
        raise state.CyError("The program is not being run (start it with cy-run).")
    return selected_cython_frame()


def at_python_stop() -> bool:
    """True while the selected thread sits at a Python-level stop of the agent."""
    if pylevel.current is None or not _alive():
        return False
    frame = newest_frame()
    try:
        return frame is not None and frame.name() == "sys_audit"
    except gdb.error:
        return False


# -- running ------------------------------------------------------------------------------


class StopPoint(gdb.Breakpoint):
    """An internal one-shot stop where the GIL is held (a module's PyInit): cytool acts
    there (gives the agent its Python breakpoints, ends a failed batch run) and goes on."""

    def __init__(self, function: str) -> None:
        super().__init__(function, internal=True, temporary=False)


def plant_stop_point(short_name: str) -> None:
    try:
        _stop_points.append(StopPoint(f"PyInit_{short_name}"))
    except (gdb.error, RuntimeError):
        pass


def _at_stop_point(event: Optional["gdb.StopEvent"]) -> bool:
    if not isinstance(event, gdb.BreakpointEvent):
        return False
    return any(isinstance(b, StopPoint) for b in event.breakpoints)


def resume(command: str) -> Optional["gdb.StopEvent"]:
    """run / continue until a stop the user must see; cytool's own stops are handled on the way."""
    event = None
    for _ in range(1000):
        event = _execute(command, capture=False)
        at_stop_point = _at_stop_point(event)
        for point in [b for b in event.breakpoints if isinstance(b, StopPoint)] if at_stop_point else ():
            point.delete()
            _stop_points.remove(point)
        if state.batch_failure is not None:
            state.end_batch_if_failed()
        if not at_stop_point or _user_stop(event) or not _alive():
            return event
        reason = pylevel.try_send_breakpoints()
        if reason:
            print(f"cytool: Python breakpoints not set yet: {reason}")
        command = "continue"
    return event


def run(arguments: str) -> None:
    event = resume(("run " + arguments).strip())
    if _alive():
        report(event=event)


def cont() -> None:
    if not _alive():
        raise state.CyError("The program is not being run (start it with cy-run).")
    event = resume("continue")
    if _alive():
        report(event=event)


# -- stepping Cython lines --------------------------------------------------------------------


def _arm_python_entry() -> bool:
    """Ask the agent to stop in the next Python function this thread enters (cy-step)."""
    try:
        pylevel.ensure_agent()
        pylevel.arm("enter")
    except state.CyError:
        return False
    return True


def _disarm_python() -> None:
    try:
        pylevel.arm(None)
    except state.CyError:
        pass


def _generator_of(frame: "gdb.Frame") -> Optional[int]:
    try:
        return int(frame.read_var("__pyx_generator"))
    except (gdb.error, ValueError):
        return None


def _generator_suspended(generator: int) -> bool:
    """True when a Cython generator/coroutine yielded (it will resume), not finished."""
    try:
        coroutine = gdb.lookup_type("__pyx_CoroutineObject").pointer()
        label = int(gdb.Value(generator).cast(coroutine).dereference()["resume_label"])
    except (gdb.error, gdb.MemoryError):
        return False
    return label > 0


class ResumePoint(gdb.Breakpoint):
    """Where one generator is resumed: its body function, for that generator object only."""

    def __init__(self, pc: int, generator: int) -> None:
        super().__init__(f"*{pc:#x}", internal=True, temporary=False)
        self.generator = generator

    def stop(self) -> bool:
        try:
            return int(gdb.selected_frame().read_var("__pyx_generator")) == self.generator
        except (gdb.error, ValueError):
            return False


def _wait_for_resume(function, generator: int) -> Optional["gdb.StopEvent"]:
    """The generator yielded: run until it is resumed (or a user stop / the end)."""
    try:
        sals = gdb.decode_line(function.cname)[1]
    except gdb.error:
        return None
    if not sals:
        return None
    point = ResumePoint(sals[0].pc, generator)
    try:
        return _execute("continue")
    finally:
        if point.is_valid():
            point.delete()


def step_lines(into: bool = False, until: bool = False, c_functions: bool = False) -> None:
    """cy-next (into=False), cy-step (into=True; c_functions: also into user C code),
    cy-until (until=True)."""
    if at_python_stop():
        if until:
            raise state.CyError("cy-until works on Cython lines; at a Python stop use cy-next or cy-finish")
        python_step("step" if into else "next")
        return
    start = _require_running()
    start.select()
    start_thread = gdb.selected_thread()
    start_path, start_line = location(start)
    function_started = cython_function(start)
    if function_started is not None and state.is_foreign(function_started.module) and \
            not (start_path or "").endswith((".pyx", ".pxi", ".pxd")):
        from cytool_gdb_frames import foreign_develop_hint

        raise state.CyError(f"cannot step by .pyx lines in {function_started.qualified_name}(): no .pyx line is known "
                            f"there ({function_started.module.name} was not built by cytool and its C file was not "
                            f"found); {foreign_develop_hint()}")
    generator = _generator_of(start) if function_started is not None and function_started.is_generator_body else None
    placed: List[breakpoints.CyBreakpoint] = []
    python_armed = False
    guard = _return_guard(start) if function_started is not None and generator is None and not until else None
    if into:
        for module in state.modules():
            placed.extend(breakpoints.break_at_function_entries(module))
        python_armed = _arm_python_entry()
    try:
        for _ in range(MAX_STEPS):
            event = _execute("step" if c_functions else "next")
            if not _alive():
                return
            if pylevel.is_stop_event(event):
                break  # a Python breakpoint, or the Python function cy-step entered
            if _user_stop(event) and _on_start_line(event, start, start_line):
                continue  # a breakpoint on the line we are leaving (a loop head's other code): not a new line
            if _user_stop(event) or (into and _entry_stop(event)):
                break
            if start_thread is not None and start_thread.is_valid() and gdb.selected_thread() != start_thread:
                start_thread.switch()  # another thread's internal stop: go on with ours
            frame = newest_frame()
            assert frame is not None
            if c_functions and frame != start and _on_stack(start) and cython_function(frame) is None:
                if _is_user_c(frame):
                    break
                event = _execute("finish")  # Cython's helpers, CPython: back out and go on
                if not _alive():
                    return
                if pylevel.is_stop_event(event) or _user_stop(event) or _entry_stop(event):
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
                if is_branch_header(path, line) and placement.is_branch_tail(function, frame.pc(), line):
                    continue  # the jump out of an if branch, under the if line
                if placement.is_artifact(function, frame.pc()):
                    continue  # code of another statement that carries this line number by accident
                break
            if _on_stack(start):
                # deeper than where we started (a call gdb's next did not step over, e.g.
                # through the interpreter): finish back out rather than walk CPython's lines
                event = _execute("finish")
                if not _alive():
                    return
                if pylevel.is_stop_event(event) or _user_stop(event) or (into and _entry_stop(event)):
                    break
                continue
            # the starting function returned
            if generator is not None and _generator_suspended(generator) and not until:
                event = _wait_for_resume(function_started, generator)  # over a yield: stay in the generator
                if not _alive():
                    return
                if pylevel.is_stop_event(event) or _user_stop(event):
                    break
                start = newest_frame()
                if start is None or cython_function(start) is not function_started:
                    break
                continue  # resumed: on to the line after the yield (its resume code carries the yield line)
            if cython_function(frame) is not None and not is_wrapper_frame(frame):
                break
            event = _leave_non_cython()
            break
    finally:
        for breakpoint in placed:
            breakpoint.delete()
        if guard is not None and guard.is_valid():
            guard.delete()
        if python_armed and not at_python_stop():
            _disarm_python()
    if at_python_stop():
        _disarm_python()
    report()


def _return_guard(frame: "gdb.Frame") -> Optional["gdb.FinishBreakpoint"]:
    """An internal stop where `frame` returns to its caller. gdb's `next` out of a
    function goes on to the end of the caller's line (a cdef function returning into
    `x = f(a) + g(b)` would skip g's call); Python's debuggers stop on the caller's line,
    and so does cy-next/cy-step with this. None where gdb cannot place it."""
    try:
        return gdb.FinishBreakpoint(frame, internal=True)
    except (ValueError, gdb.error, RuntimeError):
        return None


def _on_start_line(event: Optional["gdb.StopEvent"], start: "gdb.Frame", start_line: int) -> bool:
    """A Cython breakpoint hit on the line the step started from, in the same frame."""
    if not isinstance(event, gdb.BreakpointEvent) or isinstance(event, gdb.SignalEvent):
        return False
    if not all(breakpoints.owner_of(b) is not None for b in event.breakpoints if b.is_valid()):
        return False
    frame = newest_frame()
    return frame is not None and frame == start and location(frame)[1] == start_line


def _leave_non_cython() -> Optional["gdb.StopEvent"]:
    """After a return: finish out of wrappers and CPython call machinery up to a Cython
    frame or to the interpreter's eval loop (Python code)."""
    event = None
    for _ in range(64):
        if not _alive():
            return event
        frame = newest_frame()
        if frame is None or (cython_function(frame) is not None and not is_wrapper_frame(frame)) \
                or _is_eval_frame(frame):
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


def finish() -> None:
    if at_python_stop():
        python_step("finish")
        return
    newest = newest_frame() if _alive() else None
    if newest is not None and cython_function(newest) is None and _is_user_c(newest):
        frame = newest  # stopped in a C function by cy-step -c: finish that
    else:
        frame = _require_running()
    frame.select()
    event = _execute("finish")
    if _alive() and not _user_stop(event) and not pylevel.is_stop_event(event):
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
        if _alive() and cython_function(newest_frame()) is None and not at_python_stop():
            _leave_non_cython()
    finally:
        target.delete()
    report()


# -- stepping Python lines ----------------------------------------------------------------


def _cython_caller_of_return() -> Optional["gdb.Frame"]:
    """At the agent's stop for a Python function's return: the Cython frame it returns
    into, or None when it returns into Python."""
    eval_frames = 0
    walking = False
    for frame in frames():
        if not walking:
            if not _is_eval_frame(frame):
                continue
            python = python_frames_in(frame)
            if python and all(is_agent_file(p[0]) for p in python):
                continue  # the agent's own trace function
            eval_frames += 1
            if eval_frames == 1 and not python:
                python = []  # no python-gdb.py: take it for an entry frame
            if len([p for p in python if not is_agent_file(p[0])]) > 1:
                return None  # a Python caller in the same evaluation loop
            walking = True
            continue
        if cython_function(frame) is not None:
            return frame
        if _is_eval_frame(frame):
            return None
    return None


def _finish_into(target: "gdb.Frame") -> Optional["gdb.StopEvent"]:
    """Run until the frame `target` called returns into it."""
    callee = None
    for frame in frames():
        if frame == target:
            break
        callee = frame
    if callee is None:
        return None
    callee.select()
    return _execute("finish")


def python_step(mode: str) -> None:
    """cy-step / cy-next / cy-finish at a Python stop: Python lines until control returns to Cython."""
    placed: List[breakpoints.CyBreakpoint] = []
    if mode == "step":
        for module in state.modules():
            placed.extend(breakpoints.break_at_function_entries(module))
    try:
        pylevel.arm(mode)
        for _ in range(MAX_STEPS):
            event = _execute("continue")
            if not _alive():
                return
            if pylevel.is_stop_event(event) and pylevel.current is not None:
                if pylevel.current.reason != "return":
                    break
                target = _cython_caller_of_return()
                if target is not None:  # back into Cython
                    pylevel.arm(None)
                    event = _finish_into(target)
                    break
                pylevel.arm("caller")
                continue
            break
    finally:
        for breakpoint in placed:
            breakpoint.delete()
    if _alive():
        _disarm_python()
        report()
