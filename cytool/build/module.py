"""One module through the cache: the warm path (a manifest lookup, no Cython import) and
the hand-over to the cold path (cytool.build.compile) on a miss.

Cython runs with `--line-directives` (the C file carries `#line N "pkg/mod.pyx"`, so DWARF,
gdb, addr2line and our tracer speak .pyx) and `--gdb` (the debug XML the cy-* gdb
commands read), the compiler with `-g -fno-omit-frame-pointer`. Every module is linked
against libcytrace.so so that `CYTOOL_PROFILE=path` starts the tracer when it loads.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from cytool import __version__, toolchain
from cytool.build.options import OPT_LEVELS, BuildOptions, BuildResult
from cytool.cache import BuildCache, hash_text
from cytool.errors import CytoolError
from cytool.project.resolve import ModuleTarget, resolve_module
from cytool.project.settings import from_command_line

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    from typing import Dict, Optional, Tuple

    from cytool.progress import Progress

# record fields naming files an entry must hold to be used
REQUIRED_FILES = ("module_file", "debug_file")


def build_settings_values(target: ModuleTarget, options: BuildOptions) -> Dict[str, str]:
    """Everything besides file contents that decides what a build produces."""
    if options.opt_level not in OPT_LEVELS:
        raise CytoolError(
            f"unknown optimisation level -O{options.opt_level}",
            hint=f"use one of {', '.join(OPT_LEVELS)}",
            exit_code=2,
        )
    tracer_dir = toolchain.tracer_library_dir() if options.link_tracer else None
    return {
        "cytool": __version__,
        "cython": toolchain.cython_version(),
        "python": toolchain.python_abi(),
        "cc": toolchain.compiler_identity(cplus=False),
        "cxx": toolchain.compiler_identity(cplus=True),
        "env": " ".join(os.environ.get(var, "") for var in toolchain.COMPILER_ENVIRONMENT),
        # Cython looks for cimported .pxd files on sys.path too: another PYTHONPATH may find
        # other ones (or none), though the files found before are unchanged
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "opt": options.opt_level,
        "annotate": str(options.annotate),
        "tracer": str(tracer_dir or ""),
        "source": str(target.location.source),
        "module": target.location.name,
        "import_root": str(target.location.import_root),
        "settings": target.settings.key_text(),
    }


def resolve_target(path: Path, options: BuildOptions) -> ModuleTarget:
    cli = options.settings
    if options.directives:
        cli = from_command_line(directives=options.directives).merged_over(cli)
    return resolve_module(
        Path(path), cli, read_setup_py=options.read_setup_py, verbose=options.verbose, module_name=options.module_name
    )


def build_module(
    path: Path,
    options: BuildOptions = BuildOptions(),
    progress: Optional["Progress"] = None,
    target: Optional[ModuleTarget] = None,
) -> BuildResult:
    """The built module for the .pyx at `path`, from the cache when nothing it depends on
    changed. Raises CytoolError (bad path, Cython or compiler error, a module that cannot
    load) with a message naming the file and what to do."""
    target = target or resolve_target(Path(path), options)
    values = build_settings_values(target, options)
    cache = BuildCache()
    manifest_key = hash_text(*(f"{k}={v}" for k, v in sorted(values.items())))
    if not options.force:
        found = cache.lookup(manifest_key, REQUIRED_FILES)
        if found is not None:
            return result_from_record(cache.entry_dir(found[0]), found[1], target, cached=True)
    # The cold path: everything below imports what it needs (the warm path stays light).
    from cytool.build.compile import compile_module
    from cytool.progress import Progress

    for warning in target.warnings:
        print(f"cytool: warning: {warning}", file=sys.stderr)
    progress = progress or Progress(verbose=options.verbose)
    try:
        entry, record, cached = compile_module(cache, target, options, values, manifest_key, progress)
    finally:
        progress.done()
    return result_from_record(entry, record, target, cached=cached)


def result_from_record(entry: Path, record: Dict[str, object], target: ModuleTarget, cached: bool) -> BuildResult:
    annotation = record.get("annotation")
    cimports: Tuple[Tuple[str, Path], ...] = tuple(
        (str(name), Path(str(source))) for name, source in record.get("cimports", [])  # type: ignore[union-attr]
    )
    return BuildResult(
        module_name=target.location.name,
        module_path=entry / str(record["module_file"]),
        build_dir=entry,
        source=target.location.source,
        cached=cached,
        annotation=entry / str(annotation) if annotation else None,
        import_root=target.location.import_root,
        cimports=cimports,
        opt_level=str(record.get("opt_level", "")),
    )
