"""`cytool profile` ends with the report summary (cytool.reports.summary): the table on
stdout, the HTML beside the capture; stacks start at the program, not at cytool's runner."""
from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reports"


def test_profile_prints_table_and_writes_html(tmp_path: Path, run_cytool) -> None:
    source = tmp_path / "gtmain.pyx"
    source.write_text((FIXTURES / "groundtruth.pyx").read_text() + "\n\nrun(100)\n")
    capture = tmp_path / "gtmain.cytrace"
    result = run_cytool("profile", source, "-o", capture, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "gtmain.pyx:10" in out and "return <char*>malloc(n)" in out
    html = tmp_path / "gtmain.html"
    assert "HTML report:" in out and html.name in out
    # on a pipe (a CI log) the command to run next stays on one line, whole, to be copied
    assert f"more: cytool report {capture} --format html|json|speedscope|collapsed [--leaks|--peak]\n" in out, out
    assert html.is_file() and "gtmain.helper" in html.read_text()

    report = run_cytool("report", capture, "-f", "json")
    assert report.returncode == 0, report.stderr
    document = json.loads(report.stdout)
    # C code after Cython's last #line directive inherits the .pyx file with line numbers
    # past its end: such frames must not show up as .pyx lines
    nlines = len(source.read_text().splitlines())
    assert all(l["line"] <= nlines for l in document["lines"] if l["kind"] == "pyx")
    assert not [l for l in document["lines"] if l["kind"] == "pyx" and l["function"].startswith("__Pyx_")]
    stacks = [s for s in document["stacks"] if s["self"]["line"] == 10 and s["self"]["kind"] == "pyx"]
    assert len(stacks) == 1 and stacks[0]["count"] == 100
    outer = [f["function"] for f in stacks[0]["frames"]]
    assert outer == ["gtmain.helper", "gtmain.run", "gtmain.<module>"]
    with_runner = json.loads(run_cytool("report", capture, "-f", "json", "--runner-frames").stdout)
    frames = [f for s in with_runner["stacks"] if s["self"]["line"] == 10 for f in s["frames"]]
    assert any(f["file"].endswith("launch.py") for f in frames)
