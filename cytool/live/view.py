"""The live memory view: a terminal screen (rich) over a capture being written, refreshed
twice a second, and its keys.

`run_live(capture_path, follow_pid=None)` is the one entry point: `cytool live CAPTURE`,
`cytool profile --live` (which starts it as a separate process before tracing starts, so
nothing the view does is ever traced) and `cytool attach --live` call it. It returns the
exit status: 0 when the user left with `q`, 1 when the capture could not be followed.
"""
from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Deque, Dict, List, Optional, Tuple

from cytool.errors import CytoolError
from cytool.live.follow import Follower, LineFigures
from cytool.reports.source import display_name

REFRESH_S = 0.5
SORT_KEYS = ("live", "peak", "allocated", "count")
SORT_FIELDS = {"live": "live_bytes", "peak": "peak_bytes", "allocated": "alloc_bytes", "count": "alloc_count"}
SPARK = "▁▂▃▄▅▆▇█"
RATE_WINDOW_S = 2.0

HELP = (
    ("q", "leave the view (the program goes on; its capture is written completely)"),
    ("s", "next sort key: live, peak, allocated, count"),
    ("l p a c", "sort by live, peak, allocated bytes, allocation count"),
    ("t", "next thread (all threads, then each thread in turn)"),
    ("T", "all threads again"),
    ("h ?", "this help (again to close)"),
)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def sparkline(values: List[int], width: int) -> str:
    """The last `width` values as block characters, scaled to their maximum."""
    values = values[-width:]
    top = max(values) if values else 0
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v * (len(SPARK) - 1) / top + 0.5))] for v in values)


@dataclass
class ViewState:
    """What the keys change."""

    sort: str = "live"
    thread: Optional[int] = None  # None: all threads
    help: bool = False
    quit: bool = False

    def key(self, ch: str, threads: List[Tuple[int, str]]) -> None:
        if ch == "q":
            self.quit = True
        elif ch in ("h", "?"):
            self.help = not self.help
        elif ch == "s":
            self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + 1) % len(SORT_KEYS)]
        elif ch in ("l", "p", "a", "c"):
            self.sort = {"l": "live", "p": "peak", "a": "allocated", "c": "count"}[ch]
        elif ch == "t":
            ids = [t for t, _ in threads]
            if not ids:
                self.thread = None
            elif self.thread is None or self.thread not in ids:
                self.thread = ids[0]
            else:
                at = ids.index(self.thread) + 1
                self.thread = ids[at] if at < len(ids) else None
        elif ch == "T":
            self.thread = None


@dataclass
class History:
    """Heap over time (one point a poll) and allocated bytes per line a moment ago (rates)."""

    heap: Deque[int] = field(default_factory=lambda: deque(maxlen=400))
    allocated: Deque[Tuple[float, Dict[tuple, int], int]] = field(default_factory=deque)
    thread: Optional[int] = None  # the rows' thread filter the rates were measured for

    def rates(self, now: float, rows: List[LineFigures], total: int, thread: Optional[int]) -> Tuple[Dict[tuple, float], float]:
        """Bytes allocated per second over the last ~2 s, per line and in all."""
        if thread != self.thread:  # another filter: start again
            self.allocated.clear()
            self.thread = thread
        current = {(r.function, r.file, r.line): r.alloc_bytes for r in rows}
        self.allocated.append((now, current, total))
        while len(self.allocated) > 2 and now - self.allocated[1][0] >= RATE_WINDOW_S:
            self.allocated.popleft()
        then, before, total_before = self.allocated[0]
        span = now - then
        if span <= 0:
            return {}, 0.0
        return ({key: max(0, value - before.get(key, 0)) / span for key, value in current.items()},
                max(0, total - total_before) / span)


def _status_line(follower: Follower, gone: str) -> str:
    t = follower.totals
    if t.complete:
        from rich.markup import escape

        replaced_by, failure = follower.exec_end
        if failure:
            return (f"[bold yellow]tracing ended at an exec of {escape(replaced_by)} that failed ({escape(failure)}): "
                    "the program went on untraced[/] — q to leave")
        if replaced_by:
            return (f"[bold green]the program replaced itself (exec {escape(replaced_by)}): capture complete[/] "
                    "— q to leave")
        return "[bold green]the program finished: capture complete (trailer read)[/] — q to leave"
    if gone:
        return f"[bold red]{gone}[/]"
    if t.writing:
        return "[green]running[/]"
    return "[yellow]not being written (no process holds it) and no end: its writer was killed, or has not started[/]"


def render(follower: Follower, state: ViewState, history: History, gone: str, height: int, width: int):
    """The whole screen as one rich renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = follower.totals
    threads = follower.threads()
    rows = follower.lines(state.thread)
    rates, total_rate = history.rates(time.monotonic(), rows, sum(r.alloc_bytes for r in rows), state.thread)
    live_now = sum(r.live_bytes for r in rows)
    key = SORT_FIELDS[state.sort]
    rows.sort(key=lambda r: (getattr(r, key), r.alloc_bytes), reverse=True)
    name = dict(threads).get(state.thread, "") if state.thread is not None else ""
    thread_label = "all threads" if state.thread is None else f"thread {state.thread} {display_name(name)}"
    title = Text.from_markup(
        f"[bold]cytool live[/] {display_name(str(follower.path))}  pid {follower.pid}  "
        f"t {t.time_ns / 1e9:.1f} s  " + _status_line(follower, gone)
    )
    summary = Text.from_markup(
        f"live [bold]{human_bytes(live_now)}[/] ({sum(r.live_count for r in rows):,} blocks)   "
        f"peak [bold]{human_bytes(sum(r.peak_bytes for r in rows))}[/] (process: {human_bytes(t.peak_bytes)} at {t.peak_time_ns / 1e9:.2f} s)   "
        f"allocated {human_bytes(sum(r.alloc_bytes for r in rows))} in {sum(r.alloc_count for r in rows):,}   "
        f"rate {human_bytes(total_rate)}/s"
    )
    spark_width = max(10, width - 70)
    heap = list(history.heap)
    spark = Text.from_markup(f"heap [cyan]{sparkline(heap, spark_width)}[/] max {human_bytes(max(heap) if heap else 0)} (the process, one point a refresh)")
    mode = Text.from_markup(
        f"showing [bold]{thread_label}[/] ({len(threads)} thread{'s' if len(threads) != 1 else ''}: t)   "
        f"sorted by [bold]{state.sort}[/] (s, l p a c)   h: help   q: leave"
    )
    parts: list = [title, summary, spark, mode]
    if state.help:
        help_table = Table(title="keys", show_header=False, box=None)
        for keys, what in HELP:
            help_table.add_row(f"[bold]{keys}[/]", what)
        parts.append(help_table)
    table = Table(expand=True, show_edge=False, pad_edge=False)
    table.add_column("function (Cython / Python name)", ratio=3, no_wrap=True, overflow="ellipsis")
    table.add_column("line", ratio=2, no_wrap=True, overflow="ellipsis")
    for label, field_name in (("live", "live_bytes"), ("peak", "peak_bytes"), ("allocated", "alloc_bytes")):
        marker = " ▼" if SORT_FIELDS[state.sort] == field_name else ""
        table.add_column(label + marker, justify="right", no_wrap=True)
    table.add_column("rate/s", justify="right", no_wrap=True)
    table.add_column("count" + (" ▼" if state.sort == "count" else ""), justify="right", no_wrap=True)
    room = max(1, height - len(parts) - (len(HELP) + 2 if state.help else 0) - 4)
    for r in rows[:room]:
        table.add_row(
            display_name(r.function),
            display_name(r.where),
            human_bytes(r.live_bytes),
            human_bytes(r.peak_bytes),
            human_bytes(r.alloc_bytes),
            human_bytes(rates.get((r.function, r.file, r.line), 0.0)),
            f"{r.alloc_count:,}",
        )
    parts.append(table)
    if t.late_events or follower.notes:
        note = follower.notes[0] if follower.notes else f"{t.late_events:,} events came late (replayed after later ones)"
        parts.append(Text(display_name(note), style="yellow"))
    return Group(*parts)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_follower(capture_path: Path, follow_pid: Optional[int], wait_s: float = 30.0) -> Follower:
    """The follower of capture_path. With follow_pid: waits (while that process lives, at
    most wait_s) for it to create the capture and write its header."""
    deadline = time.monotonic() + wait_s
    if follow_pid is not None and not _process_alive(follow_pid) and not capture_path.exists():
        raise CytoolError(f"no process with pid {follow_pid} (the writer of {capture_path})",
                          hint="check the pid (or leave --pid out to read a capture already written)", exit_code=2)
    while True:
        try:
            follower = Follower(capture_path)
            if follow_pid is None or follower.pid == follow_pid:
                return follower
            follower.close()  # an older capture at that path: the new one is not started yet
            problem: Optional[CytoolError] = CytoolError(f"{capture_path}: written by process {follower.pid}, not {follow_pid}", exit_code=1)
        except CytoolError as error:
            problem = error
        if follow_pid is not None and _process_alive(follow_pid) and time.monotonic() > deadline:
            raise CytoolError(f"process {follow_pid} has not started writing {capture_path} in {wait_s:.0f} s "
                              f"({problem.message if problem else 'no capture'})",
                              hint="check the path it writes to (cytool profile -o, CYTOOL_PROFILE)", exit_code=1)
        if follow_pid is None or not _process_alive(follow_pid):
            assert problem is not None
            raise problem
        time.sleep(0.05)


def _terminal_size(console) -> Tuple[int, int]:
    """The terminal's size now (followed when it is resized), told to the console too."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
        console.size = (size.columns, size.lines)
        return size.columns, size.lines
    except OSError:
        return console.size.width, console.size.height


def _identity(path: Path) -> Optional[Tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def run_live(capture_path, follow_pid: Optional[int] = None) -> int:
    """Show the live view of `capture_path` until `q`. follow_pid: the process writing it
    (waited for; its end is noticed). Raises CytoolError when the capture cannot be read
    or no terminal is there; returns 0 when the user left, 1 when the capture vanished or
    could not be read any more."""
    from rich.console import Console
    from rich.live import Live

    capture_path = Path(capture_path)
    follower = open_follower(capture_path, follow_pid)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        follower.close()
        raise CytoolError("the live view needs a terminal (stdin and stdout)", hint="run it in a terminal, or use `cytool report` on the capture", exit_code=2)
    identity = _identity(capture_path)
    console = Console()
    state = ViewState()
    history = History()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    failure = ""
    gone = ""
    was_writing = False
    try:
        tty.setcbreak(fd)
        with Live(console=console, screen=True, auto_refresh=False, transient=False) as live:
            next_poll = 0.0
            while not state.quit:
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + REFRESH_S
                    if _identity(capture_path) != identity:
                        failure = f"{capture_path}: the capture vanished (deleted, moved or replaced) while it was followed"
                        break
                    try:
                        follower.poll()
                    except CytoolError as error:
                        failure = error.render()
                        break
                    t = follower.totals
                    history.heap.append(t.live_bytes)
                    was_writing = was_writing or t.writing
                    if not t.complete and not gone:
                        if follow_pid is not None and not _process_alive(follow_pid):
                            gone = f"process {follow_pid} ended without finishing the capture (killed?)"
                        elif was_writing and not t.writing:
                            follower.poll()  # the writer may have finished between the two reads
                            if not follower.totals.complete and not follower.totals.writing:
                                gone = "the writer stopped without finishing the capture (killed?)"
                    width, height = _terminal_size(console)
                    live.update(render(follower, state, history, gone, height, width), refresh=True)
                ready, _, _ = select.select([fd], [], [], max(0.0, next_poll - time.monotonic()))
                if ready:
                    data = os.read(fd, 64).decode("utf-8", "replace")
                    if not data:
                        break
                    for ch in data:
                        state.key(ch, follower.threads())
                    if not state.quit:
                        width, height = _terminal_size(console)
                        live.update(render(follower, state, history, gone, height, width), refresh=True)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        totals = follower.totals
        follower.close()
    if failure:
        print(f"cytool: {failure}" if not failure.startswith("cytool") else failure, file=sys.stderr)
        return 1
    done = "the capture is complete" if totals.complete else "the program is still running; its capture goes on"
    print(f"cytool live: left the view of {capture_path} ({done})", file=sys.stderr)
    return 0
