"""cytool's pytest plugin (registered by the `pytest11` entry point, so installed with
cytool): each test's allocations per .pyx line.

    pytest --cytool                  trace each test; a failed test's report gets the
                                     .pyx lines that allocated (--cytool-all: every test)
    pytest --cytool --cytool-output DIR   keep each test's capture, DIR/<test id>.cytrace
    @pytest.mark.cytool_limit_memory("24 MB")   fail when the test's peak traced memory
                                     is over the limit, naming the lines holding it then
    @pytest.mark.cytool_limit_leaks("1 MB")     fail when more than that is still
                                     allocated when the test ends, naming the lines

A test with one of the markers is traced with or without --cytool. Only the test
function's own call is traced (not its fixtures' set-up and tear-down, nor what pytest,
pluggy and other plugins do around it; for a doctest or another plugin's item, its
runtest()), with Python's object allocator recorded block by block. Under pytest-xdist
each worker traces its own tests (captures are per test, so per worker). The markers are
namespaced: pytest-memray's `limit_memory` and `limit_leaks` stay its own.

This module is imported by every pytest run of the environment: it imports nothing
heavy until a test is traced.
"""
from __future__ import annotations

import functools
import inspect
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

SECTION = "cytool: allocations per .pyx line"
LIMIT_MEMORY = "cytool_limit_memory"
LIMIT_LEAKS = "cytool_limit_leaks"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cytool", "allocations per .pyx line (cytool)")
    group.addoption("--cytool", action="store_true", default=False,
                    help="trace each test's allocations; a failed test's report shows the .pyx lines that allocated")
    group.addoption("--cytool-all", action="store_true", default=False,
                    help="with --cytool: show the summary of every test, passed ones too (terminal summary)")
    group.addoption("--cytool-output", metavar="DIR", default=None,
                    help="with --cytool: keep each test's capture as DIR/<test id>.cytrace (cytool report reads it)")
    group.addoption("--cytool-lines", metavar="N", type=int, default=5,
                    help="lines named in each summary (default 5)")
    group.addoption("--cytool-max-frames", metavar="N", type=int, default=None,
                    help="the most frames a traced stack keeps, deeper ones are cut in the middle (16 to 65536; "
                         "default 1024)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{LIMIT_MEMORY}(size): fail when the test's peak traced memory is over size (\"24 MB\"); "
        "the failure names the .pyx lines holding memory at the peak (cytool)")
    config.addinivalue_line(
        "markers", f"{LIMIT_LEAKS}(size): fail when more than size (\"1 MB\") allocated by the test is still "
        "allocated when it ends; the failure names the lines (cytool)")
    enabled = config.getoption("cytool") or config.getoption("cytool_all") or config.getoption("cytool_output")
    if enabled:
        from cytool.measure import tracer_active

        busy = tracer_active()
        if busy is not None:
            raise pytest.UsageError(
                f"--cytool traces each test itself, but a cytool tracer already records this process (into {busy}): "
                "run pytest --cytool without `cytool profile` or CYTOOL_PROFILE")
        if config.getoption("cytool_lines") < 1:
            raise pytest.UsageError("--cytool-lines takes a number of at least 1")
    frames = config.getoption("cytool_max_frames")
    if frames is not None and not 16 <= frames <= 65536:
        raise pytest.UsageError(f"--cytool-max-frames takes 16 to 65536 frames, not {frames}")
    config.pluginmanager.register(CytoolTracing(config, bool(enabled)), "cytool-tracing")


def _size_argument(item: pytest.Item, name: str) -> Optional[Tuple[int, str]]:
    """(bytes, text as written) of the marker `name` on the item, or None. A bad
    argument is a usage error naming the test."""
    marker = item.get_closest_marker(name)
    if marker is None:
        return None
    from cytool.reports.units import parse_size

    given = marker.args[0] if marker.args else marker.kwargs.get("size")
    try:
        if given is None or isinstance(given, bool):
            raise ValueError("a size is required, e.g. \"24 MB\"")
        return parse_size(str(given)), str(given)
    except ValueError as error:
        raise _BadMarker(f"@pytest.mark.{name}({given!r}): {error}") from None


class _BadMarker(Exception):
    pass


def _capture_name(nodeid: str) -> str:
    """A file name for a test id: `tests/test_a.py::test_b[1-x]` -> `tests_test_a.py__test_b[1-x].cytrace`."""
    name = re.sub(r"[^\w.\[\]-]+", "_", nodeid).strip("_")
    return (name[:200] or "test") + ".cytrace"


def _runs_its_function(item: pytest.Item) -> bool:
    """Whether the item's run calls its `obj` (pytest's test functions and unittest test
    methods), so that the window can be that call; not a coroutine, which a plugin runs."""
    if not isinstance(item, pytest.Function) or inspect.iscoroutinefunction(item.obj):
        return False
    from _pytest.unittest import TestCaseFunction

    return type(item).runtest in (pytest.Function.runtest, TestCaseFunction.runtest)


def _end(measurement, limits: Dict[str, Tuple[int, str]]) -> None:  # measurement: cytool.measure.Measurement
    if LIMIT_LEAKS in limits:
        import gc

        gc.collect()  # objects in reference cycles are garbage, not leaks
    measurement.stop()


class _Traced:
    """What a traced test's call left: the figures needed for its report."""

    def __init__(self, measurement, limits: Dict[str, Tuple[int, str]]):  # measurement: cytool.measure.Measurement
        self.measurement = measurement
        self.limits = limits


class CytoolTracing:
    """Traces test calls (with --cytool, or when a test has a limit marker) and turns
    the captures into report sections and limit failures."""

    def __init__(self, config: pytest.Config, enabled: bool):
        self.config = config
        self.enabled = enabled
        self.show_all = bool(config.getoption("cytool_all"))
        output = config.getoption("cytool_output")
        self.output = Path(output).resolve() if output else None
        self.lines = int(config.getoption("cytool_lines"))
        self.max_frames: Optional[int] = config.getoption("cytool_max_frames")
        self.summaries: List[Tuple[str, str]] = []  # (test id, summary) for the terminal summary
        self._traced: Dict[str, _Traced] = {}

    def _limits(self, item: pytest.Item) -> Dict[str, Tuple[int, str]]:
        limits = {}
        for name in (LIMIT_MEMORY, LIMIT_LEAKS):
            value = _size_argument(item, name)
            if value is not None:
                limits[name] = value
        return limits

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        problem = ""
        try:
            limits = self._limits(item)
        except _BadMarker as error:
            problem, limits = str(error), {}
        if problem:
            pytest.fail(problem, pytrace=False)
        if limits and not self.enabled:
            from cytool.measure import tracer_active

            busy = tracer_active()
            if busy is not None:
                pytest.fail(f"{', '.join(limits)}: cannot trace this test: a cytool tracer already records this "
                            f"process (into {busy}); run it without `cytool profile` or CYTOOL_PROFILE", pytrace=False)

    def _measurement(self, item: pytest.Item):  # -> cytool.measure.Measurement
        from cytool.measure import Measurement

        return Measurement(keep_as=self.output / _capture_name(item.nodeid) if self.output is not None else None,
                           max_frames=self.max_frames)

    def _traced_call(self, item: pytest.Item, call, limits: Dict[str, Tuple[int, str]]):  # type: ignore[no-untyped-def]
        """`call` wrapped in a measurement of its own call: the test's tracing window."""
        from cytool.tracker import frame_pinned

        measurement = self._measurement(item)
        traced = self._traced

        # Named as runpy's and the launcher's frame that runs a program's code: reports take
        # it for the frame that runs the measured code (runtime/src/analyze_replay.c,
        # ENTRY_FRAME). Pinned while the test runs: pytest's and pluggy's frames outside it
        # are neither recorded nor compared at each allocation (stacks start at the test).
        @functools.wraps(call)
        def _run_code(*args, **kwargs):  # type: ignore[no-untyped-def]
            measurement.start()
            try:
                with frame_pinned(sys._getframe(), record_outside=False):
                    return call(*args, **kwargs)
            finally:
                _end(measurement, limits)
                traced[item.nodeid] = _Traced(measurement, limits)

        return _run_code

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):  # type: ignore[no-untyped-def]
        """The window is the test function's own call (a test method of a unittest
        TestCase too: not its setUp, tearDown or unittest's runner), or for a doctest or
        another plugin's item its `runtest()`: what pytest, pluggy and other plugins do
        around it (capture, markers, exception hooks, hook wrappers) is not the test's."""
        limits = self._limits(item)
        if not (self.enabled or limits):
            yield
            return
        if _runs_its_function(item):
            test_function = item.obj  # type: ignore[attr-defined]
            item.obj = self._traced_call(item, test_function, limits)  # type: ignore[attr-defined]
            try:
                yield
            finally:
                item.obj = test_function  # type: ignore[attr-defined]
        else:
            item.runtest = self._traced_call(item, item.runtest, limits)  # type: ignore[method-assign]
            try:
                yield
            finally:
                del item.runtest  # the class's method again

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
        outcome = yield
        if call.when != "call":
            return
        traced = self._traced.pop(item.nodeid, None)
        if traced is None:
            return
        report = outcome.get_result()
        try:
            self._report(report, traced)
        finally:
            traced.measurement.discard()

    def _report(self, report: pytest.TestReport, traced: _Traced) -> None:
        from cytool.errors import CytoolError

        wanted = report.failed or self.show_all or traced.limits
        if not wanted:
            return
        try:
            profile = traced.measurement.profile()
        except CytoolError as error:
            report.sections.append((SECTION, f"cannot read the test's capture: {error.message}"))
            return
        from cytool.reports.brief import brief, lines_text, pyx_line
        from cytool.reports.units import human_bytes

        violations = []
        checks = (  # (marker, profile field, what the figure is, what the listed lines hold)
            (LIMIT_MEMORY, "peak_bytes", "the test's peak traced memory was {}", "memory at the peak"),
            (LIMIT_LEAKS, "leaked_bytes", "{} allocated by the test was still allocated when it ended", "it"))
        for name, field, what, held_what in checks:
            figure = getattr(profile.totals, field)
            if name in traced.limits and figure > traced.limits[name][0]:
                limit, text = traced.limits[name]
                held = lines_text(profile, field, self.lines) or ["  (no .pyx or Python line holds it)"]
                violations.append(
                    f"{name}: {what.format(human_bytes(figure))}, over its limit of {human_bytes(limit)} ({text!r}). "
                    f"Lines holding {held_what}:\n" + "\n".join(held))
        summary = brief(profile, "bytes", self.lines) + "\n" + pyx_line(profile)
        if traced.measurement.keep_as is not None:
            summary += f"\ncapture: {traced.measurement.keep_as}"
        if violations:
            message = "\n\n".join(violations)
            if report.passed:
                report.outcome = "failed"
                report.longrepr = message
            else:
                report.sections.append(("cytool: limits", message))
        if report.failed or self.show_all:
            report.sections.append((SECTION, summary))

    # the terminal summary runs where the reports arrive (the controller under xdist)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, content in report.sections:
            if name == SECTION and (self.show_all or report.failed):
                self.summaries.append((report.nodeid, content))

    def pytest_terminal_summary(self, terminalreporter) -> None:  # type: ignore[no-untyped-def]
        if not self.show_all or not self.summaries:
            return
        terminalreporter.section("cytool: allocations per test")
        for nodeid, content in self.summaries:
            terminalreporter.write_line(nodeid)
            for line in content.splitlines():
                terminalreporter.write_line("    " + line)
