"""Ground truth: real Cython modules built at -O2, run under the real tracer, reported by
`cytool report --format json`; every allocating line gets its exact bytes and counts."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

from cytool.build import BuildOptions, BuildResult, build_module

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reports"
DRIVER = FIXTURES / "driver.py"


def build(name: str, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    source = tmp_path_factory.mktemp(name) / f"{name}.pyx"
    shutil.copy(FIXTURES / f"{name}.pyx", source)
    return build_module(source, BuildOptions(opt_level="2"))


def profile(module: Path, capture: Path, function: str, arg: int) -> None:
    subprocess.run([sys.executable, str(DRIVER), str(module), str(capture), function, str(arg)], check=True,
                   stdout=subprocess.PIPE, timeout=300)


def report_json(run_cytool, capture: Path, *extra: str, env: Optional[dict] = None) -> dict:
    result = run_cytool("report", capture, "--format", "json", *extra, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def pyx_lines(document: dict) -> Dict[Tuple[str, int], dict]:
    return {(Path(l["file"]).name, l["line"]): l for l in document["lines"] if l["kind"] == "pyx"}


@pytest.fixture(scope="module")
def groundtruth(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    return build("groundtruth", tmp_path_factory)


def test_c_allocations_land_on_their_lines(groundtruth: BuildResult, tmp_path: Path, run_cytool) -> None:
    capture = tmp_path / "run.cytrace"
    profile(groundtruth.module_path, capture, "run", 100)
    document = report_json(run_cytool, capture)
    lines = pyx_lines(document)
    got = {key: (l["function"], l["bytes"], l["count"], l["leaked_bytes"]) for key, l in lines.items() if l["count"]}
    assert got == {
        ("groundtruth.pyx", 10): ("groundtruth.helper", 6400, 100, 0),   # malloc in an inlined cdef helper
        ("groundtruth.pyx", 16): ("groundtruth.run", 800, 1, 0),         # the pointer array
        ("groundtruth.pyx", 20): ("groundtruth.run", 320, 1, 320),       # calloc leaked on purpose
        ("groundtruth.pyx", 21): ("groundtruth.run", 16, 1, 0),
        ("groundtruth.pyx", 24): ("groundtruth.run", 992, 5, 0),         # realloc growth
    }
    # the caller of the inlined helper holds it inclusively, nothing by itself
    caller = lines[("groundtruth.pyx", 18)]
    assert (caller["bytes"], caller["inclusive"]["bytes"], caller["inclusive"]["count"]) == (0, 6400, 100)
    # attributed: innermost .pyx line; the helper's line keeps its own malloc
    assert caller["attributed"]["count"] == 0 and lines[("groundtruth.pyx", 10)]["attributed"]["count"] == 100
    assert caller["source"] == "ptrs[i] = helper(64)                          # line 18: caller of line 10"
    assert lines[("groundtruth.pyx", 10)]["source"].startswith("return <char*>malloc(n)")
    # at the peak everything allocated was live except the block realloc replaced
    assert lines[("groundtruth.pyx", 10)]["peak_bytes"] == 6400
    assert lines[("groundtruth.pyx", 24)]["peak_bytes"] == 512
    assert lines[("groundtruth.pyx", 21)]["peak_bytes"] == 0
    kinds = document["kinds"]
    assert kinds["calloc"] == {"count": 1, "bytes": 320}
    assert kinds["realloc"] == {"count": 5, "bytes": 992}
    assert document["capture"]["warnings"] == [] and not document["capture"]["truncated"]
    assert document["capture"]["clock"] == "ticking" and document["capture"]["time_resolution_ns"] == 1_000_000
    totals = document["totals"]
    assert totals["leaked_bytes"] >= 320 and totals["count"] >= 108
    assert totals["replaced_blocks"] == 0


def test_leaks_mode_keeps_only_leaking_lines(groundtruth: BuildResult, tmp_path: Path, run_cytool) -> None:
    capture = tmp_path / "run.cytrace"
    profile(groundtruth.module_path, capture, "run", 10)
    document = report_json(run_cytool, capture, "--leaks")
    assert document["mode"] == "leaked_bytes"
    assert all(l["leaked_bytes"] or l["inclusive"]["leaked_bytes"] for l in document["lines"])
    pyx = [(l["line"], l["leaked_bytes"]) for l in document["lines"] if l["kind"] == "pyx"]
    assert pyx == [(20, 320)]


def test_python_containers_land_on_their_lines(groundtruth: BuildResult, tmp_path: Path, run_cytool) -> None:
    n = 100_000
    capture = tmp_path / "python.cytrace"
    profile(groundtruth.module_path, capture, "build_python", n)
    lines = pyx_lines(report_json(run_cytool, capture))
    items, table = lines[("groundtruth.pyx", 36)], lines[("groundtruth.pyx", 37)]
    # CPython's growth policy decides the exact figures; what must hold on any version:
    assert items["function"] == table["function"] == "groundtruth.build_python"
    assert items["count"] >= 10 and items["peak_bytes"] >= 8 * n  # the final item array
    assert table["count"] >= 5 and table["peak_bytes"] >= 8 * n  # the dict's entry table
    assert items["bytes"] >= items["peak_bytes"] and table["bytes"] >= table["peak_bytes"]
    assert not any(l["count"] for key, l in lines.items() if key[1] not in (36, 37))


def test_cpp_vector(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, run_cytool) -> None:
    module = build("gtvector", tmp_path_factory)
    capture = tmp_path / "vector.cytrace"
    profile(module.module_path, capture, "fill", 100)
    lines = pyx_lines(report_json(run_cytool, capture))
    got = {key: (l["function"], l["bytes"], l["count"]) for key, l in lines.items() if l["count"]}
    assert got == {
        ("gtvector.pyx", 10): ("gtvector.fill", 64, 1),  # reserve(16)
        ("gtvector.pyx", 12): ("gtvector.fill", 128 + 256 + 512, 3),  # push_back growth
    }


def test_deleted_module_is_reported_with_raw_addresses(groundtruth: BuildResult, tmp_path: Path, run_cytool) -> None:
    copy = tmp_path / groundtruth.module_path.name
    shutil.copy(groundtruth.module_path, copy)
    capture = tmp_path / "gone.cytrace"
    profile(copy, capture, "run", 10)
    copy.unlink()
    nowhere = {"CYTOOL_CACHE_DIR": str(tmp_path / "empty-cache")}  # no other build to fall back on
    result = run_cytool("report", capture, env=nowhere)
    assert result.returncode == 0, result.stderr
    warning = f"{copy}: deleted since the capture was made; its frames show as raw addresses"
    assert f"warning: {warning}" in result.stdout
    document = report_json(run_cytool, capture, env=nowhere)
    assert document["capture"]["warnings"] == [warning]
    raw = [l for l in document["lines"] if l["kind"] == "unknown" and l["function"].startswith(copy.name + "+0x")]
    assert sum(l["count"] for l in raw) == 10 + 1 + 1 + 1 + 5  # helper blocks, array, calloc, malloc, reallocs
    assert not [l for l in document["lines"] if l["kind"] == "pyx"]


def test_deleted_module_found_by_build_id_in_the_cache(groundtruth: BuildResult, tmp_path: Path, run_cytool) -> None:
    """The capture names a copy that is gone; the build cache still holds the identical build."""
    copy = tmp_path / groundtruth.module_path.name
    shutil.copy(groundtruth.module_path, copy)
    capture = tmp_path / "gone.cytrace"
    profile(copy, capture, "run", 10)
    copy.unlink()
    document = report_json(run_cytool, capture)
    assert document["capture"]["warnings"] == [
        f"{copy}: deleted since the capture was made; symbols come from the identical build {groundtruth.module_path}"
    ]
    lines = pyx_lines(document)
    assert (lines[("groundtruth.pyx", 10)]["count"], lines[("groundtruth.pyx", 20)]["leaked_bytes"]) == (10, 320)


def test_module_without_debug_info_falls_back_to_cython_names(groundtruth: BuildResult, tmp_path: Path, run_cytool) -> None:
    stripped = tmp_path / groundtruth.module_path.name
    shutil.copy(groundtruth.module_path, stripped)
    subprocess.run(["objcopy", "--strip-debug", str(stripped)], check=True)
    capture = tmp_path / "stripped.cytrace"
    profile(stripped, capture, "run", 100)
    document = report_json(run_cytool, capture)
    assert document["capture"]["warnings"] == [
        f"{stripped}: has no DWARF line information (built without -g?); its frames show Cython function names only"
    ]
    (run,) = [l for l in document["lines"] if l["function"] == "groundtruth.run"]
    # no lines and no inline frames: everything the function did, helper included
    assert (run["kind"], run["line"], run["count"], run["bytes"]) == ("pyx", 0, 108, 6400 + 800 + 320 + 16 + 992)


def test_python_callback_sits_inside_its_cython_caller(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                                                       run_cytool) -> None:
    module = build("callback", tmp_path_factory)
    capture = tmp_path / "callback.cytrace"
    profile(module.module_path, capture, "run", 20)
    document = report_json(run_cytool, capture)
    (alloc,) = [l for l in document["lines"] if l["file"].endswith("cbhelper.py") and l["line"] == 5]
    assert alloc["function"] == "alloc" and alloc["count"] == 20
    assert alloc["bytes"] >= sum(5000 + i for i in range(20))
    (caller,) = [l for l in document["lines"] if l["file"].endswith("callback.pyx") and l["line"] == 10]
    assert caller["bytes"] == 0 and caller["inclusive"]["count"] >= 20
    # the .pyx line is charged with what the Python code it called allocated
    assert caller["attributed"]["count"] >= 20 and caller["attributed"]["bytes"] >= alloc["bytes"]
    stacks = [s for s in document["stacks"] if s["self"]["line"] == 5 and s["self"]["file"].endswith("cbhelper.py")]
    assert [(f["function"], f["line"]) for f in stacks[0]["frames"][:2]] == [("alloc", 5), ("callback.run", 10)]


def test_threads_filter_on_a_real_capture(tmp_path: Path, run_cytool) -> None:
    """Three threads each malloc 300 blocks of 5000 bytes on one line (the tracer's fixture)."""
    source = Path(__file__).resolve().parent / "fixtures" / "tracer" / "alloc_exact.pyx"
    line = next(i for i, text in enumerate(source.read_text().splitlines(), 1) if text.rstrip().endswith("# ALLOCATE_LINE"))
    capture = tmp_path / "threads.cytrace"
    result = run_cytool("profile", source, "-o", capture, "--no-summary", "--", 300, 5000, 3, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    everything = report_json(run_cytool, capture)
    hot = [l for l in everything["lines"] if l["kind"] == "pyx" and l["line"] == line]
    assert len(hot) == 1, run_cytool("report", capture, "-f", "collapsed", "--native").stdout[:5000]
    assert (hot[0]["count"], hot[0]["bytes"], hot[0]["temporary_count"]) == (900, 900 * 5000, 0)
    workers = [t for t in everything["threads"] if t["count"] >= 300]
    assert len(workers) == 3
    one = report_json(run_cytool, capture, "--threads", str(workers[0]["id"]))
    (hot,) = [l for l in one["lines"] if l["kind"] == "pyx" and l["line"] == line]
    assert (hot["count"], hot["bytes"]) == (300, 300 * 5000)
    assert [t["id"] for t in one["threads"]] == [workers[0]["id"]]


def test_native_frames_on_request(groundtruth: BuildResult, tmp_path: Path, run_cytool) -> None:
    capture = tmp_path / "native.cytrace"
    profile(groundtruth.module_path, capture, "run", 10)
    plain = report_json(run_cytool, capture)
    native = report_json(run_cytool, capture, "--native")
    with_pyx = [s for s in plain["stacks"] if any(f["kind"] == "pyx" for f in s["frames"])]
    assert with_pyx and not [f for s in with_pyx for f in s["frames"] if f["kind"] == "native"]  # user frames only
    helper = [s for s in native["stacks"] if s["self"]["line"] == 10 and s["self"]["kind"] == "pyx"]
    assert helper and any(f["kind"] == "native" for f in helper[0]["frames"])
    # the figures per line do not depend on which frames a stack shows
    assert pyx_lines(plain)[("groundtruth.pyx", 10)]["bytes"] == pyx_lines(native)[("groundtruth.pyx", 10)]["bytes"] == 640


def test_other_allocators(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, run_cytool) -> None:
    module = build("gtalloc", tmp_path_factory)
    capture = tmp_path / "alloc.cytrace"
    profile(module.module_path, capture, "run", 0)
    document = report_json(run_cytool, capture)
    got = {key[1]: (l["bytes"], l["count"], l["leaked_bytes"]) for key, l in pyx_lines(document).items() if key[1] in (17, 18, 19, 20)}
    assert got == {17: (1000, 1, 0), 18: (2048, 1, 0), 19: (512, 1, 0), 20: (1 << 20, 1, 0)}
    kinds = document["kinds"]
    assert kinds["posix_memalign"] == {"count": 1, "bytes": 1000}
    assert kinds["aligned_alloc"] == {"count": 1, "bytes": 2048}
    assert kinds["memalign"] == {"count": 1, "bytes": 512}
    assert kinds["mmap"]["count"] >= 1 and kinds["munmap"]["count"] >= 1


def test_python_allocator_domains(tmp_path: Path, run_cytool) -> None:
    """With --trace-python-allocators, pymalloc's objects land on the lines that made them."""
    source = tmp_path / "gtpymem.pyx"
    source.write_text((FIXTURES / "groundtruth.pyx").read_text() + "\n\nbuild_python(1000)\n")
    capture = tmp_path / "pymem.cytrace"
    result = run_cytool("profile", source, "-o", capture, "--no-summary", "--trace-python-allocators", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = report_json(run_cytool, capture)
    assert document["kinds"]["pymem_obj"]["count"] > 0
    lines = pyx_lines(document)
    items, table = lines[("gtpymem.pyx", 36)], lines[("gtpymem.pyx", 37)]
    # i * 3 makes a new int object for every i >= 86 (CPython caches -5..256)
    assert items["count"] >= 1000 - 86
    assert table["count"] >= 1000 - 257  # the loop variable's ints, shared by key and value
