"""The `[tool.cytool]` table of a project's pyproject.toml.

    [tool.cytool]
    include-dirs = ["."]            # folders, relative to pyproject.toml
    library-dirs = []
    libraries = ["m"]
    define-macros = ["NDEBUG", "LEVEL=2"]
    undef-macros = []
    language = "c++"                # or: cplus = true
    sources = ["src/helper.c"]      # compiled into every module this table covers
    extra-objects = []
    compile-args = ["-fopenmp"]
    link-args = ["-fopenmp"]
    directives = { boundscheck = false, language_level = 3 }
    cython-include-path = ["src"]
    setup-py = true                 # read settings from setup.py (default: true)

    [tool.cytool.modules."pkg.fast*"]   # tables per module: fnmatch on the dotted name,
    cplus = true                        # applied in file order over the table above

Unknown keys and values of the wrong type are errors naming the file and the key.
"""
from __future__ import annotations

import sys
from pathlib import Path

from cytool.errors import CytoolError
from cytool.project.settings import BuildSettings, absolute_paths, directive_pairs, normalise_language, parse_macro
from cytool.records import NamedTuple

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple

LIST_KEYS = {
    "include-dirs": "include_dirs",
    "library-dirs": "library_dirs",
    "runtime-library-dirs": "runtime_library_dirs",
    "libraries": "libraries",
    "define-macros": "define_macros",
    "undef-macros": "undef_macros",
    "sources": "sources",
    "extra-objects": "extra_objects",
    "compile-args": "compile_args",
    "link-args": "link_args",
    "cython-include-path": "cython_include_path",
}
PATH_KEYS = {"include_dirs", "library_dirs", "runtime_library_dirs", "sources", "extra_objects", "cython_include_path"}


class ProjectTable(NamedTuple):
    """What [tool.cytool] says: the project-wide layer, per-module layers, and whether
    setup.py may be read."""

    path: Optional[Path]
    common: BuildSettings
    per_module: Tuple[Tuple[str, BuildSettings], ...]
    read_setup_py: bool

    def settings_for(self, module_name: str) -> BuildSettings:
        import fnmatch

        layer = self.common
        for pattern, settings in self.per_module:
            if fnmatch.fnmatchcase(module_name, pattern):
                layer = settings.merged_over(layer)
        return layer


EMPTY = ProjectTable(None, BuildSettings(), (), True)


def _load_toml(path: Path) -> Dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise CytoolError(f"{path}: cannot read: {error.strerror}", exit_code=2) from None
    except tomllib.TOMLDecodeError as error:
        raise CytoolError(f"{path}: not valid TOML: {error}", hint="fix the file", exit_code=2) from None


def read_project_table(project_dir: Path) -> ProjectTable:
    """[tool.cytool] of project_dir/pyproject.toml; EMPTY when there is none."""
    path = project_dir / "pyproject.toml"
    try:
        raw = path.read_bytes()
    except OSError:
        return EMPTY
    if b"cytool" not in raw:  # no [tool.cytool] table: skip the TOML parser (warm runs)
        return EMPTY
    data = _load_toml(path)
    table = data.get("tool", {}).get("cytool")
    if table is None:
        return EMPTY
    where = f"{path}: [tool.cytool]"
    if not isinstance(table, dict):
        raise CytoolError(f"{where} must be a table", exit_code=2)
    common = _layer(table, project_dir, where, allow_modules=True)
    per_module: List[Tuple[str, BuildSettings]] = []
    modules = table.get("modules", {})
    if not isinstance(modules, dict):
        raise CytoolError(f"{where}.modules must be a table of module patterns", exit_code=2)
    for pattern, sub in modules.items():
        sub_where = f'{where}.modules."{pattern}"'
        if not isinstance(sub, dict):
            raise CytoolError(f"{sub_where} must be a table", exit_code=2)
        per_module.append((str(pattern), _layer(sub, project_dir, sub_where, allow_modules=False)))
    read_setup = table.get("setup-py", True)
    if not isinstance(read_setup, bool):
        raise CytoolError(f"{where}: setup-py must be true or false", exit_code=2)
    return ProjectTable(path, common, tuple(per_module), read_setup)


def _layer(table: Mapping[str, Any], base: Path, where: str, *, allow_modules: bool) -> BuildSettings:
    values: Dict[str, Any] = {}
    for key, value in table.items():
        if key in LIST_KEYS:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
                raise CytoolError(f"{where}: {key} must be a list of strings", exit_code=2)
            field_name = LIST_KEYS[key]
            if field_name in PATH_KEYS:
                values[field_name] = absolute_paths(value, base)
            elif field_name == "define_macros":
                values[field_name] = tuple(parse_macro(str(v)) for v in value)
            else:
                values[field_name] = tuple(str(v) for v in value)
        elif key == "language":
            try:
                values["language"] = normalise_language(value)
            except ValueError as error:
                raise CytoolError(f"{where}: {error}", exit_code=2) from None
        elif key == "cplus":
            if not isinstance(value, bool):
                raise CytoolError(f"{where}: cplus must be true or false", exit_code=2)
            if value:
                values["language"] = "c++"
        elif key == "directives":
            if not isinstance(value, dict):
                raise CytoolError(f"{where}: directives must be a table (name = value)", exit_code=2)
            values["directives"] = directive_pairs(value)
        elif key in ("setup-py", "modules") and allow_modules:
            continue
        else:
            known = ", ".join(sorted(list(LIST_KEYS) + ["language", "cplus", "directives"]))
            raise CytoolError(f"{where}: unknown key '{key}'", hint=f"known keys: {known}", exit_code=2)
    if not values:
        return BuildSettings()
    return BuildSettings(origins=(where,), **values)
