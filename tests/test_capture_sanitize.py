"""libcyanalyze under AddressSanitizer, LeakSanitizer and UBSan: the C pipeline (read,
symbolise, aggregate; runtime/tests/test_analyze_driver.c) over damaged captures and a
real capture of a real module, built with -fsanitize from the same sources as the
library. Any sanitizer report fails the test."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "reports"))

from capture_corpus import damaged_captures, hostile_captures  # noqa: E402

from cytool.build import BuildOptions, build_module  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO / "runtime"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reports"


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("asan") / "analyze_driver"
    sources = sorted(str(p) for pattern in ("capture_*.c", "analyze_*.c", "symbolize_*.c") for p in (RUNTIME / "src").glob(pattern))
    cc = os.environ.get("CC", "cc")
    result = subprocess.run(
        [cc, "-std=gnu11", "-g", "-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=undefined", "-Wall", "-Wextra", "-Werror", f"-I{RUNTIME / 'include'}", *sources,
         str(RUNTIME / "tests" / "test_analyze_driver.c"), "-o", str(out), "-lzstd", "-llz4", "-ldw", "-lelf"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout
    return out


def run_driver(driver: Path, paths, *options: str) -> str:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    result = subprocess.run([str(driver), *options, *map(str, paths)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "Sanitizer" not in result.stderr and "runtime error" not in result.stderr, result.stderr[-5000:]
    return result.stdout


def test_damaged_captures_are_clean_under_sanitizers(driver: Path, tmp_path: Path) -> None:
    paths = damaged_captures(tmp_path, mangled=150)
    out = run_driver(driver, paths)
    outcomes = [line.split()[1] for line in out.splitlines()]
    assert len(outcomes) == len(paths)
    assert {"ok", "truncated", "rejected"} <= set(outcomes)


def test_following_damaged_captures_is_clean_under_sanitizers(driver: Path, tmp_path: Path) -> None:
    """The live view's follower (analyze_follow.c) on the same damaged captures, each grown in
    eight steps and polled after each."""
    paths = damaged_captures(tmp_path, mangled=100)
    out = run_driver(driver, paths, "--follow")
    outcomes = [line.split()[1] for line in out.splitlines()]
    assert len(outcomes) == len(paths)
    assert "follow" in outcomes and "rejected" in outcomes


def test_searched_tick_orders_are_clean_under_sanitizers(driver: Path, tmp_path: Path) -> None:
    """Captures whose ticks the even interleave cannot order (threads reusing and passing
    blocks within one tick: capture_merge.c's search), read and followed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_capture_tick_order import simulate, write

    paths = []
    for seed in range(40):
        threads, setup, _ = simulate(seed, known=seed % 2 == 0)
        paths.append(tmp_path / f"tick{seed}.cytrace")
        write(paths[-1], seed, threads, setup)
    for options in ((), ("--follow",)):
        out = run_driver(driver, paths, *options)
        assert len(out.splitlines()) == len(paths)


def test_hostile_source_paths_are_clean_under_sanitizers(driver: Path, tmp_path: Path) -> None:
    """Objects, Python frames and the executable naming FIFOs, devices, directories, links,
    `..`, very long and NUL/control-byte paths (whole and damaged): the C pipeline opens
    none of the FIFOs (it would block until the timeout) and reports nothing."""
    paths = hostile_captures(tmp_path, mangled=150)
    out = run_driver(driver, paths)
    outcomes = [line.split()[1] for line in out.splitlines() if line.startswith(str(tmp_path))]
    assert len(outcomes) == len(paths)
    whole = len(paths) - 150  # one whole capture per hostile path, first
    assert outcomes[:whole] == ["ok"] * whole


def test_real_capture_is_clean_under_sanitizers(driver: Path, tmp_path: Path) -> None:
    source = tmp_path / "groundtruth.pyx"
    shutil.copy(FIXTURES / "groundtruth.pyx", source)
    module = build_module(source, BuildOptions(opt_level="2"))
    capture = tmp_path / "run.cytrace"
    subprocess.run([sys.executable, str(FIXTURES / "driver.py"), str(module.module_path), str(capture), "run", "50"],
                   check=True, stdout=subprocess.PIPE, timeout=300)
    cut = tmp_path / "cut.cytrace"
    cut.write_bytes(capture.read_bytes()[: capture.stat().st_size * 2 // 3])
    out = run_driver(driver, [capture, cut])
    first, second = out.splitlines()
    assert first.split()[1] == "ok" and second.split()[1] in ("truncated", "rejected")
    followed = run_driver(driver, [capture], "--follow").split()
    assert followed[1] == "follow" and int(followed[2]) > 0 and followed[4] == "1"  # complete
