"""The import hook: `import mod` finds `mod.pyx` and builds it through cytool's cache
(debug builds, package names, [tool.cytool] and setup.py settings, dependency
tracking), the way pyximport meant to.

    import cytool
    cytool.install()      # later: import fastmod, from pkg import fastmod
    cytool.uninstall()

A module found this way has `__file__` set to its .pyx (what code that looks for data
files beside itself needs) and `__spec__.origin` set to the built extension in the
cache. The launcher (cytool.launch) installs a finder for the program it runs: for a
.pyx entry it is consulted first within the entry's project (the sources are the truth,
a stale in-place .so is not used); for a script it is consulted last, so modules the
project built itself (`cytool develop`, `setup.py build_ext --inplace`) are used.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

from cytool.build.options import BuildOptions, BuildResult
from cytool.errors import CytoolError
from cytool.project.layout import SOURCE_SUFFIX

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence


class CythonExtensionLoader(importlib.machinery.ExtensionFileLoader):
    """Loads a built module from the cache; its `__file__` names the .pyx."""

    def __init__(self, fullname: str, module_path: str, source: Path):
        super().__init__(fullname, module_path)
        self.source = source

    def exec_module(self, module) -> None:  # type: ignore[no-untyped-def]
        module.__file__ = str(self.source)
        super().exec_module(module)


def spec_for(result: BuildResult, name: Optional[str] = None) -> importlib.machinery.ModuleSpec:
    """An import spec for a built module (a package when it was built from __init__.pyx)."""
    fullname = name or result.module_name
    loader = CythonExtensionLoader(fullname, str(result.module_path), result.source)
    is_package = result.source.name == "__init__" + SOURCE_SUFFIX
    spec = importlib.util.spec_from_file_location(
        fullname,
        str(result.module_path),
        loader=loader,
        submodule_search_locations=[str(result.source.parent)] if is_package else None,
    )
    assert spec is not None
    return spec


def is_standard_library(name: str) -> bool:
    top = name.partition(".")[0]
    names = getattr(sys, "stdlib_module_names", None)
    if names is not None:
        return top in names
    return top in sys.builtin_module_names  # Python 3.9: the built-in ones at least


class PyxFinder:
    """A meta path finder (the protocol only: importlib.abc costs ~10 ms to import on
    every `cytool run`). Finds `<name>.pyx` (or `<name>/__init__.pyx`) on the import path and builds it.

    options: how to build (the same for every module found); roots: only sources under
    these folders are built (None: anywhere on the path); built: modules already built
    for this run, by dotted name (used as they are).
    """

    def __init__(self, options: BuildOptions = BuildOptions(), roots: Optional[Sequence[Path]] = None,
                 built: Optional[Dict[str, BuildResult]] = None):
        self.options = options
        self.roots = [os.path.realpath(str(r)) for r in roots] if roots is not None else None
        self.built: Dict[str, BuildResult] = dict(built or {})

    def _allowed(self, source: Path) -> bool:
        if self.roots is None:
            return True
        real = os.path.realpath(str(source))
        return any(real == root or real.startswith(root + os.sep) for root in self.roots)

    def _source_for(self, fullname: str, path: Optional[Sequence[str]]) -> Optional[Path]:
        """The .pyx for `fullname` in the first folder of the path that has the module in
        any form: a folder earlier on the path that holds a compiled or Python module wins,
        as it would without the hook (a driver that puts lib/ first gets lib/'s build); in
        one folder the .pyx wins over a module compiled from it earlier."""
        last = fullname.rpartition(".")[2]
        folders = list(path) if path is not None else list(sys.path)
        suffixes = importlib.machinery.all_suffixes()
        for folder in folders:
            if not isinstance(folder, str):
                continue
            base = Path(folder or os.getcwd())
            for candidate in (base / f"{last}{SOURCE_SUFFIX}", base / last / f"__init__{SOURCE_SUFFIX}"):
                if candidate.is_file() and self._allowed(candidate):
                    return candidate
            if (base / last).is_dir() or any((base / f"{last}{suffix}").is_file() for suffix in suffixes):
                return None  # the standard finders find it here
        return None

    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target=None):  # type: ignore[no-untyped-def]
        result = self.built.get(fullname)
        if result is None:
            if path is None and is_standard_library(fullname):
                return None  # never shadow the standard library (json.pyx beside a script)
            source = self._source_for(fullname, path)
            if source is None:
                return None
            from cytool.build.plan import build_with_cimports

            try:
                results = build_with_cimports(source, self.options._replace(module_name=None))
            except CytoolError as error:
                raise ImportError(f"cytool could not build {source}:\n{error.render()}", name=fullname) from None
            for built in results:
                self.built.setdefault(built.module_name, built)
            result = results[0]
            if result.module_name != fullname:
                # Its folders make it another module (`pkg.mod`, found as `mod` because
                # pkg/ itself is on sys.path): build it under the name it is imported as,
                # as Python would import a .py found there.
                try:
                    result = build_with_cimports(source, self.options._replace(module_name=fullname))[0]
                except CytoolError as error:
                    raise ImportError(f"cytool could not build {source}:\n{error.render()}", name=fullname) from None
                self.built[fullname] = result
        return spec_for(result, fullname)

    def invalidate_caches(self) -> None:
        self.built.clear()


_installed: List[PyxFinder] = []


def install(options: Optional[BuildOptions] = None, *, first: bool = False,
            roots: Optional[Sequence[Path]] = None, **build: object) -> PyxFinder:
    """Make `import mod` find and build `mod.pyx` (see the module doc).

    options: how to build (cytool.build.BuildOptions); keyword arguments set single
    fields of it (`install(opt_level="0", force=True)`). first: consult the hook before
    the standard finders (then a .pyx wins over a compiled module beside it; by default
    a module built by the project itself is used). roots: build only sources under these
    folders. Returns the finder; installing again replaces the earlier one. TypeError for
    an unknown keyword."""
    chosen = options if options is not None else BuildOptions()
    unknown = sorted(set(build) - set(BuildOptions._fields))
    if unknown:
        raise TypeError(f"install() got unknown build options {unknown}; known: {', '.join(BuildOptions._fields)}")
    chosen = chosen._replace(**build)  # type: ignore[arg-type]
    return install_finder(PyxFinder(chosen, roots=roots), first=first)


def install_finder(finder: PyxFinder, *, first: bool = False) -> PyxFinder:
    uninstall()
    if first:
        sys.meta_path.insert(0, finder)
    else:
        sys.meta_path.append(finder)
    _installed.append(finder)
    return finder


def uninstall() -> None:
    """Remove the finder install() added (modules already imported stay imported)."""
    while _installed:
        finder = _installed.pop()
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
