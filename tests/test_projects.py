"""Cython where it lives: package modules, cross-module cimports, settings from setup.py,
[tool.cytool] and the command line, headers tracked by the compiler's own dependency
output, modules that link but cannot load. Real Cython, a real compiler, real projects
(fixtures under tests/fixtures/projects, copied to a temporary folder per test)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "projects"


@pytest.fixture
def project(tmp_path: Path):
    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(FIXTURES / name, target)
        return target

    return copy


def python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def lines(text: str) -> list:
    return [line for line in text.splitlines() if line.strip()]


# -- packages ------------------------------------------------------------------------


def test_package_module_runs_as_main_with_its_package(project, run_cytool) -> None:
    root = project("crossref")
    done = run_cytool("run", "shapes/geo/square.pyx", "--", "a", "b", cwd=root)
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == [
        "data: beside the module",  # __file__ is the .pyx: data files beside it are found
        "name: __main__ file: square.pyx argv: ['a', 'b']",
        "area: 9.0 unit: cm class: shapes.geo.square.Square",  # relative import of units.py
        "pluck: [1, 3, -1] twice: 42",  # cimport of shapes.base (cpdef with a default), relative cimport
    ]


def test_module_the_package_imports_runs_from_a_copy(project, run_cytool) -> None:
    root = project("crossref")
    done = run_cytool("run", "shapes/point.pyx", cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "main point: 1 package point is another copy: True"


def test_build_into_the_package_imports_with_one_abi_and_pickles(project, run_cytool) -> None:
    root = project("crossref")
    for out, source in (("shapes", "shapes/base.pyx"), ("shapes", "shapes/point.pyx"), ("shapes/geo", "shapes/geo/square.pyx")):
        done = run_cytool("build", "-o", out, source, cwd=root)
        assert done.returncode == 0, done.stderr
    check = python(
        "import pickle, shapes, shapes.geo.square as m\n"
        "sq = m.Square(2)\n"
        "print(type(sq).__module__, type(shapes.Point(1, 2)).__module__, m.first_column([(5,), (6,)]), sq.area())\n"
        "open('p.pkl', 'wb').write(pickle.dumps((shapes.Point(4, 5), sq)))\n",
        root,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "shapes.geo.square shapes.point [5, 6] 4.0"
    again = python("import pickle; p, sq = pickle.load(open('p.pkl', 'rb')); print(p.x, p.y, sq.side, sq.label)", root)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "4 5 2.0 square"


def test_cimported_project_modules_are_built_too(project, run_cytool) -> None:
    root = project("crossref")
    done = run_cytool("build", "shapes/geo/square.pyx", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "built shapes.geo.square (shapes/geo/square.pyx)" in done.stderr
    assert "shapes.base, cimported" in done.stderr
    inplace = run_cytool("build", "--inplace", "shapes/geo/square.pyx", "shapes/point.pyx", cwd=root)
    assert inplace.returncode == 0, inplace.stderr
    assert list((root / "shapes" / "geo").glob("square.*.so")) and list((root / "shapes").glob("base.*.so"))
    check = python("import shapes.geo.square as m; print(m.doubled(4), m.Square(1).label)", root)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "8 square"


def test_debug_info_and_line_directives_name_the_package_path(project, fresh_cache) -> None:
    from cytool.build import build_module

    root = project("crossref")
    result = build_module(root / "shapes" / "geo" / "square.pyx")
    assert result.module_name == "shapes.geo.square"
    assert result.import_root == root
    assert result.debug_info.name == "cython_debug_info_shapes.geo.square" and result.debug_info.is_file()
    assert '#line 10 "shapes/geo/square.pyx"' in result.c_file.read_text()
    assert [name for name, _ in result.cimports] == ["shapes.base"]


def test_module_name_option(tmp_path: Path, run_cytool) -> None:
    (tmp_path / "impl_v2.pyx").write_text("def where():\n    return __name__\n")
    done = run_cytool("build", "--module-name", "fastlib.impl", "-o", tmp_path / "fastlib", tmp_path / "impl_v2.pyx", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (tmp_path / "fastlib" / "__init__.py").write_text("")
    check = python("import fastlib.impl as m; print(m.where())", tmp_path)
    assert check.stdout.strip() == "fastlib.impl", check.stderr
    bad = run_cytool("build", "--module-name", "2bad.name", tmp_path / "impl_v2.pyx")
    assert bad.returncode == 2 and "not a valid Python module name" in bad.stderr


# -- settings: setup.py, [tool.cytool], the command line -----------------------------


def test_setup_py_settings_are_used(project, run_cytool) -> None:
    root = project("setupproj")
    done = run_cytool("run", "sp/fast.pyx", cwd=root)  # include_dirs, extra source, macro, library
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "scaled: 7.0 macro: 3"
    cpp = run_cytool("run", "sp/vec.pyx", cwd=root)  # language="c++" from setup.py
    assert cpp.returncode == 0, cpp.stderr
    assert cpp.stdout.strip() == "count: 5 colour: 2"
    # nothing was written into the project by reading its setup.py
    assert not list(root.rglob("*.c")) or sorted(p.name for p in root.rglob("*.c")) == ["helper.c"]
    assert not (root / "build").exists()


def test_every_header_and_extra_source_is_tracked(project, run_cytool) -> None:
    root = project("setupproj")
    assert run_cytool("run", "sp/fast.pyx", cwd=root).stdout.strip() == "scaled: 7.0 macro: 3"
    inner = root / "include" / "inner.h"  # included by helper.h, which the .pyx names
    inner.write_text("#define OFFSET 2\n")
    assert run_cytool("run", "sp/fast.pyx", cwd=root).stdout.strip() == "scaled: 8.0 macro: 3"
    helper = root / "csrc" / "helper.c"  # an extra source from setup.py
    original = helper.read_text()
    helper.write_text(original.replace("SCALE * cbrt", "10 * SCALE * cbrt"))
    assert run_cytool("run", "sp/fast.pyx", cwd=root).stdout.strip() == "scaled: 62.0 macro: 3"
    helper.write_text(original)
    inner.write_text("#define OFFSET 1\n")
    back = run_cytool("run", "-v", "sp/fast.pyx", cwd=root)
    assert back.stdout.strip() == "scaled: 7.0 macro: 3"
    assert "cythonizing" not in back.stderr  # reverting finds the first build again


def test_transitive_header_found_through_cpath_is_tracked(tmp_path: Path, run_cytool) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "defs.h").write_text("#define ANSWER 41\n")
    (tmp_path / "pkg" / "wrap.h").write_text('#include "pkg/defs.h"\nstatic int answer(void) { return ANSWER; }\n')
    (tmp_path / "pkg" / "mod.pyx").write_text('cdef extern from "wrap.h":\n    int answer()\n\nprint(answer())\n')
    plain = run_cytool("run", "pkg/mod.pyx", cwd=tmp_path)
    assert plain.returncode == 1
    assert f"add -I {tmp_path}" in plain.stderr  # the hint names the folder that provides the header
    assert run_cytool("run", "-I", ".", "pkg/mod.pyx", cwd=tmp_path).stdout.strip() == "41"
    assert run_cytool("run", "pkg/mod.pyx", cwd=tmp_path, env={"CPATH": str(tmp_path)}).stdout.strip() == "41"
    (tmp_path / "pkg" / "defs.h").write_text("#define ANSWER 42\n")
    assert run_cytool("run", "pkg/mod.pyx", cwd=tmp_path, env={"CPATH": str(tmp_path)}).stdout.strip() == "42"
    assert run_cytool("run", "-I", ".", "pkg/mod.pyx", cwd=tmp_path).stdout.strip() == "42"


def test_precedence_cli_pyproject_setup_py_distutils(project, run_cytool) -> None:
    root = project("tomlproj")
    assert run_cytool("run", "tp/level.pyx", cwd=root).stdout.strip() == "level: 2 setup: 7 header: 5"
    assert run_cytool("run", "-D", "LEVEL=3", "tp/level.pyx", cwd=root).stdout.strip() == "level: 3 setup: 7 header: 5"
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('define-macros = ["LEVEL=2"]\n', ""))
    assert run_cytool("run", "tp/level.pyx", cwd=root).stdout.strip() == "level: 1 setup: 7 header: 5"
    assert run_cytool("run", "--no-setup-py", "tp/level.pyx", cwd=root).stdout.strip() == "level: 0 setup: -1 header: 5"
    (root / "setup.py").unlink()
    assert run_cytool("run", "tp/level.pyx", cwd=root).stdout.strip() == "level: 0 setup: -1 header: 5"


def test_pyproject_per_module_table(project, run_cytool) -> None:
    root = project("tomlproj")
    done = run_cytool("run", "tp/cppmod.pyx", cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "c++ from pyproject"


def test_pyproject_errors_name_the_file_and_key(project, run_cytool) -> None:
    root = project("tomlproj")
    (root / "pyproject.toml").write_text("[tool.cytool]\ninclude-dir = ['x']\n")
    done = run_cytool("build", "tp/level.pyx", cwd=root)
    assert done.returncode == 2
    assert "pyproject.toml: [tool.cytool]: unknown key 'include-dir'" in done.stderr and "include-dirs" in done.stderr
    (root / "pyproject.toml").write_text("[tool.cytool\n")
    done = run_cytool("build", "tp/level.pyx", cwd=root)
    assert done.returncode == 2 and "not valid TOML" in done.stderr and "Traceback" not in done.stderr


def test_failing_setup_py_is_a_warning(project, run_cytool) -> None:
    root = project("tomlproj")
    (root / "setup.py").write_text("raise RuntimeError('needs a tool we do not have')\n")
    done = run_cytool("run", "tp/level.pyx", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "setup.py failed to run" in done.stderr and "needs a tool we do not have" in done.stderr
    assert done.stdout.strip() == "level: 2 setup: -1 header: 5"


def test_command_line_settings(tmp_path: Path, run_cytool) -> None:
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "calc.h").write_text("int calc(int x);\n")
    (tmp_path / "csrc").mkdir()
    (tmp_path / "csrc" / "calc.c").write_text("#include <math.h>\nint calc(int x) { return (int) pow(x, 2) + BONUS; }\n")
    (tmp_path / "use.pyx").write_text('cdef extern from "calc.h":\n    int calc(int x)\n\nprint(calc(3))\n')
    done = run_cytool("run", "-I", "inc", "--source", "csrc/calc.c", "-D", "BONUS=100", "-l", "m",
                      "--compile-arg=-Wall", "--link-arg=-Wl,--as-needed", "use.pyx", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "109"


def test_cplus_needed_is_said(tmp_path: Path, run_cytool) -> None:
    (tmp_path / "vec.pyx").write_text("from libcpp.vector cimport vector\ncdef vector[int] v\nv.push_back(3)\nprint(v.size())\n")
    (tmp_path / "enumclass.pyx").write_text("cpdef enum class Kind:\n    A = 1\n    B = 2\nprint(int(Kind.B))\n")
    for name in ("vec.pyx", "enumclass.pyx"):
        done = run_cytool("build", name, cwd=tmp_path)
        assert done.returncode == 1
        assert "this module needs C++: build it with --cplus" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert run_cytool("run", "--cplus", "vec.pyx", cwd=tmp_path).stdout.strip() == "1"
    assert run_cytool("run", "--cplus", "enumclass.pyx", cwd=tmp_path).stdout.strip() == "2"


def test_undefined_symbol_is_a_build_error(tmp_path: Path, run_cytool) -> None:
    (tmp_path / "hashlib_.h").write_text("unsigned int my_hash(const char *s);\n")
    (tmp_path / "hashlib_.c").write_text(
        "unsigned int my_hash(const char *s) { unsigned int h = 5381; while (*s) h = h * 33 + (unsigned char)*s++; return h; }\n")
    (tmp_path / "uses_c.pyx").write_text('cdef extern from "hashlib_.h":\n    unsigned int my_hash(const char *s)\n\nprint(my_hash(b"abc"))\n')
    done = run_cytool("build", "uses_c.pyx", cwd=tmp_path)
    assert done.returncode == 1
    assert "uses_c.pyx was built but cannot be loaded: undefined symbol my_hash" in done.stderr
    assert "my_hash is defined in hashlib_.c: add it with --source hashlib_.c" in done.stderr
    assert "--force" not in done.stderr
    cache = Path(os.environ["CYTOOL_CACHE_DIR"])
    assert not any(p.name == "build.json" and "uses_c" in p.read_text() for p in (cache / "entries").rglob("build.json"))
    ok = run_cytool("run", "--source", "hashlib_.c", "uses_c.pyx", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "193485963"


def test_bad_directive_is_a_usage_error(tmp_path: Path, run_cytool) -> None:
    (tmp_path / "ok.pyx").write_text("print('ok')\n")
    unknown = run_cytool("run", "-X", "nosuchdirective=1", "ok.pyx", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "-X nosuchdirective=1" in unknown.stderr and "Traceback" not in unknown.stderr and "fix ok.pyx" not in unknown.stderr
    novalue = run_cytool("run", "-X", "boundscheck", "ok.pyx", cwd=tmp_path)
    assert novalue.returncode == 2 and "-X boundscheck: expected NAME=VALUE" in novalue.stderr


# -- entry points --------------------------------------------------------------------


def test_script_imports_a_pyx_beside_it(project, run_cytool) -> None:
    root = project("scripted")
    done = run_cytool("run", "main.py", "4", "3", cwd=root)
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == "triple: 12 argv: ['main.py', '4', '3']"
    module = run_cytool("run", "-m", "main", "2", cwd=root)
    assert module.returncode == 0, module.stderr
    assert module.stdout.strip().startswith("triple: 6 argv: [")
    code = run_cytool("run", "-c", "import sys, fastmath; print(fastmath.triple(5), sys.argv)", "x", cwd=root)
    assert code.returncode == 0, code.stderr
    assert code.stdout.strip() == "15 ['-c', 'x']"


def test_script_traceback_names_pyx_lines(tmp_path: Path, run_cytool) -> None:
    (tmp_path / "fails.pyx").write_text("def explode(x):\n    return 1 // x\n")
    (tmp_path / "go.py").write_text("import fails\n\nfails.explode(0)\n")
    done = run_cytool("run", "go.py", cwd=tmp_path)
    assert done.returncode == 1
    assert 'File "fails.pyx", line 2, in fails.explode' in done.stderr
    assert "return 1 // x" in done.stderr and "ZeroDivisionError" in done.stderr
    assert "cytool/" not in done.stderr


def test_no_program_given(run_cytool) -> None:
    done = run_cytool("run")
    assert done.returncode == 2 and "give exactly one program" in done.stderr
    done = run_cytool("run", "missing.py")
    assert done.returncode == 2 and "missing.py: no such file" in done.stderr


@pytest.mark.parametrize("name", ["json", "pathlib", "threading", "rich"])
def test_module_named_like_the_standard_library_or_a_dependency(tmp_path: Path, run_cytool, name: str) -> None:
    """A json.pyx runs as `python json.py` would, and cytool keeps the real json for itself."""
    (tmp_path / f"{name}.pyx").write_text("print('hello')\n")
    ran = run_cytool("run", f"{name}.pyx", cwd=tmp_path)
    assert ran.returncode == 0 and ran.stdout.strip() == "hello", ran.stderr
    assert "Traceback" not in ran.stderr and "Exception ignored" not in ran.stderr
    profiled = run_cytool("profile", f"{name}.pyx", "-o", "x.cytrace", cwd=tmp_path)
    assert profiled.returncode == 0, profiled.stderr
    assert "hello" in profiled.stdout and "allocated" in profiled.stdout and "Traceback" not in profiled.stderr


@pytest.mark.parametrize("where", ["afile", "/dev/null", "/proc/out"])
def test_build_output_folder_that_cannot_be(tmp_path: Path, run_cytool, where: str) -> None:
    (tmp_path / "rom.pyx").write_text("x = 1\n")
    (tmp_path / "afile").write_text("mine\n")
    done = run_cytool("build", "rom.pyx", "-o", where, cwd=tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 2 and "Traceback" not in done.stderr  # the error and a hint
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_import_hook_follows_the_path_order(tmp_path: Path, run_cytool) -> None:
    """The first folder on sys.path that holds the module decides, as without the hook;
    within one folder the .pyx wins over a module compiled from an older version of it."""
    (tmp_path / "opt.pyx").write_text("VERSION = 'v1'\n")
    assert run_cytool("build", "--inplace", "opt.pyx", cwd=tmp_path).returncode == 0
    (tmp_path / "opt.pyx").write_text("VERSION = 'v2'\n")
    (tmp_path / "driver.pyx").write_text("import opt\nprint(opt.VERSION, opt.__file__.endswith('.pyx'))\n")
    assert run_cytool("run", "driver.pyx", cwd=tmp_path).stdout.strip() == "v2 True"
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "opt.pyx").write_text("VERSION = 'lib'\n")
    assert run_cytool("build", "-o", "lib", "lib/opt.pyx", cwd=tmp_path).returncode == 0
    (tmp_path / "lib" / "opt.pyx").unlink()
    (tmp_path / "driver.pyx").write_text(
        "import os, sys\nsys.path.insert(0, os.path.join(sys.path[0], 'lib'))\nimport opt\nprint(opt.VERSION, opt.__file__)\n")
    done = run_cytool("run", "driver.pyx", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    version, where = done.stdout.split()
    assert version == "lib" and Path(where).parent == tmp_path / "lib"
