"""`cytool debug`: the command line around gdb, its errors, and the TUI in a real terminal."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "debug"))
import gdbharness as h  # noqa: E402
from terminal import marked_lines, needs_tmux, terminal  # noqa: E402

from cytool.debugger import gdb_scripts_dir, parse_gdb_version

needs_gdb = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
M = h.markers()


def cytool(*args: object, env: dict = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "cytool", *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, env=full,
                          stdin=subprocess.DEVNULL)


@needs_gdb
def test_batch_session(tmp_path: Path) -> None:
    script = tmp_path / "session.gdb"
    script.write_text("cy-run\ncy-bt\ncy-next\ncy-print n\ncy-cont\n")
    done = cytool("debug", "--batch", "-b", "work", "-x", script, h.FIXTURE, "--", "alpha", "beta")
    out = done.stdout
    assert done.returncode == 0, out
    stops = h.stops(out)
    assert stops[0] == ("dbgmod.pyx", M["work-first"], "work"), out
    assert [s[2] for s in stops[1:4]] == ["work", "main", "<module>"], out  # cy-bt
    assert stops[4] == ("dbgmod.pyx", M["work-first"] + 1, "work"), out  # cy-next
    assert "n = 4" in out, out
    assert "argv ['alpha', 'beta']" in out, out  # program arguments after --


@needs_gdb
@pytest.mark.parametrize("spec, message", [
    (f"dbgmod.pyx:{M['work-def'] + 1}", f"dbgmod.pyx:{M['work-def'] + 1} has no code"),  # a declaration
    ("dbgmod.pyx:1", "dbgmod.pyx:1 has no code (blank or comment)"),  # a comment line
    ("dbgmod.pyx:9999", "dbgmod.pyx:9999 is past the end of dbgmod.pyx ("),  # beyond the last line
    ("work:3", "FILE:LINE needs a Cython source file"),  # not a file
])
def test_batch_refused_spec_ends_the_run(tmp_path: Path, spec: str, message: str) -> None:
    """A refused -b spec ends a --batch run at once with a non-zero exit (the program never runs)."""
    script = tmp_path / "session.gdb"
    script.write_text("cy-run\ncy-bt\n")
    done = cytool("debug", "--batch", "-b", spec, "-x", script, h.FIXTURE)
    assert done.returncode == 1, done.stdout
    assert message in done.stdout, done.stdout
    assert "ending the batch run" in done.stdout and "argv" not in done.stdout, done.stdout


@needs_gdb
def test_batch_spec_refused_when_its_module_loads_ends_the_run_then(tmp_path: Path) -> None:
    """A pending -b spec refused when its module loads mid-run (past the end of the file)
    ends a --batch run there, before the program goes on."""
    (tmp_path / "later.pyx").write_text("def f():\n    return 1\n")
    (tmp_path / "starter.py").write_text("import later\nprint('imported', later.f(), flush=True)\n")
    script = tmp_path / "session.gdb"
    script.write_text("cy-run\ncy-bt\n")
    done = cytool("debug", "--batch", "-b", "later.pyx:99", "-x", script, tmp_path / "starter.py")
    assert done.returncode == 1, done.stdout
    assert "later.pyx:99 is past the end of later.pyx (2 lines)" in done.stdout, done.stdout
    assert "ending the batch run" in done.stdout and "imported" not in done.stdout, done.stdout


@needs_gdb
@pytest.mark.parametrize("spec", ["nosuchfunc", "other.pyx:3", "pkg.other.func"])
def test_batch_unmatched_spec_fails_at_exit(tmp_path: Path, spec: str) -> None:
    """A spec nothing matched is pending during the run, reported at exit, and fails --batch."""
    script = tmp_path / "session.gdb"
    script.write_text("cy-run\n")
    done = cytool("debug", "--batch", "-b", spec, "-x", script, h.FIXTURE)
    assert done.returncode == 1, done.stdout
    assert "pending" in done.stdout and "argv []" in done.stdout, done.stdout  # the program ran
    assert f"breakpoint 1 ({spec}) matched nothing in this run" in done.stdout, done.stdout


@needs_gdb
def test_does_not_start_the_program(tmp_path: Path) -> None:
    script = tmp_path / "idle.gdb"
    script.write_text("cy-break\ninfo inferiors\n")
    done = cytool("debug", "--batch", "-b", "scale", "-x", script, h.FIXTURE)
    assert done.returncode == 0, done.stdout
    assert "pending" in done.stdout, done.stdout
    assert "result" not in done.stdout, done.stdout  # the module never ran
    assert "<null>" in done.stdout, done.stdout  # no process


def test_errors() -> None:
    done = cytool("debug", "--batch", h.FIXTURE)
    assert done.returncode != 0 and "--batch needs -x" in done.stdout, done.stdout
    done = cytool("debug", "-b", "work", "--batch", "-x", "/nonexistent.gdb", h.FIXTURE)
    assert done.returncode != 0 and "no such gdb command file" in done.stdout, done.stdout
    done = cytool("debug", "nonexistent.pyx")
    assert done.returncode != 0 and "nonexistent.pyx" in done.stdout, done.stdout
    done = cytool("debug", h.FIXTURE, env={"CYTOOL_GDB": "gdb-that-does-not-exist"})
    assert done.returncode != 0, done.stdout
    assert "gdb-that-does-not-exist not found" in done.stdout and "gdb 13" in done.stdout, done.stdout


def test_gdb_version_parsing() -> None:
    assert parse_gdb_version("GNU gdb (Debian 13.1-3) 13.1\nCopyright") == (13, 1)
    assert parse_gdb_version("GNU gdb (GDB) 14.2") == (14, 2)
    assert parse_gdb_version("GNU gdb (Ubuntu 12.1-0ubuntu1~22.04) 12.1") == (12, 1)
    assert parse_gdb_version("GNU gdb (GDB) Fedora Linux 15.1-1.fc41") == (15, 1)
    assert parse_gdb_version("not a debugger") is None


def test_scripts_ship_with_the_package() -> None:
    import cytool

    package_copy = Path(cytool.__file__).resolve().parent / "gdb" / "cytool_gdb.py"
    assert package_copy.is_file()  # what setup.cfg's package_data `gdb/*.py` puts in wheels
    assert (gdb_scripts_dir() / "cytool_gdb.py").is_file()


@needs_gdb
@needs_tmux
def test_tui_in_tmux(tmp_path: Path) -> None:
    """The real TUI: the source window shows the .pyx before the run, then the stop marker."""
    env = f"CYTOOL_CACHE_DIR={os.environ.get('CYTOOL_CACHE_DIR', '')}"
    # two breakpoints: enough start-up messages to fill a small command window (no pager stop)
    command = f"cd {h.REPO} && {env} {sys.executable} -m cytool debug -b work -b Acc.add {h.FIXTURE}"
    with terminal("cytool-debug", command, height=32) as term:
        before = term.wait_for("(gdb)")
        source_window = before.split("\n")[:12]
        assert any("dbgmod.pyx" in line for line in source_window), before  # the source window's title
        assert any("cdef long total = 0" in line for line in source_window), before  # at the first breakpoint
        term.send("cy-run")
        stopped = term.wait_for(f"Cython breakpoint 1, dbgmod.pyx:{M['work-first']} in work()")
        assert marked_lines(stopped, "cdef long total = 0"), stopped  # the current-line marker on the .pyx line
        term.send("cy-next")
        moved = term.wait_for(f"dbgmod.pyx:{M['work-first'] + 1} in work()")
        assert marked_lines(moved, 'items = [1, "two", 3.5]'), moved


@needs_gdb
@needs_tmux
def test_tui_shows_python_stops(tmp_path: Path) -> None:
    """cy-step into Python code: the TUI shows the .py file with the stop marked, and the
    .pyx again once control is back in Cython."""
    shapes = h.HERE / "shapes.pyx"
    S = h.markers(shapes)
    Y = h.markers(h.HERE / "pysteps.py")
    env = f"CYTOOL_CACHE_DIR={os.environ.get('CYTOOL_CACHE_DIR', '')}"
    command = f"cd {h.REPO} && {env} {sys.executable} -m cytool debug -b shapes.pyx:{S['call-python-line']} {shapes}"
    with terminal("cytool-debug-py", command) as term:
        term.wait_for("(gdb)")
        term.send("cy-run")
        term.wait_for(f"Cython breakpoint 1, shapes.pyx:{S['call-python-line']} in call_python()")
        term.send("cy-step")
        shown = term.wait_for(f"pysteps.py:{Y['helper-first']} in helper() [Python]")
        assert "pysteps.py (Python)" in shown, shown  # the Python source window's title
        assert any(line.startswith("│>") and "doubled = value * 2" in line for line in shown.splitlines()), shown
        term.send("cy-next")
        shown = term.wait_for(f"pysteps.py:{Y['helper-call']} in helper() [Python]")
        assert any(line.startswith("│>") and "extra = inner(doubled)" in line for line in shown.splitlines()), shown
        term.send("cy-finish")
        deadline = time.monotonic() + 60
        shown = term.screen()
        while "shapes.pyx" not in shown.split("\n")[0] and time.monotonic() < deadline:
            time.sleep(0.3)
            shown = term.screen()
        assert "shapes.pyx" in shown.split("\n")[0] and "pysteps.py (Python)" not in shown, shown  # gdb's window
        assert marked_lines(shown, "result = pysteps.helper(before)"), shown


@needs_gdb
def test_debug_a_script_whose_package_modules_load_later(tmp_path: Path) -> None:
    """`cytool debug script.py`: the package modules the script imports are built when
    imported (cytool's import hook) and found by build-id in the module index; dotted
    names and FILE:LINE specs are pending until then."""
    project = tmp_path / "stapp"
    shutil.copytree(h.REPO / "tests" / "fixtures" / "projects" / "stapp", project)
    core_line = next(i for i, text in enumerate((project / "app" / "core.pyx").read_text().split("\n"), 1)
                     if "# MAKE_BLOCK" in text)
    script = tmp_path / "session.gdb"
    script.write_text("cy-run\ncy-bt\ncy-locals\ncy-cont\ncy-bt\ncy-delete 2\ncy-delete 3\ncy-cont\n")
    done = cytool("debug", "--batch", "-b", "app.api.churn", "-b", "app.core.make_block", "-b", f"core.pyx:{core_line}",
                  "-x", script, project / "script.py", "3")
    out = done.stdout
    assert done.returncode == 0, out
    assert "pending" in out and "matched nothing" not in out, out
    stops = h.stops(out)
    assert stops[0][0] == "api.pyx" and stops[0][2] == "churn", out
    assert "rounds = 3" in out, out
    assert ("core.pyx", core_line, "make_block") in stops, out
    bt = out[out.index("cy-bt") if "cy-bt" in out else 0:]
    assert "script.py" in out and "in main()" in bt, out  # the script's Python frames in cy-bt
    assert "kept 1" in out and "total 5" in out, out
