"""`cytool test FILE.pyx|FOLDER [-k PATTERN] [--verbose] [--profile] [--debug]`: build the
modules and run the doctests of their docstrings, each failure at its .pyx line (the
work is in cytool.doctests)."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from cytool.commands.options import add_build_arguments, build_options, settings_arguments
from cytool.errors import CytoolError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "test",
        help="run the doctests of .pyx modules (a file or a package folder)",
        description="Build each .pyx (a file, or every .pyx under a folder, as part of its package) and run "
        "the doctests in its docstrings: the module's, def and cpdef functions', cdef classes' and their "
        "methods' and properties'. A failure names the .pyx file and line of the example. Exit status 1 "
        "when an example fails or a module cannot be built or imported.",
    )
    parser.add_argument("target", type=Path, metavar="FILE.pyx|FOLDER", help="a .pyx file or a folder (a package)")
    parser.add_argument("-k", dest="pattern", metavar="PATTERN",
                        help="only the docstrings whose dotted name (pkg.mod.Class.method) contains PATTERN "
                        "(or matches it, when it has a * ? or [)")
    parser.add_argument("--profile", action="store_true",
                        help="trace each example's allocations and print a summary after it (totals, top .pyx lines)")
    parser.add_argument("--debug", action="store_true",
                        help="at the first failing example, stop and start `cytool debug` on a script replaying that "
                        "docstring's examples up to it, with a breakpoint in the function the docstring documents")
    parser.add_argument("-x", dest="command_file", type=Path, metavar="GDBSCRIPT",
                        help="with --debug: gdb commands to run (as cytool debug -x)")
    parser.add_argument("--batch", action="store_true", help="with --debug: no TUI, run the -x commands and exit")
    add_build_arguments(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from cytool import doctests

    if (args.command_file is not None or args.batch) and not args.debug:
        raise CytoolError("-x and --batch go with --debug", exit_code=2)
    if args.debug and args.profile:
        raise CytoolError("--debug and --profile do not go together (gdb and the tracer both watch the program)",
                          exit_code=2)
    if args.module_name:
        raise CytoolError("--module-name names one module; cytool test takes each module's name from its package",
                          exit_code=2)
    sources = doctests.find_sources(args.target)
    options = build_options(args)
    out = sys.stdout
    if len(sources) > 1:  # a folder: the fragments other .pyx files include are tested with them
        from cytool.build.depends import included_fragments

        fragments = included_fragments(sources)
        for fragment, includer in fragments.items():
            print(f"{_label(fragment)}: included by {includer.name}, tested with it", file=out)
        sources = [source for source in sources if source not in fragments]
    tested = doctests.build_and_import(sources, options)
    total = failed = modules_failed = 0
    for item in tested:
        label = _label(item.source)
        if item.module is None:
            modules_failed += 1
            print(f"{label}: cannot be tested\n{item.error.rstrip()}", file=out, flush=True)
            continue
        outcome = doctests.run_module(item, pattern=args.pattern, verbose=args.verbose, profile_examples=args.profile,
                                      stop_at_first_failure=args.debug, out=out)
        total += outcome.attempted
        failed += outcome.failed
        if outcome.failed:
            print(f"{label}: {outcome.failed} of {outcome.attempted} examples failed "
                  f"(in {len({f.test.name for f in outcome.failures})} of {outcome.docstrings} docstrings)", file=out)
        else:
            print(f"{label}: {outcome.attempted} examples passed ({outcome.docstrings} docstrings)", file=out)
        out.flush()
        if args.debug and outcome.failures:
            return _debug(args, outcome.failures[0], item)
    print("-" * 70, file=out)
    summary = f"{total - failed} passed, {failed} failed" + (f", {modules_failed} modules not tested" if modules_failed else "")
    if total == 0 and not modules_failed:
        summary += " (no doctests found" + (f" matching -k {args.pattern}" if args.pattern else "") + ")"
    print(summary, file=out, flush=True)
    return 1 if failed or modules_failed else 0


def _label(source: Path) -> str:
    try:
        return str(source.relative_to(Path.cwd()))
    except ValueError:
        return str(source)


def _debug(args: argparse.Namespace, failure, item) -> int:  # failure: doctests.Failure, item: TestedModule
    """Replace this process with `cytool debug` on a replay of the failing docstring."""
    from cytool import cli, doctests

    folder = Path(tempfile.mkdtemp(prefix="cytool-test-debug-"))
    script = folder / "replay_doctest.py"
    script.write_text(doctests.replay_script(failure, item), encoding="utf-8")
    argv = ["debug"]
    spec = doctests.breakpoint_for(failure, item)
    if spec:
        argv += ["-b", spec]
    if args.command_file is not None:
        argv += ["-x", str(args.command_file.resolve())]
    if args.batch:
        argv.append("--batch")
    argv += settings_arguments(args)
    if args.verbose:
        argv.append("-v")
    argv.append(str(script))
    print(f"cytool test: debugging {failure.test.name} at {item.source.name}:{failure.line}: "
          f"cytool {' '.join(argv)}", flush=True)
    return cli.main(argv)
