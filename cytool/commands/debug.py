"""`cytool debug FILE.pyx [-b SPEC]... [-x GDBSCRIPT] [--batch] [-- ARGS]`: gdb on .pyx lines.

Builds the module at -O0 (cached), then replaces this process with `gdb -tui` running
`python -m cytool run --prebuilt MODULE FILE.pyx -- ARGS`, with the cy-* commands
loaded, the module's debug information read and the -b breakpoints set. Like gdb it
waits at the prompt: `cy-run` (or `run`) starts the program. `--batch` runs the -x
command file without the TUI and exits, for scripts and tests.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cytool.commands.options import add_program_arguments, program_arguments
from cytool.errors import CytoolError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "debug",
        help="build at -O0 and debug in gdb with .pyx lines and Cython names",
        description="Build FILE.pyx at -O0 with debug information and start gdb (TUI) on "
        "the Python running it, with the cy-* commands (help cy-break, cy-next, cy-print, "
        "cy-bt, ...) loaded. The program starts with cy-run.",
    )
    parser.add_argument("file", type=Path, metavar="FILE.pyx", help="the Cython source to debug")
    parser.add_argument(
        "-b",
        "--break",
        dest="breakpoints",
        action="append",
        default=[],
        metavar="SPEC",
        help="set a breakpoint before the run: FILE.pyx:LINE, LINE or a function name (repeatable)",
    )
    parser.add_argument("-x", dest="command_file", type=Path, metavar="GDBSCRIPT", help="gdb commands to run")
    parser.add_argument("--batch", action="store_true", help="no TUI: run the -x commands and exit")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache holds this build")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the commands run")
    add_program_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from cytool.build import BuildOptions, build_module
    from cytool.debugger import DebugSession, check_ptrace, exec_gdb, find_gdb, gdb_command

    if args.command_file is not None and not args.command_file.is_file():
        raise CytoolError(f"{args.command_file}: no such gdb command file", exit_code=2)
    if args.batch and args.command_file is None and not args.breakpoints:
        raise CytoolError("--batch needs -x GDBSCRIPT (the commands to run)", exit_code=2)
    gdb, _ = find_gdb()
    check_ptrace()
    result = build_module(args.file, BuildOptions(opt_level="0", force=args.force, verbose=args.verbose))
    session = DebugSession(
        module_path=result.module_path,
        source=result.source,
        build_dir=result.build_dir,
        program_args=program_arguments(args),
        breakpoints=list(args.breakpoints),
        command_file=args.command_file.resolve() if args.command_file else None,
        batch=args.batch,
    )
    argv = gdb_command(session, gdb)
    if args.verbose:
        import shlex
        import sys

        print("cytool: " + " ".join(shlex.quote(a) for a in argv), file=sys.stderr)
    exec_gdb(argv)
    return 0  # not reached
