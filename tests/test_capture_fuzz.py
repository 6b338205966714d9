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


HOSTILE_CHECK = r"""
import io, sys
from rich.console import Console
from cytool.capture import read_capture
from cytool.analysis import analyze
from cytool.errors import CytoolError
from cytool.reports import html, json_report
from cytool.reports.table import print_table
secret = sys.argv[1]
outcomes = {"reported": 0, "rejected": 0}
for path in sys.argv[2:]:
    try:
        with read_capture(path) as capture:
            for native in (False, True):
                profile = analyze(capture, native_frames=native)
                stream = io.StringIO()
                print_table(profile, Console(file=stream, width=200, color_system=None), limit=50)
                for text in (stream.getvalue(), html.render(profile), json_report.render(profile)):
                    if secret in text or "root:x:0:0" in text:
                        print("LEAK", path)
                        sys.exit(3)
        outcomes["reported"] += 1
    except CytoolError:
        outcomes["rejected"] += 1
print(outcomes)
"""


def test_hostile_source_paths_are_never_read(tmp_path: Path) -> None:
    """Captures naming private files, /etc/passwd, `..` paths, FIFOs, devices, directories,
    links, very long and NUL/control-byte paths (as objects, Python frames, the executable
    and thread names), whole and damaged: every report (table, HTML, JSON, with and without
    native frames) finishes, crashes nothing and quotes none of those files. A FIFO opened
    for reading would block the child until the timeout."""
    from capture_corpus import SECRET, hostile_captures

    paths = [str(p) for p in hostile_captures(tmp_path, mangled=100)]
    result = subprocess.run([sys.executable, "-c", HOSTILE_CHECK, SECRET, *paths], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    outcomes = eval(result.stdout.strip().splitlines()[-1])
    assert sum(outcomes.values()) == len(paths)
    assert outcomes["reported"] > len(paths) // 2
