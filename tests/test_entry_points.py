"""Programs, not just .pyx files: `cytool profile script.py | -m MODULE | -c CODE`,
`CYTOOL_PROFILE=path python anything.py`, `cytool develop` on a setuptools project, and
`cytool profile -m pytest` on its tests. The fixture is an ordinary setuptools project
(tests/fixtures/projects/stapp: app.api cimports app.core; a script; a pytest test)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "projects"


@pytest.fixture
def stapp(tmp_path: Path) -> Path:
    root = tmp_path / "stapp"
    shutil.copytree(FIXTURES / "stapp", root)
    return root


def report_json(run_cytool, capture: Path, *extra: str) -> dict:
    done = run_cytool("report", capture, "-f", "json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def line_of(path: Path, marker: str) -> int:
    return next(i for i, text in enumerate(path.read_text().splitlines(), 1) if marker in text)


def test_cytool_profile_env_traces_any_python(tmp_path: Path) -> None:
    script = tmp_path / "plain.py"
    script.write_text("blocks = [bytearray(100000) for _ in range(20)]\nprint(len(blocks))\n")
    capture = tmp_path / "plain.cytrace"
    env = {**__import__("os").environ, "CYTOOL_PROFILE": str(capture)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "20", done.stderr
    assert capture.is_file()
    # a second process with the same setting never overwrites the first capture
    again = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert len(list(tmp_path.glob("plain.cytrace.*"))) == 1


def test_cytool_profile_env_says_why_it_cannot_start(tmp_path: Path) -> None:
    env = {**__import__("os").environ, "CYTOOL_PROFILE": str(tmp_path / "no" / "such" / "dir" / "x.cytrace")}
    done = subprocess.run([sys.executable, "-c", "print('ran')"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ran"
    assert "CYTOOL_PROFILE is set but tracing cannot start" in done.stderr


def test_profile_script_and_module_and_code(stapp: Path, run_cytool) -> None:
    built = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=stapp, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    for args in (["script.py", "300"], ["-m", "script", "300"], ["-c", "import script; script.main(300)"]):
        capture = stapp / "run.cytrace"
        done = run_cytool("profile", "-o", capture, "--no-summary", *args, cwd=stapp)
        assert done.returncode == 0, done.stderr
        assert "kept 30" in done.stdout
        document = report_json(run_cytool, capture)
        assert document["totals"]["count"] >= 300
        capture.unlink()


def test_develop_then_profile_pytest_names_pyx_lines(stapp: Path, run_cytool) -> None:
    done = run_cytool("develop", cwd=stapp)
    assert done.returncode == 0, done.stderr
    assert "built app.core" in done.stderr and "built app.api" in done.stderr
    assert list((stapp / "app").glob("core.*.so")) and "#line" in (stapp / "app" / "core.c").read_text()
    capture = stapp / "tests.cytrace"
    result = run_cytool("profile", "-o", capture, "--no-summary", "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", cwd=stapp)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    document = report_json(run_cytool, capture)
    core = stapp / "app" / "core.pyx"
    hot = [l for l in document["lines"] if l["file"].endswith("app/core.pyx") and l["line"] == line_of(core, "MAKE_BLOCK")]
    assert len(hot) == 1 and hot[0]["count"] == 100 and hot[0]["bytes"] == 100 * 1024, document["lines"][:5]
    assert hot[0]["function"] == "app.core.make_block"


INCLUDING_SETUP = """\
from setuptools import Extension, setup
from Cython.Build import cythonize
setup(name="incpkg", packages=["incpkg"], ext_modules=cythonize([Extension("incpkg.main", ["incpkg/main.pyx"])]))
"""
INCLUDED = """\
def grab(n):
    cdef char* p = <char*>malloc(n)  # GRAB
    p[0] = 1
    keep.append(<size_t>p)
    return n
"""


def test_develop_included_files_are_reported_at_their_lines_from_any_folder(tmp_path: Path, run_cytool) -> None:
    """A .pyx that `include`s another (msgpack's layout) built by `cytool develop`: the
    included file's lines, its path made absolute with the build's folder (the generated
    C names it relative), its source verified against the module index, wherever the
    report runs; code after the included file's last line is not put past its end."""
    project = tmp_path / "incproj"
    (project / "incpkg").mkdir(parents=True)
    (project / "setup.py").write_text(INCLUDING_SETUP)
    (project / "incpkg" / "__init__.py").write_text("")
    (project / "incpkg" / "main.pyx").write_text('from libc.stdlib cimport malloc\n\ncdef list keep = []\n\n'
                                                 'include "inc.pyx"\n')
    included = project / "incpkg" / "inc.pyx"
    included.write_text(INCLUDED)
    done = run_cytool("develop", cwd=project)
    assert done.returncode == 0, done.stderr
    script = tmp_path / "use.py"
    script.write_text("import incpkg.main\nfor _ in range(100):\n    incpkg.main.grab(100000)\n")
    capture = tmp_path / "inc.cytrace"
    done = run_cytool("profile", "-o", capture, "--no-summary", script, env={"PYTHONPATH": str(project)})
    assert done.returncode == 0, done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_cytool("report", capture, "-f", "json", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    grabbed = [l for l in document["lines"] if l["file"] == str(included) and l["line"] == line_of(included, "GRAB")]
    assert len(grabbed) == 1 and grabbed[0]["count"] == 100 and grabbed[0]["function"] == "incpkg.main.grab"
    assert document["sources"][str(included)]["state"] == "verified"
    lines = len(INCLUDED.splitlines())
    assert all(l["line"] <= lines for l in document["lines"] if l["file"].endswith("inc.pyx")), document["lines"]
    assert not any(l["file"] == "incpkg/inc.pyx" for l in document["lines"])


def test_develop_refuses_other_build_backends(tmp_path: Path, run_cytool) -> None:
    (tmp_path / "pyproject.toml").write_text('[build-system]\nrequires = ["meson-python"]\nbuild-backend = "mesonpy"\n')
    done = run_cytool("develop", tmp_path)
    assert done.returncode != 0
    assert "meson-python projects are not supported by `cytool develop` yet" in done.stderr
    none = run_cytool("develop", tmp_path / "absent")
    assert none.returncode == 2 and "no such project folder" in none.stderr


def test_develop_without_setup_py_names_the_build_command(tmp_path: Path, run_cytool) -> None:
    """A project built by a PEP 517 backend without setup.py (frozenlist, yarl): the hint
    gives the `cytool build ... --inplace` command for its .pyx folders."""
    (tmp_path / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\n'
                                             'build-backend = "inhouse.hooks"\nbackend-path = ["packaging"]\n')
    (tmp_path / "flist").mkdir()
    (tmp_path / "flist" / "_flist.pyx").write_text("def f():\n    return 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "helper.pyx").write_text("")
    done = run_cytool("develop", tmp_path)
    assert done.returncode == 2 and "no setup.py here" in done.stderr, done.stderr
    assert "its backend: inhouse.hooks" in done.stderr, done.stderr
    assert "`cytool build flist/*.pyx --inplace`" in done.stderr, done.stderr


def test_develop_finds_cytool_debug_pxd_and_quotes_build_errors(stapp: Path, run_cytool) -> None:
    """`from cytool.debug cimport breakpoint` in a project's .pyx builds under `cytool develop`
    (as in cytool's own builds, an editable install too); a Cython error and a C compiler
    error are each one message quoting the first error, exit 1, no Python traceback."""
    core = stapp / "app" / "core.pyx"
    original = core.read_text()
    core.write_text(original + "\ncdef int broken = no_such_name  # BROKEN\n")
    done = run_cytool("develop", cwd=stapp)
    assert done.returncode == 1, done.stderr
    assert f"app/core.pyx:{line_of(core, 'BROKEN')}:18: undeclared name not builtin: no_such_name" in done.stderr
    assert done.stderr.startswith("cytool: error: Cython could not compile app/core.pyx:"), done.stderr
    assert "Traceback" not in done.stderr and "hint: fix the first error" in done.stderr, done.stderr

    core.write_text(original + '\ncdef extern from *:\n    """\n    #error cytool-test-boom\n    """\n')
    done = run_cytool("develop", cwd=stapp)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("cytool: error: the C compiler failed building stapp"), done.stderr
    assert "error: #error cytool-test-boom" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr

    core.write_text(original + "\nfrom cytool.debug cimport breakpoint\n\n"
                    "def checked(int n):\n    if n < 0:\n        breakpoint()\n    return n\n")
    done = run_cytool("develop", cwd=stapp)
    assert done.returncode == 0, done.stderr
    ran = subprocess.run([sys.executable, "-c", "import app.core; print(app.core.checked(7))"], cwd=stapp,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and ran.stdout.strip() == "7", ran.stderr


@pytest.mark.parametrize("command", ["run", "test"])
def test_an_included_fragment_is_named_as_such(tmp_path: Path, run_cytool, command: str) -> None:
    """A .pyx that another one `include`s (msgpack's _packer.pyx in _cmsgpack.pyx) does not
    compile on its own: the error says which file includes it and to run cytool on that one."""
    (tmp_path / "_cmod.pyx").write_text('cimport cython\n\ninclude "_packer.pyx"\n\ndef go():\n    return pack(3)\n')
    (tmp_path / "_packer.pyx").write_text("def pack(x):\n    return cython.cast(int, x)\n")
    done = run_cytool(command, "_packer.pyx", cwd=tmp_path, env={"CYTOOL_CACHE_DIR": str(tmp_path / "cache")})
    said = done.stdout + done.stderr  # (`cytool test` reports each module on stdout)
    assert done.returncode == 1, said
    assert ("hint: _packer.pyx is not a module of its own: _cmod.pyx includes it (`include \"_packer.pyx\"`); "
            "run cytool on _cmod.pyx") in said, said
    assert "Traceback" not in said
    done = run_cytool("run", "_cmod.pyx", cwd=tmp_path, env={"CYTOOL_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr


def test_a_folder_or_a_glob_builds_and_tests_fragments_with_their_includer(tmp_path: Path, run_cytool) -> None:
    """`cytool test FOLDER` and `cytool build pkg/*.pyx` on msgpack's layout: the fragments
    are said to be built and tested with the file that includes them (through a .pxi too),
    their doctests run there, and nothing fails."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "_cmod.pyx").write_text('cimport cython\n\ninclude "_packer.pyx"\ninclude "more.pxi"\n\n'
                                      'def go():\n    """\n    >>> go()\n    3\n    """\n    return pack(3)\n')
    (folder / "_packer.pyx").write_text('def pack(x):\n    """\n    >>> pack(2.5)\n    2\n    """\n'
                                        '    return cython.cast(int, x)\n')
    (folder / "more.pxi").write_text('include "_deeper.pyx"\n')
    (folder / "_deeper.pyx").write_text("def deeper():\n    return 1\n")
    env = {"CYTOOL_CACHE_DIR": str(tmp_path / "cache")}
    done = run_cytool("test", "pkg", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pkg/_packer.pyx: included by _cmod.pyx, tested with it" in done.stdout
    assert "pkg/_deeper.pyx: included by _cmod.pyx, tested with it" in done.stdout
    assert "pkg/_cmod.pyx: 2 examples passed" in done.stdout and "0 failed" in done.stdout
    done = run_cytool("build", *sorted(p.name for p in folder.glob("*.pyx")), cwd=folder, env=env)
    assert done.returncode == 0, done.stderr
    assert "cytool: _packer.pyx: included by _cmod.pyx, built with it" in done.stderr
    assert len(done.stdout.split()) == 1 and "_cmod" in done.stdout


SLEEPER = """\
import time
blocks = [bytearray(100000) for _ in range(10)]
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("command", ["run", "profile"])
def test_ctrl_c_ends_the_program_as_python_would_and_keeps_the_report(tmp_path: Path, command: str) -> None:
    """Ctrl-C (SIGINT) in the program: its traceback as Python shows it, status 130, and
    under `cytool profile` the capture finished and summarised as after any other end."""
    import signal

    (tmp_path / "sleeper.py").write_text(SLEEPER)
    proc = subprocess.Popen([sys.executable, "-m", "cytool", command, "sleeper.py"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    # (line 3 when the signal comes before print returns)
    assert re.search(r'File "sleeper.py", line [34], in <module>', err) and err.rstrip().endswith("KeyboardInterrupt"), err
    assert "cytool: interrupted" not in err
    if command == "profile":
        assert "capture: " in out and "sleeper.py:2" in out, out
        from cytool.capture import read_capture

        with read_capture(next(tmp_path.glob("sleeper.*.cytrace"))) as capture:
            assert capture.complete and not capture.truncated


OPTIONS_SETUP = '''
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from Cython.Build import cythonize

OPTIONS = ["-O3", "-Wno-unused-function"]


class build_ext_options(build_ext):
    def build_extensions(self):
        for e in self.extensions:  # as cymem and preshed do: the arguments set anew
            e.extra_compile_args = OPTIONS
        build_ext.build_extensions(self)


setup(name="optproj", packages=["optpkg"], cmdclass={"build_ext": build_ext_options},
      ext_modules=cythonize([Extension("optpkg.fast", ["optpkg/fast.pyx"])]))
'''


def test_develop_debug_flags_win_over_a_build_ext_that_sets_its_own(tmp_path: Path, run_cytool) -> None:
    """A project whose build_ext subclass assigns each extension's compiler arguments in
    build_extensions (cymem, preshed): `cytool develop --debug` still builds at -O0 with
    frame pointers (its flags come last on the compiler's command line)."""
    project = tmp_path / "optproj"
    (project / "optpkg").mkdir(parents=True)
    (project / "setup.py").write_text(OPTIONS_SETUP)
    (project / "optpkg" / "__init__.py").write_text("")
    (project / "optpkg" / "fast.pyx").write_text("def twice(int x):\n    return 2 * x\n")
    done = run_cytool("develop", "--debug", cwd=project)
    assert done.returncode == 0, done.stderr
    built = next((project / "optpkg").glob("fast*.so"))
    info = subprocess.run(["readelf", "--debug-dump=info", str(built)], capture_output=True, text=True).stdout
    producers = [line for line in info.splitlines() if "DW_AT_producer" in line]
    assert producers, info[:2000]
    # the last -O on the command line wins; gcc records the options in their order
    levels = [word for word in producers[0].split() if word.startswith("-O")]
    assert levels and levels[-1] == "-O0", producers[0]
    assert "-fno-omit-frame-pointer" in producers[0], producers[0]
