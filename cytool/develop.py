"""`cytool develop`: the project's own build, in place, with debug information.

What memray's developers do by hand (edit setup.py to pass `gdb_debug=True` and `-g`,
rebuild in place, run gdb), without editing a file: run `setup.py build_ext --inplace`
through cytool/develop_build.py, which forces Cython's `#line` directives and debug XML
and the compiler's `-g -fno-omit-frame-pointer` (`-O0` with --debug), then index every
module built by its build-id (cytool.module_index) so that reports and the debugger find
its C file and debug XML later. setuptools projects only; other build back-ends get a
clear message naming what to do by hand.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from cytool.cache import BuildCache, hash_text
from cytool.toolchain import tool_environment
from cytool.errors import CytoolError

# where the generated C names the Cython sources its code came from: `#line 5 "pkg/inc.pyx"`
# directives and `/* "pkg/inc.pyx":5` position comments (paths relative to the build's folder)
_C_SOURCE_NAME = re.compile(r'^(?:#line \d+ "|/\* ")([^"\n]+\.(?:pyx|pxi|pxd))"', re.M)
# "pkg/mod.pyx:5:8: Expected ':', found 'NEWLINE'", the last line of Cython's error block
_CYTHON_POSITION = re.compile(r"^[^\s:][^:\n]*\.(pyx|pxd|pxi):\d+:\d+: .+$", re.M)
BUILD_SCRIPT = Path(__file__).resolve().parent / "develop_build.py"
# the folder holding the cytool package: `from cytool.debug cimport breakpoint` in a project's
# .pyx is found there (an editable install's package folder is not on sys.path)
CYTOOL_ROOT = Path(__file__).resolve().parent.parent
OTHER_BACKENDS = {
    "mesonpy": "meson-python",
    "scikit_build_core": "scikit-build-core",
    "skbuild": "scikit-build",
    "maturin": "maturin",
}


@dataclass
class DevelopedModule:
    """One module the project's build made: name, the .so in the project, its .pyx,
    the generated C file beside it, the debug XML (in cytool's cache), its build-id."""

    name: str
    module_file: Path
    source: Optional[Path]
    c_file: Optional[Path]
    debug_info: Optional[Path]
    build_id: Optional[str]
    line_directives: bool


def _backend(project: Path) -> str:
    pyproject = project / "pyproject.toml"
    if not pyproject.is_file():
        return ""
    from cytool.project.pyproject import _load_toml

    data = _load_toml(pyproject)
    return str(data.get("build-system", {}).get("build-backend", ""))


def missing_build_requirements(project: Path) -> List[str]:
    """The project's [build-system] requires that this Python does not satisfy (the
    build runs here, without pip's build isolation)."""
    pyproject = project / "pyproject.toml"
    if not pyproject.is_file():
        return []
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    from cytool.project.pyproject import _load_toml

    missing = []
    for text in _load_toml(pyproject).get("build-system", {}).get("requires", []):
        try:
            requirement = Requirement(str(text))
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(str(requirement))
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            missing.append(f"{requirement} (installed: {installed})")
    return missing


def check_project(project: Path) -> Path:
    """The project's setup.py; CytoolError when the project cannot be built this way."""
    if not project.is_dir():
        raise CytoolError(f"{project}: no such project folder", exit_code=2)
    setup_py = project / "setup.py"
    backend = _backend(project)
    if setup_py.is_file():
        missing = missing_build_requirements(project)
        if missing:
            wanted = " ".join(repr(m.split(" (installed")[0]) for m in missing)
            raise CytoolError(
                f"{project}: the build needs {', '.join(missing)} in this Python (cytool develop builds "
                "in place, without pip's build isolation)",
                hint=f"{sys.executable} -m pip install {wanted}",
            )
        return setup_py
    for module, name in OTHER_BACKENDS.items():
        if backend.startswith(module):
            raise CytoolError(
                f"{project}: {name} projects are not supported by `cytool develop` yet",
                hint="build it by hand with Cython's `--line-directives` and `--gdb` (e.g. cython -X ... "
                "--line-directives --gdb-outdir DIR) and the compiler's `-g -fno-omit-frame-pointer`; "
                "or build single modules with `cytool build FILE.pyx` using [tool.cytool] settings",
            )
    folders = _pyx_folders(project)
    hint = "run `cytool develop` in the folder of a setuptools project (the one holding setup.py)"
    if folders:
        globs = " ".join(f"{folder}/*.pyx" for folder in folders)
        hint = (f"this project builds without a setup.py (its backend: {backend or 'none named'}); "
                f"`cytool build {globs} --inplace` builds its Cython modules in place with debug "
                "information")
    raise CytoolError(f"{project}: no setup.py here", hint=hint, exit_code=2)


MAX_PYX_FOLDERS = 4


def _pyx_folders(project: Path) -> List[str]:
    """Folders of the project (relative, at most MAX_PYX_FOLDERS, outside build/, tests and
    hidden folders) holding .pyx files: what `cytool build --inplace` would be given."""
    found: List[str] = []
    skip = {"build", "dist", "tests", "test", "docs", "venv", "node_modules"}
    for root, dirs, files in os.walk(project):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in skip)
        if any(f.endswith(".pyx") for f in files):
            found.append(os.path.relpath(root, project))
            if len(found) == MAX_PYX_FOLDERS:
                break
    return found


def build_failure(project: Path, setup_py: Path, status: int, output: str) -> CytoolError:
    """The first error of a failed build: Cython's (its source excerpt and position) or the C
    compiler's, as cytool's own builds report them; else the end of the build's output
    (say, the project's setup.py failing)."""
    from cytool import diagnostics

    where = f"{setup_py.name} build_ext --inplace, exit {status}"
    hint = "fix the first error above and run cytool develop again; `cytool develop -v` shows the whole build"
    if "Error compiling Cython file:" in output:
        text = output[output.index("Error compiling Cython file:"):]
        position = _CYTHON_POSITION.search(text)
        text = text[:position.end()] if position else text  # the block, not the build's later warnings
        failure = diagnostics.cython_failure(project, text)
        failure.message = failure.message.replace(f"compile {project.name}: ", "compile ", 1) + f" ({where})"
    elif diagnostics.first_compiler_error(output) is not None:
        failure = diagnostics.compiler_failure(project, "C compiler", output)
        failure.message = f"the C compiler failed building {project.name} ({where})"
    else:
        tail = "\n".join(output.strip().splitlines()[-25:])
        return CytoolError(f"the build of {project} failed ({where})", detail=tail, hint=hint)
    failure.hint = hint
    return failure


def cython_sources(source: Path, c_file: Optional[Path], project: Path) -> List[Path]:
    """The module's .pyx and every Cython file its generated C names (files it
    `include`s, .pxd files of inline code), existing ones, absolute; `source` first."""
    found = [source.resolve()]
    if c_file is None:
        return found
    try:
        text = c_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return found
    for name in dict.fromkeys(m.group(1) for m in _C_SOURCE_NAME.finditer(text)):
        path = (project / name).resolve()
        if path not in found and path.is_file():
            found.append(path)
    return found


def develop(project: Path, *, debug: bool = False, jobs: int = 1, verbose: bool = False) -> List[DevelopedModule]:
    """Build the project in place with debug information; returns the modules built.
    Raises CytoolError when the build fails (with the end of its output)."""
    from cytool.module_index import record_module, source_digests
    from cytool.progress import Progress

    project = project.resolve()
    setup_py = check_project(project)
    cache = BuildCache()
    debug_dir = cache.prepare_folder("develop") / hash_text(str(project))[:32]
    debug_dir.mkdir(exist_ok=True)
    work = cache.new_build_dir()
    out = work / "built.json"
    argv = [sys.executable, str(BUILD_SCRIPT), str(project), str(out), str(debug_dir), "0" if debug else "project", str(jobs),
            str(CYTOOL_ROOT)]
    progress = Progress(verbose=verbose)
    progress.step(f"building {project.name} in place with debug information ({setup_py.name} build_ext --inplace)")
    progress.command(argv, cwd=str(project))
    try:
        done = subprocess.run(
            argv, cwd=str(project), stdin=subprocess.DEVNULL, stdout=None if verbose else subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", env=tool_environment(),
        )
        progress.done()
        if done.returncode != 0:
            raise build_failure(project, setup_py, done.returncode, done.stdout or "")
        built = json.loads(out.read_text(encoding="utf-8")).get("built", [])
    except (OSError, ValueError) as error:
        raise CytoolError(f"cannot run the build of {project}: {error}") from None
    finally:
        progress.done()
        cache.discard(work)
    modules = []
    for item in built:
        name = str(item["name"])
        module_file = Path(item["module_file"])
        source = next((Path(s) for s in item.get("sources", []) if s.endswith(".pyx")), None)
        c_file = None
        if source is not None:
            c_file = next((source.with_suffix(s) for s in (".c", ".cpp") if source.with_suffix(s).is_file()), None)
        xml = debug_dir / "cython_debug" / f"cython_debug_info_{name}"
        line_directives = bool(c_file) and "\n#line " in c_file.read_text(encoding="utf-8", errors="replace")[:4_000_000]
        build_id = None
        if module_file.is_file() and source is not None:
            build_id = record_module(
                module_file, name, c_file=c_file, debug_info=xml if xml.is_file() else None,
                sources=source_digests(cython_sources(source, c_file, project)), opt_level="0" if debug else None,
                built_by="cytool develop", cache=cache,
            )
        modules.append(DevelopedModule(name, module_file, source, c_file, xml if xml.is_file() else None, build_id, line_directives))
    return modules
