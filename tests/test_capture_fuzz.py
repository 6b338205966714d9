"""The reader, symboliser and aggregator never crash on damaged captures
(tests/fixtures/reports/capture_corpus.py). Runs in a child process so that a crash is a
test failure, not a dead test run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "reports"))

from capture_corpus import damaged_captures  # noqa: E402

CHECK = r"""
import sys
from cytool.capture import read_capture
from cytool.analysis import analyze
from cytool.errors import CytoolError
outcomes = {"ok": 0, "truncated": 0, "rejected": 0}
for path in sys.argv[1:]:
    try:
        with read_capture(path) as capture:
            profile = analyze(capture)
            profile.lines()
            list(capture.events)
            capture.stacks
            outcomes["truncated" if capture.truncated else "ok"] += 1
    except CytoolError:
        outcomes["rejected"] += 1
print(outcomes)
"""


def test_damaged_captures_never_crash(tmp_path: Path) -> None:
    paths = [str(p) for p in damaged_captures(tmp_path)]
    result = subprocess.run([sys.executable, "-c", CHECK, *paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = eval(result.stdout.strip().splitlines()[-1])
    assert sum(outcomes.values()) == len(paths)
    assert outcomes["truncated"] > 0 and outcomes["rejected"] > 0 and outcomes["ok"] > 0
