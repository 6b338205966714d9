"""`cytool report CAPTURE... [--format table|html|json|speedscope|collapsed] [-o FILE]`:
turn a capture into allocations per .pyx line (cytool.analysis, cytool.reports). Several
captures (files, a folder, a glob: the processes of one program tree) make one report with
a per-process breakdown (cytool.process_merge)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cytool.errors import CytoolError
from cytool.reports import FORMATS

SUFFIX_FORMATS = {".html": "html", ".htm": "html", ".json": "json", ".folded": "collapsed", ".collapsed": "collapsed"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="report a capture's allocations per .pyx line",
        description="Read a capture written by `cytool profile`, attribute every allocation to "
        "its .pyx (or Python) line and stack, and report allocated bytes, bytes live at the peak, "
        "leaked and temporary allocations.",
    )
    parser.add_argument(
        "captures",
        nargs="+",
        metavar="CAPTURE",
        help="the capture file (.cytrace); several (the parent's and its children's `CAP.<pid>` from "
        "--follow-fork, a folder of captures, or a quoted glob) make one report with a per-process breakdown",
    )
    parser.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        help="table (terminal, the default), html (self-contained page), json (docs/report-json.md), "
        "speedscope, collapsed (flamegraph.pl/inferno); guessed from -o's suffix when not given",
    )
    parser.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the report here instead of stdout")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--leaks", action="store_true", help="rank by bytes still live at the end (leaked)")
    which.add_argument("--peak", action="store_true", help="rank by bytes live at the high-water mark")
    which.add_argument(
        "--temporary",
        action="store_true",
        help="rank by temporary allocations (freed by their thread within --temporary-window events)",
    )
    parser.add_argument(
        "--threads",
        metavar="THREADS",
        help="only allocations of these threads: comma-separated thread names (the Python thread's name, else its "
        "native name) or ids (see the json report)",
    )
    parser.add_argument("--limit", type=int, default=15, metavar="N", help="lines in the table (default 15)")
    parser.add_argument(
        "--temporary-window",
        type=int,
        default=1,
        metavar="N",
        help="a block freed within N later events of its thread is temporary (default 1)",
    )
    parser.add_argument("--native", action="store_true", help="keep native (C library, interpreter) frames in stacks")
    parser.add_argument(
        "--runner-frames",
        action="store_true",
        help="keep the launcher's frames (cytool's runner, runpy, import machinery) at the root of stacks",
    )
    parser.add_argument(
        "--show-changed-sources",
        action="store_true",
        help="show the text of source files changed since the module was built (marked as changed); by default "
        "their lines are left out, since they may not match the figures",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    fmt = args.format
    if fmt is None and args.output is not None:
        name = args.output.name
        fmt = "speedscope" if name.endswith(".speedscope.json") else SUFFIX_FORMATS.get(args.output.suffix, "table")
    fmt = fmt or "table"
    mode = "leaked_bytes" if args.leaks else "peak_bytes" if args.peak else "temporary_bytes" if args.temporary else "bytes"
    if args.limit < 1 or args.temporary_window < 1:
        raise CytoolError("--limit and --temporary-window take a number of at least 1", exit_code=2)
    if args.output is not None and not args.output.resolve().parent.is_dir():
        raise CytoolError(f"{args.output.parent}: no such directory", hint="create it or choose another -o path", exit_code=2)
    if args.output is not None and args.output.is_dir():
        raise CytoolError(f"{args.output}: is a directory", hint="give -o a file name", exit_code=2)

    from cytool.process_merge import capture_paths, merge_profiles

    try:
        paths = capture_paths(args.captures)
    except FileNotFoundError as missing:
        raise CytoolError(f"{missing}: no such capture", hint="give the .cytrace file `cytool profile` wrote", exit_code=2) from None
    except IsADirectoryError as folder:
        raise CytoolError(f"{folder}: no captures in this folder (no *.cytrace* files)",
                          hint="give a .cytrace file `cytool profile` wrote, or the folder it wrote them to", exit_code=2) from None
    if args.threads and len(paths) > 1:
        raise CytoolError("--threads selects threads of one capture", hint="report one process's capture with --threads", exit_code=2)
    if args.output is not None and args.output.exists():
        for path in paths:
            if path.exists() and args.output.resolve() == path.resolve():
                raise CytoolError(f"{args.output}: this is a capture; refusing to overwrite it", exit_code=2)
    profiles = [_analyze(path, args) for path in paths]
    profile = profiles[0] if len(profiles) == 1 else merge_profiles(profiles)

    if fmt == "table":
        from cytool.reports.table import print_table, report_console

        if args.output is None:
            print_table(profile, report_console(), mode=mode, limit=args.limit, show_changed=args.show_changed_sources)
            return 0
        try:
            with open(args.output, "w", encoding="utf-8") as stream:
                print_table(profile, report_console(stream), mode=mode, limit=args.limit,
                            show_changed=args.show_changed_sources)
        except OSError as error:
            raise CytoolError(f"{args.output}: cannot write the report: {error.strerror}", exit_code=2) from None
        return 0
    if fmt == "html":
        from cytool.reports import html

        text = html.render(profile, mode, top=max(args.limit, 30), show_changed=args.show_changed_sources)
    elif fmt == "json":
        from cytool.reports import json_report

        text = json_report.render(profile, mode, show_changed=args.show_changed_sources)
    elif fmt == "speedscope":
        from cytool.reports.flame import render_speedscope

        text = render_speedscope(profile, mode)
    else:
        from cytool.reports.flame import render_collapsed

        text = render_collapsed(profile, mode)
    if args.output is None:
        if fmt == "html" and sys.stdout.isatty():
            raise CytoolError("the HTML report is a whole page", hint="give it a file: -o report.html", exit_code=2)
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as error:
            raise CytoolError(f"{args.output}: cannot write the report: {error.strerror}", exit_code=2) from None
        if profile.truncated:
            print(f"cytool: warning: {profile.truncation_message}", file=sys.stderr)
        print(f"cytool: wrote {args.output}", file=sys.stderr)
    return 0


def _analyze(path: Path, args: argparse.Namespace):  # -> Profile
    import stat

    from cytool.analysis import analyze, select_threads
    from cytool.capture import read_capture

    try:
        file_mode = path.stat().st_mode
    except OSError:
        file_mode = None
    if file_mode is not None and not stat.S_ISREG(file_mode):
        kind = "is a directory" if stat.S_ISDIR(file_mode) else "not a regular file (a FIFO, a device?)"
        raise CytoolError(f"{path}: {kind}, not a capture", hint="give the .cytrace file `cytool profile` wrote", exit_code=2)
    with read_capture(path) as capture:
        return analyze(
            capture,
            threads=select_threads(args.threads, capture),
            temporary_window=args.temporary_window,
            native_frames=args.native,
            runner_frames=args.runner_frames,
        )
