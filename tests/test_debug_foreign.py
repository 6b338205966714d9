"""The debugger on Cython modules cytool did not build: no debug XML, no #line.

An ordinary setuptools project (tests/fixtures/projects/stapp: app.api cimports
app.core; a script; a pytest test) built by its own `python setup.py build_ext
--inplace`: cy-break by Cython name (pending until the module loads) and by .pyx line
(through the position comments of the generated C file), cy-bt names and .pyx lines,
$cy_lineno, locals read from the C variables, and the message naming `cytool develop`
where cytool cannot do better (no C file). Then the same project built by `cytool
develop` (and `--debug`): full debugging, found by build-id in the module index. The
demangling itself is checked against Cython's own debug XML for the debug fixtures.
Real Cython, gcc, setuptools and gdb in batch mode throughout.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "debug"))
import gdbharness as h  # noqa: E402
from terminal import needs_tmux, terminal  # noqa: E402

sys.path.insert(0, str(h.REPO / "gdb"))
import cytool_gdb_elf as elf  # noqa: E402  (no gdb needed: pure standard library)
import cytool_gdb_foreign as foreign  # noqa: E402

needs_gdb = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
pytestmark = pytest.mark.timeout(900)

STAPP = h.REPO / "tests" / "fixtures" / "projects" / "stapp"
API = STAPP / "app" / "api.pyx"
CORE = STAPP / "app" / "core.pyx"


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().split("\n"), 1) if text in line)


CHURN_FIRST = line_of(API, "for k in range(rounds)")
CALL_MAKE_BLOCK = line_of(API, "# CALL_MAKE_BLOCK")
MAKE_BLOCK = line_of(CORE, "# MAKE_BLOCK")
IF_LINE = line_of(API, "if k % 10 == 0")
KEEP_LINE = line_of(API, "_kept.append")
COUNTER_ADD = line_of(API, "# COUNTER_ADD")
HINT = "has no Cython debug information (it was not built by cytool)"

_builds: Dict[Tuple[str, str], Path] = {}


def plain_build(python: str, root: Path) -> Path:
    """A copy of stapp built by its own setup.py (cythonize, the interpreter's CFLAGS)."""
    project = root / "stapp"
    shutil.copytree(STAPP, project)
    done = subprocess.run([python, "setup.py", "build_ext", "--inplace"], cwd=project, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, done.stdout
    assert "#line" not in (project / "app" / "api.c").read_text()  # what makes this a "foreign" module
    return project


@pytest.fixture(scope="session")
def plain_stapp(debug_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = (debug_python, "plain")
    if key not in _builds:
        _builds[key] = plain_build(debug_python, tmp_path_factory.mktemp("plain-stapp"))
    return _builds[key]


@pytest.fixture(scope="session")
def venv_plain_stapp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = (sys.executable, "plain")
    if key not in _builds:
        _builds[key] = plain_build(sys.executable, tmp_path_factory.mktemp("plain-stapp"))
    return _builds[key]


def run_script(python: str, project: Path, commands: List[str], *args: str) -> h.GdbRun:
    return h.run_gdb_program([python, str(project / "script.py"), *(args or ("3",))], commands)


def at(run: h.GdbRun, index: int):
    return h.last_stop(run.of(index), run)


def cytool(*args: object, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cytool", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# -- a plain setuptools build ---------------------------------------------------------------


@needs_gdb
def test_plain_build_names_lines_and_locals(debug_python: str, plain_stapp: Path) -> None:
    """Dotted names are pending until the module loads, then stop in the function's first
    statement; frames carry Cython names and .pyx lines; locals are read."""
    commands = [
        "cy-break app.api.churn",  # 0: pending
        "cy-break app.core.make_block",  # 1
        "cy-break app.api.Counter.add",  # 2: a method of a Python class
        "cy-run",  # 3
        "print $cy_lineno()",  # 4
        "cy-locals",  # 5
        "cy-cont",  # 6: make_block, called by churn
        "cy-bt",  # 7
        "cy-print n",  # 8
        "cy-delete 2",  # 9
        "cy-cont",  # 10: Counter.add
        "cy-print n",  # 11
        "cy-cont",  # 12
    ]
    run = run_script(debug_python, plain_stapp, commands)
    out = str(run)
    assert "pending" in run.of(0) and "pending" in run.of(2), out
    assert at(run, 3) == ("api.pyx", CHURN_FIRST, "churn"), out
    assert f"app.api {HINT}" in run.of(3) and "cytool develop" in run.of(3), out
    assert out.count(f"app.api {HINT}") == 1, out  # said once per module
    assert re.search(r"^\$1 = %d$" % CHURN_FIRST, run.of(4), re.M), out
    assert "rounds = 3" in run.of(5) and "size = 4096" in run.of(5), out
    assert at(run, 6) == ("core.pyx", MAKE_BLOCK, "make_block"), out
    bt = h.stops(run.of(7))
    assert bt[:2] == [("core.pyx", MAKE_BLOCK, "make_block"), ("api.pyx", CALL_MAKE_BLOCK, "churn")], out
    assert [s[2] for s in bt].count("churn") == 1, out  # its Python wrapper is the same call
    assert "n = 4096" in run.of(8), out
    assert at(run, 10) == ("api.pyx", COUNTER_ADD, "Counter.add"), out
    assert "n = 5" in run.of(11), out
    assert "total 5" in out and "matched nothing" not in out, out
    assert "Python Exception" not in out and "Traceback" not in out, out


@needs_gdb
def test_plain_build_line_breakpoints_from_position_comments(venv_plain_stapp: Path) -> None:
    """A .pyx line maps to the C lines its position comment covers, in the function that
    owns it; a def line stops at the first statement, a declaration is refused with the
    nearest line that has code; cy-next walks .pyx lines."""
    commands = [
        f"cy-break api.pyx:{KEEP_LINE}",  # 0
        f"cy-break api.pyx:{CHURN_FIRST - 2}",  # 1: `cdef int k`
        f"cy-break api.pyx:{line_of(API, 'def churn')}",  # 2: the def line
        "cy-run",  # 3
        "cy-next",  # 4
        "cy-next",  # 5
        "cy-cont",  # 6
        "cy-bt",  # 7
        "cy-finish",  # 8
    ]
    run = run_script(sys.executable, venv_plain_stapp, commands)
    out = str(run)
    # specs pending until app.api loads are checked then (during cy-run)
    assert f"(api.pyx:{CHURN_FIRST - 2}): api.pyx:{CHURN_FIRST - 2} has no code" in run.of(3), out
    assert f"nearest line with code is api.pyx:{CHURN_FIRST}" in run.of(3), out
    assert f"stopping at its first statement, line {CHURN_FIRST}" in run.of(3), out
    assert f"Cython breakpoint 1 at api.pyx:{KEEP_LINE} in churn()" in out, out
    assert at(run, 3) == ("api.pyx", CHURN_FIRST, "churn"), out
    assert at(run, 4) == ("api.pyx", CALL_MAKE_BLOCK, "churn"), out
    assert at(run, 5) == ("api.pyx", IF_LINE, "churn"), out
    assert at(run, 6) == ("api.pyx", KEEP_LINE, "churn"), out
    assert "_kept.append(<size_t> p)" in run.of(6), out  # the .pyx text
    assert "returned to Python" in run.of(8) and "script.py:7" in run.of(8), out


@needs_gdb
def test_plain_build_without_its_c_file(tmp_path: Path) -> None:
    """Without the generated C file: Cython names at C lines (marked so), breakpoints by
    name at the function's entry, and `cytool develop` named for what needs .pyx lines."""
    project = plain_build(sys.executable, tmp_path)
    for c_file in (project / "app").glob("*.c"):
        c_file.unlink()
    shutil.rmtree(project / "build")
    commands = [
        "cy-break app.api.churn",  # 0
        "cy-run",  # 1
        "print $cy_lineno()",  # 2
        "cy-bt",  # 3
        "cy-next",  # 4
        f"cy-break api.pyx:{KEEP_LINE}",  # 5
        "cy-cont",  # 6
    ]
    run = run_script(sys.executable, project, commands)
    out = str(run)
    assert "Cython breakpoint 1 at app.api.churn() (its entry: no .pyx lines known)" in out, out
    assert re.search(r"Cython breakpoint 1, api\.c:\d+ in app\.api\.churn\(\) \[C line\]", run.of(1)), out
    assert "its generated C file api.c was not found" in run.of(1) and "cytool develop" in run.of(1), out
    assert "no .pyx line is known for app.api.churn" in run.of(2) and "cytool develop" in run.of(2), out
    assert run.of(3).count("in app.api.churn() [C line]") == 1, out
    assert "cannot step by .pyx lines in app.api.churn()" in run.of(4), out
    assert "app.api is loaded but its .pyx lines are unknown" in run.of(5), out
    assert f"breakpoint 2 (api.pyx:{KEEP_LINE}) matched nothing in this run: app.api is loaded but" in run.of(6), out


@needs_gdb
def test_cytool_debug_script_and_pytest_on_a_plain_build(venv_plain_stapp: Path, tmp_path: Path) -> None:
    """`cytool debug` as a user runs it on a project built by setup.py: a script, and pytest."""
    commands = tmp_path / "cmds.gdb"
    commands.write_text("cy-run\ncy-bt\ncy-locals\ncy-cont\n")
    done = cytool("debug", "--batch", "-b", "app.api.churn", "-x", commands, "script.py", "5", cwd=venv_plain_stapp)
    out = done.stdout
    assert done.returncode == 0, out
    assert h.stops(out)[0] == ("api.pyx", CHURN_FIRST, "churn"), out
    assert "rounds = 5" in out and "script.py" in out and "kept 1" in out, out
    commands.write_text("cy-run\ncy-bt\ncy-print n\ncy-delete 1\ncy-cont\n")
    done = cytool("debug", "--batch", "-b", "app.core.make_block", "-x", commands, "-m", "pytest", "tests", "-k",
                  "churn", "-q", "-p", "no:cacheprovider", cwd=venv_plain_stapp)
    out = done.stdout
    assert done.returncode == 0, out
    expected = [("core.pyx", MAKE_BLOCK, "make_block")] * 2 + [("api.pyx", CALL_MAKE_BLOCK, "churn")]
    assert h.stops(out)[:3] == expected, out  # the stop, then cy-bt
    assert "test_api.py" in out and "n = 1024" in out and "1 passed" in out, out


# -- cytool develop ---------------------------------------------------------------------------


SRC_LAYOUT_SETUP = """\
from Cython.Build import cythonize
from setuptools import setup

setup(
    name="app",
    packages=["app"],
    package_dir={"": "src"},
    ext_modules=cythonize(["src/app/core.pyx", "src/app/api.pyx"], compiler_directives={"language_level": 3}),
)
"""


@needs_gdb
def test_develop_builds_debug_fully(tmp_path: Path) -> None:
    """`cytool develop` (the project's -O level; here a src/ layout, whose #line names
    `app/api.pyx` relative to src/) and `cytool develop --debug` (-O0): cy-break by name
    stops in the function (not in its caller: its body is inlined at -O3), line
    breakpoints, locals, cy-bt with .pyx lines and text, `list`."""
    src = tmp_path / "srcapp"
    shutil.copytree(STAPP, src / "src", ignore=shutil.ignore_patterns("setup.py", "tests"))  # src/script.py too
    (src / "setup.py").write_text(SRC_LAYOUT_SETUP)
    done = cytool("develop", cwd=src)
    assert done.returncode == 0, done.stdout
    script = tmp_path / "session.gdb"
    script.write_text(f"cy-run\ncy-bt\ncy-locals\nlist {CALL_MAKE_BLOCK},{CALL_MAKE_BLOCK}\ncy-cont\ncy-bt\ncy-cont\n")
    done = cytool("debug", "--batch", "-b", "app.api.churn", "-b", f"api.pyx:{KEEP_LINE}", "-x", script,
                  "src/script.py", "2", cwd=src)
    out = done.stdout
    assert done.returncode == 0, out
    assert HINT not in out, out  # found by build-id in the module index: the XML is known
    stops = h.stops(out)
    assert stops[0] == ("api.pyx", CHURN_FIRST, "churn"), out
    assert "for k in range(rounds):" in out and "rounds = 2" in out, out  # the .pyx text, from src/app
    assert f"{CALL_MAKE_BLOCK}\t        p = make_block(size)" in out, out  # gdb's list finds src/app/api.pyx
    assert ("api.pyx", KEEP_LINE, "churn") in stops, out

    flat = tmp_path / "stapp"
    shutil.copytree(STAPP, flat)
    done = cytool("develop", "--debug", cwd=flat)
    assert done.returncode == 0, done.stdout
    script.write_text("cy-run\ncy-locals\ncy-next\ncy-step\ncy-locals\ncy-bt\ncy-finish\ncy-cont\n")
    done = cytool("debug", "--batch", "-b", "app.api.churn", "-x", script, "script.py", "1", cwd=flat)
    out = done.stdout
    assert done.returncode == 0, out
    stops = h.stops(out)
    assert stops[0] == ("api.pyx", CHURN_FIRST, "churn") and stops[1] == ("api.pyx", CALL_MAKE_BLOCK, "churn"), out
    assert "k = <not yet assigned>" in out and "p = <not yet assigned>" in out, out  # -O0: exact locals
    assert ("core.pyx", MAKE_BLOCK, "make_block") in stops, out  # cy-step into the cimported cdef function
    assert "n = 4096" in out and "[-O" not in out, out


# -- names without the XML, checked against the XML ---------------------------------------------


@pytest.mark.parametrize("tail, reading", [
    ("churn", ((), "churn")),
    ("7Counter_2add", (("Counter",), "add")),
    ("7Counter___init__", (("Counter",), "__init__")),
    ("3Vec_1x___get__", (("Vec", "x"), "__get__")),
    ("6Packer_4__reduce_cython__", (("Packer",), "__reduce_cython__")),
    ("2__pyx_unpickle_Packer", ((), "__pyx_unpickle_Packer")),
    ("3get_x", ((), "get_x")),  # a counter that looks like a scope's length
])
def test_reading_of_c_names(tail: str, reading) -> None:
    assert reading in foreign.parses(tail)
    assert foreign.best_reading(foreign.parses(tail), known_scopes={"Counter", "Vec", "Packer", "x"}) == reading
    assert foreign.mangled_prefix("msgpack._cmsgpack") == "7msgpack_9_cmsgpack_"


@pytest.mark.parametrize("shown, cname", [
    ("__pyx_f_3mod_work", "__pyx_f_3mod_work"),
    ("__pyx_f_3mod_work.isra.0", "__pyx_f_3mod_work"),  # gcc's clones (ELF symbols, C)
    ("__pyx_f_3mod_work.constprop.0.isra.0", "__pyx_f_3mod_work"),
    # C++: gdb's block and symbol names carry the signature (frame.name() does not)
    ("__pyx_f_1m_3Acc_add(__pyx_obj_1m_Acc*, double)", "__pyx_f_1m_3Acc_add"),
    ("__pyx_pw_1m_1work(PyObject*, PyObject* const*, Py_ssize_t, PyObject*)", "__pyx_pw_1m_1work"),
    ("(anonymous namespace)::__pyx_f_1m_f(int (*)(double), int) [clone .isra.0]", "__pyx_f_1m_f"),
    ("_ZL19__pyx_f_1m_3Acc_addP15__pyx_obj_1m_Accd", "__pyx_f_1m_3Acc_add"),  # a C++ ELF symbol
    (None, ""),
])
def test_c_names_from_the_names_gdb_shows(shown, cname: str) -> None:
    from cytool_gdb_debuginfo import c_name

    assert c_name(shown) == cname


def _cython_without_line_directives(source: Path, out: Path) -> Tuple[Path, Dict[str, Tuple[str, int]]]:
    """Cython (with --gdb, for the truth, without --line-directives) and gcc -O2 -g: the
    module, and {C name: (qualified name, def line)} from the XML."""
    for extra in source.parent.glob("*"):
        if extra.suffix in (".pyx", ".pxi", ".h"):
            shutil.copy(extra, out / extra.name)
    python = sys.executable
    config = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['include']); "
                             "print(sysconfig.get_config_var('EXT_SUFFIX'))"], stdout=subprocess.PIPE, text=True,
                            check=True).stdout.split()
    done = subprocess.run([python, "-m", "cython", "-3", "--gdb", "--gdb-outdir", str(out), "-o", f"{source.stem}.c",
                           source.name], cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, done.stdout
    module = out / (source.stem + config[1])
    done = subprocess.run([os.environ.get("CC", "gcc"), "-shared", "-fPIC", "-g", "-O2", f"-I{config[0]}", "-I.", "-o",
                           str(module), f"{source.stem}.c"], cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    assert done.returncode == 0, done.stdout
    xml = ElementTree.parse(out / "cython_debug" / f"cython_debug_info_{source.stem}").getroot().find("Module")
    truth = {f.get("cname"): (f.get("qualified_name"), int(f.get("lineno"))) for f in xml.iter("Function")
             if f.get("is_initmodule_function") != "True"}
    return module, truth


@pytest.mark.parametrize("fixture", ["shapes.pyx", "dbgmod.pyx"])
def test_names_and_def_lines_match_cythons_debug_information(fixture: str, tmp_path: Path) -> None:
    """Every function Cython's XML lists (closures, generators, a lambda, properties,
    cdef classes, cpdef, pickling helpers) gets the XML's qualified name and def line from
    the symbols and the C file alone; without the C file, every def and cdef function is
    still found by its qualified name (the Python wrapper stands for a body -O2 inlined)."""
    module_file, truth = _cython_without_line_directives(h.HERE / fixture, tmp_path)
    described = foreign.describe(str(module_file))
    assert described is not None and described.c_lines and described.name == fixture[:-4]
    for cname, (qualified_name, lineno) in truth.items():
        function = described.by_cname.get(cname)
        assert function is not None, cname
        assert (function.qualified_name, function.lineno) == (qualified_name, lineno), cname
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(module_file, alone / module_file.name)
    os.rename(tmp_path / f"{fixture[:-4]}.c", tmp_path / "moved.c")  # its DWARF names it: hide it there too
    bare = foreign.describe(str(alone / module_file.name))
    assert bare is not None and bare.c_file is None
    symbols = set(elf.function_names(str(module_file)))
    for cname, (qualified_name, _) in truth.items():
        short = qualified_name.split(".", 1)[1]
        if "lambda" in short or short in ("countdown", "twice"):  # generator bodies are named by their def line
            continue
        if cname.startswith("__pyx_f_") and cname not in symbols:
            continue  # a cdef function inlined everywhere: only gdb's DWARF knows it (cy-break asks gdb)
        assert bare.function_named(qualified_name), qualified_name


def test_c_file_found_above_a_build_tree(venv_plain_stapp: Path) -> None:
    """`build/lib.*/app/api.so` (what setup.py build leaves) finds `app/api.c` in the project."""
    built = next((venv_plain_stapp / "build").glob("lib.*/app/api.*.so"))
    assert foreign.find_c_file(str(built), "app.api") == str(venv_plain_stapp / "app" / "api.c")
    described = foreign.describe(str(built))
    assert described is not None and described.name == "app.api"
    assert described.filename == str(venv_plain_stapp / "app" / "api.pyx")


@needs_gdb
@needs_tmux
def test_tui_shows_the_pyx_of_a_plain_build(venv_plain_stapp: Path) -> None:
    """gdb's source window would show the C file (the line table speaks C): at a stop, the
    TUI shows the .pyx with the stop's line marked, and follows cy-next."""
    command = (f"cd {venv_plain_stapp} && CYTOOL_CACHE_DIR={os.environ.get('CYTOOL_CACHE_DIR', '')} "
               f"{sys.executable} -m cytool debug -b app.api.churn script.py 3")
    with terminal("cytool-foreign", command) as term:
        term.wait_for("(gdb)")
        term.send("cy-run")
        stopped = term.wait_for(f"Cython breakpoint 1, api.pyx:{CHURN_FIRST} in churn()")
        assert "api.pyx (Cython: lines from the C file's comments)" in stopped.split("\n")[0], stopped
        marked = [line for line in stopped.splitlines() if line.startswith("│>")]
        assert marked and "for k in range(rounds):" in marked[0], stopped
        term.send("cy-next")
        moved = term.wait_for(f"api.pyx:{CALL_MAKE_BLOCK} in churn()")
        assert any(line.startswith("│>") and "p = make_block(size)" in line for line in moved.splitlines()), moved
