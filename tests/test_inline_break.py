"""In-code breakpoints (`cytool.breakpoint()`, `from cytool.debug cimport breakpoint`),
black-box: under `cytool debug` (gdb batch), not on a terminal (the thread's stack on
stderr, the program goes on), on a terminal (gdb's TUI attached, through tmux), turned
off by CYTOOL_BREAKPOINT=0, and builtin breakpoint() routed by PYTHONBREAKPOINT. The stops
under `cytool debug` are checked on every Python the gdb tests run on (CYTOOL_TEST_PYTHONS:
3.9 and 3.10 run each Python frame in a C frame of its own), the other paths but
CYTOOL_BREAKPOINT=0 on two (tests/conftest.py TWO_PYTHONS).

tests/fixtures/breakpoint/bp.pyx stops in a nogil cdef function, in a def function
(`when=n > 0`, then once with when false) and, with --builtin, at a builtin breakpoint().
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "debug"))
import gdbharness as h  # noqa: E402
from terminal import marked_lines, needs_tmux, terminal  # noqa: E402

pytestmark = h.GDB_TESTS

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "breakpoint" / "bp.pyx"
M = h.markers(FIXTURE)


def run_bp(*args: str, env: dict = None, python: str = sys.executable) -> subprocess.CompletedProcess:
    full = h.python_env(env)
    return subprocess.run([python, "-m", "cytool", "run", str(FIXTURE), "--", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, timeout=600, env=full)


def position(text: str, wanted: str, start: int = 0) -> int:
    """Where `wanted` is in text[start:]; a failure shows the whole text."""
    found = text.find(wanted, start)
    assert found >= 0, f"{wanted!r} not found in:\n{text}"
    return found


def test_under_cytool_debug(debug_python: str, tmp_path: Path) -> None:
    script = tmp_path / "commands.gdb"
    script.write_text("cy-run\ncy-locals\ncy-next\ncy-up\ncy-cont\ncy-next\ncy-print half\ncy-bt\ncy-cont\n")
    done = subprocess.run([debug_python, "-m", "cytool", "debug", "--batch", "-x", str(script), str(FIXTURE)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                          timeout=600, env=h.python_env())
    out = done.stdout
    assert done.returncode == 0, out
    first = position(out, f"cytool.breakpoint(), bp.pyx:{M['nogil-break']} in crunch()")  # the nogil form
    assert "n = 10" in out[first:] and "total = 45" in out[first:], out  # cy-locals in crunch
    assert f"bp.pyx:{M['nogil-break'] + 1} in crunch()" in out[first:], out  # cy-next: the line after it
    assert f"#1  bp.pyx:{M['call-crunch']} in main()" in out[first:], out  # cy-up: its caller
    second = position(out, f"cytool.breakpoint(), bp.pyx:{M['py-break']} in in_python_code()", first)  # Python form
    # cy-next: the `return` after the call with a keyword argument (was: skipped, out to main)
    assert f"bp.pyx:{M['py-break'] + 1} in in_python_code()" in out[second:].split("half = 2.0", 1)[0], out
    assert "half = 2.0" in out[second:], out
    assert f"bp.pyx:{M['py-break'] + 1} in in_python_code()" in out[second:].split("half = 2.0", 1)[1], out  # cy-bt
    assert out.count("cytool.breakpoint(), ") == 2, out  # when=False did not stop
    assert "done" in out and "exited normally" in out, out


def test_not_on_a_terminal_prints_the_stack_and_goes_on(each_of_two_pythons: str) -> None:
    done = run_bp("--builtin", env={"PYTHONBREAKPOINT": "cytool.breakpoint"}, python=each_of_two_pythons)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["crunch", "45", "half", "2.0", "twice", "10", "done"], done.stdout
    stacks = done.stderr.split("cytool.breakpoint: stack of thread ")[1:]
    assert len(stacks) == 3, done.stderr  # nogil form, cytool.breakpoint(when=True), builtin breakpoint()
    version = subprocess.run([each_of_two_pythons, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    assert all(f"(Python {version})" in text for text in stacks), done.stderr  # the program ran on that Python
    expected = [("crunch", "nogil-break"), ("in_python_code", "py-break"), ("builtin", "builtin-break")]
    for text, (function, marker) in zip(stacks, expected):
        frames = [line.strip() for line in text.splitlines() if line.strip().startswith("[")]
        assert re.fullmatch(rf"\[cy\] bp\.{function}\(\) at \S*bp\.pyx:{M[marker]}", frames[0]), text
        assert re.fullmatch(r"\[cy\] bp\.main\(\) at \S*bp\.pyx:\d+", frames[1]), text
        assert "inline_break" not in text and "subprocess" not in text, text  # the breakpoint's own frames
    assert "Traceback" not in done.stderr, done.stderr


def test_turned_off() -> None:
    done = run_bp("--builtin", env={"CYTOOL_BREAKPOINT": "0", "PYTHONBREAKPOINT": "cytool.breakpoint"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["crunch", "45", "half", "2.0", "twice", "10", "done"], done.stdout
    assert "cytool.breakpoint" not in done.stderr, done.stderr


@needs_tmux
def test_on_a_terminal_starts_gdb(each_of_two_pythons: str) -> None:
    env = " ".join(f"{name}={value}" for name, value in h.python_env().items()
                   if name in ("CYTOOL_CACHE_DIR", "PYTHONPATH"))
    command = f"cd {FIXTURE.parent} && env {env} {each_of_two_pythons} -m cytool run {FIXTURE}; sleep 600"
    with terminal("cytool-inline-break", command, width=150, height=40) as term:
        stopped = term.wait_for(f"cytool.breakpoint(), bp.pyx:{M['nogil-break']} in crunch()", timeout=240)
        assert marked_lines(stopped, "nogil_breakpoint()  # @nogil-break"), stopped  # the TUI on the .pyx line
        term.wait_for("(gdb)")
        term.send("cy-cont")
        term.wait_for(f"cytool.breakpoint(), bp.pyx:{M['py-break']} in in_python_code()")
        term.send("cy-cont")
        term.wait_for("exited normally")


EDGES = Path(__file__).resolve().parent / "fixtures" / "breakpoint" / "edges.py"
E = h.markers(EDGES)


def run_edges(mode: str, env: dict = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EDGES), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True, timeout=600, env=h.python_env(env))


def test_embedded_python_without_sys_executable() -> None:
    """An application embedding Python may leave sys.executable empty: `cytool stack` is run
    through `cytool` on PATH (it used to end the program with PermissionError from cytool's
    own code); with no cytool anywhere, one line says so and the program goes on."""
    import os

    bin_dir = os.path.dirname(sys.executable)
    done = run_edges("embedded", env={"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.split() == ["after", "embedded", "done"], done.stdout
    assert f"[py] <module>() at {EDGES}:{E['embedded-break']}" in done.stderr, done.stderr
    done = run_edges("embedded", env={"PATH": "/nonexistent"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "cytool.breakpoint: no Python to run `cytool stack` with" in done.stderr, done.stderr


def test_threads_at_a_breakpoint_together() -> None:
    """Four threads at a breakpoint at once: each one's stack is printed, one after the other
    (they used to run four `cytool stack` at once, and ptrace let only one of them in)."""
    done = run_edges("threads")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split("\n")[:-2]) == [f"after {i}" for i in range(4)], done.stdout
    stacks = done.stderr.split("cytool.breakpoint: stack of thread ")[1:]
    assert len(stacks) == 4 and "error" not in done.stderr, done.stderr
    names = sorted(re.search(r'Thread \d+ "(worker-\d)"', text).group(1) for text in stacks)
    assert names == [f"worker-{i}" for i in range(4)], done.stderr
    assert all(f"[py] work() at {EDGES}:{E['thread-break']}" in text for text in stacks), done.stderr


def test_when_that_raises_stops() -> None:
    """when= whose truth test raises stops there, as gdb and pdb do with a failing condition,
    with the error said once (it used to raise out of cytool's own code)."""
    done = run_edges("bad-when")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["after", "bad-when", "done"], done.stdout
    assert ("cytool.breakpoint: when= could not be tested (ValueError: the truth value is ambiguous); stopping"
            in done.stderr), done.stderr
    assert f"[py] <module>() at {EDGES}:{E['bad-when']}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


@needs_tmux
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_on_a_terminal_gdb_refused() -> None:
    """On a terminal, gdb started for the breakpoint cannot attach (ptrace refused): the
    program says so at once, prints why, and goes on (it used to wait 60 s for gdb)."""
    env = " ".join(f"{name}={value}" for name, value in h.python_env().items()
                   if name in ("CYTOOL_CACHE_DIR", "PYTHONPATH"))
    command = (f"cd {EDGES.parent} && env {env} setpriv --bounding-set -sys_ptrace --inh-caps -sys_ptrace "
               f"{sys.executable} {EDGES} undumpable; echo status $?; sleep 600")
    with terminal("cytool-inline-refused", command, width=150, height=40) as term:
        shown = term.wait_for("status ", timeout=240)
    assert "cytool.breakpoint: gdb could not attach to this process; printing the stack instead" in shown, shown
    assert "ptrace is not permitted" in shown and "after undumpable" in shown and "status 0" in shown, shown


def test_traced_program_leaves_one_capture(tmp_path: Path) -> None:
    """A program traced through CYTOOL_PROFILE stops at a breakpoint: the `cytool stack` it
    runs is not traced (it used to leave a capture of its own, out.cytrace.<pid>, that
    `cytool report out.cytrace*` took for one of the program's processes)."""
    capture = tmp_path / "out.cytrace"
    done = run_edges("bad-when", env={"CYTOOL_PROFILE": str(capture)})
    assert done.returncode == 0, done.stderr
    assert f"[py] <module>() at {EDGES}:{E['bad-when']}" in done.stderr, done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.cytrace"]
