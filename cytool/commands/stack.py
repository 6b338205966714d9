"""`cytool stack PID` / `cytool stack --core CORE [--executable PYTHON]`: every thread's
stack of a running Python process or of a core, Cython frames at their .pyx lines.

Reads through gdb in batch mode (cytool.stack) and prints (cytool.stack_format); a live
process is stopped only while gdb reads it (`-v` says how long).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cytool.errors import CytoolError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stack",
        help="print every thread's stack of a running Python process or a core, with .pyx lines",
        description="Print the stack of every thread of a running Python process (PID) or of a core "
        "file: Cython frames at their .pyx lines under their Cython names, the Python frames between "
        "them, the thread holding the GIL marked. A live process is stopped only while gdb reads it; "
        "nothing runs in it.",
    )
    parser.add_argument("pid", nargs="?", type=_pid, metavar="PID", help="the process to read")
    parser.add_argument("--core", type=Path, metavar="CORE", help="read a core file instead (kernel or gcore)")
    parser.add_argument("--executable", type=Path, metavar="PYTHON",
                        help="the program the core is of (default: the one the core names)")
    parser.add_argument("--native", action="store_true", help="show the C frames too")
    parser.add_argument("--locals", action="store_true",
                        help="show each frame's locals (C values, Python reprs read from memory)")
    parser.add_argument("--thread", type=int, metavar="TID", help="only this thread (its Linux thread id)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    # cytool.breakpoint()'s own call: the frames of the breakpoint itself are left out
    parser.add_argument("--below-breakpoint", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help="say how long the process was stopped")
    parser.set_defaults(handler=handle)


def _pid(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a process id: {text!r}")


def handle(args: argparse.Namespace) -> int:
    from cytool.stack import core_target, live_target, read_stacks
    from cytool.stack_format import format_json, format_text

    if (args.pid is None) == (args.core is None):
        raise CytoolError("give a PID or --core CORE (one of them)", hint="cytool stack PID, or "
                          "cytool stack --core CORE [--executable PYTHON]", exit_code=2)
    if args.executable is not None and args.core is None:
        raise CytoolError("--executable goes with --core (a live process names its own)", exit_code=2)
    target = live_target(args.pid) if args.pid is not None else core_target(args.core, args.executable)
    report = read_stacks(target, with_locals=args.locals)
    if args.thread is not None:
        report["threads"] = [t for t in report["threads"] if t["tid"] == args.thread]
        if not report["threads"]:
            raise CytoolError(f"no thread {args.thread} in {'process ' + str(args.pid) if args.pid else args.core}")
    if args.below_breakpoint:
        from cytool.stack_format import drop_breakpoint_frames

        drop_breakpoint_frames(report)
    print(format_json(report, args.native) if args.json else format_text(report, args.native))
    if args.verbose:
        if "paused_ms" in report:
            print(f"cytool: process {target.pid} was stopped for {report['paused_ms']:.0f} ms "
                  f"({report.get('attach_ms', 0):.0f} ms of it attaching); the symbols of "
                  f"{len(report.get('preloaded', ()))} libraries were read before, while it ran "
                  f"({report.get('preload_ms', 0):.0f} ms)", file=sys.stderr)
        else:
            print(f"cytool: read {target.core} of {target.executable}", file=sys.stderr)
    return 0
