"""The live view: the C follower (runtime/src/analyze_follow.c through cytool.live.follow)
on a capture grown in steps and on one a running `cytool profile` is writing, its figures
at the end equal to `cytool report --format json`'s; `cytool profile --live` and
`cytool live` on a real terminal (tmux); and their errors. The running profile and
`cytool profile --live` run on two Pythons (tests/conftest.py TWO_PYTHONS, tracing_python)."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import pytest

REPO = Path(__file__).resolve().parent.parent
GROW = REPO / "tests" / "fixtures" / "live" / "grow.pyx"
BENCH = REPO / "examples" / "bench_alloc.pyx"

sys.path.insert(0, str(REPO / "tests" / "fixtures" / "reports"))
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "debug"))

from capture_writer import CaptureWriter, pc_word, py_word, write_exec_capture  # noqa: E402
from gdbharness import python_env  # noqa: E402
from terminal import Terminal, needs_tmux  # noqa: E402

from cytool.capture import read_capture  # noqa: E402
from cytool.live.follow import Follower  # noqa: E402
from cytool.live.view import open_follower  # noqa: E402

FIGURES = ("bytes", "count", "peak_bytes", "peak_count", "leaked_bytes", "leaked_count")


def cytool(*args: object, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cytool", *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=300, **kwargs)


def report_json(capture: Path) -> dict:
    done = cytool("report", capture, "-f", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def follower_figures(follower: Follower) -> Dict[str, int]:
    t = follower.totals
    return {"bytes": t.alloc_bytes, "count": t.alloc_count, "peak_bytes": t.peak_bytes,
            "peak_count": sum(r.peak_count for r in follower.lines()), "leaked_bytes": t.live_bytes,
            "leaked_count": t.live_count}


def line_figures(follower: Follower, file_name: str, line: int) -> Dict[str, int]:
    rows = [r for r in follower.lines() if Path(r.file).name == file_name and r.line == line]
    assert len(rows) == 1, [(r.function, r.where) for r in follower.lines()]
    r = rows[0]
    return {"function": r.function, "bytes": r.alloc_bytes, "count": r.alloc_count, "peak_bytes": r.peak_bytes,
            "peak_count": r.peak_count, "leaked_bytes": r.live_bytes, "leaked_count": r.live_count}


def report_line(report: dict, file_name: str, line: int) -> Dict[str, int]:
    rows = [r for r in report["lines"] if Path(r["file"]).name == file_name and r["line"] == line]
    assert len(rows) == 1
    return {"function": rows[0]["function"], **{k: rows[0][k] for k in FIGURES}}


@pytest.fixture(scope="module")
def bench_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished capture of bench_alloc.pyx with three threads."""
    folder = tmp_path_factory.mktemp("live-bench")
    capture = folder / "bench.cytrace"
    done = cytool("profile", "--no-summary", "-o", capture, BENCH, "--", 100000, 3, cwd=folder)
    assert done.returncode == 0, done.stderr
    return capture


def test_follower_on_a_capture_grown_in_steps_ends_with_the_reports_figures(bench_capture: Path, tmp_path: Path) -> None:
    data = bench_capture.read_bytes()
    grown = tmp_path / "grown.cytrace"
    # the header first, then the body in uneven steps that cut frames anywhere
    header_end = 16 + int.from_bytes(data[12:16], "little")
    cuts = [header_end + 2] + [len(data) * k // 9 + 13 * k for k in range(1, 9)] + [len(data)]
    cuts = sorted({min(c, len(data)) for c in cuts})
    grown.write_bytes(data[: cuts[0]])
    writer = open(grown, "r+b")
    fcntl.flock(writer, fcntl.LOCK_EX)  # as the tracer holds it while it writes
    follower = Follower(grown)
    last_count, last_read = 0, 0
    for cut in cuts[1:]:
        with open(grown, "r+b") as f:  # the same file, growing (its inode is followed)
            f.seek(0, os.SEEK_END)
            f.write(data[f.tell() : cut])
        follower.poll()
        t = follower.totals
        assert t.read_bytes <= cut and t.read_bytes >= last_read  # a frame cut short waits
        assert t.alloc_count >= last_count
        assert not follower.notes and not follower.status_problem, follower.notes  # waiting is no damage
        assert t.complete == (cut == len(data)) and t.writing
        last_count, last_read = t.alloc_count, t.read_bytes
        # what the follower is done with is never read again: wipe it (the header was read at the start)
        assert header_end <= t.settled_bytes <= t.read_bytes
        with open(grown, "r+b") as f:
            f.seek(header_end)
            f.write(b"\0" * (t.settled_bytes - header_end))
    assert last_read == len(data) and follower.totals.pending == 0 and follower.totals.late_events == 0
    assert follower.totals.settled_bytes == len(data)
    writer.close()
    report = report_json(bench_capture)
    assert follower_figures(follower) == {k: report["totals"][k] for k in FIGURES}
    assert line_figures(follower, "bench_alloc.pyx", 21) == report_line(report, "bench_alloc.pyx", 21)
    assert line_figures(follower, "bench_alloc.pyx", 21)["function"] == "bench_alloc.churn"
    assert {name for _, name in follower.threads()} >= {"MainThread", "Thread-1 (work)"}
    follower.close()


def test_follower_reports_a_damaged_frame_as_the_reader_does(bench_capture: Path, tmp_path: Path) -> None:
    data = bytearray(bench_capture.read_bytes())
    middle = len(data) // 2
    # Inside some frame. Every byte is changed: a fixed fill can equal what is there (LZ4
    # writes runs of 0xff for long literals and matches), which would be no damage at all.
    data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    damaged = tmp_path / "damaged.cytrace"
    damaged.write_bytes(bytes(data[: len(data) // 3]))
    writer = open(damaged, "r+b")
    fcntl.flock(writer, fcntl.LOCK_EX)
    follower = Follower(damaged)
    follower.poll()
    assert not follower.notes
    with open(damaged, "ab") as f:
        f.write(bytes(data[len(data) // 3 :]))
    follower.poll()
    writer.close()
    with read_capture(damaged) as whole:
        assert whole.truncated and any("damaged" in note for note in whole.notes)
        expected = [note for note in whole.notes if "damaged" in note]
    assert [note for note in follower.notes if "damaged" in note] == expected
    assert follower.totals.complete and follower.totals.alloc_count > 0
    follower.close()


def python_version(python: str) -> str:
    """"3.13": the version of that interpreter."""
    return subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          stdout=subprocess.PIPE, text=True, check=True).stdout.strip()


def test_follower_on_a_capture_a_running_profile_writes(tracing_python: str, tmp_path: Path) -> None:
    capture, stop = tmp_path / "run.cytrace", tmp_path / "stop"
    program = subprocess.Popen([tracing_python, "-m", "cytool", "profile", "--no-summary", "-o", capture, GROW, "--",
                                stop], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=python_env())
    try:
        follower = open_follower(capture, program.pid, wait_s=240)
        deadline = time.monotonic() + 120
        held = {}
        while time.monotonic() < deadline:
            follower.poll()
            rows = [r for r in follower.lines() if r.function == "grow.hold_blocks"]
            if rows and rows[0].live_bytes >= 10 * 65536:
                held = line_figures(follower, "grow.pyx", 19)
                break
            time.sleep(0.2)
        assert held and held["leaked_bytes"] % 65536 == 0
        assert follower.totals.writing and not follower.totals.complete
        stop.touch()
        assert program.wait(timeout=120) == 0, program.stderr.read()
        for _ in range(50):
            follower.poll()
            if follower.totals.complete:
                break
            time.sleep(0.1)
        assert follower.totals.complete and not follower.totals.writing
        report = report_json(capture)
        assert report["capture"]["python_version"].startswith(python_version(tracing_python) + ".")
        assert follower_figures(follower) == {k: report["totals"][k] for k in FIGURES}
        assert line_figures(follower, "grow.pyx", 19) == report_line(report, "grow.pyx", 19)
        assert {name for _, name in follower.threads()} >= {"MainThread", "churner"}
        follower.close()
    finally:
        stop.touch()
        if program.poll() is None:
            program.kill()
            program.wait()


def write_small_capture(path: Path, version: int) -> None:
    with CaptureWriter(path, version=version) as w:
        w.object(1, 0x7F0000000000, "/tmp/mod.so", b"\xde\xad\xbe\xef", [(0x7F0000001000, 0x7F0000002000)])
        w.thread(0, 1234, "MainThread")
        w.pyframe(7, 12, "main", "/tmp/run.py")
        w.stack(1, [pc_word(0x7F0000001234), py_word(7)])
        w.batch(0, 100, [("malloc", 0, 0x5000, 64, 1), ("calloc", 10, 0x5100, 128, 1), ("free", 7, 0x5100, 0, 0),
                         ("mmap", 3, 0x7F1000000000, 1 << 20, 1), ("munmap", 3, 0x7F1000080000, 1 << 19, 0)])
        w.flush()
        w.stats(5, 0, 1, 2)
        w.end(1000)


@pytest.mark.parametrize("version", [1, 2])
def test_follower_reads_captures_of_older_cytools(tmp_path: Path, version: int) -> None:
    capture = tmp_path / f"v{version}.cytrace"
    write_small_capture(capture, version)
    with Follower(capture) as follower:
        follower.poll()
        assert follower.format_version == version and follower.totals.complete
        report = report_json(capture)
        assert follower_figures(follower) == {k: report["totals"][k] for k in FIGURES}
        assert follower_figures(follower)["leaked_bytes"] == 64 + (1 << 19)


@pytest.mark.parametrize("failed", [False, True])
def test_follower_tells_a_capture_finished_for_an_exec(tmp_path: Path, failed: bool) -> None:
    # format 5: EXEC before END; EXEC_FAILED in a frame after END, which the follower reads too
    from cytool.live.view import _status_line

    capture = tmp_path / "exec.cytrace"
    write_exec_capture(capture, failed)
    with Follower(capture) as follower:
        follower.poll()
        assert follower.totals.complete and follower.exec_end == ("/bin/true", "Exec format error" if failed else "")
        line = _status_line(follower, "")
        if failed:
            assert "tracing ended at an exec of /bin/true that failed (Exec format error)" in line, line
        else:
            assert "the program replaced itself (exec /bin/true): capture complete" in line, line


def test_live_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    done = cytool("live", text)
    assert done.returncode == 2 and "not a cytool capture" in done.stderr and "Traceback" not in done.stderr
    newer = tmp_path / "newer.cytrace"
    with CaptureWriter(newer, version=9) as w:
        w.end(1)
    done = cytool("live", newer)
    assert done.returncode == 2 and "written by a newer cytool" in done.stderr and "Traceback" not in done.stderr
    done = cytool("live", tmp_path / "missing.cytrace")
    assert done.returncode == 2 and "no such file" in done.stderr
    small = tmp_path / "small.cytrace"
    write_small_capture(small, 3)
    done = cytool("live", small, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "needs a terminal" in done.stderr and "Traceback" not in done.stderr
    done = cytool("profile", "--live", "-c", "pass", stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert done.returncode == 2 and "--live needs a terminal" in done.stderr
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    done = cytool("live", tmp_path / "never.cytrace", "--pid", gone.pid)  # it used to say only "no such file"
    assert done.returncode == 2 and f"no process with pid {gone.pid} (the writer of " in done.stderr, done.stderr


# ---- the view on a real terminal ---------------------------------------------------


def table_rows(text: str):
    return [line for line in text.splitlines() if "│" in line]


@needs_tmux
def test_profile_live_view_in_tmux(tracing_python: str, tmp_path: Path) -> None:
    capture, stop, status = tmp_path / "live.cytrace", tmp_path / "stop", tmp_path / "status"
    env = f"CYTOOL_CACHE_DIR={os.environ['CYTOOL_CACHE_DIR']} PYTHONPATH={python_env()['PYTHONPATH']}"
    command = (f"cd {tmp_path} && {env} {tracing_python} -m cytool profile --live -o {capture} {GROW} -- {stop}; "
               f"echo $? > {status}; sleep 60")
    screen = Terminal("cytool-live", command, width=200, height=50)
    try:
        text = screen.wait_until(lambda t: "grow.hold_blocks" in t and "grow.pyx:19" in t and "running" in t,
                                 timeout=240, history=100)
        assert "sorted by live" in text and "heap " in text and "all threads" in text
        assert any("▼" in line for line in text.splitlines() if "live" in line)
        screen.send("a", enter=False)
        screen.wait_until(lambda t: "sorted by allocated" in t, history=100)
        screen.send("c", enter=False)
        screen.wait_until(lambda t: "sorted by count" in t, history=100)
        # the thread filter: the churner thread's lines only (hold_blocks is the main thread's)
        for _ in range(4):
            screen.send("t", enter=False)
            try:
                text = screen.wait_until(lambda t: "churner" in t.split("sorted by")[0] and "grow.churn " in t,
                                         timeout=3, history=100)
                break
            except AssertionError:
                continue
        assert "grow.churn " in text and "grow.pyx:26" in text
        assert not any("grow.hold_blocks" in row for row in table_rows(text))
        screen.send("T", enter=False)
        screen.wait_until(lambda t: "all threads" in t, history=100)
        screen.send("h", enter=False)
        text = screen.wait_until(lambda t: "keys" in t and "leave the view" in t, history=100)
        screen.send("h", enter=False)
        screen.wait_until(lambda t: "leave the view" not in t, history=100)
        screen.send("q", enter=False)
        text = screen.wait_until(lambda t: "left the view" in t, timeout=30, history=100)
        assert "still running" in text
        assert not status.exists()  # q left the view; the program goes on
        size = capture.stat().st_size
        time.sleep(1.0)
        assert capture.stat().st_size > size  # still tracing
        stop.touch()
        screen.wait_until(lambda t: status.exists() and "capture: " in t, timeout=120, history=100)
        assert status.read_text().strip() == "0"
    finally:
        stop.touch()
        screen.close()
    with read_capture(capture) as done:
        assert done.complete and not done.truncated, done.truncation_message()
    assert "done" in (tmp_path / "live.cytrace.out").read_text()
    assert report_json(capture)["capture"]["python_version"].startswith(python_version(tracing_python) + ".")


@needs_tmux
def test_live_says_when_the_capture_vanishes(bench_capture: Path, tmp_path: Path) -> None:
    part = tmp_path / "part.cytrace"
    part.write_bytes(bench_capture.read_bytes()[:-4])  # its last frame (the END) cut: no end, no writer
    status = tmp_path / "status"
    command = f"{sys.executable} -m cytool live {part} 2> {tmp_path / 'err'}; echo $? > {status}; sleep 60"
    screen = Terminal("cytool-vanish", command, width=200, height=50)
    try:
        screen.wait_until(lambda t: "bench_alloc.churn" in t and "not being written" in t, timeout=60, history=100)
        part.unlink()
        deadline = time.monotonic() + 30
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status.read_text().strip() == "1"
        assert "vanished" in (tmp_path / "err").read_text()
    finally:
        screen.close()
