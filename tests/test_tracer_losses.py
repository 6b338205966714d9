"""Nothing lost without saying so: a SIGKILL loses at most the last moments (the writer's
10 ms tick), a capture that cannot be written (file size limit, full disk) is said on
stderr when it happens, counted in the stats and the capture, and written again when it
can, and two tracers asked for one capture path never destroy each other's capture."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Tuple

import pytest

from cytool.analysis import load_profile
from cytool.capture import read_capture
from test_tracer_runtime import helpers  # noqa: F401 (the helpers fixture)

EXACT = Path(__file__).resolve().parent / "fixtures" / "tracer" / "alloc_exact.pyx"


# ---- SIGKILL ------------------------------------------------------------------------------

# A thread allocates a block of 100000 + i bytes every millisecond and says "made i" every
# 20. On a loaded 2-core machine the writer's 10 ms tick can be late; this bound is what a
# test can promise (bench_profile.py measures the window itself: a few ms).
KILL_BOUND_BLOCKS = 150


def test_a_sigkill_loses_only_the_last_moments(helpers: Path, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "killed.cytrace"
    env = dict(os.environ)
    env.pop("CYTOOL_PROFILE", None)
    proc = subprocess.Popen([str(helpers / "test_trace_helper"), str(path), "steady"], stdout=subprocess.PIPE,
                            text=True, env=env)
    made = 0
    try:
        while made < 1000:  # about a second of allocations
            made = int(proc.stdout.readline().split()[1])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with read_capture(path) as capture:
        assert capture.truncated and not capture.complete
        blocks = sorted(e.size - 100000 for e in capture.events if e.kind == "malloc" and 100000 <= e.size < 200000)
        message = capture.truncation_message()
        assert "killed or crashed" in message and "last ~10 ms" in message
    assert blocks == list(range(len(blocks)))  # no hole: every block up to the last recovered
    lost = made - (blocks[-1] if blocks else -1)
    assert lost <= KILL_BOUND_BLOCKS, f"the blocks of the last {lost} ms before the kill were lost"


# Four threads allocate at once (without the GIL) through the same lines: the same stacks,
# first met by whichever thread gets there first.
BENCH_ALLOC = Path(__file__).resolve().parent.parent / "examples" / "bench_alloc.pyx"
ZSTD_FRAME_MAGIC = bytes.fromhex("28b52ffd")


def test_a_capture_cut_after_any_frame_defines_all_it_uses(tmp_path: Path) -> None:
    """A process killed at any moment leaves a capture whose batches all resolve: a thread
    never writes a batch whose stack is defined only in another thread's buffer (each
    defines it too until the first definition has gone to the writer). Which thread meets
    a stack first is a race: a few captures are cut."""
    cut_path = tmp_path / "cut.cytrace"
    for run in range(4):
        path = tmp_path / f"shared{run}.cytrace"
        done = subprocess.run([sys.executable, "-m", "cytool", "profile", "--no-summary", "-o", str(path),
                               str(BENCH_ALLOC), "--", "40000", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr
        data = path.read_bytes()
        body = 16 + int.from_bytes(data[12:16], "little")
        cuts, at = [], data.find(ZSTD_FRAME_MAGIC, body + 1)
        while at > 0:
            cuts.append(at)
            at = data.find(ZSTD_FRAME_MAGIC, at + 1)
        assert len(cuts) >= 4, "too few frames to cut between"
        for cut in cuts + [len(data)]:
            cut_path.write_bytes(data[:cut])
            with read_capture(cut_path) as capture:
                assert capture.missing_stacks == 0 and capture.missing_pyframes == 0, (run, cut, capture.notes)
                assert not any("repeat" in note for note in capture.notes), (run, cut, capture.notes)
        with read_capture(path) as capture:
            assert capture.complete
            churned = [e for e in capture.events if e.kind == "malloc" and 16 <= e.size < 272]
            assert len(churned) >= 4 * 40000 and len({e.thread_id for e in churned}) >= 4


# ---- SIGTERM, SIGHUP --------------------------------------------------------------------------

# Three threads and the main one allocate without pause: a signal often lands inside the
# allocator (holding its lock) or inside the tracer.
CHURNING = """
import threading, time

def churn():
    keep = []
    while True:
        keep.append(bytearray(2000))
        if len(keep) > 500:
            keep.clear()

for _ in range(3):
    threading.Thread(target=churn, daemon=True).start()
print("ready", flush=True)
churn()
"""
OWN_HANDLER = """
import signal, sys, time
def bye(sig, frame):
    print("handled", sig, flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, bye)
keep = [bytearray(3000) for _ in range(50)]
print("ready", flush=True)
time.sleep(60)
"""
POOL = """
import multiprocessing

def work(n):
    return len([bytearray(1000) for _ in range(n)])

if __name__ == "__main__":
    with multiprocessing.Pool(3) as pool:  # (its end: SIGTERM to the workers)
        print(sum(pool.map(work, [500] * 12)))
"""


def _signalled(tmp_path: Path, code: str, sig: int) -> Tuple[subprocess.CompletedProcess, Path]:
    script = tmp_path / "signalled.py"
    script.write_text(code)
    path = tmp_path / "signalled.cytrace"
    path.unlink(missing_ok=True)
    env = dict(os.environ, CYTOOL_PROFILE=str(path))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, ""), path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminating_signal_finishes_the_capture_then_ends_the_process(tmp_path: Path, sig: int) -> None:
    """SIGTERM or SIGHUP at its default: the process still ends by that signal, and the
    capture is complete (not "killed or crashed"), whatever the threads were doing."""
    for _ in range(5):
        done, path = _signalled(tmp_path, CHURNING, sig)
        assert done.returncode == -sig
        with read_capture(path) as capture:
            assert capture.complete and not capture.truncated, capture.truncation_message()
            assert sum(1 for e in capture.events if e.kind == "malloc" and e.size >= 2000) > 100


def test_a_programs_own_handler_is_left_alone(tmp_path: Path) -> None:
    done, path = _signalled(tmp_path, OWN_HANDLER, signal.SIGTERM)
    assert done.returncode == 3 and f"handled {int(signal.SIGTERM)}" in done.stdout
    with read_capture(path) as capture:
        assert capture.complete and not capture.truncated


def test_a_pool_ended_by_its_with_block_leaves_complete_captures(tmp_path: Path) -> None:
    (tmp_path / "pool.py").write_text(POOL)
    done = subprocess.run([sys.executable, "-m", "cytool", "profile", "--no-summary", "--follow-fork", "-o",
                           "pool.cytrace", "pool.py"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "6000", done.stderr
    captures = sorted(tmp_path.glob("pool.cytrace*"))
    assert len(captures) == 4, captures
    for path in captures:
        with read_capture(path) as capture:
            assert capture.complete and not capture.truncated, (path, capture.truncation_message())


# ---- write errors -------------------------------------------------------------------------

FILE_LIMIT = """
import json, os, resource, sys, time, cytool
path = sys.argv[1]
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
def burst(size):
    for _ in range(20000):
        bytearray(size)
tracker = cytool.Tracker(path)
tracker.start()
burst(1001)
time.sleep(0.1)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path), hard))  # not one byte more
print("limited", flush=True)
burst(1002)
time.sleep(0.2)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
print("unlimited", flush=True)
time.sleep(0.1)
burst(1003)
print(json.dumps(tracker.stop()))
"""


def test_a_file_size_limit_is_said_counted_and_outlived(tmp_path: Path) -> None:
    path = tmp_path / "limited.cytrace"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(FILE_LIMIT), str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr  # the program went on
    stats = json.loads(proc.stdout.splitlines()[-1])
    # said when it happened, and when writing worked again
    said = [line for line in proc.stderr.splitlines() if line.startswith("cytool:")]
    assert said[0] == f"cytool: cannot write the capture {path}: File too large; events are lost until it can be " \
                      "written again (the program goes on)"
    assert said[1] == f"cytool: writing the capture {path} again: {stats['lost']} events could not be written " \
                      "(File too large)"
    assert len(said) == 2
    assert stats["lost"] >= 20000 and stats["dropped"] == 0
    with read_capture(path) as capture:
        assert capture.complete and capture.truncated
        sizes = Counter(e.size for e in capture.events if e.kind == "malloc")
        assert sizes[1004] == 20000  # recording went on after the outage
        assert sizes[1003] < 20000 - 10000  # (most of the burst during the outage is gone)
        # every event the tracer recorded is either in the file or counted missing
        assert len(capture.events) + capture.missing_events == stats["events"] == capture.stats.events
        assert capture.missing_events == stats["lost"] == capture.stats.lost
        (loss,) = capture.write_losses
        assert loss.events == stats["lost"] and loss.reason == "File too large"
    profile = load_profile(path)
    assert any(note.startswith("the capture could not be written from") and "(File too large)" in note
               for note in profile.notes())
    assert f"{stats['lost']:,} that the tracer recorded are missing" in profile.truncation_message


FULL_TO_THE_END = """
import json, os, resource, sys, time, cytool
path = sys.argv[1]
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
tracker = cytool.Tracker(path)
tracker.start()
for _ in range(20000):
    bytearray(1001)
time.sleep(0.1)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path), hard))  # and never more
for _ in range(20000):
    bytearray(1002)
print(json.dumps(tracker.stop()))
"""


def test_a_capture_full_to_its_end_still_ends_with_its_account(tmp_path: Path) -> None:
    """The file cannot grow by one byte until the program ends: the tracer gives up its
    last frame of events to write the LOSS, STATS and END records, so the capture still
    says exactly how many events are missing, and why."""
    path = tmp_path / "full.cytrace"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(FULL_TO_THE_END), str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout.splitlines()[-1])
    assert f"cytool: the capture {path} is incomplete: {stats['lost']} events could not be written (File too large)" \
        in proc.stderr
    with read_capture(path) as capture:
        assert capture.complete and capture.stats is not None  # its end was written
        assert len(capture.events) + capture.missing_events == stats["events"]
        assert capture.missing_events == stats["lost"] >= 20000
        (loss,) = capture.write_losses
        assert loss.events == stats["lost"] and loss.reason == "File too large"


FULL_DISK = """
import json, os, sys, threading, time, cytool
path, filler = sys.argv[1], sys.argv[2]
def free_space():
    time.sleep(0.5)
    os.unlink(filler)
tracker = cytool.Tracker(path)
tracker.start()
threading.Thread(target=free_space).start()
start, kept, i = time.time(), [], 0
while time.time() - start < 1.5:
    for _ in range(1000):  # sizes that do not repeat soon: a capture that grows
        i += 1
        kept.append(bytearray(600 + (i * 7919) % 5000))
        if len(kept) > 50:
            kept.clear()
print(json.dumps(tracker.stop()))
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a small tmpfs needs root")
def test_a_full_disk_for_a_moment(tmp_path: Path) -> None:
    """A 4 MiB tmpfs, nearly full for half a second (ENOSPC), then free: the frames after
    the outage are written and read; the events lost in between are counted."""
    mount = Path(tempfile.mkdtemp(prefix="cytool-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        filler = mount / "filler"
        with open(filler, "wb") as f:
            f.write(b"\0" * (4 * 1024 * 1024 - 32 * 1024))  # 32 KiB left
        path = mount / "full.cytrace"
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(FULL_DISK), str(path), str(filler)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        stats = json.loads(proc.stdout.splitlines()[-1])
        assert "No space left on device; events are lost until it can be written again" in proc.stderr
        assert f"writing the capture {path} again" in proc.stderr
        with read_capture(path) as capture:
            assert capture.complete  # its end was written after the outage
            assert len(capture.events) + capture.missing_events == stats["events"]
            assert capture.missing_events == stats["lost"] > 0
            assert capture.write_losses and capture.write_losses[0].reason == "No space left on device"
            last = max(e.time_ns for e in capture.events)
        assert last > capture.write_losses[0].until_ns  # events after the outage were read
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


# ---- one capture path, two tracers ------------------------------------------------------

HOLDER = """
import sys, time, cytool
with cytool.Tracker(sys.argv[1]):
    print("tracing", flush=True)
    sys.stdin.readline()
    blocks = [bytearray(7777) for _ in range(10)]
"""

SECOND = """
import sys, cytool
from cytool.tracker import CaptureInUseError
try:
    cytool.Tracker(sys.argv[1]).start()
except CaptureInUseError as error:
    print("refused:", error.message, "|", error.hint)
"""


def test_a_second_tracker_on_a_busy_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shared.cytrace"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER), str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "tracing"
        second = subprocess.run([sys.executable, "-c", textwrap.dedent(SECOND), str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert second.stdout.startswith(f"refused: {path}: another process is writing a capture there right now")
        with read_capture(path) as capture:  # a reader sees it is being written
            assert capture.live
    finally:
        holder.communicate("go\n", timeout=120)
    assert holder.returncode == 0
    with read_capture(path) as capture:  # the holder's capture is whole
        assert capture.complete and not capture.truncated and not capture.live
        assert sum(1 for e in capture.events if e.kind == "malloc" and e.size == 7778) == 10


def test_a_capture_path_another_tracer_has_just_created_is_not_refused(tmp_path: Path) -> None:
    """The moment between another tracer creating (and locking) its capture and writing its
    header: the file is empty. `cytool profile -o` of that path must not refuse it as "not a
    capture" (the CI failure of the test below), but write beside it and say so."""
    import fcntl

    busy = tmp_path / "same.cytrace"
    with open(busy, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        done = subprocess.run(
            [sys.executable, "-m", "cytool", "profile", "--no-summary", "-o", "same.cytrace", str(EXACT), "--",
             "10", "300", "1", "nofork"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "is being written by another process; this capture goes to" in done.stderr
    other = tmp_path / done.stderr.split("this capture goes to ")[1].split()[0]
    with read_capture(other) as capture:
        assert capture.complete
        assert sum(1 for e in capture.events if e.kind == "malloc" and e.size == 300) == 10
    assert busy.stat().st_size == 0  # the other tracer's file is left alone
    # an empty file nobody writes is simply replaced
    done = subprocess.run(
        [sys.executable, "-m", "cytool", "profile", "--no-summary", "-o", "same.cytrace", str(EXACT), "--",
         "10", "300", "1", "nofork"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0 and "another process" not in done.stderr, done.stderr
    with read_capture(busy) as capture:
        assert capture.complete


def test_two_profiles_into_one_path_at_once_keep_both_captures(tmp_path: Path) -> None:
    """`cytool profile -o same.cytrace` twice at once (both programs wait until both run):
    the second writes same.<pid>.cytrace and says so; both captures are whole."""
    program = tmp_path / "both.pyx"
    program.write_text(EXACT.read_text().replace(
        "def main():", "def main():\n    import pathlib, time\n    pathlib.Path(sys.argv[5]).touch()\n"
        "    while not pathlib.Path(sys.argv[6]).exists():\n        time.sleep(0.01)\n"))
    go = tmp_path / "go"
    env = dict(os.environ)
    procs = []
    for i in range(2):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "cytool", "profile", "--no-summary", "-o", "same.cytrace", str(program), "--",
             "1000", "2000", "1", "nofork", str(tmp_path / f"started{i}"), str(go)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.time() + 120
    while not all((tmp_path / f"started{i}").exists() for i in range(2)):
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:  # one ended (or both are stuck): the other waits for `go`, so stop it to read both
                if p.poll() is None:
                    p.kill()
            pytest.fail(f"a profile ended before both ran: {[(p.returncode, *p.communicate()) for p in procs]}")
        time.sleep(0.02)
    go.touch()
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    moved = [err for _, err in results if "is being written by another process" in err]
    assert len(moved) == 1
    other = tmp_path / moved[0].split("this capture goes to ")[1].split()[0]  # (beside the one asked for)
    assert other.parent == tmp_path and other.name.startswith("same.") and other.name.endswith(".cytrace")
    for path in (tmp_path / "same.cytrace", other):
        with read_capture(path) as capture:
            assert capture.complete and not capture.truncated, path
            assert sum(1 for e in capture.events if e.kind == "malloc" and e.size == 2000) == 1000, path
