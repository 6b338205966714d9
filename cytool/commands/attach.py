"""`cytool attach PID [-o CAPTURE] [--duration S] [--live]` and `cytool attach --stop PID`:
trace a Python process that is already running (cytool.attach). --live exists when this
cytool has `cytool live` (it runs `cytool live CAPTURE --pid PID` on this terminal)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from cytool.errors import CytoolError

MAX_DURATION_S = 366 * 86400.0  # a year: NaN, infinity and overflowing timeouts are refused


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "attach",
        help="start tracing a running Python process (gdb injects the tracer)",
        description="Start cytool's allocation tracer inside a running Python process: gdb stops it for a "
        "moment, loads the tracer and starts it from a thread of its own. Tracing goes on until --duration "
        "ends, `cytool attach --stop PID`, or the process exits; then `cytool report CAPTURE`. Blocks allocated "
        "before the attach are not counted (the report says when tracing started).",
    )
    parser.add_argument("pid", type=int, metavar="PID", help="the process to trace")
    parser.add_argument("-o", "--output", type=Path, metavar="CAPTURE",
                        help="the capture file (default: <script>.<pid>.cytrace in the current folder)")
    parser.add_argument("--duration", type=float, metavar="S",
                        help="trace for S seconds, then stop and finish the capture (cytool waits)")
    parser.add_argument("--stop", action="store_true", help="end the tracing that cytool attach started in PID")
    if _live_view_available():
        parser.add_argument("--live", action="store_true",
                            help="show the live view of the capture (cytool live CAPTURE --pid PID) while it is "
                            "written; leaving the view (q) leaves the tracing on (unless --duration ends it)")
    parser.set_defaults(handler=handle, live=False)


def _live_view_available() -> bool:
    """`cytool live` is part of this cytool (cytool.commands.live)."""
    import importlib.util

    return importlib.util.find_spec("cytool.commands.live") is not None


def _say_stats(status: Dict[str, Any]) -> str:
    stats = status.get("stats") or {}
    return f"{stats.get('events', 0):,} events" if stats else "no stats"


def handle(args: argparse.Namespace) -> int:
    from cytool import attach

    if args.stop:
        if args.output is not None or args.duration is not None or args.live:
            raise CytoolError("--stop takes only the PID", exit_code=2)
        status = attach.stop(args.pid)
        print(f"cytool: stopped tracing process {args.pid} ({_say_stats(status)})", file=sys.stderr)
        print(f"cytool: report with: cytool report {status.get('capture')}", file=sys.stderr)
        return 0
    if args.duration is not None and not 0 < args.duration <= MAX_DURATION_S:
        raise CytoolError(f"--duration takes a number of seconds above 0 (at most {MAX_DURATION_S:.0f}), "
                          f"not {args.duration}", hint=f"to trace until you say so, leave it out and run "
                          f"cytool attach --stop {args.pid}", exit_code=2)
    if args.live and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CytoolError("--live needs a terminal (stdin and stdout)",
                          hint="run it in a terminal, or leave --live out and use `cytool report` on the capture",
                          exit_code=2)
    result = attach.start(args.pid, args.output, args.duration)
    print(f"cytool: tracing process {args.pid} into {result.capture} (the process was paused "
          f"{result.pause_ms:.0f} ms)", file=sys.stderr)
    if not result.python_frames:
        print("cytool: the program has a profiler of its own (sys.setprofile): traced without Python frames",
              file=sys.stderr)
    if args.live:
        import subprocess

        subprocess.call([sys.executable, "-m", "cytool", "live", str(result.capture), "--pid", str(args.pid)])
    if args.duration is None:
        print(f"cytool: stop with: cytool attach --stop {args.pid}", file=sys.stderr)
        return 0
    status: Optional[Dict[str, Any]] = attach.wait_until_stopped(result.process, result.folder,
                                                                 timeout=args.duration + 30.0)
    return _finished(args.pid, result.capture, status)


def _finished(pid: int, capture: Path, status: Optional[Dict[str, Any]]) -> int:
    if status is None:
        print(f"cytool: error: process {pid} ended while traced, without finishing the capture (killed?); "
              f"{capture} holds what was written until then (cytool report says what is missing)", file=sys.stderr)
        return 1
    if status.get("reason") == "exit":
        print(f"cytool: error: process {pid} exited while traced; {capture} is complete up to its exit "
              f"({_say_stats(status)})", file=sys.stderr)
        print(f"cytool: report with: cytool report {capture}", file=sys.stderr)
        return 1
    print(f"cytool: stopped tracing process {pid} ({_say_stats(status)})", file=sys.stderr)
    print(f"cytool: report with: cytool report {capture}", file=sys.stderr)
    return 0
