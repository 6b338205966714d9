"""cy-next onto and off `return` lines, black-box in real gdb.

Fixture: tests/fixtures/debug/returns.pyx, built at -O0 by cytool. The line before each
`return` calls with a keyword argument: Cython writes that call's keyword code twice
(`#if CYTHON_VECTORCALL ... #else ... #endif`), and a line of the branch not compiled
that has no `#line` of its own carries the return's line number; counted as compiled, it
made cy-next take the return's real code for an artifact and skip the `return`. Also: a
step out of a function stops on its caller's line (the rest of that line still runs, as
in Python's debuggers), and gdb's own temporary breakpoints end a step and are reported.
Each test runs on the interpreters CYTOOL_TEST_PYTHONS names (tests/conftest.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "debug"))
import gdbharness as h  # noqa: E402

pytestmark = h.GDB_TESTS

RETURNS = h.HERE / "returns.pyx"
R = h.markers(RETURNS)


@pytest.fixture(scope="session")
def returns_module(debug_python: str):
    return h.build(debug_python, RETURNS)


def at(run: h.GdbRun, index: int):
    return h.last_stop(run.of(index), run)


def test_next_stops_on_every_return_line(debug_python: str, returns_module) -> None:
    commands = [f"cy-break returns.pyx:{R[name]}" for name in
                ("half-body", "def-body", "cdef-body", "cpdef-body", "novalue-body", "try-body")]  # 0-5
    commands += [
        "cy-run", "cy-next", "cy-next",  # 6-8: def half()
        "cy-cont", "cy-next", "cy-next",  # 9-11: def, after a call with keywords
        "cy-cont", "cy-next", "cy-next",  # 12-14: cdef
        "cy-step",  # 15: into half(2), later on the caller's line
        "cy-cont", "cy-next", "cy-next",  # 16-18: cpdef
        "cy-cont", "cy-next", "cy-next",  # 19-21: return without a value
        "cy-cont", "cy-next", "cy-next", "cy-next", "cy-next",  # 22-26: in try/finally
        "cy-cont",  # 27
    ]
    run = h.run_gdb(debug_python, returns_module[0], commands, source=RETURNS)
    out = str(run)
    expected = {
        6: ("half-body", "half"), 7: ("half-return", "half"), 8: ("call-half", "main"),
        9: ("def-body", "def_after_keywords"), 10: ("def-return", "def_after_keywords"), 11: ("call-def", "main"),
        12: ("cdef-body", "cdef_after_keywords"), 13: ("cdef-return", "cdef_after_keywords"),
        14: ("call-cdef", "main"),  # the caller's line: `+ half(2)` on it has not run yet
        15: ("half-body", "half"),
        16: ("cpdef-body", "cpdef_after_keywords"), 17: ("cpdef-return", "cpdef_after_keywords"),
        18: ("call-cpdef", "main"),
        19: ("novalue-body", "without_value"), 20: ("novalue-return", "without_value"), 21: ("call-novalue", "main"),
        22: ("try-body", "in_try_finally"), 23: ("try-return", "in_try_finally"),
        24: ("try-finally", "in_try_finally"), 25: ("call-try", "main"), 26: ("print-total", "main"),
    }
    for index, (marker, function) in expected.items():
        assert at(run, index) == ("returns.pyx", R[marker], function), f"command {index} {commands[index]}:\n{out}"
    assert "total 32" in run.of(27), out  # 5 + 5 + (6 + 1) + 7 + 8: nothing ran twice or was skipped
    assert "Python Exception" not in out and "Error occurred in Python" not in out, out


def test_gdb_temporary_breakpoints_end_a_step(debug_python: str, returns_module) -> None:
    """gdb's own tbreak is deleted when hit, before the cy-* command looks at the stop: it
    still ends cy-run and cy-next, and is reported, never a Python exception."""
    commands = [
        "set breakpoint pending on",
        "tbreak __pyx_f_7returns_cdef_after_keywords",  # 1: pending until the module loads
        "cy-run",  # 2
        "tbreak __pyx_pf_7returns_half",  # 3
        "cy-next", "cy-next",  # 4, 5: to the return, out to main
        "cy-next",  # 6: over a line whose call to half() meets the tbreak
        "cy-cont",  # 7
    ]
    run = h.run_gdb(debug_python, returns_module[0], commands, source=RETURNS)
    out = str(run)
    assert f"Breakpoint 1, returns.pyx:{R['cdef-body']} in cdef_after_keywords()" in run.of(2), out
    assert at(run, 4) == ("returns.pyx", R["cdef-return"], "cdef_after_keywords"), out
    assert at(run, 5) == ("returns.pyx", R["call-cdef"], "main"), out
    assert f"Breakpoint 2, returns.pyx:{R['half-body']} in half()" in run.of(6), out
    assert "total 32" in run.of(7), out
    assert "Python Exception" not in out and "Error occurred in Python" not in out, out
