"""`cytool run FILE.pyx | script.py | -m MODULE | -c CODE [ARGS]`: run a program the way
python would, with every .pyx it needs built (cached) and importable."""
from __future__ import annotations

from pathlib import Path

from cytool.commands.options import add_build_arguments, add_entry_arguments, build_options, entry, plain_program_namespace
from cytool.errors import CytoolError

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    import argparse
    from types import SimpleNamespace
    from typing import Optional, Sequence


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a .pyx, a script or a module, building the .pyx it needs (cached)",
        description="Run FILE.pyx (built, then run as __main__ with its package), a Python script, "
        "-m MODULE or -c CODE, as python would. Any .pyx the program imports is built through "
        "cytool's cache with debug information.",
    )
    add_entry_arguments(parser, "run")
    add_build_arguments(parser)
    parser.add_argument(
        "--prebuilt",
        type=Path,
        metavar="MODULE.so",
        help="run this already built module instead of building (FILE.pyx names its source)",
    )
    parser.set_defaults(handler=handle)


def plain_arguments(rest: Sequence[str]) -> Optional["SimpleNamespace"]:
    """`cytool run FILE [-- ARGS]` without options, parsed without argparse (the warm
    path's fast start); None when argparse must parse `rest` (see plain_program_namespace)."""
    return plain_program_namespace("run", rest, {"prebuilt": None, "handler": handle})


def handle(args: argparse.Namespace) -> int:
    from cytool.launch import Launcher

    program = entry(args)
    prebuilt = None
    if args.prebuilt is not None:
        if program.kind != "pyx":
            raise CytoolError("--prebuilt runs a built .pyx module: give its FILE.pyx", exit_code=2)
        if not args.prebuilt.is_file():
            raise CytoolError(f"{args.prebuilt}: no such module", exit_code=2)
        prebuilt = args.prebuilt.resolve()
    launcher = Launcher(program, build_options(args), prebuilt=prebuilt)
    launcher.prepare()
    return launcher.run()
