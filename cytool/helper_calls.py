"""Helper calls: what a test framework runs inside a test's own call to check an
assertion and explain a failure (pytest's rewritten `assert`, `pytest.raises(match=)`,
`pytest.warns`, unittest's `assert*` methods). Reports fold each such call into one frame
named after it (`(pytest assertion message)` …) under the test's line, keeping the
program's own frames that the helper called (a `__repr__` or `__eq__` in a .pyx or in the
test file) with what they allocated.

Owns the tables of those functions (by file suffix and qualified name, as the frameworks
name them: pytest 7 to 9, CPython 3.9 to 3.13's unittest) and which files are library
files (the standard library, installed packages: what a helper's own work passes
through). The fold itself is the aggregator's (runtime/src/analyze_replay.c,
cya_analyze_options.helper_calls).
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, Optional, Sequence, Tuple

PYTEST_ASSERTION = "(pytest assertion message)"
PYTEST_CHECK = "(pytest.raises/warns check)"
UNITTEST_ASSERTION = "(unittest assertion message)"
LABELS = (PYTEST_ASSERTION, PYTEST_CHECK, UNITTEST_ASSERTION)  # at most 4 (CYA_HELPER_LABELS)

# (label, file suffix, qualified names or name prefixes ending in "*"; None: every function)
HELPERS: Tuple[Tuple[str, str, Optional[Sequence[str]]], ...] = (
    # what code rewritten by pytest's assertion rewriting calls (AssertionRewriter.helper
    # names them); the rest of rewrite.py is the import hook
    (PYTEST_ASSERTION, "/_pytest/assertion/rewrite.py",
     ("_saferepr", "_format_assertmsg", "_should_repr_global_name", "_format_boolop", "_call_reprcompare",
      "_call_assertion_pass", "_check_if_assertion_pass_impl")),
    (PYTEST_ASSERTION, "/_pytest/assertion/util.py", None),
    (PYTEST_ASSERTION, "/_pytest/assertion/compare_text.py", None),  # pytest 9
    (PYTEST_ASSERTION, "/_pytest/assertion/_compare_sequence.py", None),
    (PYTEST_ASSERTION, "/_pytest/assertion/_compare_set.py", None),
    (PYTEST_ASSERTION, "/_pytest/assertion/truncate.py", None),
    # pytest.raises and pytest.warns: their checks and failure messages
    (PYTEST_CHECK, "/_pytest/raises.py", None),  # pytest 8.4+
    (PYTEST_CHECK, "/_pytest/python_api.py", ("raises", "RaisesContext.*")),  # before 8.4 (approx: the test's)
    (PYTEST_CHECK, "/_pytest/_code/code.py", ("ExceptionInfo.match", "ExceptionInfo.group_contains")),
    (PYTEST_CHECK, "/_pytest/recwarn.py", ("warns", "deprecated_call", "WarningsChecker.*", "WarningsRecorder.*")),
    # unittest's assertion methods and context managers
    (UNITTEST_ASSERTION, "/unittest/case.py",
     ("TestCase.assert*", "TestCase.fail", "TestCase._baseAssertEqual", "TestCase._formatMessage",
      "TestCase._getAssertEqualityFunc", "_AssertRaisesBaseContext.*", "_AssertRaisesContext.*",
      "_AssertWarnsContext.*", "_AssertLogsContext.*", "_AssertNotLogsContext.*")),
)

_STDLIB = re.compile(r"/lib(64)?/python\d+\.\d+t?/")


def is_library_file(file: str) -> bool:
    """Whether a Python frame's file is the standard library's or an installed
    package's (frozen modules and code made by exec, "<string>", included), not the
    program's own; inside a helper call, such frames are the helper's."""
    if file.startswith("<frozen ") or file == "<string>" or "/site-packages/" in file or "/dist-packages/" in file:
        return True  # ("<string>": code the library made with exec, e.g. a namedtuple's methods)
    return bool(_STDLIB.search(file))


def _matches(function: str, names: Optional[Sequence[str]]) -> bool:
    if names is None:
        return True
    return any(function.startswith(n[:-1]) if n.endswith("*") else function == n for n in names)


def helper_options(frames: Iterable[Tuple[str, str]]) -> Tuple[str, str, str]:
    """For the (file, qualified function) of a capture's Python frames: the aggregator's
    helper_calls ("label\\tfile\\tfunction" lines), helper_labels and helper_library
    (library files) texts; empty texts when no helper call is among them."""
    calls: Dict[str, str] = {}
    library = set()
    for file, function in frames:
        if is_library_file(file) or "/_pytest/" in file or "/pluggy/" in file:
            library.add(file)
        for label, suffix, names in HELPERS:
            if file.endswith(suffix) and _matches(function, names):
                calls[f"{LABELS.index(label)}\t{file}\t{function}"] = label
                break
    if not calls:
        return "", "", ""
    return "\n".join(sorted(calls)), "\n".join(LABELS), "\n".join(sorted(library))


def is_helper_label(function: str) -> bool:
    """Whether a report row is a folded helper call."""
    return function in LABELS

