"""Build settings of one module, and how settings from several places combine.

A `BuildSettings` holds what setuptools' `Extension` and `cythonize()` carry (include
and library folders, libraries, macros, the language, extra sources and objects, extra
compiler and linker arguments, Cython directives and include path), each layer
recording where it came from. `merged_over` combines a higher-priority layer with a
lower one: lists keep both (the higher first, so its folders are searched first),
single values (language, module name) and keyed values (macros by name, directives by
name) take the higher layer's value.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from cytool.errors import CytoolError
from cytool.records import NamedTuple

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

    Macro = Tuple[str, Optional[str]]

CPLUS_NAMES = ("c++", "cpp", "cxx")


def normalise_language(value: Optional[str]) -> Optional[str]:
    """`c++`/`cpp`/`cxx` -> "c++", `c` -> "c", None stays None; ValueError otherwise."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in CPLUS_NAMES:
        return "c++"
    if text == "c":
        return "c"
    raise ValueError(f"unknown language {value!r} (use c or c++)")


def parse_macro(text: str) -> Macro:
    """`NAME=VALUE` -> (NAME, VALUE); `NAME` -> (NAME, None)."""
    name, sep, value = str(text).partition("=")
    return (name.strip(), value if sep else None)


def _unique(items: Iterable[str]) -> List[str]:
    return list(dict.fromkeys(items))


class BuildSettings(NamedTuple):
    """One layer of settings; every path is absolute. Empty means "not given"."""

    include_dirs: Tuple[str, ...] = ()
    library_dirs: Tuple[str, ...] = ()
    runtime_library_dirs: Tuple[str, ...] = ()
    libraries: Tuple[str, ...] = ()
    define_macros: Tuple[Macro, ...] = ()
    undef_macros: Tuple[str, ...] = ()
    language: Optional[str] = None  # "c" or "c++"
    sources: Tuple[str, ...] = ()  # extra C/C++ files compiled into the module
    extra_objects: Tuple[str, ...] = ()  # object files and static archives linked in
    compile_args: Tuple[str, ...] = ()
    link_args: Tuple[str, ...] = ()
    directives: Tuple[Tuple[str, str], ...] = ()  # Cython directives, (name, value text)
    cython_include_path: Tuple[str, ...] = ()  # where Cython looks for .pxd/.pxi
    module_name: Optional[str] = None
    origins: Tuple[str, ...] = ()  # where these settings came from, for messages

    @property
    def cplus(self) -> bool:
        return self.language == "c++"

    def is_empty(self) -> bool:
        return all(not getattr(self, name) for name in self._fields if name != "origins")

    def merged_over(self, lower: "BuildSettings") -> "BuildSettings":
        """This layer (higher priority) combined with `lower`."""
        macros: Dict[str, Optional[str]] = {}
        for name, value in list(lower.define_macros) + list(self.define_macros):
            macros.pop(name, None)
            macros[name] = value
        directives = dict(lower.directives)
        directives.update(dict(self.directives))

        def both(name: str) -> Tuple[str, ...]:
            return tuple(_unique(list(getattr(self, name)) + list(getattr(lower, name))))

        return BuildSettings(
            include_dirs=both("include_dirs"),
            library_dirs=both("library_dirs"),
            runtime_library_dirs=both("runtime_library_dirs"),
            libraries=both("libraries"),
            define_macros=tuple(macros.items()),
            undef_macros=both("undef_macros"),
            language=self.language or lower.language,
            sources=both("sources"),
            extra_objects=both("extra_objects"),
            # arguments keep their order and repeats: the lower layer's first, so that
            # the higher layer's flag comes last on the command line and wins
            compile_args=tuple(lower.compile_args) + tuple(self.compile_args),
            link_args=tuple(lower.link_args) + tuple(self.link_args),
            directives=tuple(sorted(directives.items())),
            cython_include_path=both("cython_include_path"),
            module_name=self.module_name or lower.module_name,
            origins=tuple(_unique(list(self.origins) + list(lower.origins))),
        )

    def with_module_name(self, name: Optional[str]) -> "BuildSettings":
        return self._replace(module_name=name)

    def key_text(self) -> str:
        """A stable text of everything that changes what a build produces."""
        values = {name: getattr(self, name) for name in self._fields if name != "origins"}
        return json.dumps(values, sort_keys=True, default=list)

    def to_json(self) -> Dict[str, object]:
        return {name: getattr(self, name) for name in self._fields}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> "BuildSettings":
        known = set(cls._fields)
        values: Dict[str, object] = {}
        for key, value in data.items():
            if key not in known:
                continue
            if key == "define_macros":
                values[key] = tuple((str(m[0]), None if m[1] is None else str(m[1])) for m in value)  # type: ignore[union-attr]
            elif key == "directives":
                values[key] = tuple((str(k), str(v)) for k, v in value)  # type: ignore[union-attr]
            elif isinstance(value, list):
                values[key] = tuple(str(v) for v in value)
            else:
                values[key] = value
        return cls(**values)  # type: ignore[arg-type]


def absolute_paths(items: Iterable[object], base: Path) -> Tuple[str, ...]:
    """Paths relative to `base` made absolute (`~` expanded); absolute ones kept."""
    result = []
    for item in items:
        text = os.path.expanduser(str(item))
        result.append(text if os.path.isabs(text) else os.path.normpath(str(base / text)))
    return tuple(result)


def directive_pairs(values: Mapping[str, object]) -> Tuple[Tuple[str, str], ...]:
    """Cython directives as sorted (name, value text) pairs; booleans as True/False."""
    pairs = []
    for key, value in values.items():
        text = str(value) if not isinstance(value, bool) else ("True" if value else "False")
        pairs.append((str(key), text))
    return tuple(sorted(pairs))


def _has_distutils_header(text: str) -> bool:
    """Whether the comment lines at the top of a .pyx hold a `# distutils:` line (the
    lines Cython's DistutilsInfo reads: it stops at the first line that is not a comment)."""
    for line in text.splitlines():
        line = line.lstrip()
        if not line:
            continue
        if not line.startswith("#"):
            return False
        if line[1:].lstrip().startswith("distutils:"):
            return True
    return False


_READ_HEADER = (
    "import json, sys\n"
    "from Cython.Build.Dependencies import DistutilsInfo\n"
    "json.dump(DistutilsInfo(sys.stdin.read()).values, sys.stdout)\n"
)


def from_distutils_header(source: Path, text: str) -> BuildSettings:
    """The `# distutils:` comments at the top of a .pyx, read by Cython's own parser
    (Cython.Build.Dependencies.DistutilsInfo) in a child Python: importing it here would
    load Cython's compiled modules into the process that then runs (and traces) the
    program, and their shared types (Cython's generator, coroutine and function types,
    which every Cython module of that version then uses) would run Cython's own machine
    code, built without frame pointers. Paths are relative to the .pyx's folder.
    CytoolError when the header cannot be read."""
    if not _has_distutils_header(text):
        return BuildSettings()
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _READ_HEADER], input=text, capture_output=True, text=True,
                          errors="replace")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise CytoolError(f"{source}: its `# distutils:` comments could not be read: {last}",
                          hint="check the `# distutils: key = value` lines at the top of the file")
    values = json.loads(done.stdout)
    if not values:
        return BuildSettings()
    base = source.parent

    def items(key: str) -> List[str]:
        value = values.get(key, [])
        return [value] if isinstance(value, str) else [str(v) for v in value]

    macros: List[Macro] = []
    for item in values.get("define_macros", []):
        if isinstance(item, (tuple, list)):
            macros.append((str(item[0]), None if len(item) < 2 or item[1] is None else str(item[1])))
        else:
            macros.append(parse_macro(str(item)))
    language = values.get("language")
    try:
        language = normalise_language(language)
    except ValueError:
        language = None
    return BuildSettings(
        include_dirs=absolute_paths(items("include_dirs"), base),
        library_dirs=absolute_paths(items("library_dirs"), base),
        runtime_library_dirs=absolute_paths(items("runtime_library_dirs"), base),
        libraries=tuple(items("libraries")),
        define_macros=tuple(macros),
        undef_macros=tuple(items("undef_macros")),
        language=language,
        sources=absolute_paths(items("sources"), base),
        extra_objects=absolute_paths(items("extra_objects"), base),
        compile_args=tuple(items("extra_compile_args")),
        link_args=tuple(items("extra_link_args")),
        origins=(f"{source.name} (# distutils:)",),
    )


def from_command_line(
    *,
    include_dirs: Sequence[str] = (),
    library_dirs: Sequence[str] = (),
    libraries: Sequence[str] = (),
    macros: Sequence[str] = (),
    cplus: bool = False,
    sources: Sequence[str] = (),
    compile_args: Sequence[str] = (),
    link_args: Sequence[str] = (),
    directives: Sequence[str] = (),
    module_name: Optional[str] = None,
    cwd: Optional[Path] = None,
) -> BuildSettings:
    """The CLI layer: paths relative to the current folder; directives as NAME=VALUE."""
    base = cwd or Path.cwd()
    pairs = []
    for text in directives:
        name, _, value = str(text).partition("=")
        pairs.append((name.strip(), value.strip()))
    settings = BuildSettings(
        include_dirs=absolute_paths(include_dirs, base),
        library_dirs=absolute_paths(library_dirs, base),
        libraries=tuple(libraries),
        define_macros=tuple(parse_macro(m) for m in macros),
        language="c++" if cplus else None,
        sources=absolute_paths(sources, base),
        compile_args=tuple(compile_args),
        link_args=tuple(link_args),
        directives=tuple(sorted(pairs)),
        module_name=module_name,
    )
    return settings if settings.is_empty() else settings._replace(origins=("the command line",))
