"""Where a `.pyx` lives: its package, its dotted module name, its project folder.

A `.pyx` inside a package is the module `pkg.sub.mod`: we walk up while the folder holds
`__init__.py`, `__init__.pyx` or `__init__.pxd` (the rule Cython itself uses for package
folders). The folder above the top package is the import root (what goes on sys.path).
The project folder is the nearest folder, from the import root up, holding pyproject.toml,
setup.py or setup.cfg; the walk stops at a version-control root or the home folder.
Only stat calls here: this runs on every warm `cytool run`.
"""
from __future__ import annotations

import os
from pathlib import Path

from cytool.errors import CytoolError
from cytool.records import NamedTuple

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    from typing import Optional

PACKAGE_MARKERS = ("__init__.py", "__init__.pyx", "__init__.pxd")
PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg")
BOUNDARY_MARKERS = (".git", ".hg", ".svn")
SOURCE_SUFFIX = ".pyx"


class ModuleLocation(NamedTuple):
    """A Cython module on disk.

    source: absolute path of the .pyx (symlinks in the folder part resolved);
    name: the dotted module name (`pkg.sub.mod`, or `mod` outside a package);
    import_root: the folder that must be on sys.path for `name` to import;
    project_dir: the project folder (see module doc), or import_root when there is none.
    """

    source: Path
    name: str
    import_root: Path
    project_dir: Path

    @property
    def short_name(self) -> str:
        return self.name.rpartition(".")[2]

    @property
    def package(self) -> str:
        return self.name.rpartition(".")[0]

    @property
    def relative_source(self) -> str:
        """The source path relative to the import root (`pkg/mod.pyx`): how Cython and
        the C compiler name it, so DWARF, tracebacks and reports show `pkg/mod.pyx`."""
        try:
            return str(self.source.relative_to(self.import_root))
        except ValueError:
            return self.source.name


def is_package_dir(folder: Path) -> bool:
    base = str(folder)
    return any(os.path.isfile(os.path.join(base, marker)) for marker in PACKAGE_MARKERS)


def check_module_name(name: str, where: Path) -> str:
    parts = name.split(".")
    if not name or not all(part.isidentifier() for part in parts):
        raise CytoolError(
            f"{where}: '{name}' is not a valid Python module name",
            hint="each dotted part must be a Python identifier (letters, digits, underscores); "
            "rename the file or give --module-name",
            exit_code=2,
        )
    return name


def check_source(path: Path) -> Path:
    """The .pyx argument: exists, is a file, ends in .pyx. Returns its absolute path."""
    if not path.exists():
        raise CytoolError(f"{path}: no such file", hint="check the path", exit_code=2)
    if path.is_dir():
        raise CytoolError(f"{path}: is a directory, not a .pyx file", exit_code=2)
    if not path.is_file():
        raise CytoolError(f"{path}: not a regular file (a FIFO, a device?)", hint="give a .pyx source file", exit_code=2)
    if path.suffix != SOURCE_SUFFIX:
        raise CytoolError(
            f"{path}: not a .pyx file",
            hint="cytool builds Cython sources; give it a file ending in .pyx "
            "(`cytool run` and `cytool profile` also take a script.py, -m MODULE or -c CODE)",
            exit_code=2,
        )
    # Resolve the folder, keep the file's own name (a symlinked .pyx keeps its name).
    return path.parent.resolve() / path.name


def locate_module(path: Path, module_name: Optional[str] = None) -> ModuleLocation:
    """The module a .pyx file is, by its package folders or by `module_name` if given.

    With an explicit dotted name, the import root is the folder as many levels above the
    source as the name has packages when those folders carry the package names, else the
    source's own folder. Raises CytoolError (exit 2) for a bad path or name.
    """
    source = check_source(Path(path))
    stem = source.name[: -len(SOURCE_SUFFIX)]
    if module_name is not None:
        name = check_module_name(module_name, path)
        parts = name.split(".")
        root = source.parent
        folders = [root]
        for _ in parts[:-1]:
            folders.append(folders[-1].parent)
        names_match = all(folders[i].name == parts[-1 - i] for i in range(1, len(parts)))
        root = folders[-1] if names_match and len(parts) > 1 else source.parent
    else:
        # pkg/__init__.pyx is the package `pkg` itself, as Cython names it
        parts = [] if stem == "__init__" and is_package_dir(source.parent) else [stem]
        root = source.parent
        while is_package_dir(root) and root.parent != root:
            parts.insert(0, root.name)
            root = root.parent
        name = check_module_name(".".join(parts), path)
    return ModuleLocation(source=source, name=name, import_root=root, project_dir=find_project_dir(root))


def find_project_dir(start: Path) -> Path:
    """The nearest folder from `start` up that holds a project file; `start` if none."""
    # os.path on strings, not pathlib: up to six stats a folder on every warm run
    home = os.path.expanduser("~")
    folder = str(start)
    while True:
        if any(os.path.isfile(os.path.join(folder, marker)) for marker in PROJECT_MARKERS):
            return Path(folder)
        if any(os.path.exists(os.path.join(folder, marker)) for marker in BOUNDARY_MARKERS):
            return start
        parent = os.path.dirname(folder)
        if folder == home or parent == folder:
            return start
        folder = parent


def module_file_for(name: str, roots: "list[Path]") -> Optional[Path]:
    """The .pyx that is module `name` under one of `roots` (import roots), if any."""
    parts = name.split(".")
    for root in roots:
        folder = root.joinpath(*parts[:-1]) if len(parts) > 1 else root
        candidate = folder / (parts[-1] + SOURCE_SUFFIX)
        if candidate.is_file():
            return candidate
    return None
