"""A notebook cell as a Cython module: where its .pyx goes, how it is built, loaded and
how its build errors read (nothing here needs IPython).

A cell is written to `<cache>/cells/<key>/<module>.pyx`, the key hashing the notebook
(its path when Jupyter tells it, else the working folder), the module name and the
cell's text, so an edited cell is always a new file (and a new build) whatever its
module name, and two notebooks never share a file. The file is written once, atomically:
kernels running the same cell at once find it complete, and the cache builds it once.
Its first line is a comment holding the magic's line, so the .pyx's line numbers are
the cell's as Jupyter shows them (the `%%cytool` line is line 1): errors, tracebacks and
reports name cell lines.

Every run of a cell executes its top-level code again, as a cell of Python does: a
module already loaded in this process is loaded again from a private copy of its .so
(the dynamic loader would return the loaded one, whose init Cython refuses to repeat).
"""
from __future__ import annotations

import atexit
import importlib.util
import linecache
import os
import re
import shutil
import sys
import tempfile
import types
from pathlib import Path
from typing import List, Optional, Set

from cytool.build.options import BuildOptions, BuildResult
from cytool.cache import BuildCache, hash_text
from cytool.errors import CytoolError

CELL_PREFIX = "_cytool_cell_"
_loaded: Set[str] = set()  # .so paths loaded by this process
_copies: List[Path] = []


def notebook_identity(user_ns: Optional[dict] = None) -> str:
    """The notebook this kernel runs: Jupyter's session name (the notebook's path), else
    the working folder."""
    session = (user_ns or {}).get("__session__") or os.environ.get("JPY_SESSION_NAME")
    return f"notebook:{session}" if session else f"folder:{os.getcwd()}"


def cell_text(magic_line: str, cell: str) -> str:
    """The .pyx text of a cell: the magic's line as a comment (so .pyx line N is cell
    line N), then the cell."""
    header = "# %%cytool " + " ".join(magic_line.split())
    return header.rstrip() + "\n" + (cell if cell.endswith("\n") else cell + "\n")


def cell_source(magic_line: str, cell: str, identity: str, module_name: Optional[str] = None,
                cache: Optional[BuildCache] = None) -> Path:
    """Write the cell's .pyx (once) and return its path (see the module doc)."""
    text = cell_text(magic_line, cell)
    key = hash_text("cytool-cell", identity, module_name or "", text)
    name = module_name or f"{CELL_PREFIX}{key[:12]}"
    folder = (cache or BuildCache()).prepare_folder("cells") / key[:32]
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{name}.pyx"
    if not path.exists():
        handle, tmp = tempfile.mkstemp(dir=folder, prefix=".cell-")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(tmp, path)
    return path


def build_cell(path: Path, options: BuildOptions) -> BuildResult:
    """Build a cell's .pyx; CytoolError with the cell's lines in its message."""
    from cytool.build.module import build_module

    try:
        return build_module(path, options._replace(read_setup_py=False))
    except CytoolError as error:
        raise in_cell_terms(error, path) from None


def in_cell_terms(error: CytoolError, path: Path) -> CytoolError:
    """The error with `<module>.pyx:LINE:COL` (Cython's and the compiler's positions)
    written as `cell line LINE, column COL`."""
    names = sorted({str(path), path.name}, key=len, reverse=True)
    pattern = re.compile("(?:" + "|".join(re.escape(n) for n in names) + r"):(\d+)(?::(\d+))?")

    def cell(match: "re.Match[str]") -> str:
        column = f", column {match.group(2)}" if match.group(2) else ""
        return f"cell line {match.group(1)}{column}"

    def fix(text: str) -> str:
        text = pattern.sub(cell, text)
        for name in names:
            text = text.replace(name, "the cell")
        return text

    message = fix(error.message).replace("Cython could not compile the cell: cell line",
                                         "Cython could not compile the cell: line")
    hint = "fix the cell and run it again" if error.hint.startswith("fix ") else fix(error.hint)
    return CytoolError(message, detail=fix(error.detail), hint=hint, exit_code=error.exit_code)


def _private_copy(module_path: Path) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="cytool-cell-"))
    if not _copies:
        atexit.register(lambda: [shutil.rmtree(f, ignore_errors=True) for f in _copies])
    _copies.append(folder)
    copy = folder / module_path.name
    shutil.copy2(module_path, copy)
    return copy


def load_cell(result: BuildResult) -> types.ModuleType:
    """Load the built cell as a new module (its top-level code runs) and register it in
    sys.modules under its name. The module's own exceptions propagate."""
    from cytool.importer import spec_for

    module_path = result.module_path
    if str(module_path) in _loaded:
        module_path = _private_copy(module_path)
    _loaded.add(str(module_path))
    _remember_source_lines(result)
    spec = spec_for(result._replace(module_path=module_path), result.module_name)
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(result.module_name)
    sys.modules[result.module_name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        if previous is not None:
            sys.modules[result.module_name] = previous
        else:
            sys.modules.pop(result.module_name, None)
        raise
    return module


def _remember_source_lines(result: BuildResult) -> None:
    """Cython names the file relative to its folder (`_cytool_cell_<key>.pyx`): give
    tracebacks its lines whatever the working folder."""
    lines = result.source.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    for name in (result.source.name, str(result.source)):
        linecache.cache[name] = (sum(map(len, lines)), None, lines, str(result.source))


def public_names(module: types.ModuleType) -> dict:
    """What `from module import *` would give: `__all__`, else the names without a
    leading underscore."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return {n: getattr(module, n) for n in names}


def user_frames(tb):  # type: ignore[no-untyped-def]
    """The part of a traceback after cytool's and importlib's frames (the cell's own)."""
    here = str(Path(__file__).resolve().parent.parent)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(here) or filename.startswith("<frozen"):
            tb = tb.tb_next
            continue
        break
    return tb
