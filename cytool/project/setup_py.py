"""Build settings from a project's setup.py: its `Extension`s, and the options of the
`cythonize()` call they went through.

setup.py is code, not data, so it is run (never parsed) in a subprocess by
`setup_probe.py`, with `setup()` and `cythonize()` intercepted so that nothing is built.
Results are cached by the content of setup.py and setup.cfg, the interpreter and
Cython's version (`<cache>/setup-py/<key>.json`). A setup.py that fails is a warning
(with the last lines it printed) and the build goes on with the other settings.
"""
from __future__ import annotations

import fnmatch
import json
import sys
from pathlib import Path

from cytool.cache import BuildCache, hash_file, hash_text
from cytool.project.settings import BuildSettings, absolute_paths, directive_pairs, normalise_language
from cytool.records import NamedTuple

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

PROBE = Path(__file__).resolve().parent / "setup_probe.py"
PROBE_TIMEOUT_S = 300
C_SUFFIXES = (".c", ".cpp", ".cc", ".cxx")


class SetupInfo(NamedTuple):
    """What setup.py declared: its extensions (as the probe wrote them), or a warning."""

    setup_py: Path
    extensions: List[Dict[str, Any]]
    warning: str = ""

    def settings_for(self, source: Path) -> Optional[BuildSettings]:
        """The settings of the extension built from `source` (a .pyx), or None."""
        base = self.setup_py.parent
        for ext in self.extensions:
            sources = [Path(p) for p in absolute_paths(ext.get("sources", []), base)]
            if not _builds(sources, source):
                continue
            return _settings(ext, sources, source, base, self.setup_py)
        return None


def _builds(sources: List[Path], source: Path) -> bool:
    """Does an extension with these sources build `source`? Its .pyx listed, the .c/.cpp
    Cython made from it listed (msgpack lists `_cmsgpack.c`), or a glob matching it."""
    for index, candidate in enumerate(sources):
        text = str(candidate)
        if "*" in text or "?" in text:
            if fnmatch.fnmatchcase(str(source), text):
                return True
            continue
        if candidate == source:
            return True
        if index == 0 and candidate.suffix in C_SUFFIXES and candidate.with_suffix(".pyx") == source:
            return True
    return False


def _settings(ext: Dict[str, Any], sources: List[Path], source: Path, base: Path, setup_py: Path) -> BuildSettings:
    cython = ext.get("cython") or {}
    language = ext.get("language") or cython.get("language")
    try:
        language = normalise_language(language)
    except ValueError:
        language = None
    extra_sources = tuple(
        str(p) for p in sources if p != source and p.with_suffix(".pyx") != source and p.suffix.lower() != ".pyx"
    )
    name = str(ext.get("name") or "")
    return BuildSettings(
        include_dirs=absolute_paths(ext.get("include_dirs", []), base),
        library_dirs=absolute_paths(ext.get("library_dirs", []), base),
        runtime_library_dirs=absolute_paths(ext.get("runtime_library_dirs", []), base),
        libraries=tuple(ext.get("libraries", [])),
        define_macros=tuple((str(m[0]), None if m[1] is None else str(m[1])) for m in ext.get("define_macros", [])),
        undef_macros=tuple(ext.get("undef_macros", [])),
        language=language,
        sources=extra_sources,
        extra_objects=absolute_paths(ext.get("extra_objects", []), base),
        compile_args=tuple(ext.get("extra_compile_args", [])),
        link_args=tuple(ext.get("extra_link_args", [])),
        directives=directive_pairs(cython.get("directives") or {}),
        cython_include_path=absolute_paths(cython.get("include_path") or [], base),
        module_name=name if name and "*" not in name else None,
        origins=(f"{setup_py} (Extension {name!r})",),
    )


def _probe_key(setup_py: Path) -> str:
    from cytool import toolchain

    setup_cfg = setup_py.parent / "setup.cfg"
    return hash_text(
        "setup-probe-2",
        str(setup_py),
        hash_file(setup_py) or "",
        hash_file(setup_cfg) or "" if setup_cfg.exists() else "",
        hash_file(PROBE) or "",
        sys.executable,
        toolchain.cython_version(),
    )


def read_setup_py(project_dir: Path, verbose: bool = False) -> Optional[SetupInfo]:
    """The extensions project_dir/setup.py declares (cached), or None without a setup.py."""
    setup_py = project_dir / "setup.py"
    if not setup_py.is_file():
        return None
    cache = BuildCache()
    key = _probe_key(setup_py)
    record_path = cache.root / "setup-py" / f"{key}.json"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        return SetupInfo(setup_py, list(record.get("extensions", [])), str(record.get("warning", "")))
    except (OSError, ValueError):
        pass
    info = _run_probe(setup_py, cache, verbose)
    cache.prepare_folder("setup-py")
    cache.atomic_write(record_path, json.dumps({"extensions": info.extensions, "warning": info.warning}))
    return info


def _run_probe(setup_py: Path, cache: BuildCache, verbose: bool) -> SetupInfo:
    import subprocess

    work = cache.new_build_dir()
    out = work / "probe.json"
    argv = [sys.executable, str(PROBE), str(setup_py.parent), str(out)]
    if verbose:
        print(f"cytool: reading build settings from {setup_py} (setup() intercepted)", file=sys.stderr)
    try:
        from cytool import toolchain

        env = toolchain.tool_environment()
        env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        done = subprocess.run(
            argv,
            cwd=str(setup_py.parent),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=PROBE_TIMEOUT_S,
            env=env,
        )
        if done.returncode != 0 or not out.is_file():
            tail = "\n".join(("    " + line) for line in done.stdout.strip().splitlines()[-8:])
            return SetupInfo(setup_py, [], f"{setup_py} failed to run (exit {done.returncode}); its settings are not used:\n{tail}")
        data = json.loads(out.read_text(encoding="utf-8"))
        warning = "" if data.get("setup_called") else f"{setup_py} ran but never called setup(); its settings are not used"
        return SetupInfo(setup_py, list(data.get("extensions", [])), warning)
    except subprocess.TimeoutExpired:
        return SetupInfo(setup_py, [], f"{setup_py} did not finish within {PROBE_TIMEOUT_S} s; its settings are not used")
    except (OSError, ValueError) as error:
        return SetupInfo(setup_py, [], f"cannot read the settings of {setup_py}: {error}")
    finally:
        cache.discard(work)
