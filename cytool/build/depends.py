"""What a build read, from the tools' own dependency output, and which project modules it
cimports.

Cython's `-M` depfile lists the .pyx, .pxd and .pxi files it read; the C compiler's
`-MMD` files list every header it included, directly or through other headers (system
headers and Python's, given with -isystem, are left out: the compiler's and Python's
identities in the cache key cover them). Both are Makefile rules: `target: dep dep \\`.

And which of several .pyx files are fragments that another of them `include`s (a
fragment is compiled into its includer, never built alone).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from cytool.errors import CytoolError
from cytool.project.layout import ModuleLocation, locate_module


# Cython's `include "file.pxi"` statement, at the start of a line
INCLUDE_STATEMENT = re.compile(r"""^[ \t]*include[ \t]+(?P<q>["'])(?P<path>[^"'\n]+)(?P=q)""", re.M)


def included_fragments(sources: Sequence[Path]) -> Dict[Path, Path]:
    """{fragment: the file of `sources` that includes it} for the files of `sources` (all
    resolved paths) that another of them `include`s, directly or through a .pxi."""
    wanted = set(sources)
    found: Dict[Path, Path] = {}
    for source in sources:
        pending, seen = [source], set()
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            try:
                text = current.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for match in INCLUDE_STATEMENT.finditer(text):
                target = (current.parent / match.group("path")).resolve()
                if target in wanted and target != source:
                    found.setdefault(target, source)
                elif target.suffix == ".pxi":
                    pending.append(target)
    return found


def read_makefile_rule(path: Path, base: Path) -> List[Path]:
    """The prerequisites of every rule in a depfile, made absolute against `base`."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return []
    deps: List[Path] = []
    for rule in text.replace("\\\n", " ").splitlines():
        if ":" not in rule:
            continue
        _, _, body = rule.partition(": ")
        if not body and rule.rstrip().endswith(":"):
            continue
        for item in _split_make_words(body):
            candidate = Path(item)
            deps.append(candidate if candidate.is_absolute() else base / candidate)
    return deps


def _split_make_words(text: str) -> Iterable[str]:
    """Words of a Make prerequisite list; `\\ ` is a space inside a file name."""
    word = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] == " ":
            word.append(" ")
            i += 2
            continue
        if char.isspace():
            if word:
                yield "".join(word)
                word = []
        else:
            word.append(char)
        i += 1
    if word:
        yield "".join(word)


def normalise(paths: Iterable[Path]) -> List[str]:
    """Absolute, symlink-free, sorted and unique."""
    return sorted({os.path.realpath(str(p)) for p in paths})


def project_cimports(cython_deps: Iterable[Path], module: ModuleLocation) -> List[Tuple[str, Path]]:
    """The modules of this project that `module` cimports: each `.pxd` Cython read that
    lies under the project folder and has a `.pyx` beside it (a `.pxd` alone only
    declares, a `.pxd` with a `.pyx` is an extension module that must be importable
    under its package name). Returns (dotted name, .pyx path) pairs, sorted."""
    project = os.path.realpath(str(module.project_dir))
    found = {}
    for dep in cython_deps:
        if dep.suffix != ".pxd" or dep.name.startswith("__init__."):
            continue
        real = os.path.realpath(str(dep))
        if not (real == project or real.startswith(project + os.sep)):
            continue
        pyx = Path(real).with_suffix(".pyx")
        if not pyx.is_file() or pyx == module.source or os.path.realpath(str(module.source)) == str(pyx):
            continue
        location = _locate(pyx)
        if location is not None:
            found[location.name] = location.source
    return sorted(found.items())


def _locate(pyx: Path) -> Optional[ModuleLocation]:
    try:
        return locate_module(pyx)
    except CytoolError:  # an odd file name: not a module we can build; Cython will say more
        return None


_EXTERN_HEADER = re.compile(r"""^\s*cdef\s+extern\s+from\s+["']([^"'<>*]+)["']""", re.M)


def extern_header_dirs(cython_deps: Iterable[Path]) -> List[str]:
    """Folders of .pxd/.pyx/.pxi files whose `cdef extern from "h.h"` names a header
    beside them: the C compiler needs them on its include path (Cython's cythonize adds
    them the same way, so memray's `_memray/hooks.pxd` finds `hooks.h`)."""
    folders: List[str] = []
    for dep in cython_deps:
        if dep.suffix not in (".pxd", ".pyx", ".pxi"):
            continue
        try:
            text = dep.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for header in _EXTERN_HEADER.findall(text):
            if (dep.parent / header).is_file():
                folder = str(dep.parent)
                if folder not in folders:
                    folders.append(folder)
                break
    return folders
