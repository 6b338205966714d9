"""An exec while traced: the capture is finished first (trace_hooks.c), so the events still
in the threads' buffers when the program is replaced are written and the capture ends as
a complete one (it used to end without its last moments, read as "killed"). An exec that
cannot start (no such file, os.execvp trying each PATH entry) leaves the tracing on; one
that fails past those checks says so on stderr."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from cytool.capture import read_capture
from test_tracer_runtime import helpers  # noqa: F401 (the helpers fixture)

# A .pyx program's helper: grab(size, count) mallocs blocks it keeps (leaks the report
# must show); held() reads them, so that the compiler keeps the mallocs.
GRAB = """\
from libc.stdlib cimport malloc

cdef void *kept[256]
cdef int nkept = 0

cdef void grab(size_t size, int count):
    global nkept
    cdef int i
    for i in range(count):
        kept[nkept] = malloc(size)
        nkept += 1

cdef int held():
    return sum([kept[i] != NULL for i in range(nkept)])
"""

PROGRAM = "import os, sys\n" + GRAB + """
mode, target = sys.argv[1], sys.argv[2]
grab(3333, 7)
print("held", held(), flush=True)
if mode == "exec":
    os.execv(target, [target])
elif mode == "missing":
    try:
        os.execvp("no-such-program-cytool", ["no-such-program-cytool"])
    except OSError:
        pass
    try:
        os.execv(target, [target])  # not there either
    except OSError:
        pass
    grab(4444, 5)
elif mode == "bad-format":
    try:
        os.execv(target, [target])
    except OSError as error:
        print("exec failed:", error.errno, flush=True)
    grab(4444, 5)
elif mode == "child":
    pid = os.fork()
    if pid == 0:
        grab(5555, 6)
        os.execv(target, [target])
    _, status = os.waitpid(pid, 0)
    print("child status", status, flush=True)
"""


def _profile(run_cytool, tmp_path: Path, mode: str, target: str, *options: str):
    program = tmp_path / "execs.pyx"
    program.write_text(PROGRAM)
    capture = tmp_path / f"{mode}.cytrace"
    proc = run_cytool("profile", "--no-summary", *options, "-o", capture, program, "--", mode, target, cwd=tmp_path)
    return proc, capture


def _sizes(capture_path: Path):
    with read_capture(capture_path) as capture:
        assert capture.complete and not capture.truncated, capture.truncation_message()
        return sorted(e.size for e in capture.events if e.kind == "malloc" and e.size in (3333, 4444, 5555))


def test_an_exec_finishes_the_capture_with_every_event(run_cytool, tmp_path: Path) -> None:
    proc, capture = _profile(run_cytool, tmp_path, "exec", "/bin/true")
    assert proc.returncode == 0, proc.stderr  # /bin/true's
    assert (f"replaces its program (exec /bin/true): {capture} is complete up to here; report with: cytool report "
            f"{capture}") in proc.stderr
    # the 7 blocks were made just before the exec, well within the writer's tick: without
    # the exec hook they were still in the thread's buffer
    assert _sizes(capture) == [3333] * 7
    with read_capture(capture) as finished:  # and the capture says why it ends there
        assert finished.exec_what == "/bin/true" and finished.exec_failure == "" and finished.exec_time_ns > 0


def test_execs_that_cannot_start_leave_the_tracing_on(run_cytool, tmp_path: Path) -> None:
    proc, capture = _profile(run_cytool, tmp_path, "missing", str(tmp_path / "not-there"))
    assert proc.returncode == 0, proc.stderr
    assert "cytool: exec of" not in proc.stderr
    assert _sizes(capture) == [3333] * 7 + [4444] * 5


def test_an_exec_failing_past_the_checks_is_said(run_cytool, tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-program"
    garbage.write_bytes(b"\x7fELF but not really" + bytes(64))
    garbage.chmod(garbage.stat().st_mode | stat.S_IXUSR)
    proc, capture = _profile(run_cytool, tmp_path, "bad-format", str(garbage))
    assert proc.returncode == 0, proc.stderr
    assert "exec failed: 8" in proc.stdout  # ENOEXEC
    assert (f"cytool: exec of {garbage} failed (Exec format error) after the capture was finished for it: process "
            in proc.stderr and "is no longer traced (the capture says so)" in proc.stderr), proc.stderr
    # finished at the exec: what came after is not traced, as said, and the capture says so
    with read_capture(capture) as finished:
        assert finished.complete and finished.truncated and finished.exec_failure == "Exec format error"
        assert "that failed (Exec format error): the program went on untraced" in finished.truncation_message()
        assert sorted(e.size for e in finished.events if e.kind == "malloc" and e.size in (3333, 4444)) == [3333] * 7


def test_a_followed_child_that_execs_gets_a_complete_capture(run_cytool, tmp_path: Path) -> None:
    proc, capture = _profile(run_cytool, tmp_path, "child", "/bin/true", "--follow-fork")
    assert proc.returncode == 0, proc.stderr
    assert "child status 0" in proc.stdout
    children = [p for p in tmp_path.glob("child.cytrace.*") if p.suffix[1:].isdigit()]
    assert len(children) == 1, sorted(os.listdir(tmp_path))
    assert _sizes(children[0]) == [5555] * 6
    assert _sizes(capture) == [3333] * 7



@pytest.mark.parametrize("how, target", [("execl", "/bin/true"), ("execlp", "true"), ("execle", "/bin/true"),
                                         ("execvpe", "true"), ("execve", "/bin/true")])
def test_every_exec_function_finishes_the_capture(helpers: Path, tmp_path: Path, how: str, target: str) -> None:  # noqa: F811
    """The exec functions a C program calls (Python's os module uses execv and execve)."""
    capture = tmp_path / f"{how}.cytrace"
    env = dict(os.environ)
    env.pop("CYTOOL_PROFILE", None)
    proc = subprocess.run([str(helpers / "test_trace_helper"), str(capture), "exec", how, target], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr  # true's
    assert "cytool: process" not in proc.stderr  # not asked to say it (cytool profile asks)
    with read_capture(capture) as read:
        assert read.complete and not read.truncated, read.truncation_message()
        assert sum(1 for e in read.events if e.kind == "malloc" and e.size == 6161) == 9


# A program traced by CYTOOL_PROFILE (the autostart) whose followed child keeps 4 blocks of
# 123,457 bytes and then execs Python again, which inherits CYTOOL_PROFILE and keeps 3 of
# 654,321: the second program of the child's pid must not take (and empty) the capture of
# its first one.
EXEC_CHAIN = """\
import os, sys
kept = [bytearray(111111) for _ in range(2)]
pid = os.fork()
if pid == 0:
    kept = [bytearray(123456) for _ in range(4)]
    os.execv(sys.executable, [sys.executable, "-c", "kept = [bytearray(654320) for _ in range(3)]"])
_, status = os.waitpid(pid, 0)
print("child status", status, flush=True)
"""


def run_exec_chain(folder: Path) -> subprocess.CompletedProcess:
    """EXEC_CHAIN run in `folder` under CYTOOL_PROFILE=folder/chain.cytrace with forks followed."""
    import sys

    (folder / "chain.py").write_text(EXEC_CHAIN)
    env = dict(os.environ, CYTOOL_PROFILE=str(folder / "chain.cytrace"), CYTOOL_PROFILE_FOLLOW_FORK="1")
    return subprocess.run([sys.executable, "chain.py"], cwd=folder, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=300)


def _blocks(capture_path: Path, low: int, high: int) -> int:
    with read_capture(capture_path) as capture:
        assert capture.complete and not capture.truncated, capture.truncation_message()
        return sum(1 for e in capture.events if e.kind == "malloc" and low <= e.size < high)


def test_a_program_after_an_exec_never_takes_the_capture_before_it(tmp_path: Path) -> None:
    proc = run_exec_chain(tmp_path)
    assert proc.returncode == 0 and "child status 0" in proc.stdout, proc.stderr
    names = sorted(p.name for p in tmp_path.glob("chain.cytrace*"))
    assert len(names) == 3, names
    child_pid = names[1].split(".")[2]
    assert names == ["chain.cytrace", f"chain.cytrace.{child_pid}", f"chain.cytrace.{child_pid}.2"]
    assert _blocks(tmp_path / "chain.cytrace", 111111, 111200) == 2
    before, after = tmp_path / names[1], tmp_path / names[2]
    assert _blocks(before, 123456, 123500) == 4  # (was emptied and rewritten by the exec'd program)
    with read_capture(before) as capture:
        assert capture.exec_what is not None and not capture.exec_failure
    assert _blocks(after, 654320, 654400) == 3
    with read_capture(after) as capture:
        assert capture.header.pid == int(child_pid) and capture.exec_what is None


def test_capture_names_never_name_an_existing_file(tmp_path: Path) -> None:
    from cytool import _cytrace

    path = tmp_path / "run.cytrace"
    pid = os.getpid()
    assert _cytrace.unused_capture_path(str(path)) == str(path)
    assert _cytrace.unused_capture_path(str(path), False) == f"{path}.{pid}"
    path.write_text("")
    assert _cytrace.unused_capture_path(str(path)) == f"{path}.{pid}"
    Path(f"{path}.{pid}").write_text("")
    os.symlink("/nonexistent", f"{path}.{pid}.2")  # (a dangling link is a name taken too)
    assert _cytrace.unused_capture_path(str(path)) == f"{path}.{pid}.3"
    with pytest.raises(OSError) as raised:
        _cytrace.unused_capture_path("x" * 5000)
    assert raised.value.errno == __import__("errno").ENAMETOOLONG
