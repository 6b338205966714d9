"""`cytool live CAPTURE [--pid PID]`: the live memory view of a capture another process is
writing (cytool.live.view); it says when the writer has finished (the capture's trailer)."""
from __future__ import annotations

import argparse
from pathlib import Path

from cytool.errors import CytoolError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "live",
        help="follow a capture being written: live bytes, peak and allocation rate per .pyx line",
        description="Show a terminal view of a capture while its program writes it (cytool profile, "
        "CYTOOL_PROFILE, cytool.Tracker), refreshed twice a second: live bytes, peak, allocated bytes and "
        "allocation rate per .pyx and Python line with Cython names, the heap over time, per thread. "
        "Keys: s/l/p/a/c sort, t thread, h help, q leave.",
    )
    parser.add_argument("capture", type=Path, metavar="CAPTURE", help="the capture file (.cytrace)")
    parser.add_argument(
        "--pid",
        type=int,
        metavar="PID",
        help="the process writing it: wait for it to create the capture, and notice when it ends",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from cytool.live.view import run_live

    if args.pid is not None and args.pid <= 0:
        raise CytoolError(f"--pid takes a process id, not {args.pid}", exit_code=2)
    if args.pid is None and not args.capture.exists():
        raise CytoolError(f"{args.capture}: no such file", hint="check the path (or give --pid of its writer to wait for it)", exit_code=2)
    return run_live(args.capture, follow_pid=args.pid)
