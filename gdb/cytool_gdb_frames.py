"""Frames as a Cython programmer sees them.

Owns: telling Cython frames from C frames, their `.pyx` location, the selected Cython
frame, the Python frames of the interpreter (through the interpreter's own
python-gdb.py, sourced explicitly when gdb's auto-load refuses it), printing locations
(with the thread when there are several, and the build's optimisation level when it is
not -O0) and backtraces, of one thread or of all.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Iterator, List, Optional, Tuple

import gdb  # type: ignore

import cytool_gdb_state as state
from cytool_gdb_debuginfo import Function, c_name

python_gdb_status = "python-gdb.py for this interpreter was not found"
_python_gdb_loaded = False
_PYTHON_NAME = re.compile(r"^(lib)?python(\d+\.\d+)")


def cython_function(frame: "gdb.Frame") -> Optional[Function]:
    try:
        return state.function_for_cname(frame.name())
    except gdb.error:
        return None


def location(frame: "gdb.Frame") -> Tuple[Optional[str], int]:
    """(source path, line) of a frame, per the line table (.pyx thanks to #line); in a
    module built without #line, the .pyx line the C file's position comments give."""
    try:
        sal = frame.find_sal()
    except gdb.error:
        return None, 0
    if sal is None or sal.symtab is None:
        return None, 0
    try:
        path = sal.symtab.fullname()
    except gdb.error:
        path = sal.symtab.filename
    return pyx_position(cython_function(frame), path, sal.line)


def pyx_position(function: Optional[Function], path: str, line: int) -> Tuple[str, int]:
    """A line-table position (path, line) as .pyx: in a Cython function of a module whose
    line table speaks C (cytool_gdb_foreign), the .pyx line of that C line; a .pyx the
    line table names where it is not (`#line 12 "pkg/mod.pyx"` written relative to a
    package root that is not the compilation directory, as in a src/ layout), the
    module's own file of that name."""
    if function is None or not line:
        return path, line
    if not getattr(function.module, "c_lines", False):
        return state.real_source(function.module, path), line
    if os.path.basename(path) != os.path.basename(function.module.c_filename):
        return path, line
    mapped = function.module.pyx_position(line)
    return mapped if mapped is not None else (path, line)


def is_cython_frame(frame: "gdb.Frame") -> bool:
    return cython_function(frame) is not None


def newest_frame() -> Optional["gdb.Frame"]:
    try:
        return gdb.newest_frame()
    except gdb.error:
        return None


def frames() -> Iterator["gdb.Frame"]:
    frame = newest_frame()
    while frame is not None:
        yield frame
        try:
            frame = frame.older()
        except gdb.error:
            return


def cython_frames() -> List["gdb.Frame"]:
    """The Cython frames, newest first (a Python wrapper right below its own body, in a
    module without debug XML, is the same Cython call: left out)."""
    found: List["gdb.Frame"] = []
    previous = None
    for frame in frames():
        function = cython_function(frame)
        if function is None:
            previous = None
            continue
        if not wrapper_of(frame, function, previous):
            found.append(frame)
        previous = frame
    return found


def is_wrapper_frame(frame: "gdb.Frame") -> bool:
    """A frame of a Python wrapper (`__pyx_pw_`) that stands for its function only in a
    module without debug XML: stepping out of the function goes on through it."""
    function = cython_function(frame)
    if function is None or not state.is_foreign(function.module):
        return False
    try:
        return c_name(frame.name()) != function.cname
    except gdb.error:
        return False


def wrapper_of(frame: "gdb.Frame", function: Function, newer: Optional["gdb.Frame"]) -> bool:
    """True for the frame of a Python wrapper (`__pyx_pw_`) whose body (`__pyx_pf_`) is
    the next newer frame (a module without debug XML): cy-bt shows that call once."""
    if newer is None or cython_function(newer) is not function or not state.is_foreign(function.module):
        return False
    try:
        return c_name(frame.name()) != c_name(newer.name())
    except gdb.error:
        return False


def selected_cython_frame(required: bool = True) -> Optional["gdb.Frame"]:
    """The selected frame if it is a Cython frame, else the nearest older Cython frame."""
    try:
        frame = gdb.selected_frame()
    except gdb.error:
        if required:
            raise state.CyError("No stack: the program is not running (start it with cy-run).")
        return None
    start = frame
    while frame is not None:
        if is_cython_frame(frame):
            if frame != start:
                frame.select()
            return frame
        frame = frame.older()
    if required:
        raise state.CyError("No Cython function on the stack (see cy-bt -a).")
    return None


def describe(frame: "gdb.Frame") -> str:
    """`dbgmod.pyx:24 in work()`; in a module without debug XML whose C file is not
    found, `api.c:2810 in app.api.churn() [C line]` (or `?? in ...` without line table)."""
    function = cython_function(frame)
    path, line = location(frame)
    name = function.display_name if function else (frame.name() or "??")
    where = f"{os.path.basename(path)}:{line}" if path else "??"
    if function is not None and state.is_foreign(function.module) and not _is_cython_source(path):
        suffix = " [C line]" if path else ""
        return f"{where} in {function.qualified_name}(){suffix}"
    return f"{where} in {name}()"


def _is_cython_source(path: Optional[str]) -> bool:
    return bool(path) and path.endswith((".pyx", ".pxi", ".pxd"))


_hinted_modules: set = set()


def foreign_hint(function: Optional[Function], frame: Optional["gdb.Frame"] = None) -> str:
    """Once per module built without cytool: what cytool knows of it, and how to know more."""
    if function is None or not state.is_foreign(function.module):
        return ""
    module = function.module
    if module.name in _hinted_modules:
        return ""
    _hinted_modules.add(module.name)
    head = f"cytool: {module.name} has no Cython debug information (it was not built by cytool)"
    if frame is not None and location(frame)[0] is None:
        known = "; it has no line table either (built without -g): Cython names only"
        more = "For .pyx lines, stepping and locals"
    elif module.c_file is None:
        known = (f" and its generated C file {module.short_name}.c was not found (beside it, above it, or where its "
                 "debug information says it was compiled): Cython names at C lines")
        more = "For .pyx lines, stepping and locals"
    elif module.c_lines:
        known = (f": names from its symbols, .pyx lines from the comments in {module.c_filename}, locals from "
                 "the C variables Cython named")
        more = "For every local and global as Cython declared them"
    else:
        known = f": names from its symbols, .pyx lines from its #line directives ({module.c_filename})"
        more = "For every local and global as Cython declared them"
    notes = "".join(f"; {note}" for note in module.notes)
    return f"{head}{known}{notes}. {more}, {foreign_develop_hint()}"


def foreign_develop_hint() -> str:
    return "rebuild it with `cytool develop` in its project (`--debug` for -O0) and debug again"


def thread_count() -> int:
    try:
        return len(gdb.selected_inferior().threads())
    except (gdb.error, RuntimeError):
        return 1


def thread_tag() -> str:
    """` [thread 3]` when the process has several threads, else nothing."""
    if thread_count() < 2:
        return ""
    try:
        thread = gdb.selected_thread()
    except gdb.error:
        return ""
    return f" [thread {thread.num}]" if thread is not None else ""


def print_location(frame: "gdb.Frame", prefix: str = "", stop: bool = False) -> None:
    """`PREFIXmod.pyx:LINE in func()` and the source line. A stop (stop=True) also names
    the thread when there are several and the optimisation level of an optimised build."""
    import cytool_gdb_placement as placement

    path, line = location(frame)
    suffix = ""
    hint = ""
    function = cython_function(frame)
    if stop:
        if function is not None:
            try:
                level = placement.optimisation_level_at(frame.pc())
            except gdb.error:
                level = "-O0"
            hint = foreign_hint(function, frame)
            if level != "-O0":
                suffix += f" [{level} build]"
                if function.module.name not in _hinted_modules:
                    _hinted_modules.add(function.module.name)
                    hint = (f"cytool: {function.module.name} was built at {level}: values may be <optimised out> and "
                            f"lines may run out of order; {placement.REBUILD_HINT}")
        suffix += thread_tag()
    print(f"{prefix}{describe(frame)}{suffix}")
    if path:
        text = state.source_text(path, line)
        if text:
            print(f"{line:>6}    {text.strip()}")
    if hint:
        print(hint)
    if stop:
        from cytool_gdb_tui import show_cython_source, show_python_source

        if function is not None and getattr(function.module, "c_lines", False) and path and os.path.isfile(path) \
                and _is_cython_source(path):
            show_python_source(path, line, "Cython: lines from the C file's comments")
        else:
            show_cython_source()


# -- Python frames ------------------------------------------------------------------------


def load_python_gdb(objfile_name: str) -> None:
    """Source the interpreter's python-gdb.py found beside a python or libpython binary."""
    global python_gdb_status, _python_gdb_loaded
    if _python_gdb_loaded or not objfile_name:
        return
    real = os.path.realpath(objfile_name)
    if real.endswith(" (deleted)"):  # /proc/PID/exe of a program replaced since (an upgrade)
        real = real[:-len(" (deleted)")]
    match = _PYTHON_NAME.match(os.path.basename(real))
    if not match:
        return
    version = match.group(2)
    directory = os.path.dirname(real)
    candidates = [
        os.path.join(directory, f"python{version}-gdb.py"),
        os.path.join(os.path.dirname(directory), "bin", f"python{version}-gdb.py"),
        f"/usr/share/gdb/auto-load{real}-gdb.py",
        f"/usr/share/gdb/auto-load/usr/bin/python{version}-gdb.py",
    ]
    candidates = list(dict.fromkeys(candidates))
    main = sys.modules.get("__main__")
    if main is not None and hasattr(main, "PyObjectPtr") and hasattr(main, "Frame"):
        _python_gdb_loaded = True
        python_gdb_status = "loaded by gdb's auto-load"
        return
    for candidate in candidates:
        if os.path.isfile(candidate):
            try:
                gdb.execute(f"source {candidate}", to_string=True)
            except gdb.error as error:
                python_gdb_status = f"{candidate} failed to load: {error}"
                continue
            _python_gdb_loaded = True
            python_gdb_status = f"loaded {candidate}"
            return
    python_gdb_status = f"no python-gdb.py for Python {version} (looked in {', '.join(candidates[:3])})"


python_frames_enabled = True  # `set cy-python-frames off` (cytool_gdb_commands)


def python_gdb_available() -> bool:
    global python_gdb_status
    if not python_frames_enabled:
        python_gdb_status = "turned off by `set cy-python-frames off`"
        return False
    main = sys.modules.get("__main__")
    return main is not None and hasattr(main, "Frame") and hasattr(main, "PyObjectPtr")


def python_frame_objects(frame: "gdb.Frame") -> list:
    """python-gdb.py's objects for the Python frames one C eval frame runs, newest first."""
    if not python_gdb_available():
        return []
    main = sys.modules["__main__"]
    try:
        wrapped = main.Frame(frame)
        if not wrapped.is_evalframe():
            return []
        pyop = wrapped.get_pyop()
    except Exception:
        return []
    result = []
    guard = 0
    while pyop and guard < 500:
        guard += 1
        try:
            if hasattr(pyop, "is_shim") and pyop.is_shim():
                break
            if pyop.is_optimized_out():
                break
            result.append(pyop)
            if hasattr(pyop, "is_entry"):
                if pyop.is_entry():
                    break
            if not hasattr(pyop, "previous"):
                break
            pyop = pyop.previous()
        except Exception:
            break
    return result


def python_frames_in(frame: "gdb.Frame") -> List[Tuple[str, int, str]]:
    """[(filename, line, function)] of the Python frames one C eval frame runs, newest first."""
    result = []
    for pyop in python_frame_objects(frame):
        try:
            name = pyop.co_name.proxyval(set())
            result.append((str(pyop.filename()), int(pyop.current_line_num() or 0), str(name)))
        except Exception:
            break
    return result


def python_source(filename: str, line: int) -> str:
    if filename.startswith("<") or not line:
        return ""
    return state.source_line(filename, line).strip()


# The frames of `python -m cytool run`, which loads the module: the user did not write
# them, so cy-bt hides them like CPython's internals (cy-bt -a shows them).
_LAUNCHER_SUFFIXES = (
    "/cytool/__main__.py", "/cytool/cli.py", "/cytool/commands/run.py", "/cytool/launch.py", "/cytool/importer.py",
    "/runpy.py",
)


def is_launcher(filename: str) -> bool:
    return filename.startswith("<frozen") or filename.endswith(_LAUNCHER_SUFFIXES)


def is_agent_file(filename: str) -> bool:
    """cytool's own agent inside the program (cytool_gdb_python), the code gdb ran, and
    cytool.breakpoint()'s own frames (cytool/inline_break.py)."""
    return filename.endswith(("/cytool_gdb_agent.py", "/cytool/inline_break.py")) or \
        filename in ("<cytool-gdb>", "<cy-exec>")


def backtrace(show_all: bool = False) -> None:
    """Print cy-bt: Cython frames numbered, Python frames between them, C internals hidden."""
    if newest_frame() is None:
        raise state.CyError("No stack: the program is not running.")
    index = 0
    printed = 0
    previous = None
    hints = []
    for frame in frames():
        function = cython_function(frame)
        if function is not None:
            if wrapper_of(frame, function, previous):
                continue  # the Python wrapper of the body just shown
            previous = frame
            marker = "*" if _is_selected(frame) else " "
            print(f"#{index:<2}{marker}{describe(frame)}")
            printed += 1
            path, line = location(frame)
            if path:
                text = state.source_text(path, line).strip()
                if text:
                    print(f"        {text}")
            index += 1
            hints.append(foreign_hint(function, frame))
            continue
        previous = None
        name = ""
        try:
            name = frame.name() or ""
        except gdb.error:
            pass
        python = python_frames_in(frame) if "EvalFrame" in name else []
        for filename, line, func in python:
            if is_agent_file(filename) or (is_launcher(filename) and not show_all):
                continue
            print(f"    [py] {filename}:{line} in {func}()")
            printed += 1
            text = python_source(filename, line)
            if text:
                print(f"        {text}")
        if show_all:
            path, line = location(frame)
            where = f" at {path}:{line}" if path else ""
            try:
                pc = f"{frame.pc():#x}"
            except gdb.error:
                pc = "?"
            print(f"    [c]  {pc} in {name or '??'}(){where}")
    if not printed and not show_all:
        newest = newest_frame()
        print(f"    (no Cython or Python frames: in {newest.name() if newest else '??'}(); cy-bt full shows C frames)")
    if not python_gdb_available():
        print(f"(Python frames not shown: {python_gdb_status})")
    for hint in hints:
        if hint:
            print(hint)


def _is_selected(frame: "gdb.Frame") -> bool:
    try:
        return frame == gdb.selected_frame()
    except gdb.error:
        return False


# -- threads ------------------------------------------------------------------------------


def threads() -> List["gdb.InferiorThread"]:
    try:
        return sorted(gdb.selected_inferior().threads(), key=lambda t: t.num)
    except (gdb.error, RuntimeError):
        return []


def thread_summary(thread: "gdb.InferiorThread") -> str:
    """Where a thread is, for cy-thread: its innermost Cython frame, else its C frame."""
    selected = gdb.selected_thread()
    try:
        frame = gdb.selected_frame() if selected == thread else None
    except gdb.error:
        frame = None
    thread.switch()
    try:
        cython = cython_frames()
        if cython:
            return describe(cython[0])
        newest = newest_frame()
        return f"in {newest.name() or '??'}() (no Cython frame)" if newest is not None else "(no frames)"
    finally:
        if selected is not None and selected.is_valid():
            selected.switch()
            if frame is not None and frame.is_valid():
                frame.select()


def all_backtraces(show_all: bool = False) -> None:
    """cy-bt -a: the backtrace of every thread, the selected one marked."""
    selected = gdb.selected_thread()
    if selected is None:
        raise state.CyError("No stack: the program is not running.")
    try:
        current_frame = gdb.selected_frame()
    except gdb.error:
        current_frame = None
    try:
        for thread in threads():
            thread.switch()
            marker = "*" if thread == selected else " "
            name = thread.name or ""
            print(f"{marker}Thread {thread.num} {name}".rstrip())
            try:
                backtrace(show_all)
            except gdb.GdbError as error:
                print(f"    ({error})")
    finally:
        selected.switch()
        if current_frame is not None and current_frame.is_valid():
            current_frame.select()
