"""The exports other tools read are valid in their published formats: speedscope's file
format (version, $schema, frames, sampled profiles whose samples and weights match) and
the folded-stack format (one `frame;frame;... count` line per stack, separators in names
escaped), on a crafted capture with awkward names and on a real profile of a .pyx."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from formats import folded_problems, folded_stacks, speedscope_problems

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "reports"))

from capture_writer import CaptureWriter, py_word  # noqa: E402


@pytest.fixture
def awkward_capture(tmp_path: Path) -> Path:
    """Frames whose names hold `;`, a space and a line break, and a frame whose line is
    unknown (0)."""
    src = tmp_path / "odd.py"
    src.write_text("def outer():\n    inner()\n\ndef inner():\n    return [0] * 10\n")
    path = tmp_path / "odd.cytrace"
    with CaptureWriter(path) as w:
        w.pyframe(1, 2, "outer;with;semicolons", str(src))
        w.pyframe(2, 5, "inner name\nwith a break", str(src))
        w.pyframe(3, 0, "nowhere", str(src))
        w.stack(1, [py_word(2), py_word(1)])
        w.stack(2, [py_word(3)])
        w.thread(0, 10, "MainThread")
        w.batch(0, 0, [("malloc", 1, 0x1000, 100, 1), ("malloc", 1, 0x2000, 300, 2), ("malloc", 1, 0x3000, 7, 1)])
        w.end(20)
    return path


def test_speedscope_export_is_valid_with_awkward_frames(awkward_capture: Path, tmp_path: Path, run_cytool) -> None:
    out = tmp_path / "odd.speedscope.json"
    result = run_cytool("report", awkward_capture, "-o", out)
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert speedscope_problems(document) == []
    frames = document["shared"]["frames"]
    nowhere = [f for f in frames if f["name"] == "nowhere"]
    assert nowhere and "line" not in nowhere[0]  # an unknown line is left out, never 0
    first = document["profiles"][0]
    assert first["unit"] == "bytes" and sorted(first["weights"]) == [107, 300]
    assert first["endValue"] - first["startValue"] == 407
    # every metric's profile is valid, the leaked one included
    assert [p["name"].rsplit(": ", 1)[1] for p in document["profiles"]][:2] == ["allocated bytes", "bytes live at peak"]


def test_collapsed_export_is_valid_with_awkward_frames(awkward_capture: Path, run_cytool) -> None:
    result = run_cytool("report", awkward_capture, "-f", "collapsed")
    assert result.returncode == 0, result.stderr
    assert folded_problems(result.stdout) == []
    stacks = folded_stacks(result.stdout)
    assert sum(stacks.values()) == 407
    assert len(stacks) == 2  # `;` inside a name did not split it into more frames
    deep = [s for s in stacks if len(s) == 2]
    assert deep and deep[0][0].startswith("outer:with:semicolons") and deep[0][1].startswith("inner name with a break")


def test_real_profile_exports_are_valid(tmp_path: Path, run_cytool) -> None:
    (tmp_path / "grow.pyx").write_text(
        "def grow(int n):\n"
        "    cdef list out = []\n"
        "    for i in range(n):\n"
        "        out.append(bytearray(64 * (i + 1)))\n"
        "    return out\n"
        "\n"
        "if __name__ == '__main__':\n"
        "    kept = grow(200)\n"
    )
    capture = tmp_path / "grow.cytrace"
    profiled = run_cytool("profile", "-o", capture, "--no-summary", "grow.pyx", cwd=tmp_path)
    assert profiled.returncode == 0, profiled.stderr
    speedscope = run_cytool("report", capture, "-f", "speedscope")
    assert speedscope.returncode == 0, speedscope.stderr
    document = json.loads(speedscope.stdout)
    assert speedscope_problems(document) == []
    pyx_frames = [f for f in document["shared"]["frames"] if f.get("file", "").endswith("grow.pyx")]
    assert any(f.get("line") == 4 for f in pyx_frames), pyx_frames
    collapsed = run_cytool("report", capture, "-f", "collapsed")
    assert collapsed.returncode == 0, collapsed.stderr
    assert folded_problems(collapsed.stdout) == []
    assert any(frame.endswith("(grow.pyx:4)") for stack in folded_stacks(collapsed.stdout) for frame in stack)
