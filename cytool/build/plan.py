"""A module and the project modules it cimports, transitively: each is its own cache
entry, built under its package name, so a `cdef` function or class shared by cimport
has one ABI (`pkg.a` is always `pkg.a`, never a top-level `a`).

Which modules a module cimports comes from Cython's own dependency output, recorded in
the entry (see cytool.build.depends.project_cimports), so a warm plan is a cache lookup
per module and no Cython run.
"""
from __future__ import annotations

from pathlib import Path

from cytool.build.module import build_module
from cytool.build.options import BuildOptions, BuildResult

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    from typing import Dict, List, Optional

    from cytool.progress import Progress


def build_with_cimports(
    path: Path, options: BuildOptions = BuildOptions(), progress: Optional["Progress"] = None
) -> List[BuildResult]:
    """Build `path` and every project module it cimports; the requested module first,
    then its cimports in the order found (each once). The others are built with the same
    options but for `--module-name` and `--annotate`, which concern the requested one."""
    first = build_module(path, options, progress)
    results: List[BuildResult] = [first]
    seen: Dict[str, BuildResult] = {first.module_name: first}
    others = options._replace(module_name=None, annotate=False)
    pending = list(first.cimports)
    while pending:
        name, source = pending.pop(0)
        if name in seen:
            continue
        result = build_module(source, others, progress)
        seen[name] = result
        results.append(result)
        pending.extend(result.cimports)
    return results
