"""The cy-* commands and $cy_* convenience functions, and the gdb events they hang on.

Owns the user interface inside gdb: one gdb.Command per cy-* command (its docstring is
its `help`, its `complete` the tab completion), the convenience functions, the
`cy-batch` and `cy-python-frames` settings, and the event wiring: new objfiles (find the
debug XML of a Cython module, source python-gdb.py beside the interpreter, place pending
breakpoints), stops (announce Cython breakpoints), resumptions and exits (breakpoints
back to pending, specs that matched nothing reported).
"""
from __future__ import annotations

import ast
import os
import re
from typing import List

import gdb  # type: ignore

import cytool_gdb_breakpoints as breakpoints
import cytool_gdb_frames as frames
import cytool_gdb_names as names
import cytool_gdb_placement as placement
import cytool_gdb_pyobject as pyobject
import cytool_gdb_python as pylevel
import cytool_gdb_stack as stack
import cytool_gdb_state as state
import cytool_gdb_stepping as stepping
import cytool_gdb_tui as tui


class _Command(gdb.Command):
    name = ""
    running = False

    def __init__(self) -> None:
        super().__init__(self.name, gdb.COMMAND_RUNNING if self.running else gdb.COMMAND_DATA)

    def invoke(self, argument: str, from_tty: bool) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def _complete_from(candidates, text: str, word: str) -> List[str]:
    """Completions of `text` (the whole argument) given as gdb wants them: from `word` on."""
    cut = len(text) - len(word)
    return sorted({c[cut:] for c in candidates if c.startswith(text)})


# -- breakpoints ----------------------------------------------------------------------------


class CyLoad(_Command):
    """Read Cython modules' debug information.

Usage: cy-load PATH
PATH is a build directory holding cython_debug/, that cython_debug/ directory, a
module's .so or a cython_debug_info_<module> XML itself; several cy-load commands add
several modules. Modules whose debug information lies beside their .so (cytool's
builds) or in a cython_debug/ directory up to four levels above it (a project built
with cythonize(gdb_debug=True)) are found on their own when Python loads them; cy-load
lets breakpoints be checked and placed by short name before the program runs."""

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
        breakpoints.resolve_pending()

    def complete(self, text: str, word: str):
        return gdb.COMPLETE_FILENAME


class CyBreak(_Command):
    """Set a breakpoint on a .pyx line, a Cython function, or Python code.

Usage: cy-break SPEC
SPEC is one of
  FILE.pyx:LINE (or .pxi, .pxd)  a line; LINE alone means the current file
  NAME                          a Cython function: work, mod.work, pkg.sub.mod.work,
                                Class.method, outer.inner (a closure), gen (a generator,
                                coroutine or async function: its body), outer.lambda
  FILE.py:LINE                  a line of Python code
  -p MODULE.FUNC                a Python function (stops at its first line)
A Cython breakpoint stops only in the function that owns the line, never in the def
wrapper or module init sharing its line number. A def line or a function name stops at
the function's first statement, after its set-up (locals, closure, arguments ready).
A line without code (blank, comment, declaration, cdef class header) is refused with the
nearest line that has code; in a module built with optimisation, a line the compiler
moved or removed is refused saying so, and a line inlined into a caller is placed there.
A spec no known module has yet (a module the program imports later; by full dotted
name, or by short name once its debug information is known) is pending and placed when
the module loads; one that matched nothing is reported when the program exits.
Python breakpoints are set once the program runs Python with the GIL (cytool's agent).
With `set cy-batch on` (cytool debug --batch) a refused spec ends gdb with exit status 1,
and so does, at exit, a spec that matched nothing.
Without SPEC, lists the breakpoints."""

    name = "cy-break"

    def invoke(self, argument: str, from_tty: bool) -> None:
        spec = argument.strip()
        if not spec:
            self._list()
            return
        try:
            if spec.startswith("-p"):
                _python_function_break(spec[2:].strip())
            elif re.match(r"^.+\.py:\d+$", spec):
                _python_line_break(spec)
            else:
                breakpoints.create(spec)
        except state.CyError as error:
            if state.batch:
                print(f"cytool: cy-break {spec}: {error}")
                state.fail_batch(f"breakpoint {spec!r} was refused")
                state.end_batch_if_failed()
            raise

    @staticmethod
    def _list() -> None:
        listed = [b for b in breakpoints.breakpoints() if not b.internal]
        python = pylevel.python_breakpoints()
        if not listed and not python:
            print("No Cython breakpoints.")
        rows = []
        for breakpoint in listed:
            where = breakpoint.plan.describe() if breakpoint.plan else breakpoint.spec
            rows.append((breakpoint.number, f"{breakpoint.number:<4}{breakpoint.spec:<24}{where} [{breakpoint.status()}]"))
        for number, spec, sent in python:
            state_text = "set in the program" if sent else "pending: set when the program runs Python"
            rows.append((number, f"{number:<4}{spec:<24}Python [{state_text}]"))
        for _, text in sorted(rows):
            print(text)

    def complete(self, text: str, word: str):
        candidates = set()
        for module in state.modules():
            for function in module.functions:
                if function.is_module_init or function.source is None:
                    continue
                candidates.update((function.display_name, function.qualified_name,
                                   module.short_name + "." + function.display_name))
            for source in module.sources:
                candidates.add(os.path.basename(source) + ":")
        return _complete_from(candidates, text, word)


def _python_function_break(name: str) -> None:
    if not re.match(r"^[A-Za-z_][\w.]*$", name):
        raise state.CyError("Usage: cy-break -p MODULE.FUNCTION (a Python function, e.g. pyhelper.call_back)")
    number = breakpoints.next_number()
    pylevel.add_breakpoint(number, "function", f"-p {name}", name)
    _announce_python_break(number, f"Python function {name}()")


def _python_line_break(spec: str) -> None:
    filename, line = spec.rsplit(":", 1)
    number = breakpoints.next_number()
    pylevel.add_breakpoint(number, "line", spec, (filename, int(line)))
    _announce_python_break(number, f"{os.path.basename(filename)}:{line} (Python)")


def _announce_python_break(number: int, where: str) -> None:
    reason = None
    if state.process_running():
        reason = pylevel.try_send_breakpoints()
        if reason is None:
            print(f"Python breakpoint {number} at {where}")
            return
    print(f"Python breakpoint {number} at {where}, pending: set when the program runs Python code with the GIL"
          + (f" ({reason})" if reason else ""))


class CyDelete(_Command):
    """Delete a breakpoint (Cython or Python).

Usage: cy-delete NUMBER"""

    name = "cy-delete"

    def invoke(self, argument: str, from_tty: bool) -> None:
        try:
            number = int(argument.strip())
        except ValueError:
            raise state.CyError("Usage: cy-delete NUMBER")
        if pylevel.delete_breakpoint(number):
            return
        breakpoints.delete(number)


# -- running and stepping ---------------------------------------------------------------------


class CyRun(_Command):
    """Start the program (gdb's run); pending Cython breakpoints are placed as modules load.

Usage: cy-run [ARGS]"""

    name = "cy-run"
    running = True

    def invoke(self, argument: str, from_tty: bool) -> None:
        stepping.run(argument)
        state.end_batch_if_failed()


class CyCont(_Command):
    """Continue the program until the next breakpoint or its end.

Usage: cy-cont"""

    name = "cy-cont"
    running = True

    def invoke(self, argument: str, from_tty: bool) -> None:
        stepping.cont()
        state.end_batch_if_failed()


class CyNext(_Command):
    """Run to the next .pyx line of the current Cython function, stepping over calls.

Usage: cy-next
Stops once on each line Python would: a loop's head on every pass, an `if` line once.
Over a `yield` it waits until the same generator is resumed. When the function returns,
stops at the next line of its Cython caller, or says which Python line it returned to.
At a Python stop (a Python breakpoint, or cy-step into Python code) it runs to the next
line of that Python function, and back into Cython when it returns there.
A breakpoint or a signal on the way stops it."""

    name = "cy-next"
    running = True

    def invoke(self, argument: str, from_tty: bool) -> None:
        stepping.step_lines(into=False)
        state.end_batch_if_failed()


class CyStep(_Command):
    """Run to the next line, stepping into the Cython and Python functions the line calls.

Usage: cy-step [-c]
Steps into cdef, cpdef and def functions of the loaded Cython modules (stopping after
their set-up), and into Python functions they call (a Python stop: file, line,
function; cy-step, cy-next and cy-finish then go on at Python level until control
returns to Cython), never into CPython internals or Cython's helper code.
With -c, also into C functions with debug information that the line calls (cdef
extern functions), but not into CPython or the C library."""

    name = "cy-step"
    running = True

    def invoke(self, argument: str, from_tty: bool) -> None:
        flag = argument.strip()
        if flag not in ("", "-c"):
            raise state.CyError("Usage: cy-step [-c]")
        stepping.step_lines(into=True, c_functions=flag == "-c")
        state.end_batch_if_failed()


class CyFinish(_Command):
    """Run until the current Cython (or Python) function returns, back to its caller.

Usage: cy-finish"""

    name = "cy-finish"
    running = True

    def invoke(self, argument: str, from_tty: bool) -> None:
        stepping.finish()
        state.end_batch_if_failed()


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
        state.end_batch_if_failed()


# -- frames and threads ---------------------------------------------------------------------


class CyBt(_Command):
    """Backtrace of Cython frames (mod.pyx:LINE in func()) and the Python frames between.

Usage: cy-bt [-a] [full]
CPython's and Cython's internal C frames are hidden; `full` shows every frame. -a shows
the backtrace of every thread. The selected frame is marked with *. Python frames come
from the interpreter's python-gdb.py; without it, only the Cython frames are shown and
the reason is given."""

    name = "cy-bt"

    def invoke(self, argument: str, from_tty: bool) -> None:
        words = argument.split()
        unknown = [w for w in words if w not in ("-a", "--all", "full", "-f", "--full")]
        if unknown:
            raise state.CyError(f"Usage: cy-bt [-a] [full], not {' '.join(unknown)!r}")
        show_all = any(w in ("full", "-f", "--full") for w in words)
        if any(w in ("-a", "--all") for w in words):
            frames.all_backtraces(show_all)
        else:
            frames.backtrace(show_all=show_all)


class CyThread(_Command):
    """List the threads and where each one is in Cython, or select one.

Usage: cy-thread        every thread: its number, name and innermost Cython frame
       cy-thread N      select thread N (gdb's number) and show its Cython frame"""

    name = "cy-thread"

    def invoke(self, argument: str, from_tty: bool) -> None:
        threads = frames.threads()
        if not threads:
            raise state.CyError("The program is not being run (start it with cy-run).")
        if not argument.strip():
            selected = gdb.selected_thread()
            for thread in threads:
                marker = "*" if thread == selected else " "
                print(f"{marker} {thread.num:<3} {thread.name or '':<16} {frames.thread_summary(thread)}")
            return
        try:
            number = int(argument.strip())
        except ValueError:
            raise state.CyError("Usage: cy-thread [N]")
        chosen = [t for t in threads if t.num == number]
        if not chosen:
            raise state.CyError(f"No thread {number} (cy-thread lists them).")
        chosen[0].switch()
        frame = frames.selected_cython_frame(required=False)
        if frame is None:
            print(f"Thread {number}: {frames.thread_summary(chosen[0])}")
            return
        frames.print_location(frame, f"[thread {number}] ")


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
        if stepping.at_python_stop() and not argument.strip():
            stop = pylevel.current
            assert stop is not None
            path, current = stop.filename, stop.line
            frame = None
        else:
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
        if frame is None and not stepping.at_python_stop() and tui.tui_active():
            _show_in_tui(path, center)


def _first_breakpoint_line(path: str) -> int:
    """Before the run, list around the first Cython breakpoint in this file."""
    for breakpoint in breakpoints.breakpoints():
        if not breakpoint.internal and breakpoint.plan is not None and breakpoint.plan.path == path:
            return breakpoint.plan.line
    return 0


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


# -- values ---------------------------------------------------------------------------------


def _scope_names(text: str, word: str) -> List[str]:
    """Completion of names in scope of the selected Cython frame."""
    frame = frames.selected_cython_frame(required=False)
    function = frames.cython_function(frame) if frame is not None else None
    if function is None:
        return []
    names.ensure_locals(frame, function)
    candidates = {local.name for local in names.frame_locals(function)}
    candidates.update(function.locals)
    candidates.update(n for n in function.module.globals if not n.startswith("__"))
    dictionary = names.module_dict(function.module)
    if dictionary is not None:
        try:
            candidates.update(n for n, _ in pyobject.dict_str_items(dictionary) if not n.startswith("__"))
        except pyobject.READ_ERRORS:
            pass
    return _complete_from(candidates, text, word)


class CyPrint(_Command):
    """Print a Cython variable or expression in the selected Cython frame.

Usage: cy-print NAME | EXPR
Locals, arguments, closure variables, module globals and, in an expression, attributes
such as self.value. C values print as C; Python objects as their repr (int, float, str,
bytes, list, tuple, dict, None, bool), a class as <class 'mod.Name'>, other objects as
<mod.Type object at 0x...>; a cdef class instance also lists its attributes. A name
not bound yet prints as <unbound> (<not yet assigned> for a C local before its first
assignment), a value the compiler dropped as <optimised out>, and one that cannot be
read as <unreadable: reason>. At a Python stop, EXPR is Python, evaluated in that frame
(the program must hold the GIL); so is an operation on a Python object (obj["key"],
m + 1, len(obj): as C it would work on the object's pointer)."""

    name = "cy-print"

    def invoke(self, argument: str, from_tty: bool) -> None:
        expression = argument.strip()
        if not expression:
            raise state.CyError("Usage: cy-print NAME | EXPR")
        at_python = stepping.at_python_stop()
        if at_python or _operates_on_a_python_object(expression):
            ok, printed, text = pylevel.run_code(expression, "eval") if at_python else run_python(expression, "eval")
            if printed:
                print(printed, end="" if printed.endswith("\n") else "\n")
            if not ok:
                raise state.CyError(text)
            print(f"{expression} = {text}")
            return
        try:
            value = names.evaluate(expression)
        except names.Special as special:
            print(f"{expression} = {special.text}")
            return
        print(f"{expression} = {names.format_value(value)}")
        attributes = names.cdef_attributes(value)
        for attribute, text in attributes or ():
            print(f"    {attribute} = {text}")

    def complete(self, text: str, word: str):
        return _scope_names(text, word)


def _operates_on_a_python_object(expression: str) -> bool:
    """Whether `expression` is Python with an operation on a name bound to a Python object
    (obj["key"], m + 1, len(obj), obj == None): as C it would work on the PyObject pointer.
    Attributes (self.x + self.y of a cdef class) stay C: they read the struct's fields."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return False
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Name) or isinstance(parents.get(node), (ast.Attribute, ast.Expression)):
            continue
        if isinstance(parents.get(node), ast.Call) and parents[node].func is node:
            continue  # a function called: C functions stay C
        try:
            _, value, _ = names.lookup(node.id)
        except (gdb.error, gdb.GdbError, names.Special):
            continue
        if value is not None and pyobject.is_pyobject_pointer(value):
            return True
    return False


class CyLocals(_Command):
    """Print the local variables of the selected Cython function (or Python stop).

Usage: cy-locals
Every local is shown; one that cannot be read prints as <unreadable: reason>,
<optimised out>, <unbound> or <not yet assigned> (see help cy-print)."""

    name = "cy-locals"

    def invoke(self, argument: str, from_tty: bool) -> None:
        if stepping.at_python_stop():
            print(pylevel.stop_locals())
            return
        frame = frames.selected_cython_frame()
        function = frames.cython_function(frame)
        assert function is not None
        names.ensure_locals(frame, function)
        if function.is_module_init:  # module-level code: its variables are the globals
            rows, _ = names.module_globals(function.module)
            for name, text in rows:
                print(f"{name} = {text}")
            return
        for local in names.frame_locals(function):
            print(names.show(local.name, lambda local=local: names.read_local(frame, function, local)))


class CyGlobals(_Command):
    """Print the globals of the selected Cython frame's module.

Usage: cy-globals [-a]
Names starting with __ (__name__, __doc__, __file__, __builtins__ ...) are counted but
not listed; -a lists them too."""

    name = "cy-globals"

    def invoke(self, argument: str, from_tty: bool) -> None:
        flag = argument.strip()
        if flag not in ("", "-a"):
            raise state.CyError("Usage: cy-globals [-a]")
        frame = frames.selected_cython_frame(required=False)
        function = frames.cython_function(frame) if frame is not None else None
        modules = [function.module] if function else state.modules()
        for module in modules:
            if state.objfile_for(module) is None:
                print(f"module {module.name} is not loaded yet")
                continue
            rows, hidden = names.module_globals(module, show_all=flag == "-a")
            for name, text in rows:
                print(f"{name} = {text}")
            if hidden:
                print(f"({hidden} names starting with __ not shown: cy-globals -a)")


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
        try:
            current = names.evaluate(target)
        except names.Special as special:
            if special.text != names.NOT_ASSIGNED:
                raise state.CyError(f"cannot set {target}: it is {special.text}")
            current = None
        if current is not None and pyobject.is_pyobject_pointer(current):
            raise state.CyError(f"{target} holds a Python object; cy-set assigns C values only")
        left = names.translate(target)
        right = names.translate(value.strip())
        try:
            gdb.execute(f"set variable {left} = {right}", to_string=True)
        except gdb.error as error:
            raise state.CyError(f"cannot set {target}: {error}")
        print(f"{target} = {names.format_value(gdb.parse_and_eval(left))}")

    def complete(self, text: str, word: str):
        if "=" in text:
            return _scope_names(text.split("=", 1)[1].lstrip(), word)
        return _scope_names(text, word)


class CyExec(_Command):
    """Run Python code in the program, in the selected frame's globals and locals.

Usage: cy-exec CODE
In a Cython frame the locals are a copy (Python objects as they are, C numbers as
Python numbers): assignments to them are not written back (cy-set does that for C
values); the module's globals are the real ones. At a Python stop, the frame's own
globals and locals. What CODE prints is shown. The thread must hold the GIL (it does at
a stop in Python code or in Cython code outside a nogil section); cytool says so when
it does not."""

    name = "cy-exec"
    running = True

    def invoke(self, argument: str, from_tty: bool) -> None:
        code = argument.strip()
        if not code:
            raise state.CyError("Usage: cy-exec CODE")
        ok, printed, text = run_python(code, "exec")
        if printed:
            print(printed, end="" if printed.endswith("\n") else "\n")
        if not ok:
            raise state.CyError(text)


def run_python(source: str, mode: str):
    """Run source in the selected frame's namespace: (ok, printed, repr or error)."""
    pylevel.require_gil("cy-exec")
    pylevel.ensure_agent()
    if stepping.at_python_stop():
        return pylevel.run_code(source, mode)
    frame = frames.selected_cython_frame()
    function = frames.cython_function(frame)
    assert function is not None
    names.ensure_locals(frame, function)
    dictionary = names.module_dict(function.module)
    if dictionary is None:
        raise state.CyError(f"the globals of {function.module.name} cannot be found")
    globals_address = f"{pyobject.address_of(dictionary):#x}"
    if function.is_module_init:
        return pylevel.run_code(source, mode, globals_address, globals_address)
    locals_address = int(pylevel.call("(long)((PyObject *(*)(void))PyDict_New)()"))
    if locals_address == 0:
        raise state.CyError("could not make a dict in the program")
    try:
        for local in names.frame_locals(function):
            _pass_local(frame, function, local, f"{locals_address:#x}")
        frame.select()
        return pylevel.run_code(source, mode, globals_address, f"{locals_address:#x}")
    finally:
        pylevel.call(f"((void (*)(PyObject *))Py_DecRef)((PyObject *){locals_address:#x})")


def _pass_local(frame, function, local, dictionary: str) -> None:
    try:
        value = names.read_local(frame, function, local)
    except (names.Special, gdb.GdbError, gdb.error):
        return  # unbound, optimised out, unreadable: not in the namespace
    if pyobject.is_pyobject_pointer(value):
        if pyobject.address_of(value):
            pylevel.set_item(dictionary, local.name, f"{pyobject.address_of(value):#x}")
        return
    code = value.type.strip_typedefs().code
    if code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_ENUM, gdb.TYPE_CODE_CHAR):
        maker = f"((PyObject *(*)(long long))PyLong_FromLongLong)({int(value)})"
    elif code == gdb.TYPE_CODE_BOOL:
        maker = f"((PyObject *(*)(long))PyBool_FromLong)({int(bool(value))})"
    elif code == gdb.TYPE_CODE_FLT:
        maker = f"((PyObject *(*)(double))PyFloat_FromDouble)({float(value)!r})"
    else:
        return
    created = int(pylevel.call(f"(long){maker}"))
    if created:
        pylevel.set_item(dictionary, local.name, f"{created:#x}")
        pylevel.call(f"((void (*)(PyObject *))Py_DecRef)((PyObject *){created:#x})")


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


class CyModuleIndex(gdb.Parameter):
    """Module index folders (':'-separated) where a loaded module's debug information is
looked up by its build-id: cytool writes `<cache>/index/<build-id>.json` for every
module it builds and every module `cytool develop` builds (cytool debug sets this)."""

    set_doc = "Set the module index folders searched by build-id."
    show_doc = "Show the module index folders searched by build-id."

    def __init__(self) -> None:
        super().__init__("cy-module-index", gdb.COMMAND_FILES, gdb.PARAM_STRING)
        self.value = ""

    def get_set_string(self) -> str:
        state.index_dirs[:] = [os.path.expanduser(p) for p in (self.value or "").split(":") if p]
        return ""

    def get_show_string(self, value: str) -> str:
        return f"cy-module-index: {value or '(none)'}"


class CyBatch(gdb.Parameter):
    """Batch mode (cytool debug --batch sets it): a refused breakpoint ends gdb at once
with exit status 1, and a breakpoint that matched nothing when the program exits ends it
with exit status 1 too."""

    set_doc = "Set whether breakpoint failures end gdb with exit status 1."
    show_doc = "Show whether breakpoint failures end gdb with exit status 1."

    def __init__(self) -> None:
        super().__init__("cy-batch", gdb.COMMAND_RUNNING, gdb.PARAM_BOOLEAN)
        self.value = False

    def get_set_string(self) -> str:
        state.batch = bool(self.value)
        return ""

    def get_show_string(self, value: str) -> str:
        return f"cy-batch: {value}"


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
        path, line = frames.location(frame)
        function = frames.cython_function(frame)
        if function is not None and state.is_foreign(function.module) and path \
                and not path.endswith(breakpoints.CYTHON_SOURCES):  # a module without debug XML or C file
            name = function.qualified_name
            raise gdb.GdbError(f"no .pyx line is known for {name} (it is at {os.path.basename(path)}:{line}): "
                               f"{frames.foreign_develop_hint()}")
        return line


class CyValue(gdb.Function):
    """$cy_value("name"): the value of a Cython variable (a PyObject * for Python objects)."""

    def __init__(self) -> None:
        super().__init__("cy_value")

    def invoke(self, name: "gdb.Value") -> "gdb.Value":
        try:
            value = names.lookup(name.string())[1]
        except names.Special as special:
            raise gdb.GdbError(f"{name.string()} is {special.text}")
        if value is None:
            raise gdb.GdbError(f"{name.string()} is not set")
        return value


class CyEval(gdb.Function):
    """$cy_eval("expr"): evaluate a Python expression in the selected frame's globals and
locals (as cy-exec does). An int, bool or float comes back as a gdb number (usable in
conditions), a str as a string, anything else as its repr (a string)."""

    def __init__(self) -> None:
        super().__init__("cy_eval")

    def invoke(self, expression: "gdb.Value"):
        ok, printed, text = run_python(expression.string(), "eval")
        if printed:
            print(printed, end="" if printed.endswith("\n") else "\n")
        if not ok:
            raise gdb.GdbError(text)
        kind = pylevel.last_kind
        if kind in ("int", "bool"):
            number = int(text == "True") if kind == "bool" else int(text)
            return gdb.Value(number) if -2 ** 63 <= number < 2 ** 63 else text
        if kind == "float":
            return gdb.Value(float(text))
        if kind == "str":
            return ast.literal_eval(text)  # the str itself (text is its repr)
        return text


# -- events ------------------------------------------------------------------------------


def _on_new_objfile(event: "gdb.NewObjFileEvent") -> None:
    objfile = event.new_objfile
    name = objfile.filename or ""
    if state.preloaded is not None:
        if name == state.preloaded or not state.process_running():
            return  # the stand-in symbols for the TUI, or before the run
        state.drop_preloaded()  # the process started: the real module will load
    pyobject.forget_types()
    placement.forget_lines()
    frames.load_python_gdb(name)
    if not name.endswith(".so") or not state.process_running():
        return
    failure_before = state.batch_failure  # (registering the module replans pending specs: may refuse one)
    module = state.module_loaded(name, getattr(objfile, "build_id", None), objfile)
    if module is not None:
        state.map_source_folders(module)
    breakpoints.resolve_pending()
    if module is not None and ((state.batch_failure and not failure_before) or pylevel.has_unsent_breakpoints()):
        stepping.plant_stop_point(module.short_name)  # act at its PyInit, where the GIL is held


def _on_stop(event: "gdb.StopEvent") -> None:
    stepping.on_stop(event)
    if pylevel.calling or stepping.stepping:
        return
    if pylevel.is_stop_event(event) and pylevel.current is not None:
        stepping.print_python_stop(pylevel.current)
        return
    if not isinstance(event, gdb.BreakpointEvent):
        return
    for breakpoint in event.breakpoints:
        owner = breakpoints.owner_of(breakpoint)
        if owner is not None and not owner.internal:
            frame = frames.newest_frame()
            if frame is not None:
                frames.print_location(frame, f"Cython breakpoint {owner.number}, ", stop=True)
            return


def _on_cont(event) -> None:
    if not pylevel.calling:
        pylevel.forget()


def _on_exited(event: "gdb.ExitedEvent") -> None:
    breakpoints.process_exited()
    pylevel.process_exited()
    placement.forget()
    state.forget_objfiles()


def _on_module_registered(module) -> None:
    breakpoints.replan_pending(module)


_COMMANDS = (CyLoad, CyBreak, CyDelete, CyRun, CyCont, CyNext, CyStep, CyFinish, CyUntil, CyBt, CyThread,
             CyUp, CyDown, CyFrame, CyList, CyPrint, CyLocals, CyGlobals, CySet, CyExec)
_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    for command in _COMMANDS:
        command()
    CyPythonFrames()
    CyModuleIndex()
    CyBatch()
    CyCname()
    CyLineno()
    CyValue()
    CyEval()
    tui.register()
    stack.register()
    gdb.events.new_objfile.connect(_on_new_objfile)
    gdb.events.stop.connect(_on_stop)
    gdb.events.cont.connect(_on_cont)
    gdb.events.exited.connect(_on_exited)
    state.on_module_registered(_on_module_registered)
    for objfile in gdb.objfiles():
        frames.load_python_gdb(objfile.filename or "")
    try:
        frames.load_python_gdb(gdb.current_progspace().filename or "")
    except gdb.error:
        pass
