"""The program closes the capture's file descriptor: a daemon closing every descriptor,
subprocess's child (preexec_fn, close_fds) before its exec. The writer checks the
descriptor before each write and opens the capture again by its path (trace_writer.c), so
nothing is lost and the capture is never written into a file the program opened under the
same number (it was: every event after the close lost, the report said "killed or
crashed", a child's capture was empty). A capture that cannot be found again is a loss,
said as such."""
from __future__ import annotations

import os
from pathlib import Path

from cytool.capture import read_capture
from test_tracer_exec import GRAB

PROGRAM = "import os, subprocess, sys, threading\n" + GRAB + """
mode, other = sys.argv[1], sys.argv[2]
grab(3333, 7)
if mode == "closerange":
    os.closerange(3, 65536)
    with open(other, "w") as f:  # may get the capture's old number
        grab(4444, 5)
        f.write("the program's own text\\n")
        grab(5555, 3)
elif mode == "preexec":
    for i in range(3):
        subprocess.run(["/bin/true"], preexec_fn=lambda: grab(6666, 2), check=True)
    grab(4444, 5)
elif mode == "unwinder":  # files on the lowest numbers, then threads: libunwind unwinds new stacks
    os.closerange(3, 64)
    a = os.open(other + ".a", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    b = os.open(other + ".b", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(a, b"AAAA")
    os.lseek(a, 0, 0)
    for i in range(10):
        t = threading.Thread(target=grab, args=(4444, 1))
        t.start()
        t.join()
    print("offsets", os.lseek(a, 0, 1), os.lseek(b, 0, 1), flush=True)
elif mode == "daemon":  # the classic recipe: close everything, the lowest number is stdin
    for fd in range(4096):
        try:
            os.close(fd)
        except OSError:
            pass
    os.open(os.devnull, os.O_RDWR)
    os.dup2(0, 1)
    os.dup2(0, 2)
    for i in range(50):
        print("PROGRAM OUTPUT LINE", i, flush=True)
        grab(4444, 1)
    with open(other, "w") as f:
        f.write(" ".join(sorted(os.readlink(f"/proc/self/fd/{n}") for n in ("0", "1", "2"))))
elif mode == "deleted":
    os.unlink(other)  # the capture itself: cannot be opened again once its descriptor is closed
    os.closerange(3, 65536)
    grab(4444, 5)
print("done", held(), flush=True)
"""


def _profile(run_cytool, tmp_path: Path, mode: str, other: Path, *options: str):
    program = tmp_path / "closer.pyx"
    program.write_text(PROGRAM)
    capture = tmp_path / f"{mode}.cytrace"
    proc = run_cytool("profile", "--no-summary", *options, "-o", capture, program, "--", mode, other, cwd=tmp_path)
    return proc, capture


def _sizes(capture_path: Path):
    with read_capture(capture_path) as capture:
        assert capture.complete and not capture.truncated, capture.truncation_message()
        assert not capture.write_losses
        return sorted(e.size for e in capture.events if e.kind == "malloc" and e.size in (3333, 4444, 5555, 6666))


def test_every_descriptor_closed_then_a_file_opened(run_cytool, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    proc, capture = _profile(run_cytool, tmp_path, "closerange", other)
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr
    assert "cytool:" not in proc.stderr, proc.stderr
    assert other.read_text() == "the program's own text\n"  # never a byte of the capture
    assert _sizes(capture) == [3333] * 7 + [4444] * 5 + [5555] * 3


def test_a_followed_child_closing_descriptors_before_its_exec(run_cytool, tmp_path: Path) -> None:
    proc, capture = _profile(run_cytool, tmp_path, "preexec", tmp_path / "unused", "--follow-fork")
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr
    assert "cannot write" not in proc.stderr and "incomplete" not in proc.stderr, proc.stderr
    children = [p for p in tmp_path.glob("preexec.cytrace.*") if p.suffix[1:].isdigit()]
    assert len(children) == 3, sorted(os.listdir(tmp_path))
    for child in children:  # preexec_fn runs in the child, after the fork, before close_fds
        assert _sizes(child) == [6666] * 2, child
    assert _sizes(capture) == [3333] * 7 + [4444] * 5


def test_the_unwinder_never_touches_the_programs_descriptors(run_cytool, tmp_path: Path) -> None:
    # libunwind's memory-check pipe was made on the lowest free numbers: a program that
    # closed them and opened files there had libunwind read its bytes, write stack bytes
    # into them and replace them with a new pipe
    other = tmp_path / "files"
    proc, capture = _profile(run_cytool, tmp_path, "unwinder", other)
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr
    assert "offsets 0 0" in proc.stdout, proc.stdout
    assert Path(str(other) + ".a").read_bytes() == b"AAAA" and Path(str(other) + ".b").read_bytes() == b""
    assert _sizes(capture) == [3333] * 7 + [4444] * 10


def test_a_daemon_closing_everything_gets_the_lowest_numbers(run_cytool, tmp_path: Path) -> None:
    # the capture opened again takes a number from the top of the range: the recipe's
    # open(/dev/null) gets 0 and its dup2s make 1 and 2 (stdout went into the capture)
    other = tmp_path / "std.txt"
    proc, capture = _profile(run_cytool, tmp_path, "daemon", other)
    assert proc.returncode == 0, proc.stderr
    assert other.read_text() == "/dev/null /dev/null /dev/null"
    assert b"PROGRAM OUTPUT" not in capture.read_bytes()
    assert _sizes(capture) == [3333] * 7 + [4444] * 50


def test_a_capture_that_cannot_be_opened_again_is_a_loss_said(run_cytool, tmp_path: Path) -> None:
    capture = tmp_path / "deleted.cytrace"
    proc, _ = _profile(run_cytool, tmp_path, "deleted", capture)
    assert "done" in proc.stdout, proc.stderr
    assert (f"the program closed the capture's file descriptor and {capture} cannot be opened again"
            in proc.stderr), proc.stderr
