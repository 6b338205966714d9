"""The cy-* gdb commands, black-box: real Cython, real gcc, real gdb in batch mode.

Each test runs one gdb session over tests/fixtures/debug/dbgmod.pyx and checks what the
commands print: where the program stopped (file, line, Cython function), values and
backtraces. The suite runs on the interpreters CYTOOL_TEST_PYTHONS names (tests/conftest.py):
by default this venv's Python and 3.13; `make test-pythons` runs 3.9 to 3.13.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "debug"))
import gdbharness as h  # noqa: E402

pytestmark = [
    pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed"),
    pytest.mark.timeout(600),
]

M = h.markers()
P = h.markers(h.PXI)
C = h.markers(h.FIXTURE.parent / "cfuncs.h")


@pytest.fixture(scope="session")
def python(debug_python: str) -> str:
    """The interpreter under test (tests/conftest.py: CYTOOL_TEST_PYTHONS)."""
    return debug_python


@pytest.fixture(scope="session")
def built(python: str):
    return h.build(python)


def test_breakpoint_traps_before_load(python: str, built) -> None:
    """With the XML read up front (cy-load), wrong lines are refused before the run and
    every kind of line stops in the function that owns it."""
    module_path, build_dir = built
    commands = [
        f"cy-load {build_dir}",
        f"cy-break dbgmod.pyx:{M['work-def'] + 1}",  # 0+1: cdef declaration
        f"cy-break dbgmod.pyx:{M['work-comment']}",  # comment line
        f"cy-break dbgmod.pyx:{M['work-comment'] - 1}",  # blank line
        f"cy-break dbgmod.pyx:{M['acc-class']}",  # cdef class header
        f"cy-break dbgmod.pyx:{M['acc-class'] + 2}",  # cdef object attribute
        f"cy-break dbgmod.pyx:{M['module-level']}",  # module-level code
        f"cy-break dbgmod.pyx:{M['scale-def']}",  # cpdef def line
        f"cy-break dbgmod.pyx:{M['work-def']}",  # def line
        f"cy-break helpers.pxi:{P['pxi-body']}",  # included .pxi
        f"cy-break dbgmod.pyx:{M['mc-return']}",  # closure owner, after the closure
        f"cy-break dbgmod.pyx:{M['bump-def']}",  # the closure's def line
        "cy-break no_such_function",
        f"cy-break dbgmod.pyx:{M['work-tup']}",  # its constant is also built in __Pyx_InitCachedConstants
        "cy-break",
        "cy-run",
    ] + ["cy-cont"] * 10
    run = h.run_gdb(python, module_path, commands)
    out = str(run)
    assert f"dbgmod.pyx:{M['work-def'] + 1} has no code" in run.of(1), out
    assert f"nearest line with code is dbgmod.pyx:{M['work-first']}" in run.of(1), out
    assert f"dbgmod.pyx:{M['work-comment']} has no code" in run.of(2), out
    assert f"dbgmod.pyx:{M['work-comment'] - 1} has no code" in run.of(3), out
    assert f"dbgmod.pyx:{M['acc-class']} has no code" in run.of(4), out
    assert f"dbgmod.pyx:{M['acc-class'] + 2} has no code" in run.of(5), out
    assert f"first statement, line {M['scale-body']}" in run.of(7), out
    assert f"first statement, line {M['work-first']}" in run.of(8), out
    assert f"first statement, line {M['bump-body']}" in run.of(11), out
    assert "no Cython function named 'no_such_function'" in run.of(12) and "pending" in run.of(12), out
    listing = run.of(14)
    assert listing.count("pending") == 8, out  # the eight accepted breakpoints, before the run

    hits = h.stops("".join(run.of(i) for i in range(15, len(commands))))
    expected = [
        ("dbgmod.pyx", M["module-level"], "<module>"),
        ("dbgmod.pyx", M["scale-body"], "scale"),  # cpdef called from C (module level)
        ("dbgmod.pyx", M["work-first"], "work"),  # not module init at the def line
        ("dbgmod.pyx", M["work-tup"], "work"),  # not the constant cache at import
        ("helpers.pxi", P["pxi-body"], "pxi_twice"),
        ("dbgmod.pyx", M["scale-body"], "scale"),  # from work, a C call
        ("dbgmod.pyx", M["mc-return"], "make_counter"),
        ("dbgmod.pyx", M["bump-body"], "make_counter.bump"),
        ("dbgmod.pyx", M["scale-body"], "scale"),  # through the Python entry (via_python)
        ("dbgmod.pyx", M["scale-body"], "scale"),  # main's print
    ]
    assert hits == expected, out
    assert "result 19 5 2.0 8" in out, out  # the program ran to its end
    assert "breakpoint 7 (no_such_function) matched nothing in this run" in out, out


def test_pending_function_breakpoints(python: str, built) -> None:
    """Without cy-load: breakpoints by function name stay pending, then resolve when
    Python imports the module; a codeless line is refused once the module is known."""
    module_path, _ = built
    commands = [
        "cy-break work",
        "cy-break dbgmod.work",
        "cy-break Acc.add",
        "cy-break make_counter.bump",
        f"cy-break dbgmod.pyx:{M['work-def'] + 1}",
        "cy-run",
        "cy-cont", "cy-cont",
        f"cy-break dbgmod.pyx:{M['main-print']}",  # 8: the module is loaded now
        f"cy-break {M['main-triple']}",  # 9: a bare line: the current file
        "cy-cont", "cy-cont",  # 10, 11
        "cy-run",  # 12: a second run places the breakpoints again
    ]
    run = h.run_gdb(python, module_path, commands)
    out = str(run)
    assert "pending" in run.of(0), out
    assert "has no code" in run.of(5) and f"nearest line with code is dbgmod.pyx:{M['work-first']}" in run.of(5), out
    hits = h.stops("".join(run.of(i) for i in range(5, 8)))
    assert hits == [
        ("dbgmod.pyx", M["work-first"], "work"),
        ("dbgmod.pyx", M["acc-add-body"], "Acc.add"),
        ("dbgmod.pyx", M["bump-body"], "make_counter.bump"),
    ], out
    assert "pending" not in run.of(8) and f"at dbgmod.pyx:{M['main-print']} in main()" in run.of(8), out
    assert "pending" not in run.of(9) and f"at dbgmod.pyx:{M['main-triple']} in main()" in run.of(9), out
    assert h.stops(run.of(10))[-1:] == [("dbgmod.pyx", M["main-print"], "main")], out
    assert h.stops(run.of(11))[-1:] == [("dbgmod.pyx", M["main-triple"], "main")], out
    assert h.stops(run.of(12))[:1] == [("dbgmod.pyx", M["work-first"], "work")], out


def test_stepping(python: str, built) -> None:
    module_path, _ = built
    commands = [
        "cy-break work",
        "cy-run",
        "cy-next",  # 2
        "cy-next",  # 3
        f"cy-until dbgmod.pyx:{M['work-loop']}",  # 4
        "cy-step",  # 5: into cadd (a cdef function)
        "cy-next",  # 6
        "cy-finish",  # 7: back in work
        "cy-until",  # 8: out of the loop
        "cy-step",  # 9: into pxi_twice
        "cy-finish",  # 10
        "cy-next",  # 11
        "cy-finish",  # 12: work returns to main (through Python's call machinery)
        "cy-next",  # 13
        "cy-step",  # 14: into Acc.add, a def method called through Python
        "cy-next",  # 15
        f"cy-break dbgmod.pyx:{M['main-triple']}",
        "cy-cont",  # 17
        "cy-step -c",  # 18: into the C function c_triple
        "cy-finish",  # 19: back in main
        "cy-delete 1",
        "cy-run",  # 21: again, now stopping at main-triple only
        "cy-step",  # 22: without -c, C functions are stepped over
        "cy-cont",
    ]
    run = h.run_gdb(python, module_path, commands)
    out = str(run)

    def at(index: int):
        found = h.stops(run.of(index))
        assert found, f"command {index} ({commands[index]}) reported no location:\n{out}"
        return found[-1]

    assert at(1) == ("dbgmod.pyx", M["work-first"], "work"), out
    assert at(2) == ("dbgmod.pyx", M["work-first"] + 1, "work"), out
    assert at(3) == ("dbgmod.pyx", M["work-first"] + 2, "work"), out
    assert at(4) == ("dbgmod.pyx", M["work-loop"], "work"), out
    assert at(5) == ("dbgmod.pyx", M["cadd-body"], "cadd"), out
    assert at(6) == ("dbgmod.pyx", M["cadd-body"] + 1, "cadd"), out
    assert at(7)[2] == "work" and at(7)[1] in (M["work-loop"], M["work-loop"] - 1), out
    assert at(8) == ("dbgmod.pyx", M["work-pxi"], "work"), out
    assert at(9) == ("helpers.pxi", P["pxi-body"], "pxi_twice"), out
    assert at(10)[2] == "work" and at(10)[1] == M["work-pxi"], out
    assert at(11) == ("dbgmod.pyx", M["work-scale"], "work"), out
    assert at(12)[2] == "main" and at(12)[1] == M["main-work"], out
    assert at(13) == ("dbgmod.pyx", M["main-work"] + 1, "main"), out
    assert at(14) == ("dbgmod.pyx", M["acc-add-body"], "Acc.add") or at(14)[2] == "Acc.__init__", out
    assert "result 19 5 2.0 8" in out, out
    assert at(17) == ("dbgmod.pyx", M["main-triple"], "main"), out
    assert f"cfuncs.h:{C['c-body']} in c_triple() (C)" in run.of(18), out
    assert at(19) == ("dbgmod.pyx", M["main-triple"], "main"), out
    assert at(21) == ("dbgmod.pyx", M["main-triple"], "main"), out
    assert "c_triple" not in run.of(22) and h.stops(run.of(22)), out
    assert "triple 6" in run.of(22), out  # the C call ran (stepped over)


def test_values_frames_and_set(python: str, built) -> None:
    module_path, _ = built
    commands = [
        f"cy-break dbgmod.pyx:{M['work-return']}",
        "cy-break Acc.add",
        "cy-break bump",
        "cy-run",
        "cy-print n", "cy-print total", "cy-print items", "cy-print name", "cy-print data",
        "cy-print mapping", "cy-print tup", "cy-print flag", "cy-print nothing", "cy-print big",
        "cy-print neg", "cy-print truth", "cy-print ratio", "cy-print total * 2 + n",
        "cy-print counter", "cy-print GREETING", "cy-print module_value",
        "cy-locals",
        "cy-globals",
        "cy-bt",
        "cy-up",
        "cy-print result",  # not assigned yet
        "cy-down",
        "cy-frame 1",
        "cy-frame 0",
        "cy-list",
        "p $cy_lineno()",
        'p $cy_cname("total")',
        'p $cy_value("n")',
        "cy-set total = 100",
        "cy-print no_such_name",
        "cy-set items = 3",
        "cy-frame 9",
        "cy-cont",  # Acc.add
        "cy-print self.value", "cy-print self.label", "cy-print k",
        "cy-set k = 7",
        "cy-print self",
        "cy-cont#2",  # bump
        "cy-print count", "cy-print by",
        "cy-bt full",
        "cy-cont#3",
    ]
    run = h.run_gdb(python, module_path, [c.split("#")[0] for c in commands])
    out = str(run)

    def of(command: str) -> str:
        return run.of(commands.index(command))

    assert h.last_stop(of("cy-run"), out) == ("dbgmod.pyx", M["work-return"], "work"), out
    expected = {
        "cy-print n": "n = 4",
        "cy-print total": "total = 19",
        "cy-print items": "items = [1, 'two', 3.5]",
        "cy-print name": "name = 'abc'",
        "cy-print data": "data = b'xy\\x00'",
        "cy-print mapping": "mapping = {'k': 1, 2: None}",
        "cy-print tup": "tup = (1, 2.5, None)",
        "cy-print flag": "flag = 1",  # a bint: C
        "cy-print nothing": "nothing = None",
        "cy-print big": f"big = {2 ** 70}",
        "cy-print neg": "neg = -12345",
        "cy-print truth": "truth = True",
        "cy-print ratio": "ratio = 0.25",
        "cy-print total * 2 + n": "total * 2 + n = 42",
        "cy-print counter": "counter = 7",  # cdef int global
        "cy-print GREETING": "GREETING = 'hello'",  # Python-level global (module dict)
        "cy-print module_value": "module_value = 6.0",
    }
    for command, text in expected.items():
        assert text in of(command), f"{command!r}: expected {text!r}\n{out}"
    for text in ("n = 4", "total = 19", "items = [1, 'two', 3.5]", "mapping = {'k': 1, 2: None}"):
        assert text in of("cy-locals"), out
    assert "counter = 7" in of("cy-globals") and "GREETING = 'hello'" in of("cy-globals"), out

    bt = of("cy-bt")
    backtrace = h.stops(bt)
    assert [s[2] for s in backtrace] == ["work", "main", "<module>"], out
    assert backtrace[1][1] == M["main-work"] and backtrace[2][1] == M["module-main"], out
    assert "result = work(4)" in bt, out  # the source line of each frame
    if "Python frames not shown" in bt:  # an interpreter without python-gdb.py
        assert "python-gdb.py" in bt, out  # says why
    assert "launch.py" not in bt and "cli.py" not in bt, out  # cytool's launcher frames are hidden
    assert "_PyEval_EvalFrameDefault" not in bt, out
    full = of("cy-bt full")
    if "Python frames not shown" not in full:
        assert "[py]" in full and "/cytool/launch.py" in full, out  # ... and shown by cy-bt -a

    assert h.last_stop(of("cy-up"), out)[2] == "main", out
    assert "result = <unbound>" in of("cy-print result"), out
    assert h.last_stop(of("cy-down"), out)[2] == "work", out
    assert h.last_stop(of("cy-frame 1"), out)[2] == "main", out
    assert h.last_stop(of("cy-frame 0"), out)[2] == "work", out
    listing = of("cy-list")
    assert f">{M['work-return']:>5}    " in listing and "return total" in listing, out
    assert f"= {M['work-return']}" in of("p $cy_lineno()"), out
    assert '"__pyx_v_total"' in of('p $cy_cname("total")'), out
    assert "= 4" in of('p $cy_value("n")'), out
    assert "total = 100" in of("cy-set total = 100"), out
    assert "No Cython name 'no_such_name'" in of("cy-print no_such_name"), out
    assert "items holds a Python object" in of("cy-set items = 3"), out
    assert "No Cython frame 9 (there are 3)" in of("cy-frame 9"), out

    assert h.last_stop(of("cy-cont"), out) == ("dbgmod.pyx", M["acc-add-body"], "Acc.add"), out
    assert "self.value = 0" in of("cy-print self.value"), out  # cdef class attributes
    assert "self.label = 'acc'" in of("cy-print self.label"), out
    assert "k = 5" in of("cy-print k"), out
    assert "k = 7" in of("cy-set k = 7"), out
    assert "<dbgmod.Acc object at 0x" in of("cy-print self"), out  # Python's default repr
    assert "    value = 7" not in of("cy-print self") and "    label = 'acc'" in of("cy-print self"), out

    assert h.last_stop(of("cy-cont#2"), out) == ("dbgmod.pyx", M["bump-body"], "make_counter.bump"), out
    assert "count = 10" in of("cy-print count"), out  # a closure variable
    assert "by = 3" in of("cy-print by"), out
    assert "_PyEval_EvalFrameDefault" in of("cy-bt full"), out  # full shows everything
    # cy-set took effect: work returned 100, add(k=7)
    assert "result 100 7 2.0 8" in out, out


def test_python_frames_between_cython_frames(python: str, built) -> None:
    """main (Cython) -> pyhelper.call_back (Python) -> callback_target (Cython)."""
    module_path, _ = built
    helper = h.markers(h.FIXTURE.parent / "pyhelper.py")
    commands = ["cy-break callback_target", "cy-run", "cy-bt",
                "set cy-python-frames off", "cy-bt", "set cy-python-frames on",  # 3, 4, 5
                "cy-finish", "cy-run", "cy-next", "cy-next", "cy-cont"]  # 6 .. 10
    run = h.run_gdb(python, module_path, commands)
    out = str(run)
    bt = run.of(2)
    assert [s[2] for s in h.stops(bt)] == ["callback_target", "main", "<module>"], out
    # without Python frames: the Cython ones, and why the others are missing
    assert [s[2] for s in h.stops(run.of(4))] == ["callback_target", "main", "<module>"], out
    assert "[py]" not in run.of(4) and "Python frames not shown: turned off" in run.of(4), out
    if "Python frames not shown" in bt:
        assert "python-gdb.py" in bt, out
        return
    lines = bt.splitlines()
    position = {name: next(i for i, line in enumerate(lines) if name in line)
                for name in ("in callback_target()", f"pyhelper.py:{helper['py-call']} in call_back()", "in main()")}
    assert position["in callback_target()"] < position[f"pyhelper.py:{helper['py-call']} in call_back()"] \
        < position["in main()"], out  # the Python frame sits between the two Cython frames
    returned = f"returned to Python: {h.FIXTURE.parent / 'pyhelper.py'}:{helper['py-call']} in call_back()"
    assert returned in run.of(6), out  # cy-finish
    assert h.last_stop(run.of(8), out) == ("dbgmod.pyx", M["cb-body"] + 1, "callback_target"), out
    assert returned in run.of(9), out  # cy-next off the end of the function
    assert "helper 42" in out, out


def test_help_for_every_command(python: str, built) -> None:
    if python != sys.executable:
        pytest.skip("help does not depend on the interpreter")
    module_path, _ = built
    names = ["cy-break", "cy-step", "cy-next", "cy-finish", "cy-cont", "cy-run", "cy-until", "cy-bt",
             "cy-up", "cy-down", "cy-frame", "cy-list", "cy-print", "cy-locals", "cy-globals", "cy-set",
             "cy-load", "cy-delete", "cy-thread", "cy-exec", "function cy_cname", "function cy_lineno",
             "function cy_value", "function cy_eval"]
    run = h.run_gdb(python, module_path, [f"help {name}" for name in names])
    for index, name in enumerate(names):
        text = run.of(index)
        assert text.strip() and "Undefined" not in text, f"help {name}:\n{run}"
        if not name.startswith("function"):
            assert "Usage: " + name in text, f"help {name}:\n{run}"
