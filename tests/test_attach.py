"""`cytool attach PID`: black-box on real processes (real gdb, real Cython): a Cython loop
run by `cytool run`, plain Python, a process asleep, --duration, --stop, the process
exiting while traced, every error path, and a Python other than the venv's."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from conftest import _find_interpreter
from terminal import terminal

FIXTURES = Path(__file__).parent / "fixtures" / "attach"
# the line of plain.py that allocates in its loop
GROW_LINE = next(n for n, text in enumerate((FIXTURES / "plain.py").read_text().splitlines(), 1)
                 if "bytearray(512)" in text)

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="cytool attach needs gdb")


def _launch(command: List[str], cwd: Path) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline() if process.stdout else ""
    if line.strip() != "ready":
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"target did not start: {line}{out}{err}")
    return process


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture programs, in one folder for the module: allocmod.pyx is built once."""
    folder = tmp_path_factory.mktemp("attach")
    for name in ("allocmod.pyx", "loop.py", "plain.py", "threads.py", "profiled.py", "signalled.py",
                 "exit_on_capture.py", "spinmod.pyx", "spinners.py", "execs.py"):
        shutil.copy(FIXTURES / name, folder / name)
    return folder


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where a test's captures go (its programs run from `programs`)."""
    return tmp_path


@pytest.fixture
def targets() -> Iterator[List[subprocess.Popen]]:
    started: List[subprocess.Popen] = []
    yield started
    for process in reversed(started):  # a debugger before the process it holds
        if process.poll() is None:
            process.kill()
        process.communicate()


def _report_json(run_cytool, capture: Path) -> dict:
    result = run_cytool("report", capture, "-f", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _no_negative_figures(report: dict) -> None:
    for line in report["lines"]:
        for figures in (line, line["inclusive"]):
            assert all(value >= 0 for value in figures.values() if isinstance(value, int)), line
    assert all(value >= 0 for value in report["totals"].values() if isinstance(value, int))


def test_attach_cython_loop_for_a_duration(workdir, programs, targets, run_cytool):
    """A program cytool runs (its .pyx built into the cache, libcytrace already loaded):
    traced for a second, then the capture names the .pyx line and the Cython function."""
    target = _launch([sys.executable, "-m", "cytool", "run", "loop.py"], programs)
    targets.append(target)
    capture = workdir / "loop.cytrace"
    result = run_cytool("attach", target.pid, "--duration", "1", "-o", capture, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"tracing process {target.pid} into {capture}" in result.stderr
    assert "stopped tracing" in result.stderr and "Traceback" not in result.stderr
    assert target.poll() is None  # the program goes on
    report = _report_json(run_cytool, capture)
    assert report["capture"]["attached"] is True
    assert report["capture"]["truncated"] is False
    assert any("tracing started in the running process" in w for w in report["capture"]["warnings"])
    pyx = [line for line in report["lines"] if line["file"].endswith("allocmod.pyx") and line["line"] == 13]
    assert pyx and pyx[0]["function"] == "allocmod.make_blocks"
    assert pyx[0]["bytes"] >= 4096 * 20 and pyx[0]["bytes"] % 4096 == 0
    _no_negative_figures(report)
    table = run_cytool("report", capture)
    assert table.returncode == 0
    assert "tracing started in the running process" in table.stdout + table.stderr
    assert "allocmod.pyx:13" in table.stdout


def test_attach_sees_threads_already_running(workdir, programs, targets, run_cytool):
    """A thread started before the attach: its allocations carry its name and its Python
    frames (the function that runs in it, above the Cython function)."""
    target = _launch([sys.executable, "-m", "cytool", "run", "threads.py"], programs)
    targets.append(target)
    capture = workdir / "threads.cytrace"
    result = run_cytool("attach", target.pid, "--duration", "1", "-o", capture, timeout=120)
    assert result.returncode == 0, result.stderr
    report = _report_json(run_cytool, capture)
    churner = [t for t in report["threads"] if t["name"] == "churner"]
    assert churner and churner[0]["bytes"] >= 4096 * 20
    stacks = [s for s in report["stacks"] if any(f["function"] == "allocmod.make_blocks" for f in s["frames"])]
    assert stacks
    functions = [f["function"] for f in stacks[0]["frames"]]
    assert "churn" in functions and functions.index("churn") > functions.index("allocmod.make_blocks")


def test_attach_plain_python_stop_and_twice(workdir, programs, targets, run_cytool):
    target = _launch([sys.executable, "plain.py"], programs)
    targets.append(target)
    capture = workdir / "plain.cytrace"
    started = run_cytool("attach", target.pid, "-o", capture)
    assert started.returncode == 0, started.stderr
    assert f"cytool attach --stop {target.pid}" in started.stderr
    again = run_cytool("attach", target.pid, "-o", workdir / "other.cytrace")
    assert again.returncode == 2
    assert f"process {target.pid} is already traced by cytool attach, into {capture}" in again.stderr
    assert "Traceback" not in again.stderr
    time.sleep(0.5)
    stopped = run_cytool("attach", "--stop", target.pid)
    assert stopped.returncode == 0, stopped.stderr
    assert f"cytool report {capture}" in stopped.stderr
    not_traced = run_cytool("attach", "--stop", target.pid)
    assert not_traced.returncode == 2 and "is not traced by cytool attach" in not_traced.stderr
    assert target.poll() is None
    report = _report_json(run_cytool, capture)
    assert report["capture"]["truncated"] is False
    grow = [line for line in report["lines"] if line["file"].endswith("plain.py") and line["line"] == GROW_LINE]
    assert grow and grow[0]["count"] > 0
    _no_negative_figures(report)
    # a second session after the first one stopped
    second = workdir / "second.cytrace"
    result = run_cytool("attach", target.pid, "-o", second, "--duration", "0.5")
    assert result.returncode == 0, result.stderr
    assert _report_json(run_cytool, second)["totals"]["count"] > 0


def test_attach_to_a_process_asleep(workdir, programs, targets, run_cytool):
    """Nothing allocates: the process is stopped where it sleeps, and sleeps on after."""
    target = _launch([sys.executable, "plain.py", "8", "sleep"], programs)
    targets.append(target)
    capture = workdir / "asleep.cytrace"
    result = run_cytool("attach", target.pid, "-o", capture)
    assert result.returncode == 0, result.stderr
    stopped = run_cytool("attach", "--stop", target.pid)
    assert stopped.returncode == 0, stopped.stderr
    out, err = target.communicate(timeout=30)
    assert target.returncode == 0, err
    assert "woke" in out
    assert _report_json(run_cytool, capture)["capture"]["attached"] is True


def test_attach_to_a_process_computing(workdir, programs, targets, run_cytool):
    """Neither allocating nor waiting: stopped in the interpreter's own code."""
    target = _launch([sys.executable, "plain.py", "30", "spin"], programs)
    targets.append(target)
    result = run_cytool("attach", target.pid, "-o", workdir / "spin.cytrace")
    assert result.returncode == 0, result.stderr
    stopped = run_cytool("attach", "--stop", target.pid)
    assert stopped.returncode == 0, stopped.stderr
    assert target.poll() is None  # computing on


def test_attach_while_every_thread_computes_without_the_gil(workdir, programs, targets, run_cytool):
    """Every thread in a nogil Cython loop (no allocation, no system call, no Python): a
    thread computing with no libc frame on its stack is a safe point too (the attach used
    to wait 30 s and give up)."""
    target = _launch([sys.executable, "-m", "cytool", "run", "spinners.py", "600"], programs)
    targets.append(target)
    capture = workdir / "spin.cytrace"
    result = run_cytool("attach", target.pid, "-o", capture, timeout=120)
    assert result.returncode == 0, result.stderr
    assert target.poll() is None
    stopped = run_cytool("attach", "--stop", target.pid)
    assert stopped.returncode == 0, stopped.stderr
    assert target.poll() is None  # computing on
    assert _report_json(run_cytool, capture)["capture"]["attached"] is True


def test_attach_keeps_the_programs_profiler(workdir, programs, targets, run_cytool):
    """A profiler of the program's own (sys.setprofile in the main thread) is left alone:
    Python frames are read from the interpreter's frames, so the capture still has them."""
    target = _launch([sys.executable, "profiled.py"], programs)
    targets.append(target)
    capture = workdir / "profiled.cytrace"
    result = run_cytool("attach", target.pid, "--duration", "1", "-o", capture)
    assert result.returncode == 0, result.stderr
    assert "without Python frames" not in result.stderr, result.stderr
    line = next(i for i, text in enumerate((programs / "profiled.py").read_text().splitlines(), 1)
                if "PROFILED_ALLOC" in text)
    report = _report_json(run_cytool, capture)
    assert any(entry["file"].endswith("profiled.py") and entry["line"] == line for entry in report["lines"]), report


def test_process_exits_while_attached(workdir, programs, targets, run_cytool):
    target = _launch([sys.executable, "plain.py", "5"], programs)
    targets.append(target)
    capture = workdir / "exits.cytrace"
    result = run_cytool("attach", target.pid, "--duration", "60", "-o", capture, timeout=120)
    assert result.returncode == 1
    assert f"process {target.pid} exited while traced; {capture} is complete up to its exit" in result.stderr
    assert "Traceback" not in result.stderr
    report = _report_json(run_cytool, capture)
    assert report["capture"]["truncated"] is False
    assert any(line["file"].endswith("plain.py") for line in report["lines"])


def test_process_exits_as_tracing_starts(workdir, programs, targets, run_cytool):
    """The process exits the moment the tracer has started: cytool says the capture holds
    what was written (it used to say the tracer could not start, beside a complete capture)."""
    capture = workdir / "quick.cytrace"
    target = _launch([sys.executable, "exit_on_capture.py", str(capture)], programs)
    targets.append(target)
    result = run_cytool("attach", target.pid, "--duration", "30", "-o", capture, timeout=120)
    assert result.returncode == 1, result.stderr
    assert (f"process {target.pid} exited just after tracing started; {capture} " in result.stderr
            or f"process {target.pid} exited while traced; {capture} is complete" in result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert _report_json(run_cytool, capture)["capture"]["attached"] is True


def test_process_killed_while_attached(workdir, programs, targets, run_cytool):
    """SIGKILL: the capture holds what was written, and says what is missing."""
    target = _launch([sys.executable, "plain.py"], programs)
    targets.append(target)
    capture = workdir / "killed.cytrace"
    started = run_cytool("attach", target.pid, "-o", capture)
    assert started.returncode == 0, started.stderr
    time.sleep(0.5)
    target.send_signal(signal.SIGKILL)
    target.wait()
    report = _report_json(run_cytool, capture)
    assert report["capture"]["truncated"] is True
    assert any(line["file"].endswith("plain.py") for line in report["lines"])


def test_attach_while_the_program_gets_signals(workdir, programs, targets, run_cytool):
    """Signals the program gets during the attach (here SIGUSR1, every millisecond) go to
    it and never interrupt gdb's calls into it: an interrupted call used to be abandoned
    with gdb's frame on the thread's stack, and the process crashed (SIGSEGV) after gdb
    detached."""
    import threading

    target = _launch([sys.executable, "signalled.py", "20"], programs)
    targets.append(target)
    sending = threading.Event()
    sending.set()

    def send() -> None:
        while sending.is_set():
            try:
                os.kill(target.pid, signal.SIGUSR1)
            except ProcessLookupError:
                return
            time.sleep(0.001)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    capture = workdir / "signalled.cytrace"
    try:
        result = run_cytool("attach", target.pid, "-o", capture, timeout=120)
    finally:
        sending.clear()
        sender.join()
    assert result.returncode == 0, result.stderr
    assert target.poll() is None, target.communicate()  # alive
    stopped = run_cytool("attach", "--stop", target.pid)
    assert stopped.returncode == 0, stopped.stderr
    target.kill()
    target.wait()
    assert target.returncode == -signal.SIGKILL  # it lived until killed
    assert _report_json(run_cytool, capture)["totals"]["count"] > 0


def test_attach_to_a_stopped_process(workdir, programs, targets, run_cytool):
    """A process stopped by SIGSTOP (Ctrl-Z) is refused and left stopped: gdb would have set
    it running (and it used to crash, or the attach waited 10 s for nothing)."""
    target = _launch([sys.executable, "plain.py"], programs)
    targets.append(target)
    target.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{target.pid}/stat").read_text().split(") ", 1)[1][0] != "T":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    capture = workdir / "stopped.cytrace"
    result = run_cytool("attach", target.pid, "-o", capture)
    assert result.returncode == 2, result.stderr
    assert f"process {target.pid} is stopped (by SIGSTOP, SIGTSTP or Ctrl-Z)" in result.stderr
    assert f"kill -CONT {target.pid}" in result.stderr and "Traceback" not in result.stderr
    assert Path(f"/proc/{target.pid}/stat").read_text().split(") ", 1)[1][0] == "T"  # still stopped
    assert not capture.exists()
    target.send_signal(signal.SIGCONT)
    result = run_cytool("attach", target.pid, "-o", capture, "--duration", "0.5")
    assert result.returncode == 0, result.stderr
    assert target.poll() is None


def test_two_attaches_at_once(workdir, programs, targets, run_cytool):
    """Two `cytool attach` of one process at the same moment: one traces into its own capture,
    the other is refused, and --stop then finds the session (the two used to share the
    session's files: the winner wrote the loser's capture, and nothing could stop it)."""
    target = _launch([sys.executable, "plain.py"], programs)
    targets.append(target)
    captures = [workdir / "first.cytrace", workdir / "second.cytrace"]
    runs = [subprocess.Popen([sys.executable, "-m", "cytool", "attach", str(target.pid), "-o", str(capture)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for capture in captures]
    results = [(run.wait(timeout=120), run.communicate()[1]) for run in runs]
    winners = [i for i, (code, _) in enumerate(results) if code == 0]
    assert len(winners) == 1, results
    won, lost = winners[0], 1 - winners[0]
    assert f"into {captures[won]} " in results[won][1], results
    assert results[lost][0] == 2 and "Traceback" not in results[lost][1], results
    assert (f"another cytool attach is attaching to process {target.pid}" in results[lost][1]
            or f"already traced by cytool attach, into {captures[won]}" in results[lost][1]), results
    stopped = run_cytool("attach", "--stop", target.pid)
    assert stopped.returncode == 0, stopped.stderr
    assert f"cytool report {captures[won]}" in stopped.stderr
    assert target.poll() is None


def test_attach_capture_paths(workdir, programs, targets, run_cytool):
    """-o as `cytool profile -o` takes it: a folder gets the default name (never an existing
    file's), a file that is not a capture is not overwritten, a FIFO is refused (the process
    used to hang: its agent held the GIL while opening the FIFO to write)."""
    target = _launch([sys.executable, "plain.py"], programs)
    targets.append(target)
    mine = workdir / "notes.cytrace"
    mine.write_text("mine\n")
    result = run_cytool("attach", target.pid, "-o", mine)
    assert result.returncode == 2 and "exists and is not a cytool capture; refusing to overwrite it" in result.stderr
    assert mine.read_text() == "mine\n"
    fifo = workdir / "pipe.cytrace"
    os.mkfifo(fifo)
    result = run_cytool("attach", target.pid, "-o", fifo)
    assert result.returncode == 2 and "not a regular file (a FIFO, a device?)" in result.stderr, result.stderr
    folder = workdir / "captures"
    folder.mkdir()
    for name in (f"plain.{target.pid}.cytrace", f"plain.{target.pid}-1.cytrace"):
        result = run_cytool("attach", target.pid, "-o", folder, "--duration", "0.3")
        assert result.returncode == 0, result.stderr
        assert f"into {folder / name} " in result.stderr, result.stderr
    assert target.poll() is None


@pytest.mark.parametrize("fork", [False, True])
def test_attach_again_after_the_process_execs(workdir, programs, targets, run_cytool, fork):
    """A traced process that exec()s another program keeps its pid (and start time) but not
    the tracer: it can be attached to again (it used to be "already traced" for good, and
    --stop said "not traced any more"). A child it forked before does not keep the session
    open."""
    go = workdir / "exec-now"
    target = _launch([sys.executable, "execs.py", str(go)] + (["fork"] if fork else []), programs)
    targets.append(target)
    before = workdir / "before.cytrace"
    first = subprocess.Popen([sys.executable, "-m", "cytool", "attach", str(target.pid), "-o", str(before),
                              "--duration", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Exec only once the tracer runs: the capture file exists before the agent starts tracing,
    # and an exec in between is the other message ("before the tracer could start").
    said_first = first.stderr.readline()
    assert said_first.startswith(f"cytool: tracing process {target.pid} into"), said_first + first.communicate()[1]
    go.touch()
    assert target.stdout.readline().strip() == "ready"  # plain.py runs in its place
    _, said = first.communicate(timeout=120)  # it used to wait out the whole duration
    said = said_first + said
    assert first.returncode == 1, said
    assert f"process {target.pid} replaced its program (exec) while traced: the tracer went with it" in said, said
    second = run_cytool("attach", target.pid, "-o", workdir / "after.cytrace", "--duration", "0.5")
    assert second.returncode == 0, second.stderr
    assert target.poll() is None
    report = _report_json(run_cytool, workdir / "after.cytrace")
    assert any(line["file"].endswith("plain.py") and line["line"] == GROW_LINE for line in report["lines"])


def test_attach_errors(workdir, programs, targets, run_cytool):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    result = run_cytool("attach", gone.pid)
    assert result.returncode == 2 and f"no process with pid {gone.pid}" in result.stderr

    sleeper = subprocess.Popen(["sleep", "30"])
    targets.append(sleeper)
    result = run_cytool("attach", sleeper.pid)
    assert result.returncode == 2
    assert f"process {sleeper.pid} (sleep) is not a Python process" in result.stderr

    result = run_cytool("attach", "--stop", sleeper.pid)
    assert result.returncode == 2 and "is not a Python process" in result.stderr
    assert "Traceback" not in result.stderr

    for duration in ("0", "-1", "nan", "inf", "1e300"):  # non-finite ones crashed the agent's watcher
        result = run_cytool("attach", "--duration", duration, str(sleeper.pid))
        assert result.returncode == 2 and "--duration takes a number of seconds above 0" in result.stderr, duration

    python = _launch([sys.executable, "plain.py"], programs)
    targets.append(python)
    capture = workdir / "live.cytrace"
    result = run_cytool("attach", python.pid, "--live", "-o", capture)  # stdin and stdout are pipes
    assert result.returncode == 2 and "--live needs a terminal" in result.stderr, result.stderr
    assert not capture.exists() and "TracerPid:\t0" in Path(f"/proc/{python.pid}/status").read_text()
    result = run_cytool("attach", "--stop", python.pid)
    assert result.returncode == 2 and "is not traced by cytool attach" in result.stderr


@pytest.mark.parametrize("version", ["3.8", "2.7"])
def test_attach_refused_for_an_old_python(workdir, programs, targets, run_cytool, version):
    interpreter = _find_interpreter(version)
    if not interpreter:
        pytest.skip(f"Python {version} not found")
    target = subprocess.Popen([interpreter, "-c", "import time; time.sleep(30)"])
    targets.append(target)
    deadline = time.monotonic() + 10
    while f"python{version}" not in os.readlink(f"/proc/{target.pid}/exe") and time.monotonic() < deadline:
        time.sleep(0.05)  # exec'd
    result = run_cytool("attach", target.pid)
    assert result.returncode == 2
    assert f"process {target.pid} runs Python {version}: cytool's tracer needs Python 3.9 or later" in result.stderr


def test_attach_refused_under_another_debugger(workdir, programs, targets, run_cytool):
    """ptrace refuses a second tracer: cytool names the one holding the process."""
    target = _launch([sys.executable, "plain.py"], programs)
    targets.append(target)
    holder = subprocess.Popen(["gdb", "-nx", "-batch", "-p", str(target.pid), "-ex", "shell sleep 20"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    targets.append(holder)
    deadline = time.monotonic() + 30
    while "TracerPid:\t0" in Path(f"/proc/{target.pid}/status").read_text():
        assert time.monotonic() < deadline, "gdb did not attach"
        time.sleep(0.05)
    result = run_cytool("attach", target.pid)
    assert result.returncode == 2
    assert f"process {target.pid} is being traced by process {holder.pid} (gdb)" in result.stderr
    assert "Traceback" not in result.stderr


def test_attach_refused_when_cytool_profile_traces_it(workdir, programs, targets, run_cytool):
    target = _launch([sys.executable, "-m", "cytool", "profile", "-o", workdir / "profile.cytrace", "plain.py"], programs)
    targets.append(target)
    result = run_cytool("attach", target.pid, "-o", workdir / "attach.cytrace")
    assert result.returncode == 2, result.stderr
    assert f"process {target.pid} is already traced by cytool, into {workdir / 'profile.cytrace'}" in result.stderr
    assert not (workdir / "attach.cytrace").exists()


@pytest.mark.skipif(importlib.util.find_spec("cytool.commands.live") is None or shutil.which("tmux") is None,
                    reason="cytool live (and tmux) needed")
def test_attach_live_view(workdir, programs, targets, run_cytool):
    """--live: the live view of the capture on this terminal (tmux), its lines as they come."""
    target = _launch([sys.executable, "plain.py"], programs)
    targets.append(target)
    capture, status = workdir / "live.cytrace", workdir / "status"
    command = (f"{sys.executable} -m cytool attach {target.pid} --live --duration 2 -o {capture}; "
               f"echo $? > {status}; sleep 30")
    with terminal("cytool-attach", command, width=160, height=40, cwd=str(workdir)) as screen:
        screen.wait_for(f"plain.py:{GROW_LINE}", timeout=60)
        time.sleep(2.5)  # past the duration: the capture is complete
        screen.send("q", enter=False)
        deadline = time.monotonic() + 60
        while not status.exists() or not status.read_text().strip():
            assert time.monotonic() < deadline, screen.screen()
            time.sleep(0.2)
        assert status.read_text().strip() == "0"
    report = _report_json(run_cytool, capture)
    assert report["capture"]["truncated"] is False and report["capture"]["attached"] is True


@pytest.mark.parametrize("version", ["3.13", "3.9"])
def test_attach_other_python_version(workdir, programs, targets, run_cytool, version):
    """A Python other than cytool's: the tracer's extension is built for it."""
    if version == "%d.%d" % sys.version_info[:2]:
        pytest.skip("the venv's own version")
    interpreter = _find_interpreter(version)
    if not interpreter:
        pytest.skip(f"Python {version} not found")
    target = _launch([interpreter, "plain.py"], programs)
    targets.append(target)
    capture = workdir / f"py{version}.cytrace"
    result = run_cytool("attach", target.pid, "--duration", "0.5", "-o", capture, timeout=120)
    assert result.returncode == 0, result.stderr
    report = _report_json(run_cytool, capture)
    assert report["capture"]["python_version"].startswith(version)
    assert any(line["file"].endswith("plain.py") and line["line"] == GROW_LINE for line in report["lines"])
