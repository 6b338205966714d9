"""libcytrace under a C program with known allocations (runtime/tests/test_trace_helper.c):
exact counts in many threads, edge cases, fork, signals, dlopen, exit/_exit, SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from cytool.capture import Capture, read_capture

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def helpers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trace-helpers")
    subprocess.run(["make", "-s", "-C", str(REPO / "runtime"), "test-helpers", f"TEST_OUT={out}"], check=True)
    return out


def run_helper(helpers: Path, capture: object, *args: object, env: Dict[str, str] = None, check: bool = True) -> Dict[str, str]:
    full_env = dict(os.environ)
    full_env.pop("CYTOOL_PROFILE", None)
    full_env.update(env or {})
    proc = subprocess.run(
        [str(helpers / "test_trace_helper"), str(capture), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        timeout=120,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    values: Dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        values[key] = value
    return values


def innermost(capture: Capture, stack_id: int) -> str:
    frames = capture.stacks.get(stack_id, [])
    return frames[0].function if frames else ""


def allocations_from(capture: Capture, function: str, kind: str = "malloc") -> List:
    return [e for e in capture.events if e.kind == kind and innermost(capture, e.stack_id) == function]


@pytest.mark.parametrize("n,size,nthreads", [(5000, 4099, 1), (3000, 4099, 4), (2000, 24, 8)])
def test_exact_counts_in_threads(helpers: Path, tmp_path: Path, n: int, size: int, nthreads: int) -> None:
    path = tmp_path / "t.cytrace"
    out = run_helper(helpers, path, "threads", n, size, nthreads)
    with read_capture(path) as capture:
        assert capture.complete and not capture.truncated
        assert capture.stats is not None and capture.stats.dropped == 0
        assert capture.stats.events == len(capture.events) == int(out["stats_events"])
        mallocs = allocations_from(capture, "worker_allocate")
        assert len(mallocs) == n * nthreads
        assert {e.size for e in mallocs} == {size}
        per_thread = Counter(e.thread_id for e in mallocs)
        assert sorted(per_thread.values()) == [n] * nthreads
        assert all(capture.threads[t].tid > 0 for t in per_thread)
        freed = {e.address for e in capture.events if e.kind == "free"}
        assert all(e.address in freed for e in mallocs)
        # the block arrays: one calloc of n pointers per thread
        callocs = [e for e in capture.events if e.kind == "calloc" and e.size == n * 8]
        assert len(callocs) == nthreads
        # reentrancy: the tracer's own allocations (its writer thread, zstd, libunwind) are
        # never recorded: only the main thread and the workers appear, and no stack starts
        # inside libcytrace
        assert len(capture.threads) == nthreads + 1
        assert not any(frames and "libcytrace" in frames[0].object for frames in capture.stacks.values())


def test_threads_starting_and_ending(helpers: Path, tmp_path: Path) -> None:
    path = tmp_path / "churn.cytrace"
    run_helper(helpers, path, "churn", 300, 6)
    with read_capture(path) as capture:
        assert capture.complete
        mallocs = allocations_from(capture, "worker_allocate")
        assert len(mallocs) == 300 * 6 * 5
        per_thread = Counter(e.thread_id for e in mallocs)
        assert len(per_thread) == 30  # every thread flushed its buffer when it ended
        assert set(per_thread.values()) == {300}
        assert len({capture.threads[t].tid for t in per_thread}) == 30


def test_edge_cases(helpers: Path, tmp_path: Path) -> None:
    path = tmp_path / "edge.cytrace"
    out = run_helper(helpers, path, "edge")
    address = {key: int(value, 16) if value not in ("(nil)", "") else 0 for key, value in out.items() if not key.startswith("stats")}
    assert address["huge"] == 0 and address["hugec"] == 0 and address["realloc_zero"] == 0
    with read_capture(path) as capture:
        assert capture.complete
        events = [e for e in capture.events if e.stack_id == 0 or innermost(capture, e.stack_id) == "mode_edge"]
        allocs = [(e.kind, e.address, e.size) for e in events if e.is_allocation]
        frees = [(e.kind, e.address) for e in events if e.is_free]
        assert ("malloc", address["zero"], 0) in allocs
        assert not any(e.size >= 2**60 for e in capture.events)  # failed huge requests: nothing
        assert ("realloc", address["realloc_null"], 1234) in allocs
        assert ("realloc_free", address["realloc_null"]) in frees
        assert ("realloc", address["realloc_grow"], 100000) in allocs
        assert ("realloc_free", address["realloc_grow"]) in frees  # realloc(p, 0) frees p
        assert ("calloc", address["calloc"], 1230) in allocs
        for kind, size in [("posix_memalign", 1000), ("aligned_alloc", 1024), ("memalign", 2000), ("valloc", 3000), ("pvalloc", 5000), ("reallocarray", 77)]:
            assert (kind, address[kind], size) in allocs
            assert ("free", address[kind]) in frees
        assert not any(kind == "realloc" and size == 77 for kind, _, size in allocs)  # reallocarray counted once
        assert ("mmap", address["mmap"], 65536) in allocs
        assert ("mremap", address["mremap"], 131072) in allocs
        munmaps = [(e.address, e.size) for e in capture.events if e.kind == "munmap"]
        assert (address["mmap"], 65536) in munmaps and (address["mremap"], 131072) in munmaps
        assert ("free", 0) not in frees


@pytest.mark.parametrize("follow", [False, True])
def test_fork(helpers: Path, tmp_path: Path, follow: bool) -> None:
    path = tmp_path / "fork.cytrace"
    out = run_helper(helpers, path, "fork", int(follow))
    child_pid = int(out["child_pid"])
    assert out["child_status"] == "0"
    assert out["tracing_in_child"] == str(int(follow))
    child_file = Path(f"{path}.{child_pid}")
    with read_capture(path) as parent:
        assert parent.complete and not parent.header.forked_child
        sizes = Counter(e.size for e in allocations_from(parent, "mode_fork"))
        assert sizes == Counter({1111: 3})
    assert child_file.exists() == follow
    if follow:
        with read_capture(child_file) as child:
            assert child.complete
            assert child.header.forked_child and child.header.pid == child_pid
            assert child.header.parent_pid == parent.header.pid
            made = allocations_from(child, "mode_fork")
            assert Counter(e.size for e in made) == Counter({2222: 5, 3333: 1})
            # the child runs a clock of its own: the late block is timed 5 ms on
            assert child.header.ticking_clock
            late = next(e for e in made if e.size == 3333)
            assert late.time_ns >= 4_000_000 and late.time_ns > max(e.time_ns for e in made if e.size == 2222)


def test_forks_while_other_threads_unwind(helpers: Path, tmp_path: Path) -> None:
    """Forks (followed) while other threads start, allocate and unwind with libunwind without
    pause: a lock of libunwind's held by another thread at the fork would hang the child at
    its first unwind (the fork waits for unwinders, trace_stack.c). Every child ends, with a
    complete capture of exactly its own allocations."""
    path = tmp_path / "storm.cytrace"
    forks = 120
    out = run_helper(helpers, path, "forkstorm", forks, 3)
    assert out["forks"] == str(forks)
    assert out["stuck_children"] == "0" and out["failed_children"] == "0"
    with read_capture(path) as parent:
        assert parent.complete and parent.stats.dropped == 0
        parent_pid = parent.header.pid
    children = sorted(tmp_path.glob("storm.cytrace.*"))
    assert len(children) == forks
    for child_file in children:
        with read_capture(child_file) as child:
            assert child.complete, child_file
            assert child.header.forked_child and child.header.parent_pid == parent_pid
            made = allocations_from(child, "mode_forkstorm")
            assert Counter(e.size for e in made) == Counter({6161: 100}), child_file


def test_signals_inside_malloc(helpers: Path, tmp_path: Path) -> None:
    path = tmp_path / "signal.cytrace"
    out = run_helper(helpers, path, "signal", 300000)
    handled = int(out["handled"])
    assert handled > 0
    with read_capture(path) as capture:
        assert capture.complete and capture.stats.dropped == 0
        assert len(allocations_from(capture, "mode_signal")) == 300000
        mmaps = [e for e in capture.events if e.kind == "mmap" and e.size == 12288]
        munmaps = [e for e in capture.events if e.kind == "munmap" and e.size == 12288]
        # a handler that interrupted the tracer itself is not recorded (the guard), never twice
        assert len(mmaps) == len(munmaps) <= handled
        assert {e.address for e in mmaps} == {e.address for e in munmaps}


def test_exit_without_stop_flushes(helpers: Path, tmp_path: Path) -> None:
    path = tmp_path / "exit.cytrace"
    run_helper(helpers, path, "exit", 5000)
    with read_capture(path) as capture:
        assert capture.complete and not capture.truncated
        assert len(allocations_from(capture, "main")) == 5000


def test_underscore_exit_finishes_the_capture(helpers: Path, tmp_path: Path) -> None:
    # _exit skips atexit, but the tracer hooks _exit itself and finishes the file first
    path = tmp_path / "_exit.cytrace"
    run_helper(helpers, path, "_exit", 50000)
    with read_capture(path) as capture:
        assert capture.complete and not capture.truncated
        assert len(allocations_from(capture, "main")) == 50000


@pytest.mark.parametrize("by_name", [False, True])
def test_dlopen_while_tracing(helpers: Path, tmp_path: Path, by_name: bool) -> None:
    """dlopen while tracing: the new library is patched and described. By bare name, the
    helper's own RUNPATH ($ORIGIN) must still be searched, although the real dlopen is now
    called from libcytrace."""
    path = tmp_path / "dlopen.cytrace"
    lib = helpers / "libtest_trace_lib.so"
    run_helper(helpers, path, "dlopen", lib.name if by_name else lib, 250)
    with read_capture(path) as capture:
        assert capture.complete
        from_lib = allocations_from(capture, "lib_alloc")
        assert Counter(e.size for e in from_lib) == Counter({555: 250, 250 * 8: 1})
        objects = [o for o in capture.objects if o.path == str(lib)]
        assert len(objects) == 1 and objects[0].build_id and objects[0].unload_time_ns is not None
        assert len([e for e in capture.events if e.kind == "malloc" and e.size == 556]) == 1


def test_sigkill_leaves_a_readable_truncated_capture(helpers: Path, tmp_path: Path) -> None:
    path = tmp_path / "killed.cytrace"
    env = dict(os.environ)
    env.pop("CYTOOL_PROFILE", None)
    proc = subprocess.Popen([str(helpers / "test_trace_helper"), str(path), "forever"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with read_capture(path) as capture:
        assert capture.truncated and not capture.complete
        assert "truncated" in capture.truncation_message()
        assert len(capture.events) > 1000
        assert {e.kind for e in capture.events} <= {"malloc", "free"}


def test_started_from_the_environment(helpers: Path, tmp_path: Path) -> None:
    path = tmp_path / "env.cytrace"
    run_helper(helpers, "-", "threads", 1000, 333, 2, env={"CYTOOL_PROFILE": str(path)})
    with read_capture(path) as capture:
        assert capture.complete  # stopped by atexit
        assert len(allocations_from(capture, "worker_allocate")) == 2000
    # an existing file is never overwritten: the next process writes <path>.<pid>
    before = path.read_bytes()
    run_helper(helpers, "-", "threads", 10, 333, 1, env={"CYTOOL_PROFILE": str(path)})
    assert path.read_bytes() == before
    others = list(tmp_path.glob("env.cytrace.*"))
    assert len(others) == 1
    with read_capture(others[0]) as capture:
        assert len(allocations_from(capture, "worker_allocate")) == 10


def test_start_stop_while_threads_allocate(helpers: Path, tmp_path: Path) -> None:
    """Twelve sessions started and stopped while six threads allocate, reallocate and start
    short-lived threads: every capture is complete and its events are consistent (no block
    allocated twice without a free in between, whichever threads they came from)."""
    path = tmp_path / "restart.cytrace"
    out = run_helper(helpers, path, "restart", 12, 6)
    assert out["rounds"] == "12"
    for i in range(12):
        with read_capture(f"{path}.{i}") as capture:
            assert capture.complete and capture.stats.dropped == 0
            assert capture.stats.events == len(capture.events) > 0
            assert capture.missing_stacks == 0
            rings = sorted(t.name for t in capture.threads.values() if t.name.startswith("ring") and t.nevents > 0)
            assert rings == [f"ring {n}" for n in range(1, 7)], f"capture {i}: events of {rings} only"
            live = set()
            for event in capture.events:
                if event.kind in ("mmap", "munmap"):
                    continue
                if event.is_allocation:
                    assert event.address not in live, f"capture {i}: {event} while the block is live"
                    live.add(event.address)
                else:
                    live.discard(event.address)


def test_a_slowly_allocating_process_killed_loses_only_its_last_moments(helpers: Path, tmp_path: Path) -> None:
    """A thread that allocates rarely never fills its buffer; the writer flushes the threads
    that stay idle every 10 ms, so SIGKILL loses only the last moments (a tick of 100 ms
    here, at most, with room for a loaded machine)."""
    path = tmp_path / "trickle.cytrace"
    env = dict(os.environ)
    env.pop("CYTOOL_PROFILE", None)
    proc = subprocess.Popen([str(helpers / "test_trace_helper"), str(path), "trickle"], stdout=subprocess.PIPE, text=True, env=env)
    ticks = 0
    try:
        while ticks < 30:  # about 3 s
            line = proc.stdout.readline()
            assert line.startswith("tick"), line
            ticks = int(line.split()[1])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with read_capture(path) as capture:
        assert capture.truncated
        recorded = len([e for e in capture.events if e.kind == "malloc" and e.size == 4242])
        assert ticks - 2 <= recorded <= ticks, (ticks, recorded)


def test_sanitizers(tmp_path: Path) -> None:
    """`make -C runtime sanitize`: the tracer and its C tests under ASan + UBSan, every
    capture read back by the sanitized reader."""
    proc = subprocess.run(
        ["make", "-s", "-C", str(REPO / "runtime"), "sanitize", f"SAN_DIR={tmp_path / 'san'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-12000:]  # a hang prints its stacks
    assert "sanitize: all modes passed" in proc.stdout


def test_an_idle_thread_is_flushed_by_the_writer(helpers: Path, tmp_path: Path) -> None:
    """A thread that allocates and then blocks holds its events in its buffer; the writer
    flushes it within a tick (10 ms), so SIGKILL does not lose them."""
    path = tmp_path / "idle.cytrace"
    env = dict(os.environ)
    env.pop("CYTOOL_PROFILE", None)
    proc = subprocess.Popen([str(helpers / "test_trace_helper"), str(path), "idle"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "allocated"
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with read_capture(path) as capture:
        assert capture.truncated
        assert len([e for e in capture.events if e.kind == "malloc" and e.size == 4343]) == 10


def test_bursts_between_idle_flushes_are_exact(helpers: Path, tmp_path: Path) -> None:
    """Eight threads allocate in bursts separated by pauses of up to 2.5 s, so the writer
    flushes idle threads while others wake up: not one event is lost or doubled."""
    path = tmp_path / "bursts.cytrace"
    out = run_helper(helpers, path, "bursts", 8, 6)
    with read_capture(path) as capture:
        assert capture.complete and capture.stats.dropped == 0
        assert len([e for e in capture.events if e.kind == "malloc" and e.size == 5151]) == int(out["total"])
        assert len([e for e in capture.events if e.kind == "free"]) >= int(out["total"])


@pytest.mark.parametrize("resolution", [1_000_000, 1])
def test_blocks_handed_between_threads_pair_up(helpers: Path, tmp_path: Path, resolution: int) -> None:
    """A producer thread mallocs blocks that a consumer thread frees moments later. With
    the default 1 ms ticks most pairs fall in one tick, where only the reader's repair
    (capture_merge.c) keeps each free after its malloc; with exact times (resolution 1)
    the clock alone does. Either way: every block is made once, freed once, in order."""
    path = tmp_path / "handoff.cytrace"
    n = 20000
    run_helper(helpers, path, "handoff", n, env={"CYTOOL_PROFILE_TIME_RESOLUTION": str(resolution)})
    with read_capture(path) as capture:
        assert capture.complete and capture.stats.dropped == 0
        assert capture.header.time_resolution_ns == resolution
        assert capture.header.ticking_clock == (resolution > 1)
        made = allocations_from(capture, "handoff_make")
        assert len(made) == n and len({e.thread_id for e in made}) == 1
        producer = made[0].thread_id
        live, paired, consumers = set(), 0, set()
        for e in capture.events:
            if e.kind == "malloc" and e.size == 1717 and e.thread_id == producer:
                assert e.address not in live, "a block made again before its free"
                live.add(e.address)
            elif e.kind == "free" and e.address in live:
                live.remove(e.address)
                paired += 1
                consumers.add(e.thread_id)
        assert paired == n and not live
        assert len(consumers) == 1 and producer not in consumers
        if resolution > 1:  # the test means something: many pairs shared a tick
            times = {e.address: e.time_ns for e in made[-1000:]}
            same_tick = sum(1 for e in capture.events if e.kind == "free" and times.get(e.address) == e.time_ns)
            assert same_tick > 100


def test_sessions_one_after_another_trace_libraries_loaded_between_them(helpers: Path, tmp_path: Path) -> None:
    """A session reuses the last session's patched slots of the objects still loaded (the
    pytest plugin starts one a test); a library loaded between two sessions, and one loaded
    then unloaded and loaded again, is patched as new: its allocations are recorded."""
    script = tmp_path / "sessions.py"
    script.write_text(textwrap.dedent(f"""
        import ctypes, sys
        from cytool.tracker import Tracker

        def session(path, work):
            tracker = Tracker(path)
            tracker.start()
            work()
            tracker.stop()

        lib_path = {str(helpers / "libtest_trace_lib.so")!r}
        out = sys.argv[1]
        session(out + ".1", lambda: None)
        lib = ctypes.CDLL(lib_path)
        session(out + ".2", lambda: lib.lib_alloc(ctypes.c_size_t(40), ctypes.c_size_t(777)))
        session(out + ".3", lambda: lib.lib_alloc(ctypes.c_size_t(30), ctypes.c_size_t(777)))
        handle = lib._handle
        del lib
        import _ctypes
        _ctypes.dlclose(handle)
        lib = ctypes.CDLL(lib_path)
        session(out + ".4", lambda: lib.lib_alloc(ctypes.c_size_t(20), ctypes.c_size_t(777)))
    """))
    base = tmp_path / "s.cytrace"
    done = subprocess.run([sys.executable, str(script), str(base)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for suffix, count in ((".2", 40), (".3", 30), (".4", 20)):
        with read_capture(f"{base}{suffix}") as capture:
            assert capture.complete
            sizes = Counter(e.size for e in allocations_from(capture, "lib_alloc"))
            assert sizes[777] == count, (suffix, sizes)
