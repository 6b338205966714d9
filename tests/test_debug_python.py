"""Python code under cytool's debugger, black-box in real gdb: cy-step from Cython into
the Python functions a line calls, Python-level steps back into Cython, Python
breakpoints (`cy-break -p`, `cy-break file.py:LINE`), cy-exec and $cy_eval.

Fixtures: tests/fixtures/debug/shapes.pyx (call_python calls pysteps.helper) and
pysteps.py. Python stops need the interpreter's symbols (pyenv builds have them). Runs on
the interpreters CYTOOL_TEST_PYTHONS names (tests/conftest.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "debug"))
import gdbharness as h  # noqa: E402

pytestmark = h.GDB_TESTS

SHAPES = h.SHAPES
S = h.markers(SHAPES)
Y = h.markers(h.HERE / "pysteps.py")


def at(run: h.GdbRun, index: int):
    return h.last_stop(run.of(index), run)


def test_step_into_python_and_back(debug_python: str, shapes) -> None:
    commands = [
        f"cy-break shapes.pyx:{S['call-python-line']}",
        "cy-run",  # 1
        "cy-step",  # 2: into pysteps.helper
        "cy-locals", "cy-print value * 3", "cy-bt",  # 3, 4, 5
        "cy-next",  # 6: helper-call
        "cy-step",  # 7: into inner
        "cy-finish",  # 8: back in helper, at its next line
        "cy-next",  # 9: helper returns into Cython
        "cy-next",  # 10: the next Cython line
        "cy-print result",  # 11
    ]
    run = h.run_gdb(debug_python, shapes[0], commands, source=SHAPES)
    out = str(run)
    assert at(run, 1) == ("shapes.pyx", S["call-python-line"], "call_python"), out
    assert at(run, 2) == ("pysteps.py", Y["helper-first"], "helper"), out
    assert "[Python]" in run.of(2), out
    assert "value = 11" in run.of(3), out
    assert "value * 3 = 33" in run.of(4), out
    bt = run.of(5)
    assert f"pysteps.py:{Y['helper-first']} in helper()" in bt and "#0  shapes.pyx" in bt, out
    assert bt.index("pysteps.py") < bt.index("in call_python()") < bt.index("in main()"), out
    assert "cytool_gdb_agent" not in bt, out  # cytool's own agent frames are hidden
    assert at(run, 6) == ("pysteps.py", Y["helper-call"], "helper"), out
    assert at(run, 7) == ("pysteps.py", Y["inner-body"], "inner"), out
    assert at(run, 8) == ("pysteps.py", Y["helper-return"], "helper"), out
    assert at(run, 9) == ("shapes.pyx", S["call-python-line"], "call_python"), out  # back in Cython
    assert at(run, 10) == ("shapes.pyx", S["call-python-after"], "call_python"), out
    assert "result = 33" in run.of(11), out


def test_python_breakpoints_exec_and_eval(debug_python: str, shapes) -> None:
    commands = [
        "cy-break -p pysteps.inner",  # 0
        f"cy-break pysteps.py:{Y['helper-return']}",  # 1
        "cy-break Vec.norm2",  # 2
        "cy-break",  # 3
        "cy-run",  # 4: Vec.norm2 (Cython) comes first
        "cy-exec print('self is', type(self).__name__, self.x)",  # 5
        'p $cy_eval("self.x * 2")',  # 6
        'p $cy_eval("1/0")',  # 7
        "cy-exec import math; print('hyp', math.hypot(self.x, self.y))",  # 8
        "cy-delete 3",
        "cy-cont",  # 10: Python breakpoint in inner
        "cy-print x", "cy-locals",  # 11, 12
        "cy-cont",  # 13: pysteps.py line in helper
        "cy-exec print('sum', doubled + extra)",  # 14
        'p $cy_eval("doubled * 100")',  # 15
        "cy-cont",
    ]
    run = h.run_gdb(debug_python, shapes[0], commands, source=SHAPES)
    out = str(run)
    assert "Python breakpoint 1 at Python function pysteps.inner()" in run.of(0), out
    assert f"Python breakpoint 2 at pysteps.py:{Y['helper-return']}" in run.of(1), out
    assert at(run, 4)[2] == "Vec.norm2", out
    assert "self is Vec 3.0" in run.of(5), out
    assert "= 6" in run.of(6), out
    assert "ZeroDivisionError" in run.of(7), out
    assert "hyp 5.0" in run.of(8), out
    assert "Python breakpoint 1, " in run.of(10) and at(run, 10) == ("pysteps.py", Y["inner-body"], "inner"), out
    assert "x = 22" in run.of(11) and "x = 22" in run.of(12), out
    assert "Python breakpoint 2, " in run.of(13), out
    assert at(run, 13) == ("pysteps.py", Y["helper-return"], "helper"), out
    assert "sum 33" in run.of(14), out
    assert "= 2200" in run.of(15), out
    assert "python 34" in out and "done Vec" in out, out


def test_exec_needs_the_gil(debug_python: str, shapes) -> None:
    """In a nogil section cy-exec says why it cannot run, and the session goes on."""
    commands = [f"cy-break shapes.pyx:{S['nogil-body']}", "cy-run", "cy-exec print(1)", 'p $cy_eval("1")',
                "cy-print acc", "cy-delete 1", "cy-cont"]
    run = h.run_gdb(debug_python, shapes[0], commands, source=SHAPES, args=["1"])
    out = str(run)
    assert at(run, 1)[2] == "work_nogil", out
    assert "needs the GIL" in run.of(2) and "does not hold it" in run.of(2), out
    assert "needs the GIL" in run.of(3), out
    assert "acc = " in run.of(4), out
    assert "done Vec" in out, out
