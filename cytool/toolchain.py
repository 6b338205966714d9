"""The tools a build uses: the C/C++ compiler, Cython and the target Python ABI.

Everything here is cheap on purpose (stat calls, one small file read, no subprocess,
no import of Cython): the identities feed the cache key on every `cytool run`.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import sys
import sysconfig
from pathlib import Path

from cytool.errors import CytoolError
from cytool.records import NamedTuple

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    from typing import List, Optional


# Environment variables that change what the compiler does (part of every cache key).
COMPILER_ENVIRONMENT = (
    "CC", "CXX", "CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS",
    "CPATH", "C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH", "LIBRARY_PATH",
)


def tool_environment() -> dict:
    """The environment for the tools a build runs (Cython, setup.py, the compiler):
    ours without CYTOOL_PROFILE*, so that a traced program's build is not traced too."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CYTOOL_PROFILE")}


def flags_from_environment(name: str) -> List[str]:
    """$CFLAGS, $CPPFLAGS, $LDFLAGS ... split as a shell would (what setuptools honours)."""
    return shlex.split(os.environ.get(name, ""))


class Compiler(NamedTuple):
    """A compiler command line prefix (e.g. ['gcc', '-pthread']) and the binary behind it."""

    argv: List[str]
    binary: Path

    def identity(self) -> str:
        """Path, size and mtime of the real binary: changes when the compiler is upgraded."""
        st = self.binary.stat()
        return f"{self.binary}:{st.st_size}:{st.st_mtime_ns}"


def which(command: str) -> Optional[str]:
    """The executable `command` names, as shutil.which finds it on $PATH (a command with
    a slash is taken as a path). shutil itself is not imported: it pulls in the
    compression modules, milliseconds on every warm `cytool run`."""
    if os.sep in command:
        candidates = [command]
    else:
        path = os.environ.get("PATH")
        if path is None:
            path = os.confstr("CS_PATH") or os.defpath
        candidates = [os.path.join(folder, command) for folder in dict.fromkeys(path.split(os.pathsep))] if path else []
    for candidate in candidates:
        if os.path.exists(candidate) and os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def _configured_command(env_var: str, config_var: str, fallback: str) -> List[str]:
    value = os.environ.get(env_var) or sysconfig.get_config_var(config_var) or fallback
    return shlex.split(value)


def find_compiler(cplus: bool) -> Compiler:
    """The C (or C++) compiler: $CC/$CXX, else the one Python was built with, else cc/c++."""
    env_var, config_var, fallback = ("CXX", "CXX", "c++") if cplus else ("CC", "CC", "cc")
    argv = _configured_command(env_var, config_var, fallback)
    found = which(argv[0]) if argv else None
    if not found and not os.environ.get(env_var):
        argv = [fallback]
        found = which(fallback)
    if not found:
        kind = "C++" if cplus else "C"
        raise CytoolError(
            f"no {kind} compiler found (looked for '{argv[0] if argv else fallback}')",
            hint=f"install one (Debian: apt-get install {'g++' if cplus else 'gcc'}) "
            f"or point ${env_var} at it",
        )
    return Compiler(argv=argv, binary=Path(found).resolve())


def compiler_identity(cplus: bool) -> str:
    """Identity of the compiler if there is one, without failing (used in cache keys)."""
    try:
        return find_compiler(cplus).identity()
    except (CytoolError, OSError):
        return "missing"


_VERSION_RE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)


@functools.lru_cache(maxsize=None)
def cython_version() -> str:
    """Cython's version, read from its Shadow.py without importing Cython (fast)."""
    spec = importlib.util.find_spec("Cython")
    if spec is None or not spec.submodule_search_locations:
        raise CytoolError(
            "Cython is not installed in this Python",
            hint=f"{sys.executable} -m pip install Cython",
        )
    shadow = Path(list(spec.submodule_search_locations)[0]) / "Shadow.py"
    match = _VERSION_RE.search(shadow.read_text(encoding="utf-8"))
    return match.group(1) if match else f"unknown:{shadow.stat().st_mtime_ns}"


def python_abi() -> str:
    """What an extension module is tied to: the interpreter version, ABI tag and headers.

    Read without sysconfig.get_paths() (about 1.5 ms on every warm run): the headers a
    build uses (python_include_dirs) are `{base prefix}/include/python{X.Y}{abiflags}`,
    so the base prefix and the ABI flags name them; the first extension suffix is
    EXT_SUFFIX."""
    import importlib.machinery

    return "|".join(
        [sys.version, importlib.machinery.EXTENSION_SUFFIXES[0], sys.base_prefix, getattr(sys, "abiflags", "")]
    )


def ext_suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def python_include_dirs() -> List[str]:
    paths = sysconfig.get_paths()
    dirs = [paths["include"], paths["platinclude"]]
    return list(dict.fromkeys(dirs))


def tracer_library_dir() -> Optional[Path]:
    """The directory holding libcytrace.so, which every built module links to, if built."""
    lib_dir = Path(__file__).resolve().parent / "_lib"
    return lib_dir if (lib_dir / "libcytrace.so").exists() else None
