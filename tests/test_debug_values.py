"""What cy-print, cy-locals and cy-globals show, black-box in real gdb.

Fixture: tests/fixtures/debug/shapes.pyx built at -O0 by cytool. Values never abort a
command: an unreadable one prints as <unreadable: reason> and the others are shown;
cdef class instances show their attributes, classes their qualified names. Runs on the
interpreters CYTOOL_TEST_PYTHONS names (tests/conftest.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "debug"))
import gdbharness as h  # noqa: E402

pytestmark = h.GDB_TESTS

SHAPES = h.SHAPES
S = h.markers(SHAPES)


def test_cdef_class_instances_and_classes(debug_python: str, shapes) -> None:
    commands = [
        f"cy-break shapes.pyx:{S['norm2-body']}",
        "cy-run",  # 1: Vec(3, 4).norm2()
        "cy-print self",  # 2
        "cy-cont",  # 3: Vec3(1, 2, 3).norm2()
        "cy-print self",  # 4
        "cy-print self.x + self.y",  # 5
        "cy-up",  # 6: main
        "cy-print v", "cy-print Vec", "cy-print Vec3",  # 7, 8, 9
        "cy-print sys", "cy-print make_adder",  # 10, 11
        "cy-print Plain",  # 12: a Python class defined in the module
    ]
    run = h.run_gdb(debug_python, shapes[0], commands, source=SHAPES)
    out = str(run)
    first = run.of(2)
    assert "self = <shapes.Vec object at 0x" in first, out
    for text in ("    x = 3.0", "    y = 4.0", "    tag = 'tag'", "    history = [3.0, 4.0]"):
        assert text in first, out
    second = run.of(4)
    assert "self = <shapes.Vec3 object at 0x" in second, out
    for text in ("    x = 1.0", "    y = 2.0", "    tag = '3d'", "    z = 3.0"):
        assert text in second, out  # a subclass: the base's attributes, then its own
    assert second.index("    x = 1.0") < second.index("    z = 3.0"), out
    assert "self.x + self.y = 3.0" in run.of(5), out
    assert "v = <shapes.Vec object at 0x" in run.of(7) and "    x = 3.0" in run.of(7), out
    assert "Vec = <class 'shapes.Vec'>" in run.of(8), out
    assert "Vec3 = <class 'shapes.Vec3'>" in run.of(9), out
    assert "sys = <module 'sys'>" in run.of(10), out
    assert "make_adder = <cyfunction make_adder at 0x" in run.of(11), out
    assert "Plain = <class 'shapes.Plain'>" in run.of(12), out


def test_globals_show_dunders_with_a(debug_python: str, shapes) -> None:
    commands = ["cy-break main", "cy-run", "cy-globals", "cy-globals -a", "cy-globals -x"]
    run = h.run_gdb(debug_python, shapes[0], commands, source=SHAPES)
    out = str(run)
    default = run.of(2)
    assert "Vec = <class 'shapes.Vec'>" in default and "pysteps = <module 'pysteps'>" in default, out
    assert "__name__" not in default and "names starting with __ not shown: cy-globals -a" in default, out
    everything = run.of(3)
    assert "__name__ = '__main__'" in everything, out  # run as the program's __main__
    assert "__doc__ = None" in everything, out
    assert "__file__ = '" in everything and "shapes." in everything, out
    assert "Vec = <class 'shapes.Vec'>" in everything, out
    assert "Usage: cy-globals [-a]" in run.of(4), out


def test_values_never_abort(debug_python: str, shapes) -> None:
    """A local holding a bad pointer prints <unreadable: ...> and the others still print;
    unbound Python names and unassigned C locals say so; nothing raises out of gdb."""
    commands = [
        f"cy-break shapes.pyx:{S['add-return']}",
        f"cy-break shapes.pyx:{S['late-assign']}",
        "cy-run",  # 2
        "set variable $saved = __pyx_v_y",
        "set variable __pyx_v_y = (PyObject *) 0x10",  # 4: y now points at nothing
        "cy-locals",  # 5
        "cy-print y",  # 6
        "cy-print offset",  # 7
        "set variable __pyx_v_y = $saved",  # 8: as it was, for the program to go on
        "cy-cont",  # 9: branches, before `late` is assigned
        "cy-locals",  # 10
        "cy-next", "cy-print late",  # 11, 12
        "cy-print no_such_name",  # 13
    ]
    run = h.run_gdb(debug_python, shapes[0], commands, source=SHAPES)
    out = str(run)
    assert h.last_stop(run.of(2), run) == ("shapes.pyx", S["add-return"], "make_adder.add"), out
    listing = run.of(5)
    assert "x = 2" in listing and "offset = 40" in listing, out  # the others are shown
    assert "y = <unreadable:" in listing and "0x10" in listing, out
    assert "y = <unreadable:" in run.of(6) and "offset = 40" in run.of(7), out
    assert h.last_stop(run.of(9), run) == ("shapes.pyx", S["late-assign"], "branches"), out
    assert "i = 7" in run.of(10) and "late = <not yet assigned>" in run.of(10), out
    assert "late = 28" in run.of(12), out
    assert "No Cython name 'no_such_name'" in run.of(13), out  # a wrong name is an error, not a value
    assert "Python Exception" not in out and "Error occurred in Python" not in out, out
    assert "done Vec" not in out  # the session stopped where asked


def test_operations_on_python_objects_are_evaluated_as_python(debug_python: str, shapes) -> None:
    """cy-print seq[1] on a Python list, m + 1 on a Python int: evaluated as Python in the
    frame (as C they would work on the PyObject pointer and read some other memory)."""
    commands = [
        f"cy-break shapes.pyx:{S['lambda-line']}",
        "cy-run",  # 1: sort_by_key([5, 3, 4], 3)
        "cy-print seq[1]",  # 2
        "cy-print seq[0:2]",  # 3
        "cy-print seq[7]",  # 4: the program's IndexError, said
        "cy-print m + 1",  # 5
        "cy-print len(seq) * m",  # 6
    ]
    run = h.run_gdb(debug_python, shapes[0], commands, source=SHAPES)
    out = str(run)
    assert "seq[1] = 3" in run.of(2), out
    assert "seq[0:2] = [5, 3]" in run.of(3), out
    assert "IndexError" in run.of(4) and "seq[7] = " not in run.of(4), out
    assert "m + 1 = 4" in run.of(5), out
    assert "len(seq) * m = 9" in run.of(6), out
    assert "Cannot access memory" not in out, out


def test_generators_and_coroutines_print_with_their_names(debug_python: str, shapes) -> None:
    """Generators, coroutines and async generators, Cython's and Python's, print as Python
    shows them: `<generator object countdown at 0x...>`, with the __qualname__ (was
    nameless: `<_cython_3_x.generator object at 0x...>`, `<generator object at 0x...>`)."""
    commands = [
        f"cy-break shapes.pyx:{S['generators-held']}",
        "cy-run",  # 1
        "cy-locals",  # 2
        "cy-print g", "cy-print c", "cy-print ag",  # 3, 4, 5: Cython's
        "cy-print pg", "cy-print pc", "cy-print pm",  # 6, 7, 8: Python's
    ]
    run = h.run_gdb(debug_python, shapes[0], commands, source=SHAPES)
    out = str(run)
    assert h.last_stop(run.of(1), run) == ("shapes.pyx", S["generators-held"], "hold_generators"), out
    expected = {
        "g": "<generator object countdown at 0x",
        "c": "<coroutine object twice at 0x",
        "ag": "<async_generator object ticks at 0x",
        "pg": "<generator object py_countdown at 0x",
        "pc": "<coroutine object py_twice at 0x",
        "pm": "<generator object Box.items at 0x",  # the qualified name
    }
    for index, (name, text) in enumerate(expected.items(), start=3):
        assert f"{name} = {text}" in run.of(index), out
        assert f"{name} = {text}" in run.of(2), out
    assert "Python Exception" not in out, out
