"""`cytool report` as a user runs it: every format, the filters, and one clear message
for each bad input (foreign file, newer version, truncated capture, missing file)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "reports"))

from capture_writer import CaptureWriter, py_word  # noqa: E402


def write_program(path: Path, cut: bool = False) -> None:
    src = path.parent / "prog.py"
    src.write_text("def main():\n    grow()\n    data = bytearray(1000)\n\ndef grow():\n    return [0] * 10\n")
    w = CaptureWriter(path)
    w.pyframe(1, 2, "main", str(src))
    w.pyframe(2, 6, "grow", str(src))
    w.pyframe(3, 3, "main", str(src))
    w.stack(1, [py_word(2), py_word(1)])
    w.stack(2, [py_word(3)])
    w.thread(0, 10, "MainThread")
    w.thread(1, 11, "worker")
    w.batch(0, 0, [("malloc", 1, 0x1000, 100, 1), ("malloc", 1, 0x2000, 1000, 2), ("free", 1, 0x1000, 0, 0)])
    w.flush()
    w.batch(1, 5, [("malloc", 1, 0x3000, 40, 1)])
    w.flush()
    w.end(50)
    w.close()
    if cut:
        data = path.read_bytes()
        path.write_bytes(data[: w.frame_offsets[1] + 10])


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "prog.cytrace"
    write_program(path)
    return path


def test_table_shows_lines_with_source(capture: Path, run_cytool) -> None:
    result = run_cytool("report", capture)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "prog.py:3" in out and "data = bytearray(1000)" in out
    assert "prog.py:6" in out and "return [0] * 10" in out
    assert out.index("prog.py:3") < out.index("prog.py:6")  # biggest first
    assert "allocated 1.1 KiB in 3 allocations" in out


def test_table_on_a_pipe_keeps_long_names(tmp_path: Path, run_cytool) -> None:
    """On a pipe or a file the table is PIPE_WIDTH (160) columns wide, not rich's 80: a
    Cython-length function name is printed whole."""
    src = tmp_path / "prog.py"
    src.write_text("def main():\n    data = bytearray(1000)\n")
    name = "a_package.a_module.AnExtensionTypeName.a_method_with_a_long_name"
    w = CaptureWriter(tmp_path / "long.cytrace")
    w.pyframe(1, 2, name, str(src))
    w.stack(1, [py_word(1)])
    w.thread(0, 10, "MainThread")
    w.batch(0, 0, [("malloc", 1, 0x1000, 1000, 1)])
    w.flush()
    w.end(50)
    w.close()
    result = run_cytool("report", tmp_path / "long.cytrace")
    assert result.returncode == 0, result.stderr
    assert f"prog.py:2  {name}" in result.stdout, result.stdout


def test_json_to_file_by_suffix(capture: Path, tmp_path: Path, run_cytool) -> None:
    out = tmp_path / "r.json"
    result = run_cytool("report", capture, "-o", out)
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    lines = {(l["line"], l["function"]): l for l in document["lines"]}
    assert lines[(3, "main")]["bytes"] == 1000 and lines[(3, "main")]["source"] == "data = bytearray(1000)"
    assert lines[(6, "grow")]["bytes"] == 140 and lines[(6, "grow")]["count"] == 2
    assert lines[(2, "main")]["bytes"] == 0 and lines[(2, "main")]["inclusive"]["bytes"] == 140
    assert document["totals"]["bytes"] == 1140 and document["totals"]["leaked_bytes"] == 1040
    assert {"file", "line", "function", "source", "bytes", "count", "peak_bytes", "leaked_bytes"} <= set(lines[(3, "main")])
    assert {"bytes", "count", "peak_bytes", "leaked_bytes"} <= set(document["totals"])


def test_threads_filter_by_name_and_id(capture: Path, run_cytool) -> None:
    for spec in ("worker", "1"):
        result = run_cytool("report", capture, "-f", "json", "--threads", spec)
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["totals"]["bytes"] == 40
        assert [t["name"] for t in document["threads"]] == ["worker"]
    result = run_cytool("report", capture, "--threads", "nobody")
    assert result.returncode == 2
    assert "no thread named 'nobody'" in result.stderr and "0 (MainThread), 1 (worker)" in result.stderr


def test_peak_and_leaks_modes(capture: Path, run_cytool) -> None:
    peak = json.loads(run_cytool("report", capture, "-f", "json", "--peak").stdout)
    assert peak["mode"] == "peak_bytes" and peak["totals"]["peak_bytes"] == 1100
    leaks = json.loads(run_cytool("report", capture, "-f", "json", "--leaks").stdout)
    assert [(l["line"], l["leaked_bytes"]) for l in leaks["lines"] if l["leaked_bytes"]] == [(3, 1000), (6, 40)]
    result = run_cytool("report", capture, "--leaks", "--peak")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_collapsed_and_speedscope(capture: Path, tmp_path: Path, run_cytool) -> None:
    collapsed = run_cytool("report", capture, "-f", "collapsed")
    assert collapsed.returncode == 0, collapsed.stderr
    assert collapsed.stdout.splitlines() == ["main (prog.py:3) 1000", "main (prog.py:2);grow (prog.py:6) 140"]
    out = tmp_path / "p.speedscope.json"
    assert run_cytool("report", capture, "-o", out).returncode == 0
    doc = json.loads(out.read_text())
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    first = doc["profiles"][0]
    assert first["type"] == "sampled" and first["unit"] == "bytes" and sum(first["weights"]) == 1140
    names = [[doc["shared"]["frames"][i]["name"] for i in sample] for sample in first["samples"]]
    assert sorted(names) == [["main"], ["main", "grow"]]


def test_truncated_capture_says_what_was_recovered(tmp_path: Path, run_cytool) -> None:
    path = tmp_path / "cut.cytrace"
    write_program(path, cut=True)
    result = run_cytool("report", path, "-f", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["capture"]["truncated"]
    message = document["capture"]["truncation_message"]
    assert "truncated" in message and "3 events read" in message and "it has no end" in message
    assert document["totals"]["bytes"] == 1100  # the worker's frame was lost
    table = run_cytool("report", path)
    assert "warning:" in table.stdout and "the capture is truncated" in table.stdout


def test_foreign_file(tmp_path: Path, run_cytool) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100)
    result = run_cytool("report", path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"cytool: error: {path}: not a cytool capture (no CYTRACE header)"
    assert "hint:" in result.stderr and result.stdout == ""


def test_newer_version(tmp_path: Path, run_cytool) -> None:
    path = tmp_path / "new.cytrace"
    with CaptureWriter(path, version=8) as w:
        w.end(0)
    result = run_cytool("report", path)
    assert result.returncode == 2
    assert f"{path}: written by a newer cytool: format 8, this reader knows 6" in result.stderr
    assert "upgrade cytool" in result.stderr


def test_missing_file_and_self_overwrite(capture: Path, tmp_path: Path, run_cytool) -> None:
    result = run_cytool("report", tmp_path / "none.cytrace")
    assert result.returncode == 2 and "No such file or directory" in result.stderr
    before = capture.read_bytes()
    result = run_cytool("report", capture, "-f", "json", "-o", capture)
    assert result.returncode == 2 and "refusing to overwrite" in result.stderr
    assert capture.read_bytes() == before


def test_deep_recursion_in_every_format(tmp_path: Path, run_cytool) -> None:
    """5000 nested frames (deep recursion): no format may hit a recursion limit."""
    path = tmp_path / "deep.cytrace"
    depth = 5000
    with CaptureWriter(path) as w:
        for i in range(depth):
            w.pyframe(i + 1, 10 + i % 7, f"f{i % 7}", "/src/rec.py")
        w.stack(1, [py_word(i + 1) for i in range(depth)])
        w.batch(0, 0, [("malloc", 1, 0x10, 64, 1)])
        w.end(10)
    for fmt in ("table", "json", "html", "speedscope", "collapsed"):
        out = tmp_path / f"deep.{fmt}"
        result = run_cytool("report", path, "-f", fmt, "-o", out)
        assert result.returncode == 0, (fmt, result.stderr[-2000:])
        assert out.stat().st_size > 0
    document = json.loads((tmp_path / "deep.json").read_text())
    assert len(document["stacks"][0]["frames"]) == depth


def test_bad_paths(capture: Path, tmp_path: Path, run_cytool) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cytool("report", empty)  # a folder is its captures (test_report_processes.py); none here
    assert result.returncode == 2 and f"{empty}: no captures in this folder" in result.stderr
    result = run_cytool("report", capture, "--bogus")  # said with report's own usage
    assert result.returncode == 2 and "usage: cytool report" in result.stderr, result.stderr
    assert "cytool report: error: unrecognized arguments: --bogus" in result.stderr
    result = run_cytool("report", capture, "-o", tmp_path / "missing" / "r.html")
    assert result.returncode == 2 and "no such directory" in result.stderr and "Traceback" not in result.stderr
    result = run_cytool("report", capture, "-o", tmp_path)
    assert result.returncode == 2 and "is a directory" in result.stderr


def test_dropped_events_are_reported(tmp_path: Path, run_cytool) -> None:
    path = tmp_path / "dropped.cytrace"
    with CaptureWriter(path) as w:
        w.batch(0, 0, [("malloc", 1, 0x10, 8, 0)])
        w.stats(10, 9, 0, 1)
        w.end(5)
    document = json.loads(run_cytool("report", path, "-f", "json").stdout)
    assert document["capture"]["dropped_events"] == 9
    table = run_cytool("report", path).stdout
    assert "warning: the tracer could not record 9 events: the figures are a lower bound" in table


def test_temporary_mode(tmp_path: Path, run_cytool) -> None:
    path = tmp_path / "temp.cytrace"
    with CaptureWriter(path) as w:
        w.pyframe(1, 7, "churn", "/src/t.py")
        w.pyframe(2, 9, "keep", "/src/t.py")
        w.stack(1, [py_word(1)])
        w.stack(2, [py_word(2)])
        w.batch(0, 0, [("malloc", 1, 0x10, 100, 1), ("free", 1, 0x10, 0, 0),
                       ("malloc", 1, 0x20, 500, 2), ("malloc", 1, 0x30, 100, 1), ("free", 1, 0x30, 0, 0)])
        w.end(10)
    document = json.loads(run_cytool("report", path, "-f", "json", "--temporary").stdout)
    assert document["mode"] == "temporary_bytes"
    assert [(l["line"], l["temporary_bytes"], l["temporary_count"]) for l in document["lines"]] == [(7, 200, 2)]
    assert run_cytool("report", path, "-f", "collapsed", "--temporary").stdout == "churn (t.py:7) 200\n"


def test_report_into_a_closed_pipe_ends_quietly(capture: Path) -> None:
    """`cytool report CAP | head`: the reader goes away; cytool stops with status 1 and no
    traceback (neither its own nor the interpreter's last flush)."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "cytool", "report", str(capture), "-f", "collapsed"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1, err
    assert err == "", err
