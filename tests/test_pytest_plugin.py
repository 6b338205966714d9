"""The pytest plugin (entry point pytest11), driven by pytest's own `pytester` on real
test files that import a real .pyx: summaries on failed tests, --cytool-all,
--cytool-output captures, the cytool_limit_memory / cytool_limit_leaks markers (with
and without --cytool, bad arguments), pytest-xdist workers, and a tracer already busy."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

GROWER = """\
cdef list kept = []

def grow(int n, int size):
    out = []
    for i in range(n):
        out.append(bytearray(size))
    return out

def leak(int n, int size):
    for i in range(n):
        kept.append(bytearray(size))
"""

TESTS = """\
import pytest
import grower

def test_fails():
    data = grower.grow(100, 10000)
    assert len(data) == 99

def test_passes():
    assert len(grower.grow(10, 100)) == 10

@pytest.mark.cytool_limit_memory("500 KB")
def test_too_big():
    data = grower.grow(100, 10000)

@pytest.mark.cytool_limit_memory("5 MB")
def test_small_enough():
    data = grower.grow(100, 10000)

@pytest.mark.cytool_limit_leaks("100 KB")
def test_leaks():
    grower.leak(50, 10000)

@pytest.mark.cytool_limit_leaks("1 MB")
def test_no_leak():
    data = grower.grow(50, 10000)
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".pyx", grower=GROWER)
    pytester.makeconftest("import cytool\ncytool.install()\n")
    pytester.makepyfile(test_grower=TESTS)
    return pytester


def outcomes(result: pytest.RunResult) -> dict:
    return {k: v for k, v in result.parseoutcomes().items() if v}


def section_of(text: str, test: str) -> str:
    """The failure block of `test` in pytest's output."""
    match = re.search(rf"_{{3,}} {test} _{{3,}}\n(.*?)(?=\n_{{3,}} \w|\n=+ short test summary)", text, re.S)
    assert match, text
    return match.group(1)


def test_failed_tests_get_their_pyx_lines(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess("--cytool", "-p", "no:cacheprovider")
    text = result.stdout.str()
    assert outcomes(result) == {"failed": 3, "passed": 3}, text
    failed = section_of(text, "test_fails")
    assert "cytool: allocations per .pyx line" in failed
    assert re.search(r"grower\.pyx:6\s+9\d\d\.\d KiB\s+out\.append\(bytearray\(size\)\)", failed), failed
    assert "deleted since the capture" not in text  # the module in memory is the published one
    # a passing test's summary is not shown without --cytool-all
    assert "test_passes" not in text.split("short test summary")[0]


def test_limits(suite: pytest.Pytester) -> None:
    # the markers work without --cytool
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-k", "big or enough or leak")
    text = result.stdout.str()
    assert outcomes(result) == {"failed": 2, "passed": 2, "deselected": 2}, text
    big = section_of(text, "test_too_big")
    assert re.search(r"cytool_limit_memory: the test's peak traced memory was (9\d\d|10\d\d)\.\d KiB, over its limit of "
                     r"500\.0 KiB \('500 KB'\)\. Lines holding memory at the peak:\n  grower\.pyx:6 ", big), big
    leaks = section_of(text, "test_leaks")
    assert re.search(r"cytool_limit_leaks: 4\d\d\.\d KiB allocated by the test was still allocated when it ended, "
                     r"over its limit of 100\.0 KiB \('100 KB'\)\. Lines holding it:\n  grower\.pyx:11 ", leaks), leaks
    assert "test_small_enough" not in text.split("short test summary")[0]
    assert "test_no_leak" not in text.split("short test summary")[0]


def test_bad_marker_arguments(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bad="""\
        import pytest

        @pytest.mark.cytool_limit_memory("lots")
        def test_words():
            pass

        @pytest.mark.cytool_limit_leaks()
        def test_nothing():
            pass
        """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    text = result.stdout.str()
    assert outcomes(result) == {"errors": 2}, text
    assert "@pytest.mark.cytool_limit_memory('lots'): not a size: 'lots'" in text
    assert "@pytest.mark.cytool_limit_leaks(None): a size is required" in text
    assert "During handling" not in text and "Traceback" not in text
    markers = pytester.runpytest_subprocess("--markers").stdout.str()
    assert "@pytest.mark.cytool_limit_memory(size)" in markers and "@pytest.mark.cytool_limit_leaks(size)" in markers


def test_max_frames(pytester: pytest.Pytester) -> None:
    # a test allocating 1,500 Python calls deep: cut at the default 1024 frames, whole
    # with --cytool-max-frames 4096; the warning names an option that exists here
    pytester.makepyfile(test_deep="""\
        import sys
        sys.setrecursionlimit(5000)

        def down(n):
            return down(n - 1) if n else [bytearray(100) for _ in range(10)]

        def test_deep():
            assert len(down(1500)) == 10
        """)
    for frames, cut in ((None, True), ("4096", False)):
        captures = pytester.path / f"caps-{frames}"
        options = ["--cytool", "--cytool-all", "--cytool-output", str(captures), "-p", "no:cacheprovider"]
        result = pytester.runpytest_subprocess(*options, *(["--cytool-max-frames", frames] if frames else []))
        assert outcomes(result) == {"passed": 1}, result.stdout.str()
        report = subprocess.run([sys.executable, "-m", "cytool", "report", "-f", "json",
                                 str(captures / "test_deep.py_test_deep.cytrace")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
        warnings = json.loads(report.stdout)["capture"]["warnings"]
        said = [w for w in warnings if "frames were cut" in w]
        assert bool(said) == cut, warnings
        if cut:
            assert "`pytest --cytool-max-frames`" in said[0], said
    bad = pytester.runpytest_subprocess("--cytool", "--cytool-max-frames", "3", "-p", "no:cacheprovider")
    assert "--cytool-max-frames takes 16 to 65536 frames, not 3" in bad.stderr.str()


def test_all_and_captures_kept(suite: pytest.Pytester) -> None:
    captures = suite.path / "captures"
    result = suite.runpytest_subprocess("--cytool", "--cytool-all", "--cytool-output", str(captures),
                                        "-p", "no:cacheprovider", "-k", "passes or fails")
    text = result.stdout.str()
    assert outcomes(result) == {"failed": 1, "passed": 1, "deselected": 4}, text
    summary = text.split("cytool: allocations per test")[1]
    assert "test_grower.py::test_passes" in summary and "test_grower.py::test_fails" in summary
    kept = sorted(p.name for p in captures.iterdir())
    assert kept == ["test_grower.py_test_fails.cytrace", "test_grower.py_test_passes.cytrace"]
    report = subprocess.run([sys.executable, "-m", "cytool", "report", "-f", "json", str(captures / kept[0])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    lines = json.loads(report.stdout)["lines"]
    assert any(l["file"].endswith("grower.pyx") and l["line"] == 6 for l in lines)


def test_xdist_workers_trace_their_own_tests(suite: pytest.Pytester) -> None:
    captures = suite.path / "captures"
    result = suite.runpytest_subprocess("-p", "xdist", "-n", "2", "--cytool", "--cytool-output", str(captures),
                                        "-p", "no:cacheprovider")
    text = result.stdout.str()
    assert outcomes(result) == {"failed": 3, "passed": 3}, text
    assert re.search(r"\[gw[01]\] linux", text)
    assert re.search(r"grower\.pyx:6\s+9\d\d\.\d KiB", section_of(text, "test_fails")), text
    assert len(list(captures.glob("*.cytrace"))) == 6


def test_a_busy_tracer_is_a_clear_error(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYTOOL_PROFILE", str(suite.path / "whole.cytrace"))
    result = suite.runpytest_subprocess("--cytool", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--cytool traces each test itself, but a cytool tracer already records this process" in result.stderr.str()
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-k", "too_big")
    text = result.stdout.str()
    assert outcomes(result) == {"errors": 1, "deselected": 5}, text
    assert "cytool_limit_memory: cannot trace this test: a cytool tracer already records this process" in text


SMALL_TESTS = """\
import grower

def flip(function, a, b):
    return function(b, a)

def test_small():
    pairs = [flip(lambda x, y: (x, y), i, str(i) * 20) for i in range(30)]
    assert len(pairs) == 30

def test_calls_pyx():
    assert len(grower.grow(3, 1000)) == 3
"""


def test_only_the_test_function_is_charged(suite: pytest.Pytester) -> None:
    # A test that allocates little: what pytest, pluggy and other plugins do around its
    # call (capture, markers, exception hooks, hook wrappers) used to fill its summary.
    suite.makepyfile(test_small=SMALL_TESTS)
    captures = suite.path / "captures"
    result = suite.runpytest_subprocess("--cytool", "--cytool-all", "--cytool-lines", "50", "--cytool-output",
                                        str(captures), "-p", "no:cacheprovider", "test_small.py")
    text = result.stdout.str()
    assert outcomes(result) == {"passed": 2}, text
    summary = text.split("cytool: allocations per test")[1]
    small, pyx = summary.split("test_small.py::test_calls_pyx")
    assert re.findall(r"^ {6}(\S+:\d+) ", small, re.M) == ["test_small.py:7"], small
    assert re.findall(r"^ {6}(\S+:\d+) ", pyx, re.M) == ["grower.pyx:6"], pyx
    report = subprocess.run([sys.executable, "-m", "cytool", "report", "-f", "json",
                             str(captures / "test_small.py_test_small.cytrace")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    charged = {(l["file"].rsplit("/", 1)[-1], l["line"]) if l["file"] else l["function"]
               for l in json.loads(report.stdout)["lines"] if l["bytes"]}
    charged.discard("(cytool tracer)")  # the tracer starting and stopping, when it allocates
    assert charged == {("test_small.py", 7)}, charged


FAILING_ASSERT = """\
import unittest
import warnings

import pytest

import grower
import vec

def make():
    return [str(i) * 3 for i in range(2000)]

def test_lists_differ():
    a = make()
    b = make()
    b[-1] = "x"
    assert a == b

def test_pyx_then_assert():
    data = grower.grow(20, 1000)
    assert [len(d) for d in data] == [999] * 20

def test_pyx_repr_in_the_message():
    assert vec.Vec(3000) == vec.Vec(3000)

def test_raises_match():
    with pytest.raises(ValueError, match="^" + "a" * 5000 + "$"):
        raise ValueError("b" * 20000)

def test_warns_match():
    with pytest.warns(UserWarning, match="zzz"):
        warnings.warn("y" * 20000)

class Case(unittest.TestCase):
    def test_assert_equal(self):
        a = make()
        b = make()
        b[-1] = "x"
        self.assertEqual(a, b)
"""

VEC = """\
_cache = []

cdef class Vec:
    cdef public list data
    def __init__(self, n):
        self.data = list(range(n))
    def __eq__(self, other):
        return False
    def __repr__(self):
        s = "Vec(" + ",".join([str(x) for x in self.data]) + ")"
        _cache.append(s * 20)  # kept: a leak made while pytest explains the failure
        return s
"""


def test_a_failing_check_is_the_frameworks_not_the_tests(suite: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # A failing `assert` has pytest's rewritten code build its message (saferepr, the
    # sequence diff, reprlib, abc checks); pytest.raises(match=) and pytest.warns check
    # and explain; unittest's assertEqual diffs. What they allocate is one row per
    # framework, never lines of pytest's or the standard library's files, but the
    # program's own code they call (a .pyx __repr__) keeps its lines.
    # On CI (the CI or BUILD_NUMBER variable set) pytest explains a failed assert in full
    # instead of truncating it, so its message costs 8x as much: the sizes below are pytest's
    # default, the row set holds on both.
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    suite.makefile(".pyx", vec=VEC)
    suite.makepyfile(test_assert=FAILING_ASSERT)
    captures = suite.path / "captures"
    result = suite.runpytest_subprocess("--cytool", "--cytool-lines", "50", "--cytool-output", str(captures),
                                        "-p", "no:cacheprovider", "test_assert.py")
    text = result.stdout.str()
    assert outcomes(result).get("failed") == 6 and "passed" not in outcomes(result), text
    sections = {}
    for section in text.split("cytool: allocations per .pyx line")[1:]:
        body = section.split("short test summary")[0]
        capture = re.search(r"capture: .*test_assert\.py_(\S+)\.cytrace", body).group(1)
        sections[capture] = re.findall(r"^  (\S.*?)\s{2,}\d", body, re.M)
    message = "(pytest assertion message)"
    assert sections["test_lists_differ"][0] == "test_assert.py:10", sections  # 932 KiB against 92 KiB
    assert set(sections["test_lists_differ"]) <= {"test_assert.py:10", message, "test_assert.py:16"}, sections
    assert message in sections["test_lists_differ"], sections
    assert sections["test_pyx_then_assert"] == ["grower.pyx:6"], sections
    assert "vec.pyx:11" in sections["test_pyx_repr_in_the_message"], sections
    assert "vec.pyx:10" in sections["test_pyx_repr_in_the_message"], sections
    assert sections["test_raises_match"][0] == "(pytest.raises/warns check)", sections
    assert sections["test_warns_match"][0] == "(pytest.raises/warns check)", sections
    assert sections["Case_test_assert_equal"][0] == "(unittest assertion message)", sections
    expected = {"test_lists_differ": message, "test_pyx_then_assert": message,
                "test_pyx_repr_in_the_message": message, "test_raises_match": "(pytest.raises/warns check)",
                "test_warns_match": "(pytest.raises/warns check)",
                "Case_test_assert_equal": "(unittest assertion message)"}
    for name, label in expected.items():
        report = subprocess.run([sys.executable, "-m", "cytool", "report", "-f", "json",
                                 str(captures / f"test_assert.py_{name}.cytrace")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
        assert report.returncode == 0, report.stderr
        document = json.loads(report.stdout)
        charged = {l["file"].rsplit("/", 1)[-1] if l["file"] else l["function"]
                   for l in document["lines"] if l["bytes"]}
        charged -= {"(cytool tracer)", "<string>"}
        if name == "test_warns_match":
            charged.discard("warnings.py")  # the test's own warnings.warn()
        assert charged - {"test_assert.py", "grower.pyx", "vec.pyx"} == {label}, (name, charged)
        # every stack starts at the test (not at pytest's and pluggy's frames around it)
        roots = {stack["frames"][-1]["function"] for stack in document["stacks"] if stack["frames"]}
        assert roots <= {name.replace("_", ".", 1) if name.startswith("Case_") else name,
                         "(cytool tracer)"}, (name, roots)
        row = next(l for l in document["lines"] if l["function"] == label)
        assert row["bytes"] > 0 and sum(l["bytes"] for l in document["lines"]) == document["totals"]["bytes"]
        if name == "test_pyx_repr_in_the_message":  # the leak the __repr__ made is its line's
            leak = next(l for l in document["lines"] if l["file"].endswith("vec.pyx") and l["line"] == 11)
            assert leak["leaked_bytes"] > 1_000_000, leak


def test_other_items_are_traced_inside_pytests_hooks(pytester: pytest.Pytester) -> None:
    # a doctest item and a unittest method are not test functions that pytest calls: the
    # window is their runtest(), still inside what pytest's hooks (capture, markers,
    # exception hooks) do around the call
    pytester.makepyfile(counted='''\
        def count():
            """
            >>> len([str(i) * 20 for i in range(30)])
            31
            """
        ''')
    pytester.makepyfile(test_case="""\
        import unittest

        class TestCounts(unittest.TestCase):
            def test_count(self):
                self.assertEqual(len([str(i) * 20 for i in range(30)]), 31)
        """)
    result = pytester.runpytest_subprocess("--cytool", "--cytool-lines", "50", "--doctest-modules",
                                           "-p", "no:cacheprovider")
    text = result.stdout.str()
    assert outcomes(result) == {"failed": 2}, text
    pytests_own = {"capture.py", "nodes.py", "runner.py", "_execution.py", "threadexception.py",
                   "unraisableexception.py", "skipping.py", "logging.py", "unittest.py"}
    for test, own_line in (("\\[doctest\\] counted.count", "<doctest counted.count[0]>"),
                           ("TestCounts.test_count", "test_case.py")):
        section = section_of(text, test)
        assert "cytool: allocations per .pyx line" in section, section
        listed = {row.rsplit(":", 1)[0] for row in re.findall(r"^  (\S.*?:\d+) {2,}", section, re.M)}
        assert own_line in listed, section
        assert not listed & pytests_own, listed
