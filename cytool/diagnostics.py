"""Turn Cython's and the C compiler's output into one short, actionable error.

Beyond quoting the first error, we name the real cause when we can tell it: a module
that needs C++ but was compiled as C (the C compiler cannot find `<ios>`, or Cython
refuses C++-only syntax that it accepts with --cplus), a header that is not on the
include path (and the folder that would make it found), a bad `-X` directive (the
command line's fault, not the source's).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple

from cytool.build.depends import INCLUDE_STATEMENT
from cytool.errors import CytoolError

if TYPE_CHECKING:
    from cytool.project.resolve import ModuleTarget
    from cytool.project.settings import BuildSettings

# "mod.pyx:5:8: Expected ':', found 'NEWLINE'"
_CYTHON_POSITION = re.compile(r"^(?P<file>[^\s:][^:\n]*):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$", re.M)
# "mod.pyx:5:3: error: ..." / "mod.c:12: fatal error: ..."
_CC_ERROR = re.compile(r"^(?P<loc>[^\s:][^:\n]*(:\d+)+): (fatal )?error: ", re.M)
# "'cymem/cymem.pxd' not found" (a cimport Cython could not find)
_MISSING_PXD = re.compile(r"'(?P<pxd>[^'\s]+\.pxd)' not found")
_MISSING_HEADER = re.compile(r"fatal error: (?P<header>[^:\s]+): No such file or directory")
_DIRECTIVE_ERROR = re.compile(r"(Unknown option|Expected \"=\" in option|Unknown directive|Invalid value for|Unknown option:)\s*(?P<rest>.*)")

MAX_COMPILER_ERRORS = 5
MAX_DETAIL_LINES = 40
CPLUS_HINT = "this module needs C++: build it with --cplus (or `# distutils: language = c++`, or language=\"c++\" in setup.py)"


def cython_failure(
    source: Path,
    output: str,
    *,
    target: Optional["ModuleTarget"] = None,
    settings: Optional["BuildSettings"] = None,
    work: Optional[Path] = None,
) -> CytoolError:
    """Cython's first error, with its source excerpt, as one CytoolError."""
    text = output.strip()
    directive = _DIRECTIVE_ERROR.search(text)
    if directive and "Traceback" in text and settings is not None and settings.directives:
        given = " ".join(f"-X {name}={value}" for name, value in settings.directives)
        return CytoolError(
            f"a Cython directive is not valid: {directive.group(0).strip()}",
            hint=f"check the directives given ({given}): `cython --help` lists them; "
            "the form is -X NAME=VALUE",
            exit_code=2,
        )
    match = _CYTHON_POSITION.search(text)
    if match:
        where = f"{match.group('file')}:{match.group('line')}:{match.group('col')}"
        message = f"Cython could not compile {source.name}: {where}: {match.group('msg')}"
    else:
        message = f"Cython could not compile {source.name}"
    # Cython repeats a block per error; keep the first block (excerpt + message).
    blocks = text.split("Error compiling Cython file:")
    blocks = [block.strip() for block in blocks if block.strip()]
    detail = blocks[0] if blocks else text
    if match:  # the block ends with the error's own line, which the message already says
        lines = detail.splitlines()
        if len(lines) > 1 and lines[-1].strip() == match.group(0).strip():
            detail = "\n".join(lines[:-1]).rstrip()
    extra = len(blocks) - 1
    if extra > 0:
        detail += f"\n({extra} more error{'s' if extra > 1 else ''}; fix this one first)"
    hint = f"fix {source.name} and run cytool again"
    missing = _MISSING_PXD.search(match.group("msg")) if match else None
    if missing:
        pxd = missing.group("pxd")
        top = pxd.split("/")[0]
        package = top[: -len(".pxd")] if top.endswith(".pxd") else top
        holds = top if top.endswith(".pxd") else f"{top}/"
        hint = (f"a cimported declaration file is not found: install the package that provides {pxd} "
                f"(often `pip install {package}`), or add the folder that holds {holds} with -I DIR "
                "or PYTHONPATH")
    elif target is not None and settings is not None and not settings.cplus and work is not None and _compiles_as_cplus(target, settings, work):
        hint = CPLUS_HINT
    else:
        including = including_file(source)
        if including is not None:
            other, statement = including
            hint = (f"{source.name} is not a module of its own: {other.name} includes it (`{statement}`); "
                    f"run cytool on {other.name}")
    return CytoolError(message, detail=_clip(detail), hint=hint)


MAX_INCLUDE_SCAN_FILES = 500
MAX_INCLUDE_SCAN_BYTES = 1 << 20


def including_file(source: Path) -> Optional[Tuple[Path, str]]:
    """(a .pyx or .pxi file next to `source` or in its parent folder, its `include`
    statement that names `source`), or None: such a source is a fragment, not a module.
    Reads at most MAX_INCLUDE_SCAN_FILES files of MAX_INCLUDE_SCAN_BYTES each."""
    try:
        target = source.resolve()
    except OSError:
        return None
    scanned = 0
    for folder in (target.parent, target.parent.parent):
        try:
            candidates = sorted(p for p in folder.iterdir() if p.suffix in (".pyx", ".pxi") and p != target)
        except OSError:
            continue
        for candidate in candidates:
            scanned += 1
            if scanned > MAX_INCLUDE_SCAN_FILES:
                return None
            try:
                with open(candidate, "r", encoding="utf-8", errors="replace") as handle:
                    text = handle.read(MAX_INCLUDE_SCAN_BYTES)
            except OSError:
                continue
            for match in INCLUDE_STATEMENT.finditer(text):
                try:
                    if (candidate.parent / match.group("path")).resolve() == target:
                        return candidate, match.group(0).strip()
                except OSError:
                    continue
    return None


def _compiles_as_cplus(target: "ModuleTarget", settings: "BuildSettings", work: Path) -> bool:
    """Does Cython accept the module in C++ mode? (it refused it in C mode)"""
    import subprocess

    from cytool.build.compile import cython_argv
    from cytool.project.settings import BuildSettings

    probe = work / "cplus-probe"
    probe.mkdir(exist_ok=True)
    cplus = BuildSettings(language="c++").merged_over(settings)
    argv = cython_argv(target, cplus, probe / f"{target.location.short_name}.cpp") + [target.location.relative_source]
    try:
        from cytool.toolchain import tool_environment

        done = subprocess.run(argv, cwd=str(target.location.import_root), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=600, env=tool_environment())
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def first_compiler_error(output: str) -> Optional[str]:
    """The first `file:line: error:` line of a C compiler's output, or None."""
    match = _CC_ERROR.search(output)
    return output[match.start():output.find("\n", match.start())] if match else None


def compiler_failure(
    source: Path,
    compiler: str,
    output: str,
    *,
    target: Optional["ModuleTarget"] = None,
    settings: Optional["BuildSettings"] = None,
    failed_source: Optional[Path] = None,
) -> CytoolError:
    """The compiler's first errors (with their context lines), not its whole log."""
    lines = output.splitlines()
    picked: List[str] = []
    errors = 0
    index = 0
    while index < len(lines) and errors < MAX_COMPILER_ERRORS:
        if _CC_ERROR.match(lines[index]):
            errors += 1
            picked.append(lines[index])
            index += 1
            # gcc's context: the source line and the caret line that follow
            while index < len(lines) and lines[index].startswith(" "):
                picked.append(lines[index])
                index += 1
            continue
        index += 1
    if not picked:
        picked = [line for line in lines if line.strip()][-MAX_DETAIL_LINES:]
    total = sum(1 for line in lines if _CC_ERROR.match(line))
    what = failed_source.name if failed_source is not None else source.name
    message = f"the C compiler ({compiler}) failed on {what}"
    detail = "\n".join(picked)
    if total > errors:
        detail += f"\n({total - errors} more errors not shown; run with -v for the full log)"
    hint = "fix the first error above and run cytool again"
    missing = _MISSING_HEADER.search(output)
    if missing:
        header = missing.group("header")
        if settings is not None and not settings.cplus and "." not in Path(header).name:
            hint = CPLUS_HINT + f" (<{header}> is a C++ standard header)"
        else:
            folder = _folder_providing(header, target)
            if folder is not None:
                hint = (f"{header} is not on the include path; it is found from {folder}: add -I {folder} "
                        f"(or include-dirs in [tool.cytool], include_dirs in setup.py)")
            else:
                hint = (f"{header} is not on the include path: install the package that provides it, or add "
                        f"its folder with -I DIR (or include-dirs in [tool.cytool], include_dirs in setup.py)")
    elif settings is not None and not settings.cplus and re.search(r"error: unknown type name '(namespace|class|template)'|expected.*before '<' token|'std' undeclared", output):
        hint = CPLUS_HINT
    return CytoolError(message, detail=_clip(detail), hint=hint)


def _folder_providing(header: str, target: Optional["ModuleTarget"]) -> Optional[Path]:
    """A folder under the project from which `header` (e.g. "pkg/defs.h") is found."""
    if target is None:
        return None
    project = target.location.project_dir
    parts = Path(header).parts
    depth = 0
    for folder, subfolders, _files in os.walk(project):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in ("build", "dist", "node_modules")]
        depth += 1
        if depth > 5000:
            break
        candidate = Path(folder).joinpath(*parts)
        if candidate.is_file():
            return Path(folder)
    return None


def _clip(text: str) -> str:
    lines = text.splitlines()
    if len(lines) <= MAX_DETAIL_LINES:
        return text
    return "\n".join(lines[:MAX_DETAIL_LINES] + [f"... ({len(lines) - MAX_DETAIL_LINES} more lines)"])
