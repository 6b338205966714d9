"""The `cytool` command line: dispatches to the subcommand modules in cytool.commands."""
from __future__ import annotations

import sys

from cytool import __version__
from cytool.errors import CytoolError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing, like argparse, costs milliseconds on every warm `cytool run`
    import argparse
    from types import SimpleNamespace
    from typing import Optional, Sequence

# Subcommands, in the order `cytool --help` lists them.
COMMANDS = ("run", "build", "profile", "report", "live", "debug", "stack", "attach", "develop", "test")
# Subcommands that run a program: what follows its FILE / -m MODULE / -c CODE is the program's.
PROGRAM_COMMANDS = ("run", "profile", "debug")


def make_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole command line, or with `only` the one subcommand being run (the others'
    modules are then not imported: a warm `cytool run` stays light)."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser(
        prog="cytool",
        description="Build, run, profile and debug Cython modules on their .pyx lines.",
    )
    parser.add_argument("--version", action="version", version=f"cytool {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        if only is None or name == only:
            importlib.import_module(f"cytool.commands.{name}").register(subparsers)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    import argparse

    for action in parser._actions:  # argparse keeps the subparsers in a private action
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _plain_arguments(argv) or _parse(argv)
    try:
        return int(args.handler(args) or 0)
    except CytoolError as error:
        sys.stdout.flush()
        from cytool.reports.source import display_name

        # names in a message may come from a capture: no control characters reach the terminal
        print("\n".join(display_name(line) for line in error.render().split("\n")), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("cytool: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cytool report … | head`: the reader left; nothing more to say
        _silence_stdout()
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush at exit does not fail
    again on the closed pipe (the recipe of Python's `signal` documentation)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _plain_arguments(argv: list) -> Optional[SimpleNamespace]:
    """`cytool run FILE [-- ARGS]` with no option of cytool's: parsed without argparse."""
    if argv[:1] != ["run"]:
        return None
    from cytool.commands.run import plain_arguments

    return plain_arguments(argv[1:])


def _parse(argv: list) -> argparse.Namespace:
    program_args: list = []
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = make_parser(command if command in COMMANDS else None)
    if command in PROGRAM_COMMANDS:
        from cytool.commands.options import options_taking_values, split_program_arguments

        at = argv.index(command)
        subparser = _subparser(parser, command)
        own, program_args = split_program_arguments(argv[at + 1 :], options_taking_values(subparser))
        argv = argv[: at + 1] + own
    elif "--" in argv:
        # Everything after the first `--` is not an option of cytool's.
        cut = argv.index("--")
        argv, program_args = argv[:cut], argv[cut + 1 :]
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said with the subcommand's usage, not the top level's
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    args.program_args = program_args
    return args
