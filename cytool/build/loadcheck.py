"""Will the module we just linked load? A shared object links even when a function it
calls is defined nowhere (the symbol stays undefined until load time); Python then
refuses to import it. We find that at build time, name the missing symbols and say what
to add, instead of publishing a module that can never load.

How: dlopen the new module with RTLD_NOW | RTLD_LOCAL in this process (the interpreter
defines the Python C API it needs, as it will when the module is imported). On failure,
list every undefined, non-weak dynamic symbol of the module (binutils' `nm -D`)
that neither this process nor the libraries the module needs define.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from cytool.errors import CytoolError

_UNDEFINED_RE = re.compile(r"undefined symbol: ([^\s,]+)")
_MISSING_LIB_RE = re.compile(r"^([^:]+\.so[^:]*): cannot open shared object file")
MAX_NAMED = 8


def check_loadable(module: Path, source: Path, search: Sequence[Path], libraries: Sequence[str]) -> None:
    """CytoolError naming what is missing if `module` cannot be loaded; None if it can.

    source: the .pyx (for the message); search: folders whose C files may define a missing
    function (the module's folder, the project); libraries: the -l names it was linked with.
    """
    try:
        handle = ctypes.CDLL(str(module), mode=os.RTLD_NOW | os.RTLD_LOCAL)
    except OSError as error:
        message = str(error)
    else:
        del handle  # stays loaded (dlclose is not safe for every library); harmless
        return
    missing_lib = _MISSING_LIB_RE.search(message.split(": ", 1)[-1] if ": " in message else message)
    if missing_lib or "cannot open shared object file" in message:
        library = message.rsplit(": ", 2)[-2] if message.count(": ") >= 2 else message
        raise CytoolError(
            f"{source.name} was built but cannot be loaded: a library it links is not found ({library})",
            detail=message,
            hint="give its folder with -L DIR and make it findable at run time (-Wl,-rpath,DIR via --link-arg, "
            "or runtime_library_dirs / LD_LIBRARY_PATH)",
        )
    symbols = _undefined_symbols(module) or []
    first = _UNDEFINED_RE.search(message)
    if first and first.group(1) not in symbols:
        symbols.insert(0, first.group(1))
    if not symbols:
        raise CytoolError(f"{source.name} was built but cannot be loaded", detail=message)
    named = ", ".join(symbols[:MAX_NAMED]) + (f" and {len(symbols) - MAX_NAMED} more" if len(symbols) > MAX_NAMED else "")
    hints = []
    for symbol in symbols[:MAX_NAMED]:
        where = _defined_in(symbol, search)
        if where is not None:
            shown = os.path.relpath(where) if not os.path.relpath(where).startswith("..") else str(where)
            hints.append(f"{symbol} is defined in {shown}: add it with --source {shown} "
                         f"(or `# distutils: sources = {where.name}`, or sources=[...] in setup.py)")
    if not hints:
        linked = f" (linked: {', '.join('-l' + lib for lib in libraries)})" if libraries else ""
        hints.append(
            "add the C file that defines it (--source FILE.c, `# distutils: sources = FILE.c`) or the library "
            f"(-l NAME with -L DIR, `# distutils: libraries = NAME`){linked}"
        )
    raise CytoolError(
        f"{source.name} was built but cannot be loaded: undefined symbol{'s' if len(symbols) > 1 else ''} {named}",
        hint="\n      ".join(hints),
    )


def _undefined_symbols(module: Path) -> Optional[List[str]]:
    """Undefined, non-weak dynamic symbols nothing in this process or the module's
    libraries defines."""
    nm = shutil.which("nm")
    if nm is None:
        return None
    try:
        out = subprocess.run(
            [nm, "-D", "--undefined-only", "--format=posix", str(module)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    process = ctypes.CDLL(None)
    needed = [lib for lib in _needed_libraries(module)]
    missing = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[1] in ("w", "v"):
            continue
        name = parts[0].split("@", 1)[0]
        if _defined(process, name) or any(_defined(lib, name) for lib in needed):
            continue
        missing.append(name)
    return missing


def _needed_libraries(module: Path) -> List[ctypes.CDLL]:
    readelf = shutil.which("readelf")
    if readelf is None:
        return []
    try:
        out = subprocess.run([readelf, "-d", str(module)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    libs = []
    for name in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out):
        try:
            libs.append(ctypes.CDLL(name, mode=os.RTLD_LAZY | os.RTLD_LOCAL))
        except OSError:
            continue
    return libs


def _defined(library: ctypes.CDLL, name: str) -> bool:
    try:
        getattr(library, name)
        return True
    except AttributeError:
        return False


def _defined_in(symbol: str, folders: Sequence[Path]) -> Optional[Path]:
    """A C/C++ file in `folders` (not recursive) that seems to define `symbol`."""
    # a definition: the name, its parameter list, then a body (not a call, not a prototype)
    pattern = re.compile(r"(?<![\w.>])" + re.escape(symbol) + r"\s*\([^;{()]*(?:\([^()]*\)[^;{()]*)*\)\s*\{")
    seen: List[Tuple[int, int]] = []
    for folder in folders:
        try:
            files = sorted(folder.iterdir())
        except OSError:
            continue
        for path in files:
            if path.suffix not in (".c", ".cpp", ".cc", ".cxx") or not path.is_file():
                continue
            try:
                st = path.stat()
                if (st.st_dev, st.st_ino) in seen or st.st_size > 4_000_000:
                    continue
                seen.append((st.st_dev, st.st_ino))
                if pattern.search(path.read_text(encoding="utf-8", errors="replace")):
                    return path
            except OSError:
                continue
    return None
