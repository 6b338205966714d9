"""The tracer driven from Python: `cytool profile`, cytool.Tracker, CYTOOL_PROFILE, on a
Cython fixture whose allocating line is known (tests/fixtures/tracer/alloc_exact.pyx)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import List

import pytest

from cytool.capture import Capture, read_capture

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tracer"
EXACT = FIXTURES / "alloc_exact.pyx"
ALLOCATE_LINE = next(i for i, line in enumerate(EXACT.read_text().splitlines(), 1) if line.rstrip().endswith("# ALLOCATE_LINE"))


def line_allocations(capture: Capture, size: int, line: int = ALLOCATE_LINE) -> List:
    """malloc events of `size` bytes whose innermost frame is alloc_exact.pyx:line."""
    found = []
    for event in capture.events:
        if event.kind != "malloc" or event.size != size:
            continue
        frames = capture.stacks.get(event.stack_id, [])
        if frames and frames[0].file.endswith("alloc_exact.pyx") and frames[0].line == line:
            found.append(event)
    return found


@pytest.mark.parametrize("nthreads", [1, 4])
def test_profile_exact_counts_on_a_pyx_line(run_cytool, tmp_path: Path, nthreads: int) -> None:
    capture_path = tmp_path / "exact.cytrace"
    proc = run_cytool("profile", EXACT, "-o", capture_path, "--", 2500, 5000, nthreads, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"allocated {2500 * nthreads}" in proc.stdout
    assert str(capture_path) in proc.stdout
    with read_capture(capture_path) as capture:
        assert capture.complete and capture.stats.dropped == 0
        assert capture.header.python_frames and capture.header.native_traced
        found = line_allocations(capture, 5000)
        assert len(found) == 2500 * nthreads
        assert sorted(Counter(e.thread_id for e in found).values()) == [2500] * nthreads
        frees = {e.address for e in capture.events if e.kind == "free"}
        assert all(e.address in frees for e in found)
        # Python frames above the native ones: threading's bootstrap for the workers
        pyframes = {f.function for f in capture.pyframes.values()}
        assert "Thread.run" in pyframes


def test_profile_default_capture_name_never_overwrites(run_cytool, tmp_path: Path) -> None:
    for _ in range(2):
        proc = run_cytool("profile", "--no-summary", EXACT, "--", 10, 100, 1, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    captures = sorted(tmp_path.glob("alloc_exact.*.cytrace"))
    assert len(captures) == 2
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    proc = run_cytool("profile", EXACT, "-o", precious, "--", 10, 100, 1, cwd=tmp_path)
    assert proc.returncode == 2
    assert "refusing to overwrite" in proc.stderr
    assert precious.read_text() == "mine"


@pytest.mark.parametrize("follow", [False, True])
def test_profile_fork(run_cytool, tmp_path: Path, follow: bool) -> None:
    capture_path = tmp_path / "fork.cytrace"
    flags = ["--follow-fork"] if follow else []
    proc = run_cytool("profile", "--no-summary", *flags, EXACT, "-o", capture_path, "--", 100, 3000, 1, "fork", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    children = [p for p in tmp_path.glob("fork.cytrace.*") if p.suffix[1:].isdigit()]
    with read_capture(capture_path) as parent:
        assert parent.complete
        assert len(line_allocations(parent, 3000)) == 100
        assert line_allocations(parent, 3001) == []  # the child's
    assert len(children) == int(follow)
    if follow:
        with read_capture(children[0]) as child:
            assert child.header.forked_child and child.header.parent_pid == parent.header.pid
            assert len(line_allocations(child, 3001)) == 7
            assert line_allocations(child, 3000) == []


def test_environment_start_with_cytool_run(run_cytool, tmp_path: Path) -> None:
    capture_path = tmp_path / "env.cytrace"
    proc = run_cytool("run", EXACT, "--", 1500, 4321, 2, cwd=tmp_path, env={"CYTOOL_PROFILE": str(capture_path)})
    assert proc.returncode == 0, proc.stderr
    with read_capture(capture_path) as capture:
        assert capture.complete  # stopped at exit
        assert len(line_allocations(capture, 4321)) == 3000


def test_os_exit_while_tracing_finishes_the_capture(run_cytool, tmp_path: Path) -> None:
    capture_path = tmp_path / "osexit.cytrace"
    proc = run_cytool("run", EXACT, "--", 20000, 64, 1, "exit", cwd=tmp_path, env={"CYTOOL_PROFILE": str(capture_path)})
    assert proc.returncode == 0, proc.stderr
    with read_capture(capture_path) as capture:
        assert capture.complete and not capture.truncated
        assert len(line_allocations(capture, 64)) == 20000


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("CYTOOL_PROFILE", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, text=True, capture_output=True, timeout=300)


def test_tracker_in_a_python_program(tmp_path: Path) -> None:
    code = f"""
        import importlib.util, sys
        import cytool
        from cytool.build import BuildOptions, build_module
        result = build_module({str(EXACT)!r}, BuildOptions())
        spec = importlib.util.spec_from_file_location("alloc_exact", result.module_path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)

        def python_caller():
            mod.allocate(1234, 777)

        with cytool.Tracker("first.cytrace") as tracker:
            python_caller()
        print("events", tracker.stats["events"])
        try:
            with cytool.Tracker("second.cytrace"):
                with cytool.Tracker("third.cytrace"):
                    pass
        except cytool.errors.CytoolError as error:
            print("nested:", error)
        with cytool.Tracker("fourth.cytrace"):  # a tracer can start again after stopping
            mod.allocate(10, 777)
    """
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "nested: already tracing" in proc.stdout
    with read_capture(tmp_path / "first.cytrace") as capture:
        found = line_allocations(capture, 777)
        assert len(found) == 1234
        stack = capture.stacks[found[0].stack_id]
        python = [f.function for f in stack if f.kind == "python"]
        assert python[:2] == ["python_caller", "<module>"]
        assert stack[0].kind == "pyx"
    assert (tmp_path / "second.cytrace").exists()
    assert not (tmp_path / "third.cytrace").exists()
    with read_capture(tmp_path / "fourth.cytrace") as capture:
        assert capture.complete and len(line_allocations(capture, 777)) == 10


def test_tracker_python_allocators(tmp_path: Path) -> None:
    code = """
        import cytool
        def build():
            return [str(i) * 3 for i in range(5000)]
        with cytool.Tracker("pymem.cytrace", trace_python_allocators=True):
            data = build()
        del data
    """
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    with read_capture(tmp_path / "pymem.cytrace") as capture:
        assert capture.complete and capture.header.pymem_traced
        kinds = Counter(e.kind for e in capture.events)
        assert kinds["pymem_obj"] >= 5000
        in_build = [
            e
            for e in capture.events
            if e.kind == "pymem_obj" and any(f.function == "build.<locals>.<listcomp>" or f.function == "<listcomp>" for f in capture.stacks.get(e.stack_id, []))
        ]
        assert len(in_build) >= 5000


def test_environment_start_with_python_allocators(run_cytool, tmp_path: Path) -> None:
    capture_path = tmp_path / "envpymem.cytrace"
    env = {"CYTOOL_PROFILE": str(capture_path), "CYTOOL_PROFILE_TRACE_PYTHON_ALLOCATORS": "1"}
    proc = run_cytool("run", EXACT, "--", 300, 2000, 1, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    with read_capture(capture_path) as capture:
        assert capture.complete and capture.header.pymem_traced
        kinds = Counter(e.kind for e in capture.events)
        assert kinds["pymem_obj"] > 0 and kinds["pymem_raw"] > 0
        assert len(line_allocations(capture, 2000)) == 300  # native mallocs are still traced


@pytest.mark.parametrize("how,status", [("raise", 1), ("3", 3), ("0", 0)])
def test_profile_keeps_the_program_status_and_finishes_the_capture(run_cytool, tmp_path: Path, how: str, status: int) -> None:
    capture_path = tmp_path / "exits.cytrace"
    proc = run_cytool("profile", FIXTURES / "exits.pyx", "-o", capture_path, "--", how, cwd=tmp_path)
    assert proc.returncode == status, proc.stderr
    if how == "raise":
        assert "ValueError: on purpose" in proc.stderr
    assert f"capture: {capture_path}" in proc.stdout
    with read_capture(capture_path) as capture:
        assert capture.complete
        assert len([e for e in capture.events if e.kind == "malloc" and e.size == 31337]) == 1


def test_tracker_threads_end_with_the_capture(tmp_path: Path) -> None:
    """Tracing adds exactly three threads (the writer, the 1 ms clock and the finisher of
    trace_signals.c), all gone after stop, also across several sessions; an exact-time
    session has no clock thread."""
    code = """
        import os
        import cytool
        def threads():
            return len(os.listdir("/proc/self/task"))
        before = threads()
        for round in range(3):
            with cytool.Tracker(f"t{round}.cytrace"):
                during = threads()
            print("ticking", during - before, threads() - before)
        with cytool.Tracker("exact.cytrace", time_resolution_ns=1):
            during = threads()
        print("exact", during - before, threads() - before)
    """
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["ticking 3 0"] * 3 + ["exact 2 0"]
    with read_capture(tmp_path / "t2.cytrace") as capture:
        assert capture.complete and capture.header.ticking_clock and capture.header.time_resolution_ns == 1_000_000
    with read_capture(tmp_path / "exact.cytrace") as capture:
        assert capture.complete and not capture.header.ticking_clock and capture.header.time_resolution_ns == 1


def test_tracker_refuses_a_fifo(tmp_path: Path) -> None:
    """A Tracker asked to write into a FIFO says so at once (opening it to write blocked the
    program until something read the FIFO: forever, usually)."""
    fifo = tmp_path / "pipe.cytrace"
    os.mkfifo(fifo)
    code = textwrap.dedent(f"""
        import cytool
        from cytool.errors import CytoolError
        try:
            cytool.Tracker({str(fifo)!r}).start()
        except CytoolError as error:
            print("refused:", error.message)
    """)
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"refused: {fifo}: not a regular file (a FIFO, a device?)" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("reader", [False, True], ids=["no-reader", "with-reader"])
def test_the_tracer_itself_never_blocks_on_a_fifo(tmp_path: Path, reader: bool) -> None:
    """The tracer's own open (past the Tracker's check, e.g. a FIFO made after it) neither
    blocks nor writes into a FIFO: with no process reading it, or with one reading it, the
    start fails at once with an OSError that says why."""
    fifo = tmp_path / "late.cytrace"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK) if reader else -1
    try:
        code = textwrap.dedent(f"""
            from cytool import _cytrace
            try:
                _cytrace.start({str(fifo)!r})
            except OSError as error:
                print("refused:", error)
            else:
                print("started")
        """)
        done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=60)
    finally:
        if held >= 0:
            os.close(held)
    assert done.returncode == 0, done.stderr
    expected = "is not a regular file" if reader else "it is a FIFO no process reads"
    assert done.stdout.startswith("refused:") and expected in done.stdout, done.stdout + done.stderr


def test_threads_started_one_after_another_give_a_consistent_capture(run_cytool, tmp_path: Path) -> None:
    """Each new thread reuses the stack glibc cached for the last one, and pthread_create
    frees that thread's dynamic TLS blocks, which the dynamic linker allocated without a
    hooked call: frees of blocks that are dead in the capture. The report counts them as
    unmatched frees and has no warning (they were order conflicts in a pool's parent).

    Exact event times (--time-resolution 1): with the 1 ms ticking clock, when many
    threads start and end within one tick (10 or more a millisecond on a fast machine),
    the tick's order search can run out of its budget and take an order that leaves a
    block in the wrong state, found as a conflict in a later tick: in 1 capture of 80 of
    such programs (3 of 80 before the reader kept one OS thread's indices in order; a
    known fault of the within-tick order under thread churn; with exact times, none)."""
    program = tmp_path / "restarts.py"
    program.write_text(textwrap.dedent("""
        import threading

        def work():
            return [bytearray(100) for _ in range(10)]

        for _ in range(150):
            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
    """))
    capture_path = tmp_path / "restarts.cytrace"
    proc = run_cytool("profile", "--no-summary", "--time-resolution", "1", "-o", capture_path, program, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with read_capture(capture_path) as capture:
        events = list(capture.events)
        assert capture.order_conflicts == (0, 0)
        threads = {e.thread_id for e in events}
    assert len(threads) >= 150
    report = run_cytool("report", "-f", "json", capture_path)
    assert report.returncode == 0, report.stderr
    import json

    document = json.loads(report.stdout)
    assert document["capture"]["warnings"] == []
    assert document["totals"]["unmatched_frees"] >= 100
    assert document["totals"]["replaced_blocks"] == 0


def test_call_sites_taking_turns_keep_their_own_stacks(run_cytool, tmp_path: Path) -> None:
    """A loop allocating at several places in turn: a thread remembers the stacks of its
    latest allocations to skip hashing them again (trace_thread.c, RECENT_STACKS), and the
    Python frames' chain serial lets it skip comparing (and copying) their words. Every
    allocation must still name its own line, whether its stack is the last found, an older
    one (3 places in turn), or one forgotten since (7 places, more than are kept), and all
    must have the same Python frames (a new place under an unchanged chain takes them from
    a remembered stack)."""
    program = tmp_path / "turns.pyx"
    sites = [101 + i for i in range(7)]
    lines = ["from libc.stdlib cimport malloc, free", "", "cdef void *held[7]", "", "def main():", "    cdef int i, k",
             "    for i in range(300):", "        for k in range(3 if i < 150 else 7):", "            if (i * (k + 3)) % 5 == 4:",
             "                continue", "            free(held[k])"]
    for k, size in enumerate(sites):
        lines += [f"            if k == {k}:", f"                held[k] = malloc({size})  # SITE {size}"]
    lines += ["    for k in range(7):", "        free(held[k])", "", "main()", ""]
    program.write_text("\n".join(lines))
    site_line = {size: n for n, text in enumerate(lines, 1) for size in sites if text.endswith(f"# SITE {size}")}
    capture_path = tmp_path / "turns.cytrace"
    proc = run_cytool("profile", "--no-summary", "-o", capture_path, program, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with read_capture(capture_path) as capture:
        found = Counter()
        python_frames = set()
        for event in capture.events:
            if event.kind == "malloc" and event.size in site_line:
                frames = capture.stacks.get(event.stack_id, [])
                pyx = [f for f in frames if f.file.endswith("turns.pyx")]
                assert pyx and pyx[0].line == site_line[event.size], (event.size, pyx[:1])
                python_frames.add(tuple((f.function, f.file, f.line) for f in frames if f.kind == "python"))
                found[event.size] += 1
        assert len(python_frames) == 1 and next(iter(python_frames)), python_frames
    expected = {size: sum(1 for i in range(300) if (i * (k + 3)) % 5 != 4 and (k < 3 or i >= 150))
                for k, size in enumerate(sites)}
    assert found == expected
