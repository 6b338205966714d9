"""Doctests of Cython modules (`cytool test`): find the .pyx files of a target, build and
import them, collect the doctests of their docstrings (module, def, cpdef, cdef class
and its methods, properties), and run them with each failure reported at its `.pyx`
line, as `sage -t` does.

Python's doctest finds the docstrings of a Cython module (Cython 3 functions are
`cython_function_or_method` objects with `__doc__`), but cannot tell their lines: it
knows lines only for Python functions and `class` statements. We place each docstring
in the .pyx by its first example's prompt line, searched from the line the object is
defined on (the function's code object, a `cdef class` statement, or the `(line N)`
Cython writes into the keys of the module's `__test__` dict). That also holds when
`embedsignature` puts a signature line in front of the docstring.

Cython's `__test__` dict repeats docstrings doctest already finds; only those it finds
nowhere else (properties of cdef classes) are kept, named as the object they document.
"""
from __future__ import annotations

import doctest
import fnmatch
import importlib
import inspect
import os
import re
import sys
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from cytool.build.options import BuildOptions, BuildResult
from cytool.errors import CytoolError

SKIPPED_FOLDERS = {"build", "dist", "__pycache__", "node_modules", "site-packages"}
_TEST_KEY = re.compile(r"^(?P<name>.+) \(line (?P<line>\d+)\)$")


def find_sources(target: Path) -> List[Path]:
    """The .pyx files to test: the file itself, or every .pyx under a folder (hidden
    folders, build/, dist/ and virtual environments skipped), sorted. CytoolError (exit
    2) when there is none or the target does not exist."""
    if not target.exists():
        raise CytoolError(f"{target}: no such file or directory", hint="give a .pyx file or a package folder", exit_code=2)
    if target.is_file():
        if target.suffix != ".pyx":
            raise CytoolError(f"{target}: not a .pyx file", hint="give a .pyx file or a folder holding .pyx files", exit_code=2)
        return [target.resolve()]
    found: List[Path] = []
    for folder, subfolders, files in os.walk(target):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in SKIPPED_FOLDERS
                               and not (Path(folder) / d / "pyvenv.cfg").exists())
        found += [Path(folder, name).resolve() for name in sorted(files) if name.endswith(".pyx")]
    if not found:
        raise CytoolError(f"{target}: no .pyx files in this folder", hint="give a .pyx file or a package folder", exit_code=2)
    return found


@dataclass
class TestedModule:
    """One .pyx: its build, and the imported module or why there is none."""

    source: Path
    result: Optional[BuildResult] = None
    module: Optional[types.ModuleType] = None
    error: str = ""  # a build error or an exception raised while importing


def build_and_import(sources: Sequence[Path], options: BuildOptions) -> List[TestedModule]:
    """Build every source (with the project modules it cimports) and import it under its
    dotted name, with cytool's import hook in front for the sources' import roots."""
    from cytool.build.plan import build_with_cimports
    from cytool.importer import PyxFinder, install_finder

    tested = [TestedModule(source) for source in sources]
    built: Dict[str, BuildResult] = {}
    for item in tested:
        try:
            results = build_with_cimports(item.source, options)
        except CytoolError as error:
            item.error = error.render()
            continue
        item.result = results[0]
        for result in results:
            built.setdefault(result.module_name, result)
    roots = sorted({str(r.import_root or r.source.parent) for r in built.values()})
    for root in reversed(roots):
        if root not in sys.path:
            sys.path.insert(0, root)
    install_finder(PyxFinder(options._replace(module_name=None, annotate=False), roots=[Path(r) for r in roots],
                             built=built), first=True)
    for item in tested:
        if item.result is None:
            continue
        try:
            item.module = importlib.import_module(item.result.module_name)
        except BaseException as error:  # the module's own code failed while it was imported
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            lines = traceback.format_exception(type(error), error, error.__traceback__)
            item.error = f"importing {item.result.module_name} raised:\n" + "".join(_user_part(lines))
    return tested


def _user_part(lines: List[str]) -> List[str]:
    """A traceback without the frames of cytool and importlib that ran the import."""
    here = str(Path(__file__).resolve().parent)
    kept = [lines[0]] if lines and lines[0].startswith("Traceback") else []
    skip = False
    for line in lines[len(kept):]:
        if line.startswith('  File "'):
            skip = here in line or "<frozen importlib" in line
        if not skip:
            kept.append(line)
    return kept


def _definition_line(obj: object, source_lines: List[str], name: str) -> Optional[int]:
    """0-based line where `obj` is defined, when it can be told."""
    code = getattr(obj, "__code__", None)
    if isinstance(code, types.CodeType) and code.co_firstlineno > 0:
        return code.co_firstlineno - 1
    if inspect.isclass(obj):
        short = re.escape(name.rsplit(".", 1)[-1])
        pattern = re.compile(rf"^\s*(?:(?:cdef|cpdef|ctypedef)\s+)?(?:(?:public|api|readonly|final)\s+)*class\s+{short}\b")
        for index, text in enumerate(source_lines):
            if pattern.match(text):
                return index
    return None


def _prompt_line(example: doctest.Example, source_lines: List[str], start: int) -> Optional[int]:
    """0-based line of `example`'s first `>>>` line in the source, from `start` on."""
    first = example.source.splitlines()[0].strip() if example.source.strip() else ""
    for index in range(max(0, start), len(source_lines)):
        text = source_lines[index].strip()
        if text.startswith(">>>") and text[3:].strip() == first:
            return index
    return None


class PyxDocTestFinder(doctest.DocTestFinder):
    """doctest's finder with `.pyx` line numbers (see the module doc)."""

    def find(self, obj, name=None, module=None, globs=None, extraglobs=None):  # type: ignore[no-untyped-def, override]
        tests = super().find(obj, name, module, globs, extraglobs)
        module = module or obj
        filename = getattr(module, "__file__", None) or ""
        try:
            source_lines = Path(filename).read_text(encoding="utf-8", errors="replace").splitlines() if filename.endswith(".pyx") else []
        except OSError:
            source_lines = []
        regular = [t for t in tests if ".__test__." not in t.name]
        def examples_of(test: doctest.DocTest) -> Tuple[str, ...]:
            # embedsignature makes __doc__ differ from Cython's copy: compare examples
            return tuple(e.source for e in test.examples)

        seen = {examples_of(t) for t in regular}
        anchors: Dict[Tuple[str, ...], int] = {}
        from_test_dict = []
        for test in tests:
            if ".__test__." not in test.name:
                continue
            prefix, _, key = test.name.partition(".__test__.")
            match = _TEST_KEY.match(key)
            if match:
                anchors.setdefault(examples_of(test), int(match.group("line")) - 1)
                if examples_of(test) in seen:
                    continue  # Cython's copy of a docstring found anyway
                name = match.group("name")
                test.name = f"{prefix}.{name[:-len('.__get__')] if name.endswith('.__get__') else name}"
            from_test_dict.append(test)
        kept = [t for t in regular + from_test_dict if t.examples]
        for test in kept:
            test.filename = filename or test.filename
            if not source_lines:
                continue
            anchor = anchors.get(examples_of(test))
            if anchor is None:
                anchor = self._anchor_of(module, test.name, source_lines)
            found = _prompt_line(test.examples[0], source_lines, anchor if anchor is not None else 0)
            if found is None and anchor:
                found = _prompt_line(test.examples[0], source_lines, 0)
            if found is not None:
                test.lineno = found - test.examples[0].lineno
        kept.sort(key=lambda t: (t.lineno if t.lineno is not None else 1 << 30, t.name))
        return kept

    @staticmethod
    def _anchor_of(module: types.ModuleType, name: str, source_lines: List[str]) -> Optional[int]:
        parts = name.split(".")
        base = module.__name__.split(".")
        if parts[: len(base)] != base:
            return None
        obj: object = module
        for part in parts[len(base):]:
            obj = inspect.getattr_static(obj, part, None)
            if obj is None:
                return None
            obj = getattr(obj, "fget", obj)  # a property: its getter
        if obj is module:
            return 0
        return _definition_line(obj, source_lines, name)


@dataclass
class Failure:
    """The first failing example of a doctest, for --debug."""

    test: doctest.DocTest
    example: doctest.Example

    @property
    def line(self) -> int:
        return (self.test.lineno or 0) + self.example.lineno + 1


class PyxDocTestRunner(doctest.DocTestRunner):
    """doctest's runner; with `measure`, each example runs under the tracer and its
    allocation summary follows it (`measure(test, example)` returns a context manager
    whose `.summary()` is the text)."""

    def __init__(self, *, verbose: bool, optionflags: int = 0, profile_examples: bool = False,
                 write: Callable[[str], object] = sys.stdout.write):
        super().__init__(verbose=verbose, optionflags=optionflags)
        self.profile_examples = profile_examples
        self.write = write
        self.failures_seen: List[Failure] = []
        self._measurement = None

    # doctest calls report_start right before running an example and one of the other
    # three right after: the tracer runs in between
    def report_start(self, out, test, example):  # type: ignore[no-untyped-def]
        super().report_start(out, test, example)
        if self.profile_examples:
            self._finish_measurement(None, None)
            from cytool.measure import Measurement

            self._measurement = Measurement().start()

    def report_success(self, out, test, example, got):  # type: ignore[no-untyped-def]
        self._finish_measurement(test, example)
        super().report_success(out, test, example, got)

    def report_failure(self, out, test, example, got):  # type: ignore[no-untyped-def]
        self._finish_measurement(test, example)
        self.failures_seen.append(Failure(test, example))
        super().report_failure(out, test, example, got)

    def report_unexpected_exception(self, out, test, example, exc_info):  # type: ignore[no-untyped-def]
        self._finish_measurement(test, example)
        self.failures_seen.append(Failure(test, example))
        super().report_unexpected_exception(out, test, example, exc_info)

    def _finish_measurement(self, test: Optional[doctest.DocTest], example: Optional[doctest.Example]) -> None:
        measurement, self._measurement = self._measurement, None
        if measurement is None:
            return
        measurement.stop()
        try:
            if test is not None and example is not None:
                from cytool.reports.brief import lines_text, pyx_line, totals_line

                profile = measurement.profile()
                where = f"{Path(test.filename).name}:{(test.lineno or 0) + example.lineno + 1}"
                first = example.source.splitlines()[0] if example.source else ""
                # the example's own run includes doctest compiling it: the .pyx figures first
                text = [f"{where}  >>> {first}", f"    {pyx_line(profile)}",
                        f"    the whole example: {totals_line(profile)}"]
                text += lines_text(profile, "bytes", limit=3, indent="    ")
                self.write("\n".join(text) + "\n")
        except CytoolError as error:
            self.write(f"cytool: cannot read the example's capture: {error.message}\n")
        finally:
            measurement.discard()


@dataclass
class ModuleOutcome:
    tested: TestedModule
    attempted: int = 0
    failed: int = 0
    docstrings: int = 0
    failures: List[Failure] = field(default_factory=list)


def matches(name: str, pattern: Optional[str]) -> bool:
    """-k: a glob when it has one of *?[, else a substring of the test's dotted name."""
    if not pattern:
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name.rsplit(".", 1)[-1], pattern)
    return pattern in name


def run_module(tested: TestedModule, *, pattern: Optional[str], verbose: bool, profile_examples: bool,
               stop_at_first_failure: bool, out: TextIO) -> ModuleOutcome:
    outcome = ModuleOutcome(tested)
    assert tested.module is not None
    runner = PyxDocTestRunner(verbose=verbose, profile_examples=profile_examples, write=out.write)
    tests = [t for t in PyxDocTestFinder().find(tested.module) if matches(t.name, pattern)]
    for test in tests:
        runner.run(test, out=out.write)
        outcome.docstrings += 1
        if runner.failures_seen and stop_at_first_failure:
            break
    outcome.failed, outcome.attempted = runner.failures, runner.tries
    outcome.failures = list(runner.failures_seen)
    return outcome


def replay_script(failure: Failure, tested: TestedModule) -> str:
    """A Python script that replays a doctest up to its failing example (for --debug)."""
    assert tested.result is not None
    result = tested.result
    examples = failure.test.examples[: failure.test.examples.index(failure.example) + 1]
    roots = [str(result.import_root or result.source.parent)]
    where = f"{result.source}, line {failure.line}"
    return (
        f'"""Replays the doctest of {failure.test.name} up to its failing example ({where}).\n'
        f'Written by `cytool test --debug`."""\n'
        "import importlib\nimport sys\n\n"
        f"sys.path[:0] = {roots!r}\n"
        f"globs = dict(vars(importlib.import_module({result.module_name!r})))\n"
        f"examples = {[e.source for e in examples]!r}\n"
        "for number, source in enumerate(examples):\n"
        "    if number == len(examples) - 1:\n"
        f"        print('cytool test: the failing example, {where}:', flush=True)\n"
        "    print('>>> ' + source.rstrip().replace('\\n', '\\n... '), flush=True)\n"
        f"    exec(compile(source, '<doctest {failure.test.name}[%d]>' % number, 'single'), globs)\n"
    )


def breakpoint_for(failure: Failure, tested: TestedModule) -> Optional[str]:
    """The cy-break spec of the function or method whose docstring failed (None for a
    module or class docstring)."""
    assert tested.module is not None
    prefix = tested.module.__name__ + "."
    name = failure.test.name
    if not name.startswith(prefix):
        return None
    relative = name[len(prefix):]
    obj: object = tested.module
    for part in relative.split("."):
        obj = inspect.getattr_static(obj, part, None)
        if obj is None:
            return None
    if inspect.isclass(obj) or isinstance(obj, types.ModuleType):
        return None
    return name  # qualified by its module: the module loads after gdb starts
