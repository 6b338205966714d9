"""Load a built extension module into this interpreter and run it as the main script.

Cython marks a module as the script when its exported int `__pyx_module_is_main_<name>`
is set before the module executes: the module then names itself `__main__` and its
`if __name__ == "__main__":` block runs. We set that flag through ctypes (dlopen of the
same path returns the same handle the import will use), then import the module by path.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import linecache
import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, List, Optional

from cytool.errors import CytoolError

if TYPE_CHECKING:
    from cytool.build import BuildResult

_CYTOOL_DIR = str(Path(__file__).resolve().parent)


def main_flag_symbol(module_name: str) -> str:
    """Cython's name for the flag; non-ASCII module names use PEP 489's punycode form."""
    try:
        module_name.encode("ascii")
        return f"__pyx_module_is_main_{module_name}"
    except UnicodeEncodeError:
        encoded = module_name.encode("punycode").decode("ascii").replace("-", "_")
        return f"__pyx_module_is_mainU_{encoded}"


def module_name_of(module_path: Path) -> str:
    """`mod.cpython-311-x86_64-linux-gnu.so` -> `mod`."""
    return module_path.name.split(".", 1)[0]


def _mark_as_main(module_path: Path, module_name: str) -> None:
    try:
        library = ctypes.CDLL(str(module_path))
    except OSError as error:
        raise CytoolError(f"cannot load {module_path}: {error}", hint="rebuild with --force") from error
    try:
        ctypes.c_int.in_dll(library, main_flag_symbol(module_name)).value = 1
    except ValueError as error:
        raise CytoolError(
            f"{module_path.name} is not a Cython module named '{module_name}'",
            hint="the file name must match the module it was built from",
        ) from error


def _user_frames(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    """Drop the leading frames that belong to cytool and importlib, keep the user's."""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(_CYTOOL_DIR) or filename.startswith("<frozen"):
            tb = tb.tb_next
            continue
        break
    return tb


def _prime_source_lines(tb: Optional[TracebackType], folder: Path) -> None:
    """Cython names its files relative to the source folder ("mod.pyx"); put their lines
    in linecache so the traceback shows them whatever the current directory is."""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        candidate = folder / filename
        if not Path(filename).is_absolute() and filename not in linecache.cache and candidate.is_file():
            lines = candidate.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            linecache.cache[filename] = (sum(map(len, lines)), None, lines, str(candidate))
        tb = tb.tb_next


def run_module(result: "BuildResult", argv: List[str]) -> int:
    """Run a module built by cytool.build as `__main__`; see run_prebuilt."""
    return run_prebuilt(result.module_path, result.source, argv, result.module_name)


def run_prebuilt(module_path: Path, source: Path, argv: List[str], module_name: Optional[str] = None) -> int:
    """Run the module as `__main__` with `sys.argv = [source, *argv]`; return the exit status.

    SystemExit raised by the module propagates (its code becomes cytool's status). Any
    other exception prints a traceback whose frames name .pyx files and lines, and gives 1.
    """
    module_path = Path(module_path)
    name = module_name or module_name_of(module_path)
    sys.argv = [str(source), *argv]
    sys.path.insert(0, str(Path(source).parent))
    _mark_as_main(module_path, name)

    loader = importlib.machinery.ExtensionFileLoader(name, str(module_path))
    spec = importlib.util.spec_from_file_location(name, str(module_path), loader=loader)
    assert spec is not None
    try:
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.modules["__main__"] = module
        loader.exec_module(module)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as error:  # the user's exception: show it as Python would
        sys.stdout.flush()
        user_tb = _user_frames(error.__traceback__)
        _prime_source_lines(user_tb, Path(source).parent)
        traceback.print_exception(type(error), error, user_tb)
        return 1
    return 0
