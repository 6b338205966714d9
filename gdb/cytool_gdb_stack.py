"""What `cytool stack` reads from a process or a core: every thread's frames, as data.

Owns the `cy-stack-json` command: attach to a live process (its libraries' symbols read
first, while it runs, by cytool_gdb_preload; stopped only while reading its threads, and
that pause timed) or read the loaded core, then for each thread give its
number, LWP, native name, whether it holds the GIL, and its frames newest first: Cython
(Cython name, .pyx line and source), Python (read by the interpreter's python-gdb.py
from its frame structures) and native (C function, file:line), with locals on request.
It reads memory only: nothing runs in the process (a core has no process to run in).
The output is one JSON document between two marker lines, for cytool/stack.py to
format; cytool_gdb_frames and cytool_gdb_names supply what cy-bt and cy-locals know.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Dict, List, Optional, Tuple

import gdb  # type: ignore

import cytool_gdb_frames as frames
import cytool_gdb_pyobject as pyobject
import cytool_gdb_state as state

BEGIN = "@@cytool-stack-begin"
END = "@@cytool-stack-end"
MAX_REPR = 200


class CyStackJson(gdb.Command):
    """Every thread's stack as JSON, for `cytool stack` (not meant to be typed).

Usage: cy-stack-json [--attach PID] [--locals]
With --attach, attaches to PID, reads and detaches (the pause is measured); without, it
reads the process or core gdb already has."""

    def __init__(self) -> None:
        super().__init__("cy-stack-json", gdb.COMMAND_STACK)

    def invoke(self, argument: str, from_tty: bool) -> None:
        words = argument.split()
        with_locals = "--locals" in words
        pid = None
        if "--attach" in words:
            index = words.index("--attach")
            try:
                pid = int(words[index + 1])
            except (IndexError, ValueError):
                raise gdb.GdbError("Usage: cy-stack-json [--attach PID] [--locals]")
        report = attach_and_read(pid, with_locals) if pid is not None else read_all(with_locals)
        sys.stdout.write(f"\n{BEGIN}\n{json.dumps(report)}\n{END}\n")
        sys.stdout.flush()


def attach_and_read(pid: int, with_locals: bool) -> dict:
    """Read the libraries' symbols while the process runs (cytool_gdb_preload), then attach,
    read every thread, detach. `paused_ms` is how long the process was stopped, `attach_ms`
    the part of it gdb spent attaching (reading libc, libpthread and any library not
    preloaded), `preload_ms` the reading done before the pause."""
    import cytool_gdb_preload as preload

    start = time.monotonic()
    preloaded = preload.preload(pid)
    stop = time.monotonic()
    try:
        try:
            gdb.execute(f"attach {pid}", to_string=True)
        except gdb.error as error:
            return {"error": "attach", "message": str(error)}
        try:
            preload.read_the_rest(preloaded)
            attached = time.monotonic()
            report = read_all(with_locals)
        finally:
            try:
                gdb.execute("detach", to_string=True)
            except gdb.error:
                pass
    finally:
        gdb.execute("set auto-solib-add on", to_string=True)
    report["paused_ms"] = round((time.monotonic() - stop) * 1000.0, 1)
    report["attach_ms"] = round((attached - stop) * 1000.0, 1)
    report["preload_ms"] = round((stop - start) * 1000.0, 1)
    report["preloaded"] = sorted(preloaded)  # the shared objects whose symbols were read before
    return report


def read_all(with_locals: bool) -> dict:
    """{"pid", "python": bool, "version": "3.11", "python_frames": bool, "gil": "held" | "free"
    | "unknown", "hints": [str], "threads": [{"num", "tid", "name" (native), "python_name"
    (threading's), "gil": bool, "frames": [...]}]}, frames newest first, each {"kind":
    "cython" | "python" | "native", "name", "file", "line"} plus "text" (the source line),
    "locals" ([[name, printed value]], with_locals), "c_function" and "c_line" (cython),
    "internal" (python: cytool's launcher), "pc" and "library" (native). `paused_ms` and
    `attach_ms` (milliseconds) are added by attach_and_read; {"error", "message"} on failure."""
    inferior = gdb.selected_inferior()
    if not frames.threads():
        return {"error": "no-process", "message": "gdb has no process or core to read"}
    report: dict = {"pid": inferior.pid, "python": has_python(), "version": None, "threads": []}
    version = pyobject.python_version()
    report["version"] = ".".join(map(str, version)) if version else None
    report["python_frames"] = frames.python_gdb_available()
    if not report["python_frames"]:
        report["python_frames_note"] = frames.python_gdb_status
    gil = gil_holder()
    report["gil"] = gil[0]
    selected = gdb.selected_thread()
    hints: List[str] = []
    try:
        for thread in frames.threads():
            thread.switch()
            report["threads"].append(read_thread(thread, gil, with_locals, hints))
    finally:
        if selected is not None and selected.is_valid():
            selected.switch()
    report["hints"] = [h for h in hints if h]
    return report


def has_python() -> bool:
    for name in ("_PyRuntime", "Py_Initialize"):
        try:
            gdb.parse_and_eval(f"(long)&{name}")
            return True
        except gdb.error:
            continue
    return False


def _atomic(value: "gdb.Value") -> int:
    """An int or pointer, whether wrapped in CPython's _Py_atomic_* struct (3.9-3.12) or not."""
    kind = value.type.strip_typedefs()
    if kind.code == gdb.TYPE_CODE_STRUCT:
        value = value["_value"]
    return int(value.cast(gdb.lookup_type("unsigned long")))


def gil_holder() -> Tuple[str, Optional[int]]:
    """("held", pthread id of the holder) / ("free", None) / ("unknown", None): read from
    the GIL's own state (_PyRuntime.ceval.gil up to 3.11, the main interpreter's since)."""
    for expression in ("_PyRuntime.ceval.gil", "*_PyRuntime.interpreters.main->ceval.gil"):
        try:
            gil = gdb.parse_and_eval(expression)
            locked = _atomic(gil["locked"])
            if not locked:
                return "free", None
            holder = _atomic(gil["last_holder"])
            if not holder:
                return "unknown", None
            thread_id = gdb.parse_and_eval(f"((PyThreadState *){holder})->thread_id")
            return "held", int(thread_id)
        except (gdb.error, gdb.MemoryError, RuntimeError):
            continue
    return "unknown", None


def pthread_id(thread: "gdb.InferiorThread") -> Optional[int]:
    """The thread's pthread_t (what PyThreadState.thread_id holds): its TLS base on x86-64
    (a core has no libthread_db handle to ask), else gdb's thread handle."""
    try:
        return int(gdb.newest_frame().read_register("fs_base"))
    except (gdb.error, ValueError, RuntimeError):
        pass
    try:
        return int.from_bytes(thread.handle(), sys.byteorder)
    except (gdb.error, RuntimeError, AttributeError, TypeError):
        return None


def read_thread(thread: "gdb.InferiorThread", gil: Tuple[str, Optional[int]], with_locals: bool,
                hints: List[str]) -> dict:
    ptid = thread.ptid
    entry: Dict[str, object] = {"num": thread.num, "tid": ptid[1] or ptid[2], "name": thread.name or "",
                                "gil": False, "frames": []}
    if gil[0] == "held" and gil[1] is not None:
        entry["gil"] = pthread_id(thread) == gil[1]
    out: List[dict] = entry["frames"]  # type: ignore[assignment]
    previous = None
    for frame in frames.frames():
        function = frames.cython_function(frame)
        if function is not None:
            if frames.wrapper_of(frame, function, previous):
                continue
            previous = frame
            out.append(cython_frame(frame, function, with_locals))
            hints.append(frames.foreign_hint(function, frame))
            continue
        previous = None
        name = _frame_name(frame)
        out.extend(python_frames(frame, name, with_locals, entry))
        out.append(native_frame(frame, name))
    if not entry.get("python_name") and entry["tid"] == gdb.selected_inferior().pid and \
            any(f["kind"] != "native" for f in out):
        entry["python_name"] = "MainThread"
    return entry


def _frame_name(frame: "gdb.Frame") -> str:
    try:
        return frame.name() or ""
    except gdb.error:
        return ""


def cython_frame(frame: "gdb.Frame", function, with_locals: bool) -> dict:
    import cytool_gdb_names as names

    path, line = frames.location(frame)
    qualified = function.qualified_name or f"{function.module.name}.{function.name}"
    if function.is_module_init:
        qualified = f"{function.module.name}.<module>"
    result = {"kind": "cython", "name": qualified, "file": path, "line": line,
              "text": state.source_text(path, line).strip() if path else "",
              "c_function": _frame_name(frame), "c_line": state.is_foreign(function.module) and not
              (path or "").endswith((".pyx", ".pxi", ".pxd"))}
    if with_locals and not function.is_module_init:
        rows = []
        try:
            names.ensure_locals(frame, function)
            for local in names.frame_locals(function):
                shown = names.show(local.name, lambda local=local: names.read_local(frame, function, local))
                rows.append(shown.split(" = ", 1))
        except (gdb.error, gdb.MemoryError, RuntimeError) as error:
            rows.append(["(locals)", f"<unreadable: {error}>"])
        result["locals"] = rows
    return result


def native_frame(frame: "gdb.Frame", name: str) -> dict:
    path, line = None, 0
    try:
        sal = frame.find_sal()
        if sal is not None and sal.symtab is not None:
            path, line = sal.symtab.filename, sal.line
    except gdb.error:
        pass
    try:
        pc = frame.pc()
    except gdb.error:
        pc = 0
    library = ""
    try:
        library = gdb.solib_name(pc) or ""
    except gdb.error:
        pass
    return {"kind": "native", "name": name or "??", "file": path, "line": line, "pc": pc, "library": library}


def python_frames(frame: "gdb.Frame", name: str, with_locals: bool, thread: dict) -> List[dict]:
    """The Python frames one C eval frame runs, newest first, through python-gdb.py;
    the thread's `threading` name from the Thread object its bootstrap frame runs."""
    if "EvalFrame" not in name:
        return []
    result = []
    for pyop in frames.python_frame_objects(frame):
        try:
            filename = str(pyop.filename())
            line = int(pyop.current_line_num() or 0)
            entry = {"kind": "python", "name": str(pyop.co_name.proxyval(set())), "file": filename, "line": line,
                     "text": frames.python_source(filename, line),
                     "internal": frames.is_agent_file(filename) or frames.is_launcher(filename)
                     or filename.endswith("/bin/cytool")}
        except Exception:  # python-gdb.py failed on this frame's memory
            break
        if with_locals:
            entry["locals"] = _python_locals(pyop)
        if entry["name"] == "_bootstrap_inner" and filename.endswith("threading.py"):
            thread["python_name"] = _thread_name(pyop)
        result.append(entry)
    return result


def _thread_name(pyop) -> str:
    """`self._name` of threading.Thread._bootstrap_inner's frame, as python-gdb.py reads it."""
    try:
        for name, value in pyop.iter_locals():
            if str(name.proxyval(set()) if hasattr(name, "proxyval") else name) != "self":
                continue
            found = _attribute(value, "_name")
            if found is None:  # not found by key: the whole object, as python-gdb.py reads it
                found = (getattr(value.proxyval(set()), "attrdict", None) or {}).get("_name")
            return found if isinstance(found, str) else ""
    except Exception:  # an unreadable Thread object: no name
        return ""
    return ""


def _attribute(pyop, name: str):
    """One attribute of a Python object read from its instance dict (the keys, then that
    one value: the process is stopped meanwhile), or None when python-gdb.py cannot say."""
    for getter in ("get_keys_values", "get_attr_dict"):  # 3.11+ inline values, then __dict__
        method = getattr(pyop, getter, None)
        items = method() if method is not None else None
        if items is None or not hasattr(items, "iteritems"):
            continue
        for key, value in items.iteritems():
            if key.proxyval(set()) == name:
                return value.proxyval(set())
    return None


def _python_locals(pyop) -> List[List[str]]:
    rows = []
    try:
        for name, value in pyop.iter_locals():
            try:
                text = value.get_truncated_repr(MAX_REPR)
            except Exception as error:  # python-gdb.py's own reading failed on one value
                text = f"<unreadable: {error}>"
            rows.append([str(name.proxyval(set())) if hasattr(name, "proxyval") else str(name), text])
    except Exception as error:
        rows.append(["(locals)", f"<unreadable: {error}>"])
    return rows


def register() -> None:
    CyStackJson()
