"""`cytool report --format table`: the top lines on a terminal, with their source text."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cytool.analysis import LineStats, Profile
from cytool.reports import MODES
from cytool.reports.ranking import ranked_lines
from cytool.reports.source import SourceCache
from cytool.reports.units import human_bytes, human_count, human_duration, share


def _where(line: LineStats) -> str:
    if line.file:
        return f"{Path(line.file).name}:{line.line}" if line.line else Path(line.file).name
    return Path(line.object).name if line.object else ""


def print_notes(profile: Profile, console: Console) -> None:
    """Truncation, lost events and symbol warnings, said once, above the numbers (never
    wrapped)."""
    for note in profile.notes():
        console.print(Text(f"warning: {note}", style="yellow"), soft_wrap=True)


def print_totals(profile: Profile, console: Console) -> None:
    t = profile.totals
    console.print(
        Text.assemble(
            ("allocated ", "bold"), f"{human_bytes(t.bytes)} in {human_count(t.count)} allocations · ",
            ("peak ", "bold"), f"{human_bytes(t.peak_bytes)} at {human_duration(profile.peak_time_ns)} · ",
            ("leaked ", "bold"), f"{human_bytes(t.leaked_bytes)} in {human_count(t.leaked_count)} blocks · ",
            ("temporary ", "bold"), f"{human_count(t.temporary_count)}",
        )
    )


def print_table(profile: Profile, console: Optional[Console] = None, *, mode: str = "bytes", limit: int = 15) -> None:
    """The top `limit` lines by self `mode`: where (file:line, function) with the line's
    source below it, then bytes and count allocated, bytes live at the peak and their
    share of the peak, and bytes leaked."""
    console = console or Console()
    sources = SourceCache()
    print_notes(profile, console)
    print_totals(profile, console)
    lines = [l for l in ranked_lines(profile, mode) if l.self.value(mode)][:limit]
    if not lines:
        console.print({"leaked_bytes": "no leaks", "temporary_bytes": "no temporary allocations"}.get(mode, "no allocations"))
        return
    table = Table(title=f"Top lines by {MODES[mode]} (self)", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("line / source", ratio=1, overflow="ellipsis")
    table.add_column("bytes", justify="right", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("peak", justify="right", no_wrap=True)
    table.add_column("% peak", justify="right", no_wrap=True)
    table.add_column("leaked", justify="right", no_wrap=True)
    for line in lines:
        where = Text.assemble((_where(line), "cyan"), "  " if _where(line) else "", (line.function, "dim"), no_wrap=True, overflow="ellipsis")
        text = sources.line(line.file, line.line) if line.kind in ("pyx", "python") else ""
        cell = Text("\n").join([where, Text("  " + text, style="bold" if line.kind == "pyx" else "")]) if text else where
        cell.no_wrap = True
        cell.overflow = "ellipsis"
        table.add_row(
            cell,
            human_bytes(line.self.bytes),
            human_count(line.self.count),
            human_bytes(line.self.peak_bytes),
            share(line.self.peak_bytes, profile.totals.peak_bytes),
            human_bytes(line.self.leaked_bytes) if line.self.leaked_bytes else "-",
        )
    console.print(table)
