"""The `cytool` command line: dispatches to the subcommand modules in cytool.commands."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from cytool import __version__
from cytool.errors import CytoolError

# Subcommands, in the order `cytool --help` lists them.
COMMANDS = ("run", "build", "profile", "report", "debug")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cytool",
        description="Build, run, profile and debug Cython modules on their .pyx lines.",
    )
    parser.add_argument("--version", action="version", version=f"cytool {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"cytool.commands.{name}").register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first `--` belongs to the program being run, untouched;
    # cytool's own options may stand anywhere before it (also after FILE.pyx).
    program_args: list = []
    if "--" in argv:
        cut = argv.index("--")
        argv, program_args = argv[:cut], argv[cut + 1 :]
    parser = make_parser()
    args = parser.parse_args(argv)
    args.program_args = program_args
    try:
        return int(args.handler(args) or 0)
    except CytoolError as error:
        sys.stdout.flush()
        print(error.render(), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("cytool: interrupted", file=sys.stderr)
        return 130
