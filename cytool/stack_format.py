"""`cytool stack`'s output: the report of cytool/stack.py as text or JSON.

Owns what is shown of each thread: a header (tid, Python or native name, the GIL
holder marked) and its frames newest first, Cython frames as `[cy] mod.func at
mod.pyx:LINE` and Python frames as `[py] func at file.py:LINE`, each with its source
line; C frames (`[c]`) only with `native`, else the innermost one a thread waits in;
cytool's own launcher frames only with `native`; locals under their frame.
"""
from __future__ import annotations

import json
from typing import List

INDENT = "    "


def visible_frames(thread: dict, native: bool) -> List[dict]:
    """The frames shown: Cython and Python frames (not cytool's launcher), and the C
    frames with `native`; without it, the innermost C frame when it is above every other."""
    shown = []
    for index, frame in enumerate(thread["frames"]):
        kind = frame["kind"]
        if kind == "native":
            if native or (index == 0 and len(thread["frames"]) > 1):
                shown.append(frame)
            continue
        if kind == "python" and frame.get("internal") and not native:
            continue
        shown.append(frame)
    return shown


BREAKPOINT_FILE = "cytool/inline_break.py"


def drop_breakpoint_frames(report: dict) -> None:
    """Cut each thread's frames down to those older than cytool.breakpoint()'s own."""
    for thread in report["threads"]:
        frames = thread["frames"]
        inner = [i for i, f in enumerate(frames) if (f.get("file") or "").endswith(BREAKPOINT_FILE)]
        if inner:
            rest = frames[inner[-1] + 1:]
            while rest and rest[0]["kind"] == "native":  # the interpreter's call into it
                rest = rest[1:]
            thread["frames"] = rest


def thread_title(thread: dict, pid: int) -> str:
    name = thread.get("python_name") or thread.get("name") or ""
    title = f"Thread {thread['tid']}"
    if name:
        title += f' "{name}"'
    if thread["tid"] == pid:
        title += " (main)"
    if thread.get("gil"):
        title += " [holds the GIL]"
    return title


def frame_line(frame: dict) -> str:
    kind = frame["kind"]
    where = f"{frame['file']}:{frame['line']}" if frame.get("file") else ""
    if kind == "cython":
        suffix = " [C line]" if frame.get("c_line") else ""
        return f"[cy] {frame['name']}() at {where or '??'}{suffix}"
    if kind == "python":
        return f"[py] {frame['name']}() at {where or '??'}"
    library = f" ({frame['library'].rsplit('/', 1)[-1]})" if frame.get("library") else ""
    at = f" at {where}" if where else ""
    return f"[c]  {frame['name']}(){at}{library}"


def format_text(report: dict, native: bool = False) -> str:
    pid = report.get("pid") or 0
    lines = []
    version = f"Python {report['version']}" if report.get("version") else "Python"
    gil = {"free": "the GIL is free", "unknown": "GIL holder unknown"}.get(report.get("gil", ""), "")
    head = f"Process {pid} ({version}), {len(report['threads'])} thread(s), newest frame first"
    lines.append(head + (f"; {gil}" if gil else ""))
    if not report.get("python_frames", True):
        lines.append(f"(Python frames not shown: {report.get('python_frames_note', 'python-gdb.py not found')})")
    for thread in report["threads"]:
        lines.append("")
        lines.append(thread_title(thread, pid))
        shown = visible_frames(thread, native)
        if not any(f["kind"] != "native" for f in shown) and not native:
            innermost = thread["frames"][0] if thread["frames"] else None
            where = f"in {innermost['name']}()" if innermost else "no frames"
            lines.append(f"{INDENT}(no Python or Cython frames: {where}; --native shows the C frames)")
            continue
        for frame in shown:
            lines.append(INDENT + frame_line(frame))
            if frame.get("text"):
                lines.append(INDENT * 2 + frame["text"])
            for name, value in frame.get("locals", ()):
                lines.append(f"{INDENT * 2}  {name} = {value}")
    for hint in report.get("hints", ()):
        lines.append(hint)
    return "\n".join(lines)


def format_json(report: dict, native: bool = False) -> str:
    """The report with the frames the text would show (all of them with `native`)."""
    threads = []
    for thread in report["threads"]:
        copy = dict(thread)
        copy["frames"] = visible_frames(thread, native) if not native else thread["frames"]
        threads.append(copy)
    shown = dict(report)
    shown["threads"] = threads
    return json.dumps(shown, indent=1)
