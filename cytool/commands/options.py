"""Command-line options shared by the commands that build a module (run, build, profile, debug)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

from cytool.build import DEFAULT_OPT_LEVEL, OPT_LEVELS, BuildOptions


def add_build_arguments(parser: argparse.ArgumentParser, *, default_opt: str = DEFAULT_OPT_LEVEL) -> None:
    parser.add_argument("file", type=Path, metavar="FILE.pyx", help="the Cython source to build")
    parser.add_argument(
        "-O",
        dest="opt_level",
        default=default_opt,
        choices=OPT_LEVELS,
        metavar="LEVEL",
        help=f"C optimisation level ({', '.join(OPT_LEVELS)}; default {default_opt})",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache holds this build")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the commands run")
    parser.add_argument(
        "-X",
        "--directive",
        dest="directives",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Cython compiler directive (repeatable), e.g. -X boundscheck=False",
    )


def add_program_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "args",
        nargs="*",
        metavar="ARGS",
        help="arguments for the module (its sys.argv[1:]); put them after `--` when they start with '-'",
    )


def build_options(args: argparse.Namespace, **overrides: object) -> BuildOptions:
    values = dict(
        opt_level=args.opt_level,
        force=args.force,
        verbose=args.verbose,
        directives=tuple(args.directives),
        annotate=getattr(args, "annotate", False),
    )
    values.update(overrides)
    return BuildOptions(**values)  # type: ignore[arg-type]


def program_arguments(args: argparse.Namespace) -> List[str]:
    """The module's arguments: those before `--` that are not cytool's, then all after it."""
    return list(args.args or []) + list(getattr(args, "program_args", []) or [])
