"""`cytool build FILE.pyx`: compile through the cache and say where the module is."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cytool.commands.options import add_build_arguments, build_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="compile a .pyx into an extension module (cached)",
        description="Cythonize FILE.pyx with #line directives and gdb debug info, compile it "
        "with -g, and print where the module is. Builds are cached by content.",
    )
    add_build_arguments(parser)
    parser.add_argument("--annotate", action="store_true", help="also write Cython's annotated HTML")
    parser.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="copy the module and its debug info (cython_debug/) into DIR",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    import shutil

    from cytool.build import build_module

    result = build_module(args.file, build_options(args))
    module_path = result.module_path
    annotation = result.annotation
    if args.output_dir is not None:
        out = args.output_dir
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(result.module_path, out / result.module_path.name)
        module_path = out / result.module_path.name
        if result.debug_info.parent.is_dir():
            shutil.copytree(result.debug_info.parent, out / "cython_debug", dirs_exist_ok=True)
        if annotation is not None:
            shutil.copy2(annotation, out / annotation.name)
            annotation = out / annotation.name
    state = "cached" if result.cached else "built"
    print(f"{module_path}")
    print(f"cytool: {state} {result.source.name} -> {module_path}", file=sys.stderr)
    if annotation is not None:
        print(f"cytool: annotated HTML: {annotation}", file=sys.stderr)
    return 0
