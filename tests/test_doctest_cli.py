"""`cytool test`: doctests of .pyx modules and packages, run as a user runs them, with
failures at the right .pyx lines (cdef class methods and properties, cpdef, module
docstrings, embedded signatures), -k, --verbose, --profile, --debug in gdb, and one
clear message for each kind of bad input."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "doctests"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "proj")
    return tmp_path / "proj"


def line_of(path: Path, text: str) -> int:
    """1-based line of the first line of `path` holding `text`."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_package_passes(project: Path, run_cytool) -> None:
    done = run_cytool("test", "dtpkg", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dtpkg/shapes.pyx: 7 examples passed (7 docstrings)" in done.stdout
    # Cython's __test__ copies are not run a second time (embedsignature included)
    assert "dtpkg/sub/calc.pyx: 3 examples passed (2 docstrings)" in done.stdout
    assert done.stdout.rstrip().endswith("10 passed, 0 failed")


def test_failures_name_the_pyx_line(project: Path, run_cytool) -> None:
    shapes = project / "dtpkg" / "shapes.pyx"
    calc = project / "dtpkg" / "sub" / "calc.pyx"
    replace(shapes, ">>> Square(2).side\n2", ">>> Square(2).side\n3")  # module docstring
    replace(shapes, "        >>> Square(3).area()\n        9", "        >>> Square(3).area()\n        10")  # cpdef method
    replace(shapes, "        >>> Square(2).perimeter\n        8", "        >>> Square(2).perimeter\n        7")  # property
    replace(calc, "    >>> total_area([])\n    0", "    >>> total_area([])\n    1")  # second example, embedsignature
    done = run_cytool("test", "dtpkg", cwd=project)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    expected = [
        (shapes, "dtpkg.shapes", ">>> Square(2).side"),
        (shapes, "dtpkg.shapes.Square.area", ">>> Square(3).area()"),
        (shapes, "dtpkg.shapes.Square.perimeter", ">>> Square(2).perimeter"),
        (calc, "dtpkg.sub.calc.total_area", ">>> total_area([])"),
    ]
    for path, name, prompt in expected:
        assert f'File "{path}", line {line_of(path, prompt)}, in {name}\n' in out, (name, out)
    assert "dtpkg/shapes.pyx: 3 of 7 examples failed (in 3 of 7 docstrings)" in out
    assert out.rstrip().endswith("6 passed, 4 failed")


def test_select_and_verbose(project: Path, run_cytool) -> None:
    done = run_cytool("test", "dtpkg", "-k", "Square", "--verbose", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Trying:\n    Square(3).area()" in done.stdout
    assert "squares(4)" not in done.stdout and "total_area" not in done.stdout
    assert done.stdout.rstrip().endswith("4 passed, 0 failed")
    done = run_cytool("test", "dtpkg/sub/calc.pyx", "-k", "total_*", cwd=project)
    assert done.returncode == 0 and done.stdout.rstrip().endswith("2 passed, 0 failed"), done.stdout
    done = run_cytool("test", "dtpkg", "-k", "nothing_like_this", cwd=project)
    assert done.returncode == 0 and "no doctests found matching -k nothing_like_this" in done.stdout, done.stdout


def test_profile_gives_each_example_its_allocations(project: Path, run_cytool) -> None:
    done = run_cytool("test", "dtpkg/sub/calc.pyx", "--profile", "-k", "buffers", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    calc = project / "dtpkg" / "sub" / "calc.pyx"
    out = done.stdout
    assert f"calc.pyx:{line_of(calc, '>>> len(buffers(64))')}  >>> len(buffers(64))" in out, out
    # 64 buffers of 4 KiB allocated by the .pyx line that makes them
    match = re.search(r"\.pyx code: ([\d.]+) KiB in ([\d,]+) blocks", out)
    assert match and 256 <= float(match.group(1)) < 300, out
    assert re.search(rf"calc\.pyx:{line_of(calc, 'bytearray(4096)')}\s+[\d.]+ KiB\s+return \[bytearray\(4096\)", out), out


def test_bad_input(project: Path, run_cytool) -> None:
    done = run_cytool("test", "missing.pyx", cwd=project)
    assert done.returncode == 2 and "missing.pyx: no such file or directory" in done.stderr
    (project / "plain.py").write_text("x = 1\n")
    done = run_cytool("test", "plain.py", cwd=project)
    assert done.returncode == 2 and "plain.py: not a .pyx file" in done.stderr
    (project / "empty").mkdir()
    done = run_cytool("test", "empty", cwd=project)
    assert done.returncode == 2 and "no .pyx files" in done.stderr
    done = run_cytool("test", "dtpkg", "-x", "cmds.gdb", cwd=project)
    assert done.returncode == 2 and "-x and --batch go with --debug" in done.stderr
    for result in (done,):
        assert "Traceback" not in result.stderr


def test_broken_modules_are_reported_and_the_others_run(project: Path, run_cytool) -> None:
    (project / "dtpkg" / "broken.pyx").write_text("def f(x)\n    return x\n")
    (project / "dtpkg" / "raises.pyx").write_text("def ok():\n    pass\n\nraise RuntimeError('import-time failure')\n")
    done = run_cytool("test", "dtpkg", cwd=project)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "dtpkg/broken.pyx: cannot be tested" in out and "broken.pyx:1:" in out
    assert "dtpkg/raises.pyx: cannot be tested" in out and "RuntimeError: import-time failure" in out
    assert 'raises.pyx", line 4' in out and "cytool/" not in out  # the user's frame, not ours
    assert "dtpkg/shapes.pyx: 7 examples passed" in out
    assert out.rstrip().endswith("10 passed, 0 failed, 2 modules not tested")


def test_debug_stops_in_the_function_of_the_failing_example(tmp_path: Path, run_cytool) -> None:
    (tmp_path / "dbgdoc.pyx").write_text(
        "def scale(int n):\n"
        '    """\n'
        "    >>> scale(4)\n"
        "    40\n"
        '    """\n'
        "    cdef int factor = 3\n"
        "    return n * factor\n"
    )
    (tmp_path / "session.gdb").write_text("cy-run\ncy-print factor\ncy-print n\ncy-cont\n")
    done = run_cytool("test", "dbgdoc.pyx", "--debug", "--batch", "-x", "session.gdb", cwd=tmp_path)
    out = done.stdout + done.stderr
    assert "cytool test: debugging dbgdoc.scale at dbgdoc.pyx:3" in out, out
    assert "Cython breakpoint 1, dbgdoc.pyx:" in out and "in scale()" in out, out
    assert "n = 4" in out, out
    assert "cytool test: the failing example, " in out and ">>> scale(4)\n" in out, out
    assert out.index("cytool test: the failing example") < out.index("Cython breakpoint 1, dbgdoc.pyx:") < out.index("\n12\n")
