"""The HTML report in a real browser (headless Chromium, Debian's `chromium` package):
it opens without console errors, draws the flame graph, and shows the hottest line."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest

from cytool.build import BuildOptions, build_module

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reports"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (apt-get install chromium)")


def open_in_chromium(page: Path, tmp_path: Path) -> Tuple[str, list]:
    """(DOM after the scripts ran, console messages) of `page`."""
    profile_dir = tmp_path / "chromium-profile"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile_dir}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--window-size=1280,900",
         "--dump-dom", page.resolve().as_uri()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console


def test_console_errors_are_detected(tmp_path: Path) -> None:
    """The harness itself: a broken page must show up as a console error."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>notDefinedAnywhere();</script></body></html>")
    _, console = open_in_chromium(page, tmp_path)
    assert any("Uncaught ReferenceError" in line for line in console)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("html")
    source = work / "groundtruth.pyx"
    shutil.copy(FIXTURES / "groundtruth.pyx", source)
    module = build_module(source, BuildOptions(opt_level="2"))
    capture = work / "run.cytrace"
    subprocess.run([sys.executable, str(FIXTURES / "driver.py"), str(module.module_path), str(capture), "run", "100"],
                   check=True, stdout=subprocess.PIPE, timeout=300)
    page = work / "run.html"
    result = subprocess.run([sys.executable, "-m", "cytool", "report", str(capture), "-o", str(page)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return page


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text()
    assert report.stat().st_size < 10 * 1024 * 1024
    assert not re.search(r"""<(script|link|img|iframe)[^>]+(src|href)=["']?(https?:)?//""", html)
    assert "url(http" not in html and "@import" not in html


def test_opens_without_errors_and_shows_hottest_line(report: Path, tmp_path: Path) -> None:
    dom, console = open_in_chromium(report, tmp_path)
    assert console == [], console
    # the script ran to its end: it marks the hottest line on <body>
    marked = re.search(r'<body[^>]*data-hottest-line="([^"]+)"', dom)
    assert marked, dom[:2000]
    row = re.search(r'<tr id="%s"[^>]*>(.*?)</tr>' % re.escape(marked.group(1)), dom, re.S)
    assert row and "return &lt;char*&gt;malloc(n)" in row.group(1)
    assert ">10<" in row.group(1) and "6.2 KiB" in row.group(1)
    # the flame graph was drawn, with the inlined helper under its caller
    frames = re.findall(r'<div class="f"[^>]*>([^<]*)</div>', dom)
    assert "groundtruth.helper (groundtruth.pyx:10)" in frames
    assert "groundtruth.run (groundtruth.pyx:18)" in frames
    # and the top table starts with the hottest line
    top = re.search(r'<tr id="top-hottest">(.*?)</tr>', dom, re.S)
    assert top and "groundtruth.pyx:10" in top.group(1)


@pytest.mark.parametrize("mode", ["--peak", "--leaks"])
def test_other_modes_open_without_errors(report: Path, tmp_path: Path, mode: str) -> None:
    capture = report.with_name("run.cytrace")
    page = tmp_path / f"report{mode}.html"
    result = subprocess.run([sys.executable, "-m", "cytool", "report", str(capture), mode, "-o", str(page)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    dom, console = open_in_chromium(page, tmp_path)
    assert console == [], console
    marked = re.search(r'<body[^>]*data-hottest-line="([^"]+)"', dom)
    assert marked
    if mode == "--leaks":  # the only leaking .pyx line is the calloc
        row = re.search(r'<tr id="%s"[^>]*>(.*?)</tr>' % re.escape(marked.group(1)), dom, re.S)
        assert row and "g_leak = calloc(10, 32)" in row.group(1)
