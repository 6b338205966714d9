"""`cytool run FILE [-- ARGS]` is parsed without argparse (the warm start's fast path):
it must give exactly what argparse gives, and leave every other command line to argparse."""
from __future__ import annotations

import pytest

from cytool import cli
from cytool.commands.run import plain_arguments


def parsed_by_argparse(argv):
    return vars(cli._parse(list(argv)))


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "mod.pyx"],
        ["run", "mod.pyx", "--", "1000", "--flag", "-x"],
        ["run", "pkg/sub/mod.pyx", "--"],
        ["run", "script.py"],
        ["run", "script.py", "a", "-b", "--c"],
        ["run", "script.py", "--", "a"],
        ["run", "folder"],
    ],
)
def test_plain_command_lines_parse_as_argparse_does(argv):
    plain = plain_arguments(argv[1:])
    assert plain is not None
    assert vars(plain) == parsed_by_argparse(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "mod.pyx", "-O", "0"],  # cytool's options after a .pyx: argparse reads them
        ["run", "mod.pyx", "extra"],
        ["run", "-m", "pkg"],
        ["run", "-c", "print(1)"],
        ["run", "--force", "mod.pyx"],
        ["run", "-h"],
        ["run"],
        ["run", ""],
    ],
)
def test_other_command_lines_are_left_to_argparse(argv):
    assert plain_arguments(argv[1:]) is None


def test_defaults_do_not_leak_between_runs():
    first = plain_arguments(["mod.pyx"])
    first.include_dirs.append("/x")
    assert plain_arguments(["mod.pyx"]).include_dirs == []
