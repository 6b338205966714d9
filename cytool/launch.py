"""The one launcher: runs a program the way `python` would, for every entry point
cytool accepts, so that `run`, `profile` and `debug` cannot drift apart in how they set
`sys.argv`, `sys.path`, `__main__` and the exit status.

    FILE.pyx     built (with the project modules it cimports), its parent packages
                 imported, then run as `__main__` (like `python -m pkg.mod`), with
                 `__file__` = the .pyx and `sys.argv[0]` = FILE.pyx
    script.py    like `python script.py`: sys.path[0] is the script's folder
    -m MODULE    like `python -m MODULE`: sys.path[0] is the current folder
    -c CODE      like `python -c CODE`: sys.argv[0] is "-c"

An import hook (cytool.importer) builds any `.pyx` the program imports. A Cython module
runs as `__main__` through Cython's exported `__pyx_module_is_main_<name>` flag, set
before the module executes. A module that its parent package already imported is run
from a private copy of its .so, because a Cython module cannot be initialised twice in
one process (Python would also have two copies: the package's and `__main__`).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import runpy
import sys
import types
from pathlib import Path

from cytool.build.options import BuildOptions, BuildResult
from cytool.errors import CytoolError
from cytool.records import NamedTuple

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    from types import TracebackType
    from typing import List, Optional

# What only some runs need (ctypes for a .pyx entry; tempfile, shutil, traceback and
# linecache for a private copy or a traceback) is imported where it is used: a warm
# `cytool run` pays for every module imported here.

_CYTOOL_DIR = str(Path(__file__).resolve().parent)
KINDS = ("pyx", "script", "module", "code")


# the exit status of a program that Ctrl-C ended (a shell's 128 + SIGINT, as Python gives)
INTERRUPTED = 130


class Entry(NamedTuple):
    """What to run. kind: one of KINDS; target: the file path, module name or code;
    args: the program's own arguments (its sys.argv[1:])."""

    kind: str
    target: str
    args: List[str] = []

    @property
    def label(self) -> str:
        """Short name for messages and default capture names."""
        if self.kind in ("pyx", "script"):
            name = Path(self.target).name
            return name.rsplit(".", 1)[0]
        if self.kind == "module":
            return self.target.rsplit(".", 1)[-1]
        return "code"


def entry_from(target: Optional[str], module: Optional[str], code: Optional[str], args: List[str]) -> Entry:
    """The Entry for a command line's FILE / -m MODULE / -c CODE; CytoolError (exit 2)
    when none or several are given, or the file is not usable."""
    given = [v for v in (target, module, code) if v is not None]
    if len(given) != 1:
        raise CytoolError(
            "give exactly one program: FILE.pyx, script.py, -m MODULE or -c CODE",
            hint="e.g. cytool run mod.pyx, cytool run script.py, cytool run -m pytest tests/",
            exit_code=2,
        )
    if module is not None:
        if not module or not all(part.isidentifier() for part in module.split(".")):
            raise CytoolError(f"-m {module!r}: not a module name", exit_code=2)
        return Entry("module", module, list(args))
    if code is not None:
        return Entry("code", code, list(args))
    path = Path(str(target))
    if path.suffix == ".pyx":
        return Entry("pyx", str(target), list(args))
    if not path.exists():
        raise CytoolError(f"{path}: no such file", hint="check the path", exit_code=2)
    if path.is_dir():
        if (path / "__main__.py").is_file():
            return Entry("script", str(target), list(args))
        raise CytoolError(f"{path}: is a directory without __main__.py", hint="give a .pyx, a script or -m MODULE", exit_code=2)
    if not path.is_file():
        raise CytoolError(f"{path}: not a regular file (a FIFO, a device?)", hint="give a script file", exit_code=2)
    return Entry("script", str(target), list(args))


def main_flag_symbol(module_name: str) -> str:
    """Cython's name for the flag: dots become `__`; a non-ASCII name uses PEP 489's
    punycode form."""
    mangled = module_name.replace(".", "__")
    try:
        mangled.encode("ascii")
        return f"__pyx_module_is_main_{mangled}"
    except UnicodeEncodeError:
        encoded = mangled.encode("punycode").decode("ascii").replace("-", "_")
        return f"__pyx_module_is_mainU_{encoded}"


def _mark_as_main(module_path: Path, module_name: str) -> None:
    import ctypes

    try:
        library = ctypes.CDLL(str(module_path))
    except OSError as error:
        raise CytoolError(
            f"cannot load {module_path}: {error}",
            hint="if a library it needs moved, rebuild; if the cache entry is damaged, cytool rebuilds it on the next run",
        ) from error
    try:
        ctypes.c_int.in_dll(library, main_flag_symbol(module_name)).value = 1
    except ValueError as error:
        raise CytoolError(
            f"{module_path.name} is not a Cython module named '{module_name}'",
            hint="the module name must be the one it was built with (--module-name)",
        ) from error


def _user_frames(tb: Optional["TracebackType"]) -> Optional["TracebackType"]:
    """Drop the leading frames that belong to cytool, runpy and importlib."""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(_CYTOOL_DIR) or filename.startswith("<frozen") or filename == runpy.__file__:
            tb = tb.tb_next
            continue
        break
    return tb


def _prime_source_lines(tb: Optional["TracebackType"], folders: List[Path]) -> None:
    """Cython names its files relative to the import root ("pkg/mod.pyx"); put their
    lines in linecache so the traceback shows them whatever the current folder is."""
    import linecache

    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not Path(filename).is_absolute() and filename not in linecache.cache:
            for folder in folders:
                candidate = folder / filename
                if candidate.is_file():
                    lines = candidate.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
                    linecache.cache[filename] = (sum(map(len, lines)), None, lines, str(candidate))
                    break
        tb = tb.tb_next


class _not_pinned:
    """frame_pinned's stand-in when nothing traces."""

    def __init__(self, frame: object) -> None:
        pass

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass


class Launcher:
    """Runs one Entry in this process. `options` build the .pyx modules; `prebuilt` is
    an already built module for a pyx entry (cytool debug's inferior).

    prepare() does everything that can be done before the program starts (builds,
    decisions, imports), so that under `cytool profile` the traced part is the program."""

    def __init__(self, entry: Entry, options: BuildOptions = BuildOptions(), prebuilt: Optional[Path] = None):
        self.entry = entry
        self.options = options
        self.prebuilt = prebuilt
        self.results: List[BuildResult] = []
        self.source_folders: List[Path] = []
        self._copies: List[Path] = []
        self._prepared = False
        self._alias = False
        self._finder = None

    # -- before the program starts: build errors are cytool's, not the program's ------
    def prepare(self) -> List[BuildResult]:
        """Build what the entry needs; returns the modules built for a pyx entry."""
        if self._prepared:
            return self.results
        from cytool.importer import PyxFinder

        hook_options = self.options._replace(module_name=None, annotate=False)
        if self.entry.kind == "pyx":
            if self.prebuilt is not None:
                from cytool.build.module import resolve_target

                location = resolve_target(Path(self.entry.target), self.options).location
                self.results = [BuildResult(location.name, self.prebuilt, self.prebuilt.parent, location.source, True,
                                            import_root=location.import_root)]
            else:
                from cytool.build.plan import build_with_cimports

                self.results = build_with_cimports(Path(self.entry.target), self.options)
            first = self.results[0]
            root = first.import_root or first.source.parent
            self._alias = self._may_alias(first.module_name, root)
            # within the entry's import root the sources are the truth: consulted first
            self._finder = PyxFinder(hook_options, roots=[root], built={r.module_name: r for r in self.results})
        else:
            # a script uses what its project built (cytool develop, build_ext --inplace):
            # a .pyx is built only when nothing else provides the module
            self._finder = PyxFinder(hook_options)
        self._prepared = True
        return self.results

    # -- running ---------------------------------------------------------------------
    def run(self) -> int:
        """Run the program; its exit status. SystemExit propagates (its code becomes the
        status); any other exception prints a traceback naming .pyx lines and gives 1 (Ctrl-C:
        INTERRUPTED, 130)."""
        self.prepare()
        # (traced: the tracer stops comparing an allocation's Python frames here; cytool's
        # tracker is imported only when something traces)
        tracker = sys.modules.get("cytool.tracker")
        pinned = tracker.frame_pinned if tracker is not None else _not_pinned
        try:
            if self.entry.kind == "pyx":
                with pinned(sys._getframe()):
                    return self._run_pyx()
            body = {"script": self._run_script, "module": self._run_module, "code": self._run_code}[self.entry.kind]
            try:
                with pinned(sys._getframe()):
                    body()
            except SystemExit:
                raise
            except KeyboardInterrupt as error:  # Ctrl-C: the traceback, as Python shows it
                self._print_exception(error)
                return INTERRUPTED
            except BaseException as error:  # the user's exception: show it as Python would
                self._print_exception(error)
                return 1
            return 0
        finally:
            if self._copies:
                import shutil

                for copy in self._copies:
                    shutil.rmtree(copy, ignore_errors=True)

    def _print_exception(self, error: BaseException) -> None:
        import traceback

        sys.stdout.flush()
        user_tb = _user_frames(error.__traceback__)
        _prime_source_lines(user_tb, self.source_folders + [Path.cwd()])
        traceback.print_exception(type(error), error, user_tb)

    def _install_hook(self, first: bool) -> None:
        from cytool import importer

        importer.install_finder(self._finder, first=first)

    def _run_script(self) -> None:
        path = Path(self.entry.target)
        folder = path.resolve().parent if path.is_file() else path.resolve()
        sys.argv = [self.entry.target, *self.entry.args]
        sys.path.insert(0, str(folder))
        self.source_folders.append(folder)
        self._install_hook(first=False)
        runpy.run_path(self.entry.target, run_name="__main__")

    def _run_module(self) -> None:
        sys.argv = [self.entry.target, *self.entry.args]  # runpy puts the module's file in argv[0]
        sys.path.insert(0, os.getcwd())
        self.source_folders.append(Path.cwd())
        self._install_hook(first=False)
        runpy.run_module(self.entry.target, run_name="__main__", alter_sys=True)

    def _run_code(self) -> None:
        sys.argv = ["-c", *self.entry.args]
        sys.path.insert(0, "")
        self._install_hook(first=False)
        module = types.ModuleType("__main__")
        module.__dict__.update({"__builtins__": __builtins__, "__spec__": None, "__package__": None, "__loader__": None})
        sys.modules["__main__"] = module
        exec(compile(self.entry.target, "<string>", "exec"), module.__dict__)

    def _run_pyx(self) -> int:
        from cytool.importer import spec_for

        result = self.results[0]
        name = result.module_name
        root = result.import_root or result.source.parent
        sys.argv = [self.entry.target, *self.entry.args]
        sys.path.insert(0, str(root))
        self.source_folders.append(root)
        self._install_hook(first=True)
        try:
            package = name.rpartition(".")[0]
            if package:
                importlib.import_module(package)
            module_path = result.module_path
            if name in sys.modules:  # the package imported it already: run a copy as __main__
                module_path = self._private_copy(module_path)
            _mark_as_main(module_path, name)
            spec = spec_for(result._replace(module_path=module_path), name)
            module = importlib.util.module_from_spec(spec)
            sys.modules["__main__"] = module
            if name not in sys.modules and self._alias:
                # Let `import name` (an unpickler, a sibling module) find the running module
                # instead of initialising the same .so twice.
                sys.modules[name] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except (SystemExit, CytoolError):
            raise
        except KeyboardInterrupt as error:
            self._print_exception(error)
            return INTERRUPTED
        except BaseException as error:
            self._print_exception(error)
            return 1
        return 0

    @staticmethod
    def _may_alias(name: str, root: Path) -> bool:
        """May the main module also be registered under its own name? Not when that name
        is the standard library's or would be found elsewhere (cytool's own imports and
        the interpreter's shutdown must keep the real modules)."""
        from cytool.importer import is_standard_library

        if is_standard_library(name):
            return False
        if "." in name:
            return True
        elsewhere = [p for p in sys.path if os.path.realpath(p or ".") != os.path.realpath(str(root))]
        return importlib.machinery.PathFinder.find_spec(name, elsewhere) is None

    def _private_copy(self, module_path: Path) -> Path:
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="cytool-main-"))
        self._copies.append(folder)
        copy = folder / module_path.name
        shutil.copy2(module_path, copy)
        return copy
