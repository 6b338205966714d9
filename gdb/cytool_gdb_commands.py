"""The cy-* commands and $cy_* convenience functions, and the gdb events they hang on.

Owns the user interface inside gdb: one gdb.Command per cy-* command (its docstring is
its `help`), the convenience functions, and the event wiring: new objfiles (find the
debug XML beside a Cython module, source python-gdb.py beside the interpreter, place
pending breakpoints), stops (announce Cython breakpoints) and exits (breakpoints back
to pending).
"""
from __future__ import annotations

import os

import gdb  # type: ignore

import cytool_gdb_breakpoints as breakpoints
import cytool_gdb_frames as frames
import cytool_gdb_names as names
import cytool_gdb_pyobject as pyobject
import cytool_gdb_state as state
import cytool_gdb_stepping as stepping


class _Command(gdb.Command):
    name = ""

    def __init__(self) -> None:
        super().__init__(self.name, gdb.COMMAND_RUNNING if self.running else gdb.COMMAND_DATA)

    running = False

    def invoke(self, argument: str, from_tty: bool) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class CyLoad(_Command):
    """Read a Cython module's debug information.

Usage: cy-load PATH
PATH is a cytool build directory, its cython_debug/ directory, the module's .so or the
cython_debug_info_<module> XML itself. Modules built by cytool are found on their own
when Python loads them; cy-load lets breakpoints be checked before the program runs."""

    name = "cy-load"

    def invoke(self, argument: str, from_tty: bool) -> None:
        path = os.path.expanduser(argument.strip())
        if not path:
            raise state.CyError("Usage: cy-load PATH")
        loaded = state.load_debug_info(path)
        if not loaded:
            raise state.CyError(f"No Cython debug information at {path}")
        for module in loaded:
            print(f"cytool: module {module.name} from {module.filename}")


class CyBreak(_Command):
    """Set a breakpoint on a .pyx line or a Cython function.

Usage: cy-break SPEC
SPEC is FILE.pyx:LINE (or a .pxi file), LINE in the current file, or a function name:
work, mod.work, Class.method, outer.inner (a closure). The breakpoint stops only in the
Cython function that owns the line, never in the def wrapper or module init sharing
its line number. A def line stops at the function's first statement. A line without
code (blank, comment, declaration, cdef class header) is refused with the nearest line
that has code. Set before the module is loaded, the breakpoint is pending and placed
when Python imports the module; it is placed again on every run.
Without SPEC, lists the Cython breakpoints."""

    name = "cy-break"

    def invoke(self, argument: str, from_tty: bool) -> None:
        spec = argument.strip()
        if not spec:
            listed = [b for b in breakpoints.breakpoints() if not b.internal]
            if not listed:
                print("No Cython breakpoints.")
            for breakpoint in listed:
                where = breakpoint.plan.describe() if breakpoint.plan else breakpoint.spec
                status = "pending" if breakpoint.pending else ", ".join(
                    f"{int(l.location[1:], 16):#x}" for l in breakpoint.locations)
                print(f"{breakpoint.number:<4}{breakpoint.spec:<24}{where} [{status}]")
            return
        breakpoints.create(spec)


class CyDelete(_Command):
    """Delete a Cython breakpoint.

Usage: cy-delete NUMBER"""

    name = "cy-delete"

    def invoke(self, argument: str, from_tty: bool) -> None:
        try:
            number = int(argument.strip())
        except ValueError:
            raise state.CyError("Usage: cy-delete NUMBER")
        breakpoints.delete(number)


class CyRun(_Command):
    """Start the program (gdb's run); pending Cython breakpoints are placed as modules load.

Usage: cy-run [ARGS]"""

    name = "cy-run"
    running = True

    def invoke(self, argument: str, from_tty: bool) -> None:
        stepping.run(argument)


class CyCont(_Command):
    """Continue the program until the next breakpoint or its end.

Usage: cy-cont"""

    name = "cy-cont"
    running = True

    def invoke(self, argument: str, from_tty: bool) -> None:
        stepping.cont()


class CyNext(_Command):
    """Run to the next .pyx line of the current Cython function, stepping over calls.

Usage: cy-next
When the function returns, stops at the next line of its Cython caller, or says which
Python line it returned to. A breakpoint or a signal on the way stops it."""

    name = "cy-next"
    running = True

    def invoke(self, argument: str, from_tty: bool) -> None:
        stepping.step_lines(into=False)


class CyStep(_Command):
    """Run to the next .pyx line, stepping into the Cython functions the line calls.

Usage: cy-step [-c]
Steps into cdef, cpdef and def functions of the loaded Cython modules (whether called
directly or through Python), never into CPython internals or Cython's helper code.
With -c, also into C functions with debug information that the line calls (cdef
extern functions), but not into CPython or the C library."""

    name = "cy-step"
    running = True

    def invoke(self, argument: str, from_tty: bool) -> None:
        flag = argument.strip()
        if flag not in ("", "-c"):
            raise state.CyError("Usage: cy-step [-c]")
        stepping.step_lines(into=True, c_functions=flag == "-c")


class CyFinish(_Command):
    """Run until the current Cython function returns, back to its Cython or Python caller.

Usage: cy-finish"""

    name = "cy-finish"
    running = True

    def invoke(self, argument: str, from_tty: bool) -> None:
        stepping.finish()


class CyUntil(_Command):
    """Run until a later line of the current function (loops run to their end).

Usage: cy-until          next line greater than the current one (or return)
       cy-until SPEC     until SPEC (as for cy-break) is reached or the function returns"""

    name = "cy-until"
    running = True

    def invoke(self, argument: str, from_tty: bool) -> None:
        if argument.strip():
            stepping.until_line(argument.strip())
        else:
            stepping.step_lines(until=True)


class CyBt(_Command):
    """Backtrace of Cython frames (mod.pyx:LINE in func()) and the Python frames between.

Usage: cy-bt [-a]
CPython's and Cython's internal C frames are hidden; -a shows every frame. The
selected frame is marked with *. Python frames come from the interpreter's
python-gdb.py; without it, only the Cython frames are shown and the reason is given."""

    name = "cy-bt"

    def invoke(self, argument: str, from_tty: bool) -> None:
        frames.backtrace(show_all=argument.strip() in ("-a", "--all", "full"))


class CyUp(_Command):
    """Select the Cython frame that called this one.

Usage: cy-up [N]"""

    name = "cy-up"

    def invoke(self, argument: str, from_tty: bool) -> None:
        _move(_count(argument))


class CyDown(_Command):
    """Select the Cython frame this one called.

Usage: cy-down [N]"""

    name = "cy-down"

    def invoke(self, argument: str, from_tty: bool) -> None:
        _move(-_count(argument))


class CyFrame(_Command):
    """Select Cython frame N (as numbered by cy-bt), or show the selected one.

Usage: cy-frame [N]"""

    name = "cy-frame"

    def invoke(self, argument: str, from_tty: bool) -> None:
        stack = frames.cython_frames()
        if not stack:
            raise state.CyError("No Cython frames (is the program stopped in Cython code?).")
        if not argument.strip():
            frame = frames.selected_cython_frame()
            index = stack.index(frame) if frame in stack else 0
        else:
            try:
                index = int(argument)
            except ValueError:
                raise state.CyError(f"Usage: cy-frame [N] (N a Cython frame number from cy-bt), not {argument!r}")
            if not 0 <= index < len(stack):
                raise state.CyError(f"No Cython frame {index} (there are {len(stack)}).")
            frame = stack[index]
        frame.select()
        frames.print_location(frame, f"#{index}  ")


def _count(argument: str) -> int:
    try:
        return int(argument.strip() or 1)
    except ValueError:
        raise state.CyError(f"not a number of frames: {argument.strip()!r}")


def _move(delta: int) -> None:
    stack = frames.cython_frames()
    current = frames.selected_cython_frame()
    index = stack.index(current) if current in stack else 0
    target = index + delta
    if target >= len(stack):
        raise state.CyError("Initial Cython frame selected; you cannot go up.")
    if target < 0:
        raise state.CyError("Bottom (innermost) Cython frame selected; you cannot go down.")
    stack[target].select()
    frames.print_location(stack[target], f"#{target}  ")


class CyList(_Command):
    """List the .pyx source around the current line (marked with >).

Usage: cy-list [LINE]"""

    name = "cy-list"

    def invoke(self, argument: str, from_tty: bool) -> None:
        frame = frames.selected_cython_frame(required=False)
        path, current = frames.location(frame) if frame is not None else (state.default_source, 0)
        if not path:
            raise state.CyError("No .pyx file to list.")
        if argument.strip():
            try:
                center = int(argument)
            except ValueError:
                raise state.CyError("Usage: cy-list [LINE]")
        else:
            center = current or _first_breakpoint_line(path) or 1
        lines = state.source_lines(path)
        first = max(1, center - 5)
        last = min(len(lines), center + 5)
        for number in range(first, last + 1):
            marker = ">" if number == current else " "
            print(f"{marker}{number:>5}    {lines[number - 1]}")
        if frame is None and _tui_active():
            _show_in_tui(path, center)


def _first_breakpoint_line(path: str) -> int:
    """Before the run, list around the first Cython breakpoint in this file."""
    for breakpoint in breakpoints.breakpoints():
        if not breakpoint.internal and breakpoint.plan is not None and breakpoint.plan.path == path:
            return breakpoint.plan.line
    return 0


def _tui_active() -> bool:
    try:
        gdb.execute("info win", to_string=True)
    except gdb.error:
        return False
    return True


def _show_in_tui(path: str, line: int) -> None:
    """Point the TUI source window at a .pyx before the program runs."""
    modules = state.module_for_source(path)
    if not modules or not state.preload_symbols(modules[0]):
        return
    # gdb's TUI shows the source from just after what `list` printed (the 10 lines
    # centred on its argument): aim so that `line` appears near the top of the window
    try:
        gdb.execute(f"list {path}:{max(1, line - 8)}", to_string=True)
    except gdb.error:
        pass


class CyPrint(_Command):
    """Print a Cython variable or expression in the selected Cython frame.

Usage: cy-print NAME | EXPR
Locals, arguments, closure variables, module globals and, in an expression, attributes
such as self.value. C values print as C; Python objects as their repr (int, float, str,
bytes, list, tuple, dict, None, bool), other objects as <type at 0x...>."""

    name = "cy-print"

    def invoke(self, argument: str, from_tty: bool) -> None:
        expression = argument.strip()
        if not expression:
            raise state.CyError("Usage: cy-print NAME | EXPR")
        value = names.evaluate(expression)
        print(f"{expression} = {names.format_value(value)}")


class CyLocals(_Command):
    """Print the local variables of the selected Cython function.

Usage: cy-locals"""

    name = "cy-locals"

    def invoke(self, argument: str, from_tty: bool) -> None:
        frame = frames.selected_cython_frame()
        function = frames.cython_function(frame)
        assert function is not None
        if function.is_module_init:  # module-level code: its variables are the globals
            for name, text in names.module_globals(function.module):
                print(f"{name} = {text}")
            return
        for local in names.frame_locals(function):
            try:
                _, value, _ = names.lookup(local.name)
                text = names.format_value(value) if value is not None else "<not set>"
            except gdb.GdbError as error:
                text = f"<{error}>"
            if text == "NULL":
                text = "<unbound>"
            print(f"{local.name} = {text}")


class CyGlobals(_Command):
    """Print the globals of the selected Cython frame's module.

Usage: cy-globals"""

    name = "cy-globals"

    def invoke(self, argument: str, from_tty: bool) -> None:
        frame = frames.selected_cython_frame(required=False)
        function = frames.cython_function(frame) if frame is not None else None
        modules = [function.module] if function else state.modules()
        for module in modules:
            if state.objfile_for(module) is None:
                print(f"module {module.name} is not loaded yet")
                continue
            for name, text in names.module_globals(module):
                print(f"{name} = {text}")


class CySet(_Command):
    """Assign to a C variable of the selected Cython frame.

Usage: cy-set NAME = VALUE
NAME is a Cython name (or an expression such as self.value) holding a C value; VALUE
is a C expression which may use Cython names."""

    name = "cy-set"

    def invoke(self, argument: str, from_tty: bool) -> None:
        if "=" not in argument:
            raise state.CyError("Usage: cy-set NAME = VALUE")
        target, value = argument.split("=", 1)
        target = target.strip()
        current = names.evaluate(target)
        if pyobject.is_pyobject_pointer(current):
            raise state.CyError(f"{target} holds a Python object; cy-set assigns C values only")
        left = names.translate(target)
        right = names.translate(value.strip())
        try:
            gdb.execute(f"set variable {left} = {right}", to_string=True)
        except gdb.error as error:
            raise state.CyError(f"cannot set {target}: {error}")
        print(f"{target} = {names.format_value(names.evaluate(target))}")


class CyPythonFrames(gdb.Parameter):
    """Whether cy-bt shows Python frames (read through the interpreter's python-gdb.py).

Turn it off if that script fails on your interpreter: cy-bt then shows the Cython
frames only."""

    set_doc = "Set whether cy-bt shows Python frames."
    show_doc = "Show whether cy-bt shows Python frames."

    def __init__(self) -> None:
        super().__init__("cy-python-frames", gdb.COMMAND_STACK, gdb.PARAM_BOOLEAN)
        self.value = True

    def get_set_string(self) -> str:
        frames.python_frames_enabled = bool(self.value)
        return ""

    def get_show_string(self, value: str) -> str:
        return f"cy-bt shows Python frames: {value}"


# -- convenience functions ---------------------------------------------------------------


class CyCname(gdb.Function):
    """$cy_cname("name"): the C name of a Cython variable in the selected Cython frame."""

    def __init__(self) -> None:
        super().__init__("cy_cname")

    def invoke(self, name: "gdb.Value") -> str:
        _, _, cname = names.lookup(name.string())
        if cname is None:
            raise gdb.GdbError(f"{name.string()} has no C name (it lives in the module dict)")
        return cname


class CyLineno(gdb.Function):
    """$cy_lineno(): the .pyx line of the selected Cython frame."""

    def __init__(self) -> None:
        super().__init__("cy_lineno")

    def invoke(self) -> int:
        frame = frames.selected_cython_frame()
        return frames.location(frame)[1]


class CyValue(gdb.Function):
    """$cy_value("name"): the value of a Cython variable (a PyObject * for Python objects)."""

    def __init__(self) -> None:
        super().__init__("cy_value")

    def invoke(self, name: "gdb.Value") -> "gdb.Value":
        value = names.lookup(name.string())[1]
        if value is None:
            raise gdb.GdbError(f"{name.string()} is not set")
        return value


# -- events ------------------------------------------------------------------------------


def _on_new_objfile(event: "gdb.NewObjFileEvent") -> None:
    objfile = event.new_objfile
    name = objfile.filename or ""
    if state.preloaded is not None:
        if name == state.preloaded or gdb.selected_inferior().pid == 0:
            return  # the stand-in symbols for the TUI, or before the run
        state.drop_preloaded()  # the process started: the real module will load
    pyobject.forget_types()
    frames.load_python_gdb(name)
    if name.endswith(".so"):
        module_name = os.path.basename(name).split(".", 1)[0]
        if state.module_named(module_name) is None:
            state.load_debug_info(name, quiet=True)
        breakpoints.resolve_pending()


def _on_stop(event: "gdb.StopEvent") -> None:
    stepping.on_stop(event)
    if stepping.stepping or not isinstance(event, gdb.BreakpointEvent):
        return
    for breakpoint in event.breakpoints:
        owner = breakpoints.owner_of(breakpoint)
        if owner is not None and not owner.internal:
            frame = frames.newest_frame()
            if frame is not None:
                frames.print_location(frame, f"Cython breakpoint {owner.number}, ")
            return


def _on_exited(event: "gdb.ExitedEvent") -> None:
    breakpoints.forget_locations()


def _on_module_registered(module) -> None:
    for breakpoint in breakpoints.breakpoints():
        if breakpoint.plan is None and breakpoint.pending:
            try:
                breakpoint.plan = breakpoints.plan(breakpoint.spec)
            except gdb.GdbError as error:
                print(f"cytool: breakpoint {breakpoint.number} ({breakpoint.spec}): {error}")
                breakpoint.delete()


_COMMANDS = (CyLoad, CyBreak, CyDelete, CyRun, CyCont, CyNext, CyStep, CyFinish, CyUntil, CyBt,
             CyUp, CyDown, CyFrame, CyList, CyPrint, CyLocals, CyGlobals, CySet)
_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    for command in _COMMANDS:
        command()
    CyPythonFrames()
    CyCname()
    CyLineno()
    CyValue()
    gdb.events.new_objfile.connect(_on_new_objfile)
    gdb.events.stop.connect(_on_stop)
    gdb.events.exited.connect(_on_exited)
    state.on_module_registered(_on_module_registered)
    for objfile in gdb.objfiles():
        frames.load_python_gdb(objfile.filename or "")
    try:
        frames.load_python_gdb(gdb.current_progspace().filename or "")
    except gdb.error:
        pass
