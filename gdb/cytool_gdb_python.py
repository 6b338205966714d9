"""Python code under cytool's debugger: calls into the inferior and Python-level stops.

Owns running Python in the stopped process (only in a thread that holds the GIL, with
the other threads held still), the agent it installs there (cytool_gdb_agent.py, which
traces Python code only while a Python breakpoint or step needs it), the breakpoint on
the interpreter's `sys_audit` through which the agent reports a Python stop, the
Python-level breakpoints (`cy-break -p module.func`, `cy-break file.py:LINE`) and what a
Python stop is (file, line, function). cy-exec and $cy_eval run their code here.

Choice and measure: a C breakpoint on the interpreter's frame evaluation sees only the
frames entered from C (Python-to-Python calls do not enter it since 3.11) and cannot
step Python lines, so the agent uses the interpreter's own tracing instead, installed
while the GIL is held; bench/bench_debug_agent.py measures its cost on a Python workload.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import gdb  # type: ignore

import cytool_gdb_pyobject as pyobject
import cytool_gdb_state as state

AGENT_MODULE = "_cytool_gdb_agent"
AGENT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cytool_gdb_agent.py")
STOP_EVENT = "cytool.gdb.stop"
PY_EVAL_INPUT = 258  # Py_eval_input


class PythonStop:
    """Where the agent stopped: reason is "breakpoint", "step" or "return"."""

    def __init__(self, reason: str, number: int, filename: str, line: int, function: str) -> None:
        self.reason = reason
        self.number = number
        self.filename = filename
        self.line = line
        self.function = function

    def describe(self) -> str:
        return f"{os.path.basename(self.filename)}:{self.line} in {self.function}()"


current: Optional[PythonStop] = None  # the Python stop the process is at, until it resumes
calling = False  # True during a call into the program: its resume and stop are not the user's
_installed_in: Optional[int] = None  # pid the agent was installed in
_audit: Optional["AuditBreakpoint"] = None
_python_breaks: Dict[int, Tuple[str, str, object]] = {}  # number -> (kind, spec, arg)
_sent: Dict[int, bool] = {}  # number -> given to the agent of this process


class AuditBreakpoint(gdb.Breakpoint):
    """The interpreter's `sys_audit`: stops only for the agent's event."""

    def __init__(self) -> None:
        super().__init__("sys_audit", internal=True)

    def stop(self) -> bool:
        global current
        if calling:
            return False  # never inside cytool's own calls into the program
        try:
            stop = _read_audit_arguments()
        except (gdb.error, gdb.MemoryError, ValueError, UnicodeDecodeError):
            return False
        if stop is None:
            return False
        current = stop
        return True


def _read_audit_arguments() -> Optional[PythonStop]:
    frame = gdb.newest_frame()
    object_pointer = gdb.lookup_type("PyObject").pointer()
    try:
        args = frame.read_var("args")
        count = int(frame.read_var("argc"))
    except (gdb.error, ValueError):  # no debug information for the interpreter: the ABI
        args = gdb.parse_and_eval("$rsi").cast(object_pointer.pointer())
        count = int(gdb.parse_and_eval("$rdx"))
    if count != 6:
        return None
    items = [args[i].cast(object_pointer) for i in range(6)]
    if pyobject.type_name(items[0]) != "str" or pyobject.read_str(items[0]) != STOP_EVENT:
        return None
    return PythonStop(pyobject.read_str(items[1]), pyobject.read_int(items[2]), pyobject.read_str(items[3]),
                      pyobject.read_int(items[4]), pyobject.read_str(items[5]))


def is_stop_event(event: Optional["gdb.StopEvent"]) -> bool:
    if not isinstance(event, gdb.BreakpointEvent) or _audit is None:
        return False
    return any(b is _audit for b in event.breakpoints)


def forget() -> None:
    """The process resumed or exited: no Python stop any more."""
    global current
    current = None


def process_exited() -> None:
    global _installed_in, _audit
    forget()
    _installed_in = None
    _sent.clear()
    if _audit is not None:
        try:
            _audit.delete()
        except RuntimeError:
            pass
        _audit = None


# -- calling into the inferior ------------------------------------------------------------


def _c_string(text: str) -> str:
    """A C string literal for gdb's expression parser (text is ASCII)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def call(expression: str) -> "gdb.Value":
    """Evaluate a C expression that calls functions of the stopped process, with the
    other threads held still and the call unwound if it faults."""
    global calling, current
    stop, calling = current, True
    settings = []
    for name, value in (("scheduler-locking", "on"), ("unwindonsignal", "on")):
        try:
            old = gdb.parameter(name)
            gdb.execute(f"set {name} {value}", to_string=True)
            settings.append((name, old))
        except (gdb.error, RuntimeError):
            pass
    try:
        return gdb.parse_and_eval(expression)
    except gdb.error as error:
        raise state.CyError(f"calling into the program failed: {error}")
    finally:
        calling, current = False, stop
        for name, old in settings:
            shown = {True: "on", False: "off"}.get(old, old)
            try:
                gdb.execute(f"set {name} {shown}", to_string=True)
            except (gdb.error, RuntimeError):
                pass


def holds_gil() -> bool:
    try:
        return int(call("((int (*)(void))PyGILState_Check)()")) == 1
    except state.CyError:
        return False


def require_gil(what: str) -> None:
    if not state.process_running():
        raise state.CyError(f"{what} needs a running program (start it with cy-run).")
    try:
        gdb.lookup_global_symbol("PyGILState_Check") or gdb.parse_and_eval("PyGILState_Check")
    except gdb.error:
        raise state.CyError(f"{what}: the program has no Python interpreter loaded yet.")
    if not holds_gil():
        thread = gdb.selected_thread()
        number = thread.num if thread is not None else "?"
        raise state.CyError(
            f"{what} needs the GIL, and the selected thread ({number}) does not hold it (it is in a nogil "
            "section, or waiting for the GIL); select a thread running Python or Cython code with the GIL "
            "(cy-thread N), or stop where this one holds it")
    if int(call("(long)((void *(*)(void))PyErr_Occurred)()")) != 0:
        raise state.CyError(f"{what}: an exception is being raised at this point; step past it first")


def ensure_agent() -> None:
    """Install the agent in this process (once per process); CyError if not possible."""
    global _installed_in, _audit
    pid = gdb.selected_inferior().pid
    if _installed_in == pid:
        return
    require_gil("Python-level debugging")
    try:
        gdb.lookup_static_symbol("sys_audit") or gdb.decode_line("sys_audit")
    except gdb.error:
        raise state.CyError("Python-level stops need the interpreter's symbols (sys_audit): pyenv builds have "
                            "them; for Debian's python3 install python3-dbg")
    path = AGENT_PATH
    bootstrap = (f"exec(compile(open({path!r}).read(), {path!r}, 'exec'), __import__('sys').modules.setdefault("
                 f"{AGENT_MODULE!r}, __import__('types').ModuleType({AGENT_MODULE!r})).__dict__)")
    if not os.path.isfile(path):
        raise state.CyError(f"cytool's agent is missing: {path}")
    status = int(call(f"((int (*)(const char *))PyRun_SimpleString)({_c_string(_ascii_source(bootstrap))})"))
    if status != 0:
        raise state.CyError(f"could not install cytool's agent in the program (see its stderr); tried {path}")
    if _audit is None:
        _audit = AuditBreakpoint()
    _installed_in = pid
    _sent.clear()


GDB_CODE_NAME = "<cytool-gdb>"  # the file name of the code gdb runs: the agent never traces it


def evaluate_in(namespace: str, source: str) -> int:
    """Evaluate a Python expression in a dict of the program; the new reference (address)
    to its value, or 0 with the exception cleared."""
    code = int(call(f"(long)((PyObject *(*)(const char *, const char *, int))Py_CompileString)"
                    f"({_c_string(_ascii_source(source))}, {_c_string(GDB_CODE_NAME)}, {PY_EVAL_INPUT})"))
    if code == 0:
        call("((void (*)(void))PyErr_Clear)()")
        return 0
    try:
        result = int(call(f"(long)((PyObject *(*)(PyObject *, PyObject *, PyObject *))PyEval_EvalCode)"
                          f"((PyObject *){code:#x}, (PyObject *){namespace}, (PyObject *){namespace})"))
    finally:
        call(f"((void (*)(PyObject *))Py_DecRef)((PyObject *){code:#x})")
    if result == 0:
        call("((void (*)(void))PyErr_Clear)()")
    return result


def agent_call(source: str) -> str:
    """Run `agent.<source>` in the agent module; its str result."""
    ensure_agent()
    result = evaluate_in(agent_namespace(), "agent." + source)
    if result == 0:
        raise state.CyError("cytool's agent failed inside the program")
    try:
        return pyobject.read_str(gdb.Value(result).cast(gdb.lookup_type("PyObject").pointer()))
    finally:
        call(f"((void (*)(PyObject *))Py_DecRef)((PyObject *){result:#x})")


def _ascii_source(text: str) -> str:
    """Python source as pure ASCII (non-ASCII characters as \\u escapes inside literals)."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def py_literal(text: str) -> str:
    return ascii(text)


def set_item(dictionary: str, key: str, value: str) -> None:
    """dict[key] = value in the inferior (value: a C expression of a PyObject *)."""
    status = int(call(f"((int (*)(PyObject *, const char *, PyObject *))PyDict_SetItemString)"
                      f"((PyObject *){dictionary}, {_c_string(key)}, (PyObject *){value})"))
    if status != 0:
        call("((void (*)(void))PyErr_Clear)()")
        raise state.CyError(f"cannot pass {key} to the program")


def agent_namespace() -> str:
    return (f"((PyObject *(*)(PyObject *))PyModule_GetDict)(((PyObject *(*)(const char *))PyImport_AddModule)"
            f"(\"{AGENT_MODULE}\"))")


# -- Python-level breakpoints --------------------------------------------------------------


def add_breakpoint(number: int, kind: str, spec: str, argument: object) -> None:
    """kind "line" (argument: (file, line)) or "function" (argument: dotted name)."""
    _python_breaks[number] = (kind, spec, argument)
    _sent.pop(number, None)


def delete_breakpoint(number: int) -> bool:
    if number not in _python_breaks:
        return False
    del _python_breaks[number]
    if _sent.pop(number, None) and _installed_in == _pid():
        try:
            agent_call(f"delete_break({number})")
        except state.CyError:
            pass
    return True


def python_breakpoints() -> List[Tuple[int, str, bool]]:
    return [(number, spec, bool(_sent.get(number))) for number, (_, spec, _) in sorted(_python_breaks.items())]


def has_unsent_breakpoints() -> bool:
    return any(not _sent.get(number) for number in _python_breaks)


def _pid() -> int:
    try:
        return gdb.selected_inferior().pid
    except gdb.error:
        return 0


def send_breakpoints() -> None:
    """Give the agent the Python breakpoints it does not have yet (needs the GIL)."""
    for number, (kind, _, argument) in sorted(_python_breaks.items()):
        if _sent.get(number):
            continue
        if kind == "line":
            filename, line = argument  # type: ignore[misc]
            agent_call(f"set_line_break({number}, {py_literal(filename)}, {int(line)})")
        else:
            agent_call(f"set_function_break({number}, {py_literal(str(argument))})")
        _sent[number] = True


def try_send_breakpoints() -> Optional[str]:
    """send_breakpoints where possible; the reason it was not, else None."""
    if not has_unsent_breakpoints():
        return None
    try:
        send_breakpoints()
    except state.CyError as error:
        return str(error)
    return None


# -- stepping at Python level -------------------------------------------------------------


def arm(mode: Optional[str]) -> None:
    agent_call(f"arm({mode!r})")


def stop_locals() -> str:
    return agent_call("locals_text()")


def run_code(source: str, mode: str, globals_expression: Optional[str] = None,
             locals_expression: Optional[str] = None) -> Tuple[bool, str, str]:
    """(ok, printed output, repr or error text) of running source ("exec" or "eval") in
    the last Python stop's frame, or in the given globals and locals dicts."""
    if globals_expression is None:
        text = agent_call(f"eval_in_frame({py_literal(source)}, {mode!r})")
    else:
        namespace = agent_namespace()
        set_item(namespace, "_cy_globals", globals_expression)
        set_item(namespace, "_cy_locals", locals_expression or globals_expression)
        try:
            text = agent_call(f"eval_with({py_literal(source)}, {mode!r}, _cy_globals, _cy_locals)")
        finally:
            for key in ("_cy_globals", "_cy_locals"):
                call(f"((int (*)(PyObject *, const char *))PyDict_DelItemString)((PyObject *){namespace}, "
                     f"{_c_string(key)})")
                call("((void (*)(void))PyErr_Clear)()")
    status, _, rest = text.partition(":")
    printed, _, value = rest.partition("\0")
    if status == "value" and mode == "eval":
        kind, _, value = value.partition("\0")
        global last_kind
        last_kind = kind
        if kind == "str":
            value = repr(value)
    return status == "value", printed, value


last_kind = ""  # the type of the last value run_code evaluated: int, float, bool, str, repr
