"""cytool build: real Cython, a real compiler, the content-addressed cache."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cytool.build import BuildOptions, build_module
from cytool.errors import CytoolError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A module that cimports a sibling .pxd, includes a .pxi and uses a C header."""
    write(tmp_path / "helper.pxd", """
        cdef inline int twice(int x):
            return 2 * x
        """)
    write(tmp_path / "consts.pxi", "OFFSET = 5\n")
    write(tmp_path / "scale.h", "#define SCALE 10\n")
    write(tmp_path / "mod.pyx", """
        cimport helper
        include "consts.pxi"
        cdef extern from "scale.h":
            int SCALE

        def work(int x):
            return helper.twice(x) * SCALE + OFFSET
        """)
    return tmp_path


def test_build_emits_module_with_pyx_line_info(project: Path, fresh_cache: Path) -> None:
    result = build_module(project / "mod.pyx")
    assert result.module_path.is_file() and result.module_name == "mod"
    assert not result.cached
    c_text = result.c_file.read_text()
    assert '#line 7 "mod.pyx"' in c_text or '#line 8 "mod.pyx"' in c_text
    assert result.debug_info.is_file()
    assert 'module_name="mod"' in result.debug_info.read_text()
    # DWARF line table points at the .pyx file, not the generated C
    lines = subprocess.run(["readelf", "--debug-dump=line", str(result.module_path)], capture_output=True, text=True).stdout
    assert "mod.pyx" in lines
    # the debug XML names the published C file, not the temporary build directory
    assert str(result.build_dir) in result.debug_info.read_text()
    # and the module works
    sys.path.insert(0, str(result.module_path.parent))
    try:
        import importlib.util

        spec = importlib.util.spec_from_file_location("mod", result.module_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.work(3) == 65
    finally:
        sys.path.remove(str(result.module_path.parent))


def test_cache_dir_is_private(project: Path, fresh_cache: Path) -> None:
    build_module(project / "mod.pyx")
    assert stat.S_IMODE(fresh_cache.stat().st_mode) == 0o700


def test_cache_hit_does_not_rebuild(project: Path, fresh_cache: Path) -> None:
    first = build_module(project / "mod.pyx")
    mtime = first.module_path.stat().st_mtime_ns
    second = build_module(project / "mod.pyx")
    assert second.cached
    assert second.module_path == first.module_path
    assert second.module_path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("changed", ["mod.pyx", "helper.pxd", "consts.pxi", "scale.h"])
def test_change_to_any_dependency_rebuilds(project: Path, fresh_cache: Path, changed: str) -> None:
    first = build_module(project / "mod.pyx")
    path = project / changed
    original = path.read_text()
    path.write_text(original + ("\n# edited\n" if not changed.endswith(".h") else "\n/* edited */\n"))
    second = build_module(project / "mod.pyx")
    assert not second.cached
    assert second.build_dir != first.build_dir
    # reverting finds the earlier entry again, without compiling
    path.write_text(original)
    third = build_module(project / "mod.pyx")
    assert third.cached and third.build_dir == first.build_dir


def test_settings_are_part_of_the_key(project: Path, fresh_cache: Path) -> None:
    base = build_module(project / "mod.pyx")
    directive = build_module(project / "mod.pyx", BuildOptions(directives=("boundscheck=False",)))
    level = build_module(project / "mod.pyx", BuildOptions(opt_level="0"))
    assert len({base.build_dir, directive.build_dir, level.build_dir}) == 3
    assert not directive.cached and not level.cached
    assert build_module(project / "mod.pyx", BuildOptions(opt_level="0")).cached


def test_force_rebuilds(project: Path, fresh_cache: Path) -> None:
    build_module(project / "mod.pyx")
    again = build_module(project / "mod.pyx", BuildOptions(force=True))
    assert not again.cached and again.module_path.is_file()


def test_concurrent_builds_of_one_module(project: Path, fresh_cache: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from cytool.build import build_module
        result = build_module(Path({str(project / 'mod.pyx')!r}))
        import importlib.util
        spec = importlib.util.spec_from_file_location("mod", result.module_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(result.module_path, module.work(1))
        """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    paths = {out.split()[0] for out, _ in outputs}
    assert len(paths) == 1
    assert all(out.split()[1] == "25" for out, _ in outputs)
    entries = list((fresh_cache / "entries").iterdir())
    assert len(entries) == 1
    assert list((fresh_cache / "tmp").iterdir()) == []


def test_distutils_header_cplusplus_and_libraries(tmp_path: Path) -> None:
    source = write(tmp_path / "vec.pyx", """
        # distutils: language = c++
        # distutils: libraries = m
        from libcpp.vector cimport vector
        from libc.math cimport sqrt

        def roots(int n):
            cdef vector[double] v
            for i in range(n):
                v.push_back(sqrt(i))
            return list(v)
        """)
    result = build_module(source)
    assert result.c_file.name == "vec.cpp" or (result.build_dir / "vec.cpp").exists()
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(result.module_path.parent)!r}); import vec; print(vec.roots(5))"],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0.0, 1.0, 1.4142135623730951, 1.7320508075688772, 2.0]"


def test_distutils_include_dirs(tmp_path: Path) -> None:
    write(tmp_path / "inc" / "answer.h", "#define ANSWER 42\n")
    source = write(tmp_path / "ans.pyx", """
        # distutils: include_dirs = inc
        cdef extern from "answer.h":
            int ANSWER
        def answer():
            return ANSWER
        """)
    first = build_module(source)
    (tmp_path / "inc" / "answer.h").write_text("#define ANSWER 43\n")
    second = build_module(source)
    assert not second.cached and second.build_dir != first.build_dir


def test_numpy_cimport_gets_numpy_headers(tmp_path: Path) -> None:
    numpy = pytest.importorskip("numpy")
    source = write(tmp_path / "npmod.pyx", """
        cimport numpy as cnp
        import numpy as np
        cnp.import_array()
        def total(cnp.ndarray[cnp.float64_t, ndim=1] a):
            cdef double s = 0
            for i in range(a.shape[0]):
                s += a[i]
            return s
        """)
    result = build_module(source)
    assert f"-I{numpy.get_include()}" in json.loads((result.build_dir / "build.json").read_text())["compile_commands"][0]
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(result.module_path.parent)!r}); import numpy, npmod; print(npmod.total(numpy.arange(5.0)))"],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "10.0"


def test_cli_build_prints_path_and_copies(project: Path, tmp_path: Path, run_cytool) -> None:
    out_dir = tmp_path / "out"
    done = run_cytool("build", project / "mod.pyx", "-o", out_dir, "--annotate")
    assert done.returncode == 0, done.stderr
    printed = Path(done.stdout.strip())
    assert printed.parent == out_dir and printed.is_file()
    assert (out_dir / "cython_debug" / "cython_debug_info_mod").is_file()
    html = (out_dir / "mod.html").read_text()
    assert "Generated by Cython" in html
    again = run_cytool("build", project / "mod.pyx", "--annotate")
    assert "cached" in again.stderr


def test_cli_verbose_shows_commands(project: Path, fresh_cache: Path, run_cytool) -> None:
    done = run_cytool("build", "-v", project / "mod.pyx")
    assert done.returncode == 0, done.stderr
    assert "--line-directives" in done.stderr
    assert "-fno-omit-frame-pointer" in done.stderr


# -- bad input ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path, run_cytool) -> None:
    done = run_cytool("build", tmp_path / "absent.pyx")
    assert done.returncode != 0
    assert "absent.pyx: no such file" in done.stderr
    assert "Traceback" not in done.stderr


def test_not_a_pyx(tmp_path: Path, run_cytool) -> None:
    other = write(tmp_path / "script.py", "print(1)\n")
    done = run_cytool("build", other)
    assert done.returncode != 0
    assert "not a .pyx file" in done.stderr


def test_cython_syntax_error(tmp_path: Path, run_cytool) -> None:
    source = write(tmp_path / "broken.pyx", """
        def fine():
            return 1

        def broken(x)
            return x
        """)
    done = run_cytool("build", source)
    assert done.returncode != 0
    assert "broken.pyx:5:13" in done.stderr
    assert "def broken(x)" in done.stderr  # the source line itself
    assert done.stderr.count("broken.pyx:5:13") == 1  # said once, in the message (not again after the excerpt)
    assert "Traceback" not in done.stderr


def test_c_compiler_error_shows_first_errors_only(tmp_path: Path, run_cytool) -> None:
    body = "\n".join(f"    static int f{i}(void) {{ return undefined_{i}; }}" for i in range(30))
    source = tmp_path / "badc.pyx"
    source.write_text(f'cdef extern from *:\n    """\n{body}\n    """\n    int f0()\nprint(f0())\n')
    done = run_cytool("build", source)
    assert done.returncode != 0
    assert "C compiler" in done.stderr and "undefined_0" in done.stderr
    assert "more errors not shown" in done.stderr
    assert len(done.stderr.splitlines()) < 30
    assert "Traceback" not in done.stderr


def test_no_c_compiler(project: Path, fresh_cache: Path, run_cytool) -> None:
    done = run_cytool("build", project / "mod.pyx", env={"CC": "/nonexistent/bin/gcc"})
    assert done.returncode != 0
    assert "no C compiler found" in done.stderr and "/nonexistent/bin/gcc" in done.stderr


def test_unknown_option(project: Path, run_cytool) -> None:
    done = run_cytool("build", "--no-such-option", project / "mod.pyx")
    assert done.returncode == 2
    assert "unrecognized arguments: --no-such-option" in done.stderr


def test_failed_build_leaves_nothing_behind(tmp_path: Path, fresh_cache: Path) -> None:
    source = write(tmp_path / "broken.pyx", "def f(:\n  pass\n")
    with pytest.raises(CytoolError):
        build_module(source)
    assert list((fresh_cache / "tmp").iterdir()) == []
    assert source.read_text() == "def f(:\n  pass\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pyx", "cache"]


def test_unusable_cache_dir(project: Path, tmp_path: Path, run_cytool) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    done = run_cytool("build", project / "mod.pyx", env={"CYTOOL_CACHE_DIR": str(blocker / "cache")})
    assert done.returncode != 0
    assert f"cannot use the build cache at {blocker / 'cache'}" in done.stderr
    assert "CYTOOL_CACHE_DIR" in done.stderr and "Traceback" not in done.stderr
    assert blocker.read_text() == "not a directory\n"


def test_cimport_found_through_pythonpath_is_part_of_the_cache_key(tmp_path: Path, run_cytool) -> None:
    """A cimported package's .pxd found on PYTHONPATH (as Cython looks on sys.path): built
    again without that PYTHONPATH, the module is not taken from the cache (the .pxd found
    before is unchanged, but Cython would not find it now): it fails, and the hint says
    which declaration file is missing and how to make it found."""
    dep = tmp_path / "deps" / "ringbuf"
    dep.mkdir(parents=True)
    (dep / "__init__.pxd").write_text("")
    (dep / "__init__.py").write_text("")
    (dep / "ring.pxd").write_text("cdef inline int capacity():\n    return 64\n")
    source = write(tmp_path / "user.pyx", """
        from ringbuf.ring cimport capacity

        def size():
            return capacity()
        """)
    found = run_cytool("build", source, env={"PYTHONPATH": str(tmp_path / "deps")})
    assert found.returncode == 0, found.stderr
    lost = run_cytool("build", source, env={"PYTHONPATH": ""})
    assert lost.returncode == 1, lost.stderr
    assert "'ringbuf/ring.pxd' not found" in lost.stderr, lost.stderr
    assert "install the package that provides ringbuf/ring.pxd (often `pip install ringbuf`)" in lost.stderr
    assert "Traceback" not in lost.stderr
