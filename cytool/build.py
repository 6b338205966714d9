"""Build a .pyx into an importable extension module, through the content-addressed cache.

Cython runs with `--line-directives` (the C file carries `#line N "mod.pyx"`, so DWARF,
gdb, addr2line and our tracer speak .pyx) and `--gdb` (the debug XML the cy-* gdb
commands read), the compiler with `-g -fno-omit-frame-pointer`. Every module is linked
against libcytrace.so so that `CYTOOL_PROFILE=path` starts the tracer when it loads.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Sequence, Tuple

from cytool import __version__, toolchain
from cytool.cache import BuildCache, hash_file, hash_text
from cytool.errors import CytoolError

if TYPE_CHECKING:
    import subprocess

    from cytool.progress import Progress

OPT_LEVELS = ("0", "1", "2", "3", "s", "g", "fast")
DEFAULT_OPT_LEVEL = "2"


class BuildOptions(NamedTuple):
    opt_level: str = DEFAULT_OPT_LEVEL
    force: bool = False
    annotate: bool = False
    verbose: bool = False
    directives: Tuple[str, ...] = ()  # extra Cython directives, "name=value"
    link_tracer: bool = True


class BuildResult(NamedTuple):
    module_name: str
    module_path: Path  # the .so inside the cache entry
    build_dir: Path  # the cache entry: <mod>.c, the .so, cython_debug/, build.json
    source: Path  # absolute path of the .pyx
    cached: bool  # True when no compilation was needed
    annotation: Optional[Path] = None  # Cython's annotated HTML, with --annotate

    @property
    def c_file(self) -> Path:
        return self.build_dir / f"{self.module_name}.c"

    @property
    def debug_info(self) -> Path:
        return self.build_dir / "cython_debug" / f"cython_debug_info_{self.module_name}"


class _Settings:
    """Everything besides file contents that decides what a build produces."""

    def __init__(self, values: Dict[str, str]):
        self.values = values

    def key_text(self) -> str:
        return json.dumps(self.values, sort_keys=True)


def resolve_source(path: Path) -> Tuple[Path, str]:
    """Check the file argument; return its absolute path and module name."""
    if not path.exists():
        raise CytoolError(f"{path}: no such file", hint="check the path", exit_code=2)
    if path.is_dir():
        raise CytoolError(f"{path}: is a directory, not a .pyx file", exit_code=2)
    if path.suffix != ".pyx":
        raise CytoolError(
            f"{path}: not a .pyx file",
            hint="cytool builds Cython sources; give it a file ending in .pyx",
            exit_code=2,
        )
    source = path.resolve()
    name = source.name[: -len(".pyx")]
    if "." in name or not name.isidentifier():
        raise CytoolError(
            f"{path}: '{name}' is not a valid Python module name",
            hint="rename the file to a Python identifier (letters, digits, underscores)",
            exit_code=2,
        )
    return source, name


def _settings(source: Path, options: BuildOptions) -> _Settings:
    if options.opt_level not in OPT_LEVELS:
        raise CytoolError(
            f"unknown optimisation level -O{options.opt_level}",
            hint=f"use one of {', '.join(OPT_LEVELS)}",
            exit_code=2,
        )
    tracer_dir = toolchain.tracer_library_dir() if options.link_tracer else None
    return _Settings(
        {
            "cytool": __version__,
            "cython": toolchain.cython_version(),
            "python": toolchain.python_abi(),
            "cc": toolchain.compiler_identity(cplus=False),
            "cxx": toolchain.compiler_identity(cplus=True),
            "env": " ".join(os.environ.get(var, "") for var in ("CC", "CXX", "CFLAGS", "LDFLAGS")),
            "opt": options.opt_level,
            "directives": " ".join(options.directives),
            "annotate": str(options.annotate),
            "tracer": str(tracer_dir or ""),
            "source": str(source),
        }
    )


def build_module(path: Path, options: BuildOptions = BuildOptions(), progress: Optional["Progress"] = None) -> BuildResult:
    """Return the built module for `path`, from the cache when nothing it depends on changed."""
    source, name = resolve_source(Path(path))
    settings = _settings(source, options)
    cache = BuildCache()
    manifest_key = hash_text(settings.key_text())
    if not options.force:
        entry_key = cache.lookup(manifest_key)
        if entry_key is not None:
            return _result(cache.entry_dir(entry_key), source, name, cached=True)
    # The cold path: everything below imports what it needs (the warm path stays light).
    from cytool.progress import Progress

    progress = progress or Progress(verbose=options.verbose)
    try:
        return _build(cache, source, name, options, settings, manifest_key, progress)
    finally:
        progress.done()


def _result(entry: Path, source: Path, name: str, cached: bool) -> BuildResult:
    record = json.loads((entry / "build.json").read_text(encoding="utf-8"))
    annotation = entry / record["annotation"] if record.get("annotation") else None
    return BuildResult(
        module_name=name,
        module_path=entry / record["module_file"],
        build_dir=entry,
        source=source,
        cached=cached,
        annotation=annotation,
    )


# -- the cold path ---------------------------------------------------------------------


class _DistutilsInfo(NamedTuple):
    cplus: bool
    include_dirs: List[str]
    library_dirs: List[str]
    libraries: List[str]
    runtime_library_dirs: List[str]
    define_macros: List[Tuple[str, Optional[str]]]
    extra_compile_args: List[str]
    extra_link_args: List[str]
    sources: List[str]


def _read_distutils_header(source: Path, text: str) -> _DistutilsInfo:
    """The `# distutils:` header comments, parsed by Cython's own reader."""
    from Cython.Build.Dependencies import DistutilsInfo

    values = DistutilsInfo(text).values

    def paths(key: str) -> List[str]:
        return [str((source.parent / item).resolve()) if not os.path.isabs(item) else item for item in values.get(key, [])]

    macros = []
    for item in values.get("define_macros", []):
        if isinstance(item, (tuple, list)):
            macros.append((item[0], item[1] if len(item) > 1 else None))
        else:
            key, _, val = str(item).partition("=")
            macros.append((key, val or None))
    language = str(values.get("language", "c")).lower()
    return _DistutilsInfo(
        cplus=language in ("c++", "cpp", "cxx"),
        include_dirs=paths("include_dirs"),
        library_dirs=paths("library_dirs"),
        libraries=list(values.get("libraries", [])),
        runtime_library_dirs=paths("runtime_library_dirs"),
        define_macros=macros,
        extra_compile_args=list(values.get("extra_compile_args", [])),
        extra_link_args=list(values.get("extra_link_args", [])),
        sources=paths("sources"),
    )


_NUMPY_CIMPORT = r"^\s*(cimport\s+numpy|from\s+numpy\s+cimport)\b"
_EXTERN_HEADER = r"""^\s*cdef\s+extern\s+from\s+["']([^"'*]+)["']"""


def _numpy_include(text: str) -> Optional[str]:
    import re

    if not re.search(_NUMPY_CIMPORT, text, re.M):
        return None
    try:
        import numpy
    except ImportError as error:
        raise CytoolError(
            "the module cimports numpy, but numpy is not installed in this Python",
            hint=f"{sys.executable} -m pip install numpy",
        ) from error
    return str(numpy.get_include())


def _run(argv: Sequence[str], cwd: Path, progress: "Progress") -> "subprocess.CompletedProcess":
    import subprocess

    progress.command(argv, cwd=str(cwd))
    return subprocess.run(list(argv), cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")


def _cython_argv(source: Path, name: str, out_c: Path, info: _DistutilsInfo, options: BuildOptions) -> List[str]:
    argv = [sys.executable, "-m", "cython", "--module-name", name, "-o", str(out_c), "-I", str(source.parent)]
    for inc in info.include_dirs:
        argv += ["-I", inc]
    if info.cplus:
        argv.append("--cplus")
    for directive in options.directives:
        argv += ["-X", directive]
    return argv


def _dependencies(source: Path, depfile: Path, include_dirs: Sequence[str], extra_sources: Sequence[str]) -> Dict[str, Optional[str]]:
    """Every file the build read: Cython's depfile (.pyx, .pxd, .pxi), the headers named in
    `cdef extern from` blocks (searched like the compiler does), and extra C sources."""
    import re

    files: List[Path] = [source]
    text = depfile.read_text(encoding="utf-8", errors="replace") if depfile.exists() else ""
    body = text.split(":", 1)[1] if ":" in text else ""
    for item in body.replace("\\\n", " ").split():
        path = Path(item)
        files.append(path if path.is_absolute() else (source.parent / path))
    search = [source.parent] + [Path(d) for d in include_dirs]
    for cython_file in list(files):
        try:
            content = cython_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for header in re.findall(_EXTERN_HEADER, content, re.M):
            for folder in [cython_file.parent] + search:
                candidate = folder / header
                if candidate.is_file():
                    files.append(candidate)
                    break
    files += [Path(s) for s in extra_sources]
    resolved = sorted({str(f.resolve()) for f in files})
    return {path: hash_file(Path(path)) for path in resolved}


def _build(
    cache: BuildCache,
    source: Path,
    name: str,
    options: BuildOptions,
    settings: _Settings,
    manifest_key: str,
    progress: "Progress",
) -> BuildResult:
    from cytool.diagnostics import compiler_failure, cython_failure

    text = source.read_text(encoding="utf-8", errors="replace")
    info = _read_distutils_header(source, text)
    numpy_include = _numpy_include(text)
    if numpy_include:
        info.include_dirs.append(numpy_include)
        info.define_macros.append(("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"))
    compiler = toolchain.find_compiler(info.cplus)

    work = cache.new_build_dir()
    try:
        c_name = f"{name}.cpp" if info.cplus else f"{name}.c"
        out_c = work / c_name
        progress.step(f"cythonizing {source.name}")
        argv = _cython_argv(source, name, out_c, info, options)
        argv += ["--line-directives", "--gdb-outdir", str(work), "-M", str(source)]
        done = _run(argv, source.parent, progress)
        if done.returncode != 0:
            raise cython_failure(source, done.stdout)

        dependencies = _dependencies(source, Path(f"{out_c}.dep"), info.include_dirs, info.sources)
        entry_key = hash_text(settings.key_text(), json.dumps(dependencies, sort_keys=True))
        with cache.locked(entry_key):
            final = cache.entry_dir(entry_key)
            if final.exists() and not options.force:
                cache.discard(work)
                cache.record(manifest_key, entry_key, dependencies)
                return _result(final, source, name, cached=True)

            module_file = f"{name}{toolchain.ext_suffix()}"
            progress.step(f"compiling {source.name} (-O{options.opt_level})")
            cc_argv = _compiler_argv(compiler, info, options, out_c, work / module_file, work, final, source)
            done = _run(cc_argv, source.parent, progress)
            if done.returncode != 0:
                raise compiler_failure(source, compiler.argv[0], done.stdout)
            if options.verbose and done.stdout.strip():
                print(done.stdout.rstrip(), file=sys.stderr)

            annotation = None
            if options.annotate:
                progress.step(f"annotating {source.name}")
                annotation = _annotate(source, name, info, options, work, progress)

            _retarget_debug_info(work, final, name)
            record = {
                "module_name": name,
                "module_file": module_file,
                "source": str(source),
                "c_file": c_name,
                "opt_level": options.opt_level,
                "annotation": annotation,
                "compiler": compiler.argv,
                "compile_command": cc_argv,
                "created": time.time(),
                "settings": settings.values,
                "dependencies": dependencies,
            }
            (work / "build.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
            if options.force and final.exists():
                _replace_entry(cache, final)
            cache.publish(work, entry_key)
            cache.record(manifest_key, entry_key, dependencies)
            return _result(final, source, name, cached=False)
    except BaseException:
        cache.discard(work)
        raise


def _compiler_argv(compiler, info: _DistutilsInfo, options: BuildOptions, c_file: Path, out: Path, work: Path, final: Path, source: Path) -> List[str]:
    argv = list(compiler.argv)
    argv += ["-shared", "-fPIC", "-g", "-fno-omit-frame-pointer", f"-O{options.opt_level}"]
    argv += ["-fwrapv", "-fno-strict-aliasing", "-Wno-unused-function", "-Wno-unused-variable"]
    argv.append(f"-fdebug-prefix-map={work}={final}")
    for inc in [str(source.parent)] + info.include_dirs + toolchain.python_include_dirs():
        argv.append(f"-I{inc}")
    for key, value in info.define_macros:
        argv.append(f"-D{key}" if value is None else f"-D{key}={value}")
    argv += info.extra_compile_args
    argv += [str(c_file)] + info.sources
    argv += ["-o", str(out)]
    for lib_dir in info.library_dirs:
        argv.append(f"-L{lib_dir}")
    for rpath in info.runtime_library_dirs:
        argv.append(f"-Wl,-rpath,{rpath}")
    argv += [f"-l{lib}" for lib in info.libraries]
    argv += info.extra_link_args
    tracer_dir = toolchain.tracer_library_dir() if options.link_tracer else None
    if tracer_dir is not None:
        argv += ["-Wl,--no-as-needed", f"-L{tracer_dir}", "-lcytrace", f"-Wl,-rpath,{tracer_dir}", "-Wl,--as-needed"]
    return argv


def _annotate(source: Path, name: str, info: _DistutilsInfo, options: BuildOptions, work: Path, progress: "Progress") -> str:
    """Cython's annotated HTML needs its own pass: annotation turns #line off."""
    folder = work / "annotate"
    folder.mkdir()
    out_c = folder / (f"{name}.cpp" if info.cplus else f"{name}.c")
    argv = _cython_argv(source, name, out_c, info, options) + ["--annotate", str(source)]
    done = _run(argv, source.parent, progress)
    if done.returncode != 0:
        from cytool.diagnostics import cython_failure

        raise cython_failure(source, done.stdout)
    out_c.unlink()
    return f"annotate/{name}.html"


def _retarget_debug_info(work: Path, final: Path, name: str) -> None:
    """The debug XML names the C file by its build path; point it at the published entry."""
    xml = work / "cython_debug" / f"cython_debug_info_{name}"
    if xml.exists():
        text = xml.read_text(encoding="utf-8")
        xml.write_text(text.replace(str(work), str(final)), encoding="utf-8")


def _replace_entry(cache: BuildCache, final: Path) -> None:
    """--force over an existing entry: move the old one aside (a process may still have
    its .so mapped; unlinked files stay valid for it), then delete it."""
    aside = cache.new_build_dir()
    os.rename(final, aside / "old")
    cache.discard(aside)
