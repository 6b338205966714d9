"""Command-line options shared by the commands that build modules (build, run, profile,
debug) and by those that run a program (run, profile, debug)."""
from __future__ import annotations

from pathlib import Path

from cytool.build.options import DEFAULT_OPT_LEVEL, OPT_LEVELS, BuildOptions
from cytool.errors import CytoolError

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    import argparse
    from types import SimpleNamespace
    from typing import Dict, List, Optional, Sequence, Set, Tuple

# What add_build_arguments and add_entry_arguments give a command line that sets none
# of their options; the parser-free fast path (plain_program_namespace) uses the same
# values, and tests/test_cli_fastpath.py checks both agree with argparse.
BUILD_DEFAULTS: Dict[str, object] = {
    "opt_level": DEFAULT_OPT_LEVEL, "force": False, "verbose": False, "directives": [],
    "include_dirs": [], "library_dirs": [], "libraries": [], "macros": [], "cplus": False,
    "sources": [], "compile_args": [], "link_args": [], "module_name": None, "read_setup_py": True,
}
ENTRY_DEFAULTS: Dict[str, object] = {"target": None, "module": None, "code": None, "args": []}


def add_build_arguments(parser: argparse.ArgumentParser, *, default_opt: str = DEFAULT_OPT_LEVEL, level: bool = True) -> None:
    """-O, --force, -v, -X and the build settings (-I, -L, -l, -D, --cplus, --source, ...)."""
    if level:
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
    settings = parser.add_argument_group(
        "build settings",
        "Like cythonize's and the C compiler's. They add to (and take precedence over) [tool.cytool] in "
        "pyproject.toml, the project's setup.py and the module's `# distutils:` comments.",
    )
    settings.add_argument(
        "-X",
        "--directive",
        dest="directives",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Cython compiler directive (repeatable), e.g. -X boundscheck=False",
    )
    settings.add_argument("-I", dest="include_dirs", action="append", default=[], metavar="DIR",
                          help="add DIR to the C (and Cython) include path (repeatable)")
    settings.add_argument("-L", dest="library_dirs", action="append", default=[], metavar="DIR",
                          help="add DIR to the library search path (repeatable)")
    settings.add_argument("-l", dest="libraries", action="append", default=[], metavar="LIB",
                          help="link with library LIB (repeatable)")
    settings.add_argument("-D", dest="macros", action="append", default=[], metavar="NAME[=VALUE]",
                          help="define a C macro (repeatable)")
    settings.add_argument("--cplus", action="store_true", help="compile as C++ (Cython --cplus, the C++ compiler)")
    settings.add_argument("--source", dest="sources", action="append", default=[], metavar="FILE.c",
                          help="compile FILE.c (or .cpp) into the module too (repeatable)")
    settings.add_argument("--compile-arg", dest="compile_args", action="append", default=[], metavar="ARG",
                          help="extra compiler argument (repeatable; --compile-arg=-fopenmp)")
    settings.add_argument("--link-arg", dest="link_args", action="append", default=[], metavar="ARG",
                          help="extra linker argument (repeatable; --link-arg=-fopenmp)")
    settings.add_argument("--module-name", metavar="NAME",
                          help="the module's dotted name, when its package folders do not tell it")
    settings.add_argument("--no-setup-py", dest="read_setup_py", action="store_false",
                          help="do not read build settings from the project's setup.py")


def add_entry_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """The program to run: FILE.pyx, script.py, -m MODULE or -c CODE, then its arguments."""
    parser.add_argument("target", nargs="?", metavar="FILE", help=f"the .pyx or Python script to {verb}")
    parser.add_argument("-m", dest="module", metavar="MODULE", help=f"{verb} a module as `python -m MODULE` does")
    parser.add_argument("-c", dest="code", metavar="CODE", help=f"{verb} a program given as a string")
    parser.add_argument(
        "args",
        nargs="*",
        metavar="ARGS",
        help="the program's arguments (its sys.argv[1:]). After a script, -m MODULE or -c CODE everything "
        "belongs to the program, as with python; after FILE.pyx cytool's options may follow and the "
        "program's arguments come after `--`",
    )


def split_program_arguments(argv: Sequence[str], takes_value: Set[str]) -> Tuple[List[str], List[str]]:
    """Split a run/profile/debug command line into cytool's part and the program's.

    Everything after the entry (a script, -m MODULE, -c CODE) is the program's, as with
    `python`; after FILE.pyx cytool's options may still follow, up to `--`. A `--`
    right after the entry is dropped. `takes_value`: cytool's options that take a value.
    """
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            return list(argv[:index]), list(argv[index + 1:])
        if token in ("-m", "-c"):
            return list(argv[: index + 2]), _drop_separator(argv[index + 2:])
        if token.startswith(("-m", "-c")) and not token.startswith("--"):
            return list(argv[: index + 1]), _drop_separator(argv[index + 1:])
        if token.startswith("-") and token != "-":
            index += 2 if (token in takes_value and "=" not in token) else 1
            continue
        if token.endswith(".pyx"):
            rest = list(argv[index + 1:])
            if "--" in rest:
                cut = rest.index("--")
                return list(argv[: index + 1]) + rest[:cut], rest[cut + 1:]
            return list(argv), []
        return list(argv[: index + 1]), _drop_separator(argv[index + 1:])
    return list(argv), []


def plain_program_namespace(command: str, rest: Sequence[str], defaults: Dict[str, object]) -> Optional["SimpleNamespace"]:
    """The parsed command line of `cytool COMMAND FILE [-- ARGS]` (or `FILE ARGS` for a
    script) with none of cytool's options, without building the argparse parser (argparse
    and its help formatter cost about 7 ms, on every warm `cytool run`); None for any
    other command line, which then goes through argparse. `defaults`: the command's own
    options besides BUILD_DEFAULTS and ENTRY_DEFAULTS (a `handler` among them). The
    result has the attributes argparse's Namespace would have (a SimpleNamespace:
    importing argparse is the cost avoided)."""
    if not rest or not rest[0] or rest[0].startswith("-"):
        return None
    target, after = rest[0], list(rest[1:])
    if target.endswith(".pyx"):
        if after and after[0] != "--":
            return None  # cytool's options may follow a .pyx: argparse reads them
        program = after[1:]
    else:
        program = _drop_separator(after)
    from types import SimpleNamespace

    values = {**BUILD_DEFAULTS, **ENTRY_DEFAULTS, **defaults}
    values = {name: list(value) if isinstance(value, list) else value for name, value in values.items()}
    values.update(command=command, target=target, program_args=program)
    return SimpleNamespace(**values)


def _drop_separator(rest: Sequence[str]) -> List[str]:
    rest = list(rest)
    return rest[1:] if rest[:1] == ["--"] else rest


def options_taking_values(parser: argparse.ArgumentParser) -> Set[str]:
    names: Set[str] = set()
    for action in parser._actions:  # argparse has no public accessor for this
        if action.option_strings and action.nargs != 0:
            names.update(action.option_strings)
    return names


def cli_settings(args: argparse.Namespace):  # -> BuildSettings
    from cytool.project.settings import from_command_line

    return from_command_line(
        include_dirs=args.include_dirs,
        library_dirs=args.library_dirs,
        libraries=args.libraries,
        macros=args.macros,
        cplus=args.cplus,
        sources=args.sources,
        compile_args=args.compile_args,
        link_args=args.link_args,
        directives=args.directives,
    )


def check_directives(args: argparse.Namespace) -> None:
    """A bad -X is the command line's fault: say so before building (Cython's own parser)."""
    if not args.directives:
        return
    from Cython.Compiler import Options

    for directive in args.directives:
        name, sep, value = directive.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise CytoolError(f"-X {directive}: expected NAME=VALUE", hint="e.g. -X boundscheck=False", exit_code=2)
        try:
            Options.parse_directive_list(directive, relaxed_bool=True)
        except ValueError as error:
            raise CytoolError(f"-X {directive}: {error}", hint="`cython --help` lists the directives; the form is -X NAME=VALUE", exit_code=2) from None


def build_options(args: argparse.Namespace, **overrides: object) -> BuildOptions:
    check_directives(args)
    values = dict(
        opt_level=getattr(args, "opt_level", DEFAULT_OPT_LEVEL),
        force=args.force,
        verbose=args.verbose,
        annotate=getattr(args, "annotate", False),
        settings=cli_settings(args),
        module_name=args.module_name,
        read_setup_py=args.read_setup_py,
    )
    values.update(overrides)
    return BuildOptions(**values)  # type: ignore[arg-type]


def settings_arguments(args: argparse.Namespace) -> List[str]:
    """This command line's build settings as arguments for another cytool command (the
    `cytool run` that `cytool debug` starts in gdb): paths made absolute."""
    out: List[str] = []
    for flag, values in (("-I", args.include_dirs), ("-L", args.library_dirs), ("-l", args.libraries),
                         ("-D", args.macros), ("--source", args.sources), ("-X", args.directives)):
        for value in values:
            out += [flag, str(Path(value).resolve()) if flag in ("-I", "-L", "--source") else value]
    out += [f"--compile-arg={a}" for a in args.compile_args] + [f"--link-arg={a}" for a in args.link_args]
    if args.cplus:
        out.append("--cplus")
    if not args.read_setup_py:
        out.append("--no-setup-py")
    return out


def program_arguments(args: argparse.Namespace) -> List[str]:
    """The program's arguments: positional words not cytool's, then those after the split."""
    return list(args.args or []) + list(getattr(args, "program_args", []) or [])


def entry(args: argparse.Namespace):  # -> cytool.launch.Entry
    from cytool.launch import entry_from

    return entry_from(args.target, args.module, args.code, program_arguments(args))


def output_dir(path: Optional[Path]) -> Optional[Path]:
    """-o DIR for `cytool build`: created if missing; a clear error if it cannot be."""
    if path is None:
        return None
    if path.exists() and not path.is_dir():
        raise CytoolError(f"{path}: exists and is not a directory", hint="give -o a folder (it is created if missing)", exit_code=2)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CytoolError(f"{path}: cannot create the folder: {error.strerror}", hint="give -o a folder you can write", exit_code=2) from None
    import os

    if not os.access(path, os.W_OK | os.X_OK):
        raise CytoolError(f"{path}: the folder is not writable", hint="give -o a folder you can write", exit_code=2)
    return path
