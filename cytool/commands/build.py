"""`cytool build FILE.pyx...`: compile through the cache (with the project modules they
cimport) and say where the modules are."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from cytool.commands.options import add_build_arguments, build_options, output_dir
from cytool.errors import CytoolError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="compile .pyx files into extension modules (cached)",
        description="Cythonize each FILE.pyx with #line directives and gdb debug info, compile it "
        "with -g, and print where the module is. A .pyx inside a package is built under its "
        "dotted name, together with the project modules it cimports. Builds are cached by content.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE.pyx", help="the Cython sources to build")
    add_build_arguments(parser)
    parser.add_argument("--annotate", action="store_true", help="also write Cython's annotated HTML")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="copy each module asked for (and its debug info, cython_debug/) into DIR",
    )
    where.add_argument(
        "--inplace",
        action="store_true",
        help="copy every module built (those asked for and those they cimport) beside its .pyx, "
        "as `setup.py build_ext --inplace` does",
    )
    parser.set_defaults(handler=handle)


def _copy(result, folder: Path) -> Path:  # result: BuildResult
    target = folder / result.module_path.name
    try:
        tmp = folder / f".{result.module_path.name}.tmp"
        shutil.copy2(result.module_path, tmp)
        tmp.replace(target)  # a running process keeps the old file
        if result.debug_info.is_file():
            debug = folder / "cython_debug"
            debug.mkdir(exist_ok=True)
            shutil.copy2(result.debug_info, debug / result.debug_info.name)
    except OSError as error:
        raise CytoolError(f"{folder}: cannot copy {result.module_path.name} there: {error.strerror}",
                          hint="give a folder you can write", exit_code=1) from None
    return target


def handle(args: argparse.Namespace) -> int:
    from cytool.build import build_with_cimports

    if args.module_name and len(args.files) > 1:
        raise CytoolError("--module-name names one module; give one FILE.pyx with it", exit_code=2)
    out = output_dir(args.output_dir)
    options = build_options(args)
    files = args.files
    if len(files) > 1:  # `cytool build pkg/*.pyx`: the fragments the others include are built with them
        from cytool.build.depends import included_fragments

        fragments = included_fragments([path.resolve() for path in files])
        for path in files:
            if path.resolve() in fragments:
                print(f"cytool: {path}: included by {fragments[path.resolve()].name}, built with it", file=sys.stderr)
        files = [path for path in files if path.resolve() not in fragments]
    for path in files:
        results = build_with_cimports(path, options)
        for index, result in enumerate(results):
            module_path = result.module_path
            annotation = result.annotation
            if out is not None and index == 0:
                module_path = _copy(result, out)
                if annotation is not None:
                    shutil.copy2(annotation, out / annotation.name)
                    annotation = out / annotation.name
            elif args.inplace:
                module_path = _copy(result, result.source.parent)
            state = "cached" if result.cached else "built"
            if index == 0:
                print(f"{module_path}")
                print(f"cytool: {state} {result.module_name} ({path}) -> {module_path}", file=sys.stderr)
            else:
                print(f"cytool:   {state} {result.module_name}, cimported ({result.source}) -> {module_path}", file=sys.stderr)
            if annotation is not None:
                print(f"cytool: annotated HTML: {annotation}", file=sys.stderr)
    return 0
