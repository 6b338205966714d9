"""`cytool report --format table`: the top lines on a terminal, with their source text."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from rich.console import Console
from rich.text import Text

from cytool.analysis import LineStats, Metrics, Profile
from cytool.process_merge import peak_rule
from cytool.reports import MODES
from cytool.reports.ranking import ranked_lines, ranked_pyx_lines
from cytool.reports.source import SourceCache, display_name
from cytool.reports.units import human_bytes, human_count, human_duration, share


# the width of the table when it goes to a pipe or a file (`cytool report -o`, a CI log):
# rich's default of 80 columns would cut the function names and the commands printed
PIPE_WIDTH = 160


def report_console(file=None) -> Console:
    """A Console for the table: the terminal's width on a terminal, PIPE_WIDTH columns
    without colours on a pipe or a file (sys.stdout when `file` is None)."""
    import sys

    stream = file if file is not None else sys.stdout
    if hasattr(stream, "isatty") and stream.isatty():
        return Console(file=file)
    return Console(file=stream, width=PIPE_WIDTH, color_system=None)


def _where(line: LineStats) -> str:
    if line.file:
        where = f"{Path(line.file).name}:{line.line}" if line.line else Path(line.file).name
        return display_name(where + " (generated C)" if line.kind == "cython-c" else where)
    return display_name(Path(line.object).name) if line.object else ""


def print_notes(profile: Profile, console: Console, extra: Sequence[str] = ()) -> None:
    """Truncation, lost events and symbol warnings (then `extra`: sources not shown), said
    once, above the numbers (never wrapped)."""
    for note in list(profile.notes()) + list(extra):
        console.print(Text(f"warning: {display_name(note)}", style="yellow"), soft_wrap=True)


def print_totals(profile: Profile, console: Console) -> None:
    t = profile.totals
    peak_when = "summed over processes" if profile.processes else f"at {human_duration(profile.peak_time_ns)}"
    console.print(
        Text.assemble(
            ("allocated ", "bold"), f"{human_bytes(t.bytes)} in {human_count(t.count)} allocations · ",
            ("peak ", "bold"), f"{human_bytes(t.peak_bytes)} {peak_when}\n",
            ("leaked ", "bold"), f"{human_bytes(t.leaked_bytes)} in {human_count(t.leaked_count)} blocks · ",
            ("temporary ", "bold"), f"{human_count(t.temporary_count)}",
        )
    )


def print_processes(profile: Profile, console: Console) -> None:
    """The per-process breakdown of a merged report: pid, parent, its figures, its command."""
    if not profile.processes:
        return
    console.print(Text(f"{len(profile.processes)} processes (the figures above are their sums; peak: {peak_rule(profile)})",
                       style="bold"))
    header = f"{'pid':>8} {'parent':>8} {'bytes':>10} {'count':>9} {'peak':>10} {'leaked':>10}  command"
    console.print(Text(header, style="dim"), no_wrap=True, overflow="ellipsis")
    width = max(60, console.width)
    for p in profile.processes:
        t = p.totals
        row = Text.assemble(
            f"{p.pid:>8} {p.parent_pid:>8} {human_bytes(t.bytes):>10} {human_count(t.count):>9} "
            f"{human_bytes(t.peak_bytes):>10} {(human_bytes(t.leaked_bytes) if t.leaked_bytes else '-'):>10}  ",
            # (one line: an argument's newlines and tabs shown escaped, as `python -c` code has them)
            (" ".join(a.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t") for a in p.argv)
             or p.capture_path.name, "dim"),
        )
        row.truncate(width, overflow="ellipsis")
        console.print(row, no_wrap=True)


def table_rows(profile: Profile, mode: str, limit: int) -> Tuple[str, List[Tuple[LineStats, Metrics]]]:
    """(title, [(line, its figures)]) for the top lines: the .pyx lines by what they
    are responsible for (attributed) when the capture has any, else every line by self."""
    pyx = [l for l in ranked_pyx_lines(profile, mode) if l.attributed.value(mode)]
    if pyx:
        what = ".pyx lines" if all(l.kind == "pyx" for l in pyx[:limit]) else "Cython lines"
        return f"Top {what} by {MODES[mode]} (with what they called)", [(l, l.attributed) for l in pyx[:limit]]
    lines = [l for l in ranked_lines(profile, mode) if l.self.value(mode)]
    return f"Top lines by {MODES[mode]} (self)", [(l, l.self) for l in lines[:limit]]


NUMBERS = ((10, "bytes"), (9, "count"), (10, "peak"), (6, "%peak"), (10, "leaked"))


def print_table(profile: Profile, console: Optional[Console] = None, *, mode: str = "bytes", limit: int = 15,
                show_changed: bool = False) -> None:
    """The top `limit` lines (see table_rows), two rows each: the figures (bytes and
    count allocated, bytes live at the peak and their share of it, bytes leaked) then
    where (file:line, function); below, the line's source across the whole width (only
    what cytool.reports.source allows; `show_changed`: also the text of files changed
    since the build, marked)."""
    console = console or Console()
    sources = SourceCache(profile, show_changed=show_changed)
    title, rows = table_rows(profile, mode, limit)
    print_notes(profile, console, sources.notes(l.file for l, _ in rows if l.kind in ("pyx", "python") and l.file))
    print_totals(profile, console)
    print_processes(profile, console)
    if not rows:
        console.print({"leaked_bytes": "no leaks", "temporary_bytes": "no temporary allocations"}.get(mode, "no allocations"))
        return
    width = max(60, console.width)
    console.print(Text(title, style="bold"))
    header = " ".join(f"{name:>{w}}" for w, name in NUMBERS) + "  line"
    console.print(Text(header, style="dim"), no_wrap=True, overflow="ellipsis")
    for line, m in rows:
        figures = (
            human_bytes(m.bytes),
            human_count(m.count),
            human_bytes(m.peak_bytes),
            share(m.peak_bytes, profile.totals.peak_bytes),
            human_bytes(m.leaked_bytes) if m.leaked_bytes else "-",
        )
        numbers = " ".join(f"{value:>{w}}" for (w, _), value in zip(NUMBERS, figures))
        where = _where(line)
        row = Text.assemble(numbers, "  ", (where, "cyan"), "  " if where else "", (display_name(line.function), "dim"))
        row.truncate(width, overflow="ellipsis")
        console.print(row, no_wrap=True)
        text, mark = sources.shown_line(line.file, line.line) if line.kind in ("pyx", "python") else ("", "")
        if text:
            prefix = f"({mark}) " if mark else ""
            source = Text("      " + prefix + display_name(text), style="bold" if line.kind == "pyx" else "")
            source.truncate(width, overflow="ellipsis")
            console.print(source, no_wrap=True)
