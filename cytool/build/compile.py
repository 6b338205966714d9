"""The cold path of a module build: Cython, the C/C++ compiler, the load check, and the
publication of a cache entry.

Cython and the compiler run in the module's import root, on the source's path relative
to it (`pkg/mod.pyx`), so `#line` directives, DWARF and tracebacks name `pkg/mod.pyx`
as a setuptools build does. Each C/C++ source is compiled on its own with `-MMD` (the
compiler lists every header it read), then linked. The entry is published under a lock
held per module and settings: concurrent builders of one module wait and then find the
entry. A dependency whose mtime falls inside the build (saved while Cython or the
compiler ran) makes the build start again: an entry always holds what its recorded
files contain.
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

from cytool import toolchain
from cytool.build.depends import extern_header_dirs, normalise, project_cimports, read_makefile_rule
from cytool.build.options import BuildOptions
from cytool.cache import BuildCache, FileStamp, stamp_file
from cytool.errors import CytoolError
from cytool.project.resolve import ModuleTarget
from cytool.project.settings import BuildSettings, from_distutils_header

if TYPE_CHECKING:
    import subprocess

    from cytool.progress import Progress

MAX_ATTEMPTS = 3
CPLUS_SUFFIXES = (".cpp", ".cc", ".cxx", ".C")
_NUMPY_CIMPORT = r"^\s*(cimport\s+numpy|from\s+numpy\s+cimport)\b"


class _ChangedDuringBuild(Exception):
    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


def compile_module(
    cache: BuildCache,
    target: ModuleTarget,
    options: BuildOptions,
    values: Dict[str, str],
    manifest_key: str,
    progress: "Progress",
) -> Tuple[Path, Dict[str, object], bool]:
    """Build (or, after waiting for another builder, find) the entry; returns
    (entry folder, build record, found-in-cache)."""
    from cytool.build.module import REQUIRED_FILES

    with cache.locked(manifest_key):
        if not options.force:
            found = cache.lookup(manifest_key, REQUIRED_FILES)
            if found is not None:
                return cache.entry_dir(found[0]), found[1], True
        changed = ""
        for _ in range(MAX_ATTEMPTS):
            try:
                entry, record = _build(cache, target, options, values, manifest_key, progress)
                return entry, record, False
            except _ChangedDuringBuild as during:
                changed = during.path
                progress.step(f"{Path(changed).name} changed during the build; building again")
        raise CytoolError(
            f"{changed} kept changing while {target.location.source.name} was being built",
            hint="let the file settle (an editor or generator still writing it?) and run cytool again",
        )


def _run(argv: Sequence[str], cwd: Path, progress: "Progress") -> "subprocess.CompletedProcess":
    import subprocess

    progress.command(argv, cwd=str(cwd))
    return subprocess.run(
        list(argv), cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace", env=toolchain.tool_environment(),
    )


def module_settings(target: ModuleTarget, text: str) -> BuildSettings:
    """The target's settings over the source's own `# distutils:` comments, plus
    NumPy's headers when the module cimports numpy."""
    import re

    source = target.location.source
    settings = target.settings.merged_over(from_distutils_header(source, text))
    if re.search(_NUMPY_CIMPORT, text, re.M):
        try:
            import numpy
        except ImportError as error:
            raise CytoolError(
                "the module cimports numpy, but numpy is not installed in this Python",
                hint=f"{sys.executable} -m pip install numpy",
            ) from error
        settings = settings.merged_over(
            BuildSettings(
                include_dirs=(str(numpy.get_include()),),
                define_macros=(("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),),
            )
        )
    return settings


def cython_argv(target: ModuleTarget, settings: BuildSettings, out_c: Path) -> List[str]:
    location = target.location
    argv = [sys.executable, "-m", "cython", "--module-name", location.name, "-o", str(out_c)]
    for folder in [str(location.import_root)] + list(settings.cython_include_path) + list(settings.include_dirs):
        argv += ["-I", folder]
    # `from cytool.debug cimport breakpoint` (cytool/debug.pxd), also from an editable
    # install, whose package folder is not on sys.path; searched last
    argv += ["-I", str(Path(__file__).resolve().parent.parent.parent)]
    if settings.cplus:
        argv.append("--cplus")
    for name, value in settings.directives:
        argv += ["-X", f"{name}={value}"]
    return argv


def _build(
    cache: BuildCache,
    target: ModuleTarget,
    options: BuildOptions,
    values: Dict[str, str],
    manifest_key: str,
    progress: "Progress",
) -> Tuple[Path, Dict[str, object]]:
    from cytool.build.loadcheck import check_loadable
    from cytool.diagnostics import compiler_failure, cython_failure

    location = target.location
    source = location.source
    start_ns = time.time_ns()
    text = source.read_text(encoding="utf-8", errors="replace")
    settings = module_settings(target, text)
    compiler = toolchain.find_compiler(settings.cplus)
    entry_id = cache.new_entry_id()
    final = cache.entry_dir(entry_id)
    work = cache.new_build_dir()
    try:
        short = location.short_name
        c_name = f"{short}.cpp" if settings.cplus else f"{short}.c"
        out_c = work / c_name
        progress.step(f"cythonizing {location.relative_source}")
        argv = cython_argv(target, settings, out_c)
        argv += ["--line-directives", "--gdb-outdir", str(work), "-M", location.relative_source]
        done = _run(argv, location.import_root, progress)
        if done.returncode != 0:
            raise cython_failure(source, done.stdout, target=target, settings=settings, work=work)
        cython_deps = read_makefile_rule(Path(f"{out_c}.dep"), location.import_root)
        Path(f"{out_c}.dep").unlink()
        extern_dirs = tuple(d for d in extern_header_dirs(cython_deps) if d not in settings.include_dirs)
        if extern_dirs:
            settings = settings._replace(include_dirs=settings.include_dirs + extern_dirs)

        module_file = f"{short}{toolchain.ext_suffix()}"
        progress.step(f"compiling {location.relative_source} (-O{options.opt_level})")
        objects, header_deps, commands = _compile_sources(compiler, settings, options, out_c, work, final, target, progress)
        link = _link_argv(compiler, settings, options, objects, work / module_file)
        done = _run(link, location.import_root, progress)
        if done.returncode != 0:
            raise compiler_failure(source, compiler.argv[0], done.stdout, target=target, settings=settings)
        for obj in objects:
            obj.unlink()

        deps = normalise(list(cython_deps) + header_deps + [Path(s) for s in settings.sources]
                         + [Path(o) for o in settings.extra_objects] + [source])
        stamps: Dict[str, FileStamp] = {dep: stamp_file(Path(dep)) for dep in deps}
        _check_unchanged(stamps, start_ns)

        check_loadable(work / module_file, source, [source.parent, location.project_dir], settings.libraries)

        annotation = None
        if options.annotate:
            progress.step(f"annotating {location.relative_source}")
            annotation = _annotate(target, settings, work, progress)

        debug_file = f"cython_debug/cython_debug_info_{location.name}"
        _retarget_debug_info(work / debug_file, work, final)
        record: Dict[str, object] = {
            "module_name": location.name,
            "module_file": module_file,
            "debug_file": debug_file,
            "source": str(source),
            "import_root": str(location.import_root),
            "c_file": c_name,
            "opt_level": options.opt_level,
            "annotation": annotation,
            "cimports": [[name, str(path)] for name, path in project_cimports(cython_deps, location)],
            "compiler": compiler.argv,
            "compile_commands": commands,
            "link_command": link,
            "settings": settings.to_json(),
            "created": time.time(),
            "dependencies": stamps,
        }
        record["files"] = cache.stamp_entry_files(work)
        (work / "build.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        cache.publish(work, entry_id)
    except BaseException:
        cache.discard(work)
        raise
    for superseded in cache.record(manifest_key, entry_id, stamps):
        cache.remove_entry(superseded)
    from cytool.module_index import record_module

    record_module(
        final / module_file,
        location.name,
        c_file=final / c_name,
        debug_info=final / debug_file,
        sources={path: stamp[0] for path, stamp in stamps.items() if Path(path).suffix in (".pyx", ".pxd", ".pxi")},
        opt_level=options.opt_level,
        built_by="cytool build",
        cache=cache,
    )
    return final, record


def _check_unchanged(stamps: Dict[str, FileStamp], start_ns: int) -> None:
    """_ChangedDuringBuild if a dependency was modified after the build started (its
    mtime lies between the start and now; a future mtime, from a skewed clock or an
    archive, is not evidence)."""
    now = time.time_ns()
    for path, stamp in stamps.items():
        mtime = stamp[2]
        if isinstance(mtime, int) and start_ns <= mtime <= now:
            raise _ChangedDuringBuild(path)


def _compile_sources(
    compiler: toolchain.Compiler,
    settings: BuildSettings,
    options: BuildOptions,
    main_c: Path,
    work: Path,
    final: Path,
    target: ModuleTarget,
    progress: "Progress",
) -> Tuple[List[Path], List[Path], List[List[str]]]:
    """Compile the Cython output and every extra source to objects, each with its own
    dependency file; returns (objects, headers read, commands)."""
    from cytool.diagnostics import compiler_failure

    sources = [main_c] + [Path(s) for s in settings.sources]
    jobs = []
    for index, c_source in enumerate(sources):
        cplus = settings.cplus if index == 0 else c_source.suffix in CPLUS_SUFFIXES
        chosen = compiler if cplus == settings.cplus else toolchain.find_compiler(cplus)
        obj = work / f"obj{index}.o"
        depfile = work / f"obj{index}.d"
        argv = list(chosen.argv) + ["-c", str(c_source), "-o", str(obj), "-MMD", "-MF", str(depfile)]
        argv += _compile_flags(settings, options, work, final, target, cplus)
        jobs.append((argv, obj, depfile, c_source))

    def run(job):
        return _run(job[0], target.location.import_root, progress)

    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, jobs))
    headers: List[Path] = []
    for (argv, obj, depfile, c_source), done in zip(jobs, results):
        if done.returncode != 0:
            raise compiler_failure(target.location.source, argv[0], done.stdout, target=target, settings=settings,
                                   failed_source=c_source if c_source != main_c else None)
        if options.verbose and done.stdout.strip():
            print(done.stdout.rstrip(), file=sys.stderr)
        headers += [h for h in read_makefile_rule(depfile, target.location.import_root) if h != c_source and h != main_c]
        depfile.unlink()
    return [job[1] for job in jobs], headers, [job[0] for job in jobs]


def _compile_flags(
    settings: BuildSettings, options: BuildOptions, work: Path, final: Path, target: ModuleTarget, cplus: bool
) -> List[str]:
    flags = ["-fPIC", "-g", "-fno-omit-frame-pointer", f"-O{options.opt_level}"]
    flags += ["-fwrapv", "-fno-strict-aliasing", "-Wno-unused-function", "-Wno-unused-variable"]
    flags.append(f"-fdebug-prefix-map={work}={final}")
    flags += toolchain.flags_from_environment("CPPFLAGS")
    flags += toolchain.flags_from_environment("CXXFLAGS" if cplus else "CFLAGS")
    for folder in [str(target.location.source.parent)] + list(settings.include_dirs):
        flags.append(f"-I{folder}")
    for folder in toolchain.python_include_dirs():
        flags += ["-isystem", folder]
    for name, value in settings.define_macros:
        flags.append(f"-D{name}" if value is None else f"-D{name}={value}")
    for name in settings.undef_macros:
        flags.append(f"-U{name}")
    flags += list(settings.compile_args)
    return flags


def _link_argv(
    compiler: toolchain.Compiler, settings: BuildSettings, options: BuildOptions, objects: Sequence[Path], out: Path
) -> List[str]:
    linker = compiler if settings.cplus or not any(Path(s).suffix in CPLUS_SUFFIXES for s in settings.sources) else toolchain.find_compiler(True)
    argv = list(linker.argv) + ["-shared", "-g"] + [str(o) for o in objects] + list(settings.extra_objects)
    argv += ["-o", str(out)]
    argv += toolchain.flags_from_environment("LDFLAGS")
    for folder in settings.library_dirs:
        argv.append(f"-L{folder}")
    for folder in settings.runtime_library_dirs:
        argv.append(f"-Wl,-rpath,{folder}")
    argv += [f"-l{lib}" for lib in settings.libraries]
    argv += list(settings.link_args)
    tracer_dir = toolchain.tracer_library_dir() if options.link_tracer else None
    if tracer_dir is not None:
        argv += ["-Wl,--no-as-needed", f"-L{tracer_dir}", "-lcytrace", f"-Wl,-rpath,{tracer_dir}", "-Wl,--as-needed"]
    return argv


def _annotate(target: ModuleTarget, settings: BuildSettings, work: Path, progress: "Progress") -> str:
    """Cython's annotated HTML needs its own pass: annotation turns #line off."""
    from cytool.diagnostics import cython_failure

    folder = work / "annotate"
    folder.mkdir()
    short = target.location.short_name
    out_c = folder / (f"{short}.cpp" if settings.cplus else f"{short}.c")
    argv = cython_argv(target, settings, out_c) + ["--annotate", target.location.relative_source]
    done = _run(argv, target.location.import_root, progress)
    if done.returncode != 0:
        raise cython_failure(target.location.source, done.stdout, target=target, settings=settings, work=work)
    out_c.unlink()
    return f"annotate/{short}.html"


def _retarget_debug_info(xml: Path, work: Path, final: Path) -> None:
    """The debug XML names the C file by its build path; point it at the published entry."""
    if xml.exists():
        text = xml.read_text(encoding="utf-8")
        xml.write_text(text.replace(str(work), str(final)), encoding="utf-8")
