"""`cytool run FILE.pyx [-- ARGS]`: build (cached), load into this Python, run as __main__."""
from __future__ import annotations

import argparse
from pathlib import Path

from cytool.commands.options import add_build_arguments, add_program_arguments, build_options, program_arguments
from cytool.errors import CytoolError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="build a .pyx (cached) and run it as a script",
        description="Build FILE.pyx (or take it from the cache), load it into this Python "
        "and run it as __main__ with sys.argv = [FILE.pyx, ARGS...].",
    )
    add_build_arguments(parser)
    parser.add_argument(
        "--prebuilt",
        type=Path,
        metavar="MODULE.so",
        help="run this already built module instead of building (FILE.pyx names its source)",
    )
    add_program_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from cytool.run import run_module, run_prebuilt

    argv = program_arguments(args)
    if args.prebuilt is not None:
        if not args.prebuilt.is_file():
            raise CytoolError(f"{args.prebuilt}: no such module", exit_code=2)
        return run_prebuilt(args.prebuilt.resolve(), args.file.resolve(), argv)
    from cytool.build import build_module

    result = build_module(args.file, build_options(args))
    return run_module(result, argv)
