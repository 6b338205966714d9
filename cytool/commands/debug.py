"""`cytool debug FILE.pyx | script.py | -m MODULE | -c CODE [-b SPEC]... [-x GDBSCRIPT]
[--batch] [ARGS]`: gdb on .pyx lines.

Builds the .pyx entry's modules at -O0 (cached), then replaces this process with
`gdb -tui` running `python -m cytool run ...` (the same launcher as `cytool run`), with the
cy-* commands loaded, the built modules' debug information read and the -b breakpoints set. Like gdb it
waits at the prompt: `cy-run` (or `run`) starts the program. `--batch` runs the -x
command file without the TUI and exits, for scripts and tests.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cytool.commands.options import add_build_arguments, add_entry_arguments, build_options, entry, settings_arguments
from cytool.errors import CytoolError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "debug",
        help="debug a .pyx, a script or a module in gdb with .pyx lines and Cython names",
        description="Build FILE.pyx at -O0 with debug information (or take a script, -m MODULE or "
        "-c CODE) and start gdb (TUI) on the Python running it, with the cy-* commands (help "
        "cy-break, cy-next, cy-print, cy-bt, ...) loaded. The program starts with cy-run. "
        "Breakpoints in modules not loaded yet stay pending until they load.",
    )
    add_entry_arguments(parser, "debug")
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
    add_build_arguments(parser, default_opt="0")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from cytool.debugger import DebugSession, check_ptrace, exec_gdb, find_gdb, gdb_command
    from cytool.launch import Launcher

    if args.command_file is not None and not args.command_file.is_file():
        raise CytoolError(f"{args.command_file}: no such gdb command file", exit_code=2)
    if args.batch and args.command_file is None and not args.breakpoints:
        raise CytoolError("--batch needs -x GDBSCRIPT (the commands to run)", exit_code=2)
    program = entry(args)
    gdb, _ = find_gdb()
    check_ptrace()
    options = build_options(args)
    results = Launcher(program, options).prepare()
    # The inferior runs the same launcher; its builds are cache hits of the ones made here.
    inferior = ["-O", options.opt_level] + settings_arguments(args)
    if args.module_name:
        inferior += ["--module-name", args.module_name]
    if program.kind == "pyx":
        inferior += ["--prebuilt", str(results[0].module_path), str(Path(program.target).resolve())]
    elif program.kind == "script":
        inferior.append(str(Path(program.target).resolve()))
    else:
        inferior += ["-m" if program.kind == "module" else "-c", program.target]
    session = DebugSession(
        module_path=results[0].module_path if results else None,
        source=results[0].source if results else None,
        build_dir=results[0].build_dir if results else None,
        program_args=list(program.args),
        breakpoints=list(args.breakpoints),
        command_file=args.command_file.resolve() if args.command_file else None,
        batch=args.batch,
        launch_args=inferior,
        build_dirs=[r.build_dir for r in results],
    )
    argv = gdb_command(session, gdb)
    if args.verbose:
        import shlex
        import sys

        print("cytool: " + " ".join(shlex.quote(a) for a in argv), file=sys.stderr)
    exec_gdb(argv)
    return 0  # not reached
