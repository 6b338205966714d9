"""Reports on Cython modules cytool did not build: no debug XML, no #line directives.

An ordinary setuptools project (tests/fixtures/projects/stapp: app.api cimports
app.core; a script) built by its own `python setup.py build_ext --inplace`, then
profiled three ways: `cytool profile script.py`, `CYTOOL_PROFILE=... python script.py`
and `cytool.Tracker` around the call in `python -c`. The reports (table, JSON,
collapsed) must show the Cython functions by name (demangled from their C symbols) at
their .pyx lines (read from the generated C's position comments); with the generated C
gone, at their C lines marked as such, with one warning naming the modules and what to
do; and never a `(cytool runner)` row where no cytool runner ran. This is the
shared setuptools-script case (fastpkg there, app here) as a test. Real Cython, gcc and
setuptools throughout.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parent.parent
STAPP = REPO / "tests" / "fixtures" / "projects" / "stapp"
API = STAPP / "app" / "api.pyx"
CORE = STAPP / "app" / "core.pyx"
ROUNDS = 300
BLOCK = 4096

pytestmark = pytest.mark.timeout(900)


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().split("\n"), 1) if text in line)


MAKE_BLOCK = line_of(CORE, "# MAKE_BLOCK")
CALL_MAKE_BLOCK = line_of(API, "# CALL_MAKE_BLOCK")
# appended to the copy's api.pyx: a generator, whose C body (`__pyx_gb_..._generator`)
# carries no name of its own
GENERATOR = """

from libc.stdlib cimport malloc as _malloc


def blocks(int rounds):
    cdef char* p
    for k in range(rounds):
        p = <char*> _malloc(1000)           # GENERATOR_MALLOC
        yield <size_t> p


cdef class Holder:
    cdef char* p

    def __cinit__(self):
        self.p = <char*> _malloc(3000)      # CINIT_MALLOC
"""
TRACKER_CODE = f"""
import cytool
from app import api
with cytool.Tracker({{path!r}}):
    print('kept', api.churn({ROUNDS}, {BLOCK}))
    print('blocks', len(list(api.blocks(7))))
    holders = [api.Holder() for _ in range(5)]
"""


def cytool_env(cache: Path) -> Dict[str, str]:
    env = dict(os.environ, CYTOOL_CACHE_DIR=str(cache))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("CYTOOL_PROFILE", None)
    env["COLUMNS"] = "200"  # the table's rows whole
    return env


def run(args: List[str], cwd: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of stapp built by its own setup.py (cythonize; no cytool involved)."""
    root = tmp_path_factory.mktemp("foreign-report") / "stapp"
    shutil.copytree(STAPP, root)
    with open(root / "app" / "api.pyx", "a") as api:
        api.write(GENERATOR)
    done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=root, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, done.stdout
    assert "#line" not in (root / "app" / "api.c").read_text()  # what makes these modules foreign
    assert not (root / "app" / "cython_debug").exists()
    return root


@pytest.fixture(scope="module")
def captures(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """The script profiled three ways: {"profile", "env", "tracker"} -> capture."""
    env = cytool_env(tmp_path_factory.mktemp("cache"))
    out: Dict[str, Path] = {}
    out["profile"] = project / "by-profile.cytrace"
    done = run([sys.executable, "-m", "cytool", "profile", "-o", str(out["profile"]), "--no-summary", "script.py",
                str(ROUNDS)], project, env)
    assert f"kept {ROUNDS // 10}" in done.stdout
    out["env"] = project / "by-env.cytrace"
    run([sys.executable, "script.py", str(ROUNDS)], project, dict(env, CYTOOL_PROFILE=str(out["env"])))
    out["tracker"] = project / "by-tracker.cytrace"
    run([sys.executable, "-c", TRACKER_CODE.format(path=str(out["tracker"]))], project, env)
    for path in out.values():
        assert path.is_file()
    return out


def report(capture: Path, *args: str) -> str:
    return run([sys.executable, "-m", "cytool", "report", str(capture), *args], capture.parent, cytool_env(
        capture.parent / ".cache")).stdout


def json_report(capture: Path, *args: str) -> dict:
    return json.loads(report(capture, "-f", "json", *args))


@pytest.mark.parametrize("way", ["profile", "env", "tracker"])
def test_cython_frames_have_names_and_pyx_lines(project: Path, captures: Dict[str, Path], way: str) -> None:
    document = json_report(captures[way])
    lines = {(Path(l["file"]).name, l["line"]): l for l in document["lines"]}
    make_block = lines[("core.pyx", MAKE_BLOCK)]
    assert make_block["function"] == "app.core.make_block" and make_block["kind"] == "pyx"
    assert make_block["file"] == str(project / "app" / "core.pyx")
    assert make_block["count"] == ROUNDS and make_block["bytes"] == ROUNDS * BLOCK
    assert make_block["leaked_bytes"] == ROUNDS // 10 * BLOCK
    assert "malloc(n)" in make_block["source"]
    assert lines[("api.pyx", CALL_MAKE_BLOCK)]["function"] == "app.api.churn"
    # the whole stack of the malloc: the .pyx caller, then the script (never the runner)
    stack = next(s for s in document["stacks"] if s["self"]["line"] == MAKE_BLOCK)
    names = [(f["function"], Path(f["file"]).name, f["line"]) for f in stack["frames"]]
    assert names[:2] == [("app.core.make_block", "core.pyx", MAKE_BLOCK), ("app.api.churn", "api.pyx", CALL_MAKE_BLOCK)]
    assert all(not f["file"].startswith(str(REPO / "cytool")) for f in stack["frames"])
    assert not [w for w in document["capture"]["warnings"] if "no .pyx line" in w]
    assert not [l for l in document["lines"] if l["kind"] == "cython-c"]

    collapsed = report(captures[way], "-f", "collapsed")
    assert f"app.api.churn (api.pyx:{CALL_MAKE_BLOCK});app.core.make_block (core.pyx:{MAKE_BLOCK}) {ROUNDS * BLOCK}" \
        in collapsed
    table = report(captures[way])
    assert "Top .pyx lines" in table and f"core.pyx:{MAKE_BLOCK}" in table


@pytest.mark.parametrize("way", ["env", "tracker"])
def test_no_runner_row_without_a_runner(captures: Dict[str, Path], way: str) -> None:
    """No cytool runner ran: nothing is charged to one; cytool.Tracker's own start and
    stop allocations are the tracer's, named as such (not the program's lines)."""
    document = json_report(captures[way])
    assert not [l for l in document["lines"] if "cytool runner" in l["function"]]
    assert "(cytool runner)" not in report(captures[way], "-f", "collapsed")
    assert not [f for s in document["stacks"] for f in s["frames"] if "/cytool/" in f["file"]]
    if way == "tracker":
        # Tracker's start and stop allocate little or nothing traced (Python frames are read
        # at each allocation: no profile function to set up); what they do is the tracer's
        tracer = [l for l in document["lines"] if l["function"] == "(cytool tracer)"]
        assert all(0 < l["count"] < 10 for l in tracer), tracer
        charged = {l["function"] for l in document["lines"] if l["count"]}
        assert charged <= {"app.core.make_block", "app.api.churn", "app.api.Holder.__cinit__", "app.api.blocks",
                           "(cytool tracer)"}, charged  # never the script's own lines
        assert not [l for l in document["lines"] if l["file"] == "<string>" and l["line"] == 4]
        if tracer:  # what was left out is still there when asked for
            with_runner = json_report(captures[way], "--runner-frames")
            assert [f for s in with_runner["stacks"] for f in s["frames"] if f["file"].endswith("tracker.py")]


def test_under_the_runner_the_script_is_the_program(captures: Dict[str, Path]) -> None:
    """`cytool profile script.py`: the script's own lines (its imports too) are the
    program's, not the runner's."""
    document = json_report(captures["profile"])
    script = [l for l in document["lines"] if Path(l["file"]).name == "script.py"]
    assert [l for l in script if l["line"] == 3 and l["inclusive"]["count"]]  # `from app import api`
    assert [l for l in script if l["function"] == "main" and l["inclusive"]["count"] >= ROUNDS]
    # the launcher's own: nothing of the program's, nor runpy's or the launcher's helpers
    runner = [s for s in document["stacks"] if s["self"]["function"] == "(cytool runner)"]
    assert sum(s["count"] for s in runner) < ROUNDS
    helpers = [l for l in document["lines"] if Path(l["file"]).name in ("pkgutil.py", "pathlib.py")]
    assert not helpers, helpers


def test_without_the_generated_c_lines_are_marked(project: Path, captures: Dict[str, Path]) -> None:
    """The .c files gone: the Cython functions keep their names, at their C lines marked
    as generated C, and one warning names the modules and what to do."""
    hidden = project / "hidden-c"
    hidden.mkdir(exist_ok=True)
    for name in ("api.c", "core.c"):
        shutil.move(str(project / "app" / name), str(hidden / name))
    try:
        document = json_report(captures["tracker"])
        table = report(captures["tracker"])
        collapsed = report(captures["tracker"], "-f", "collapsed")
    finally:
        for name in ("api.c", "core.c"):
            shutil.move(str(hidden / name), str(project / "app" / name))
    make_block = [l for l in document["lines"] if l["function"] == "app.core.make_block"]
    assert len(make_block) == 1
    assert make_block[0]["kind"] == "cython-c" and Path(make_block[0]["file"]).name == "core.c"
    assert make_block[0]["line"] > 0 and make_block[0]["count"] == ROUNDS
    assert make_block[0]["attributed"]["bytes"] == ROUNDS * BLOCK
    assert not [l for l in document["lines"] if l["kind"] == "pyx"]
    warnings = [w for w in document["capture"]["warnings"] if "no .pyx line information" in w]
    assert len(warnings) == 1
    assert "app.core" in warnings[0] and "app.api" in warnings[0] and "cytool develop" in warnings[0]
    assert "--line-directives" in warnings[0]
    assert "(generated C)" in table and "app.core.make_block" in table and "no .pyx line information" in table
    assert ", generated C);app.core.make_block (core.c:" in collapsed
    assert "(cytool runner)" not in collapsed


def test_a_file_that_is_not_the_generated_c_is_not_read(project: Path, captures: Dict[str, Path]) -> None:
    """A core.c that is not Cython's output for app.core (another module's, or any text)
    is not taken for it: the frames stay at their C lines."""
    real = project / "app" / "core.c"
    saved = real.read_text()
    try:
        real.write_text(saved.replace('"app.core"', '"other.core"'))  # the module name it defines
        document = json_report(captures["tracker"])
        assert [l for l in document["lines"] if l["function"] == "app.core.make_block"][0]["kind"] == "cython-c"
        real.write_text("/* not generated */\n" + saved)
        document = json_report(captures["tracker"])
        assert [l for l in document["lines"] if l["function"] == "app.core.make_block"][0]["kind"] == "cython-c"
    finally:
        real.write_text(saved)


def test_a_generated_c_newer_than_its_module_is_said(project: Path, captures: Dict[str, Path]) -> None:
    """A .c generated again after the module was built may not match its lines: said."""
    real = project / "app" / "core.c"
    before = real.stat()
    try:
        os.utime(real, (before.st_atime, before.st_mtime + 3600))
        document = json_report(captures["tracker"])
    finally:
        os.utime(real, (before.st_atime, before.st_mtime))
    stale = [w for w in document["capture"]["warnings"] if "newer than the module" in w]
    assert len(stale) == 1 and str(real) in stale[0]
    assert [l for l in document["lines"] if l["function"] == "app.core.make_block"][0]["kind"] == "pyx"


def test_a_generator_body_is_named_after_its_def(project: Path, captures: Dict[str, Path]) -> None:
    document = json_report(captures["tracker"])
    line = line_of(project / "app" / "api.pyx", "# GENERATOR_MALLOC")
    found = [l for l in document["lines"] if l["file"].endswith("api.pyx") and l["line"] == line]
    assert len(found) == 1 and found[0]["count"] == 7
    assert found[0]["function"] == "app.api.blocks" and found[0]["kind"] == "pyx"


def test_special_methods_are_named_whole(project: Path, captures: Dict[str, Path]) -> None:
    """`__pyx_pw_..._6Holder_1__cinit__`: the counter, then `__cinit__` (not a scope `_`)."""
    document = json_report(captures["tracker"])
    line = line_of(project / "app" / "api.pyx", "# CINIT_MALLOC")
    found = [l for l in document["lines"] if l["file"].endswith("api.pyx") and l["line"] == line]
    assert len(found) == 1 and found[0]["count"] == 5
    assert found[0]["function"] == "app.api.Holder.__cinit__"
    assert not [l for l in document["lines"] if "._." in l["function"] or l["function"].endswith(".")]
