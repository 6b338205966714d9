"""The end of `cytool profile`: the table on the terminal and the HTML beside the capture."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from rich.console import Console

from cytool.analysis import analyze, select_threads
from cytool.capture import read_capture
from cytool.reports import html
from cytool.reports.table import print_table, report_console


def html_path_for(capture_path: Path) -> Path:
    """out.cytrace -> out.html (beside it)."""
    return capture_path.with_suffix(".html") if capture_path.suffix else capture_path.with_name(capture_path.name + ".html")


def print_profile_summary(
    capture_path: Union[str, Path], console: Optional[Console] = None, *, limit: int = 10, threads: Optional[str] = None
) -> Optional[Path]:
    """Print the top lines of a capture and write its HTML report beside it; returns the
    HTML path (None when it could not be written: said on the console). `threads`: only
    those (comma-separated names or ids, as `cytool report --threads`). Raises
    CytoolError for an unreadable capture or an unknown thread."""
    capture_path = Path(capture_path)
    console = console or report_console()
    with read_capture(capture_path) as capture:
        profile = analyze(capture, threads=select_threads(threads, capture))
    print_table(profile, console, limit=limit)
    out = html_path_for(capture_path)
    try:
        out.write_text(html.render(profile), encoding="utf-8")
    except OSError as error:
        console.print(f"warning: cannot write the HTML report {out}: {error.strerror}")
        return None
    # paths and a command: never wrapped or read as markup, so that they can be copied
    console.print(f"HTML report: {out}", soft_wrap=True, markup=False, highlight=False)
    console.print(f"more: cytool report {capture_path} --format html|json|speedscope|collapsed [--leaks|--peak]",
                  soft_wrap=True, markup=False, highlight=False)
    return out
