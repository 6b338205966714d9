"""The TUI side of Python-level stops: a source window for `.py` files (and for the
`.pyx` of a module built without #line, which gdb's own window shows as C).

gdb's own source window shows only files that have a symbol table, so a Python stop
(file, line, function) cannot be shown there. This module registers a TUI window type
`cy-python` and a layout of the same name (that window over the command window); at a
Python stop, when the TUI is on, the layout switches to it with the stop's line marked,
and back to `layout src` at the next Cython stop.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import gdb  # type: ignore

import cytool_gdb_state as state

WINDOW = "cy-python"
_windows: List["PythonSourceWindow"] = []
_location: Optional[Tuple[str, int]] = None
_kind = "Python"
_showing = False


class PythonSourceWindow:
    def __init__(self, window: "gdb.TuiWindow") -> None:
        self.window = window
        _windows.append(self)
        self.render()

    def close(self) -> None:
        if self in _windows:
            _windows.remove(self)

    def render(self) -> None:
        if not self.window.is_valid():
            return
        if _location is None:
            self.window.title = "Python source"
            self.window.erase()
            return
        path, line = _location
        self.window.title = f"{path} ({_kind})"
        lines = state.source_lines(path)
        height = max(1, self.window.height)
        first = max(1, min(line - height // 2, max(1, len(lines) - height + 1)))
        width = max(10, self.window.width)
        text = []
        for number in range(first, min(len(lines), first + height - 1) + 1):
            marker = ">" if number == line else " "
            text.append(f"{marker}{number:>5} {lines[number - 1]}"[:width - 1].ljust(width - 1))
        self.window.erase()
        self.window.write("\n".join(text))


def register() -> None:
    if not hasattr(gdb, "register_window_type"):
        return
    try:
        gdb.register_window_type(WINDOW, PythonSourceWindow)
        gdb.execute(f"tui new-layout {WINDOW} {WINDOW} 1 cmd 1", to_string=True)
    except (gdb.error, RuntimeError):
        pass


def tui_active() -> bool:
    try:
        gdb.execute("info win", to_string=True)
    except gdb.error:
        return False
    return True


def show_python_source(path: str, line: int, kind: str = "Python") -> None:
    """At a Python stop: show path:line in the TUI (when the TUI is on). Also at a stop
    in a Cython module built without #line, whose line table (and so gdb's own source
    window) speaks C: its .pyx, at the line the C file's comments give (kind says so)."""
    global _location, _showing, _kind
    _location = (path, line)
    _kind = kind
    if not tui_active():
        return
    if not _showing:
        try:
            gdb.execute(f"layout {WINDOW}", to_string=True)
            _showing = True
        except gdb.error:
            return
    for window in list(_windows):
        window.render()
    _redraw()


def show_cython_source() -> None:
    """Back at a Cython stop: gdb's own source window again."""
    global _showing
    if _showing and tui_active():
        try:
            gdb.execute("layout src", to_string=True)
        except gdb.error:
            pass
        _redraw()
    _showing = False


def _redraw() -> None:
    """Repaint the whole screen: the windows a layout change leaves behind go away."""
    try:
        gdb.execute("refresh", to_string=True)
    except gdb.error:
        pass
