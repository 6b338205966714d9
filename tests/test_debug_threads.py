"""Threads and tab completion under cytool's debugger, black-box in real gdb.

shapes.threaded starts threads that each run a nogil loop (work_nogil) at the same time:
one breakpoint is hit in several threads; cy-thread and cy-bt -a show every thread.
Runs on the interpreters CYTOOL_TEST_PYTHONS names (tests/conftest.py).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "debug"))
import gdbharness as h  # noqa: E402

pytestmark = h.GDB_TESTS

SHAPES = h.SHAPES
S = h.markers(SHAPES)


def test_breakpoint_in_several_threads(debug_python: str, shapes) -> None:
    commands = [
        "cy-break work_nogil",
        "cy-run",  # 1
        "cy-print n",  # 2
        "cy-thread",  # 3
        "cy-bt -a",  # 4
        "cy-cont",  # 5: the other thread
        "cy-print n",  # 6
        "cy-next",  # 7
        "cy-delete 1",
        "cy-cont",
    ]
    run = h.run_gdb(debug_python, shapes[0], commands, source=SHAPES, args=["3"])
    out = str(run)
    first = run.of(1)
    tags = re.findall(r"in work_nogil\(\) \[thread (\d+)\]", first + run.of(5))
    assert len(tags) == 2 and tags[0] != tags[1], out  # two threads, each named
    assert h.last_stop(run.of(1), run) == ("shapes.pyx", S["nogil-first"], "work_nogil"), out
    listing = run.of(3)
    assert listing.count("work_nogil()") >= 1 and re.search(r"^\* \d+", listing, flags=re.M), out
    assert "shapes.pyx" in listing and "threaded()" in listing, out  # the main thread waits in threaded()
    everything = run.of(4)
    assert len(re.findall(r"^[* ]Thread \d+", everything, flags=re.M)) >= 2, out  # each thread there is by then
    assert everything.count("in work_nogil()") >= 1 and "in threaded.body()" in everything, out
    assert "in main()" in everything, out
    values = {run.of(2).strip(), run.of(6).strip()}
    assert len(values) == 2 and all(re.fullmatch(r"n = 100\d", v) for v in values), out
    assert h.last_stop(run.of(7), run)[2] == "work_nogil", out
    assert "done Vec" in out, out  # (gdb's thread messages may split the "threads 3" line)


def test_tab_completion(debug_python: str, shapes) -> None:
    commands = [
        "complete cy-break make_a",  # 0
        "complete cy-break shapes.p",  # 1
        "complete cy-break Vec.",  # 2
        f"cy-load {shapes[1]}",  # 3
        "complete cy-break make_a",  # 4
        "complete cy-break shapes.p",  # 5
        "complete cy-break Vec.n",  # 6
        "cy-break make_adder.add",
        "cy-run",  # 8
        "complete cy-print of",  # 9
        "complete cy-print x",  # 10
        "complete cy-set y",  # 11
        "complete cy-print Ve",  # 12
    ]
    run = h.run_gdb(debug_python, shapes[0], commands, source=SHAPES)
    out = str(run)
    assert run.of(0).strip() == "", out  # nothing known before cy-load (or the module's load)
    assert "cy-break make_adder" in run.of(4) and "cy-break make_adder.add" in run.of(4), out
    assert "cy-break shapes.pyx:" in run.of(5), out
    assert "cy-break Vec.norm2" in run.of(6), out
    assert "cy-print offset" in run.of(9), out
    assert "cy-print x" in run.of(10), out
    assert "cy-set y" in run.of(11), out
    assert "cy-print Vec" in run.of(12) and "cy-print Vec3" in run.of(12), out
