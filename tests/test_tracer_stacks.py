"""What a stack says, exactly: deep stacks cut in the middle (with how many frames, the
root kept, `--max-frames`), a library unloaded and another loaded at its address (load
generations), thread names (Python's, else the native one; `--threads NAME`), and
another tracer taking over the tracer's hooks (its GOT/PLT slots, the PyMem domains)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from cytool.analysis import analyze, load_profile
from cytool.capture import Capture, read_capture
from test_tracer_runtime import helpers, run_helper  # noqa: F401 (the helpers fixture)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tracer"
DEEP = FIXTURES / "deep.pyx"
RELOAD = FIXTURES / "reload_lib.c"


def marks(path: Path, tag: str) -> Dict[str, int]:
    """Lines marked "<tag> name" in a fixture, by name."""
    found = {}
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if f"{tag} " in text:
            found[text.split(f"{tag} ", 1)[1].split("*/")[0].strip()] = number
    return found


def run_python(code: str, *args: object, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


# ---- deep stacks ------------------------------------------------------------------------


@pytest.mark.parametrize("unwind", [0, 1])
def test_a_deep_native_stack_keeps_both_ends_and_counts_the_cut(helpers: Path, tmp_path: Path, unwind: int) -> None:  # noqa: F811
    """deep_recurse() 2000 and 3000 levels deep, 1024 frames kept: the innermost 768 and
    the outermost 256 (main and what called it), and the deeper stack cut exactly 1000
    frames more. Frame pointers (cytool-built code) and libunwind alike."""
    cuts = {}
    for depth in (2000, 3000):
        path = tmp_path / f"deep{depth}.cytrace"
        run_helper(helpers, path, "deep", depth, 1024, unwind)
        with read_capture(path) as capture:
            assert capture.header.max_frames == 1024
            (event,) = [e for e in capture.events if e.kind == "malloc" and e.size == 6161]
            stack = capture.stack_info[event.stack_id]
            assert len(stack.words) == 1024 and stack.cut_at == 768
            frames = [f.function for f in capture.stacks[event.stack_id]]
            assert frames[:768] == ["deep_recurse"] * 768
            assert frames[768] == "… frames cut"
            assert "main" in frames[-4:] and frames[769] == "deep_recurse"
            cuts[depth] = stack.cut
    assert cuts[3000] - cuts[2000] == 1000
    assert 2000 - 1024 < cuts[2000] <= 2000 - 1024 + 8  # (main, the C library's start-up frames)


def test_a_shallow_stack_is_not_cut(helpers: Path, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "shallow.cytrace"
    run_helper(helpers, path, "deep", 100, 1024, 0)
    with read_capture(path) as capture:
        (event,) = [e for e in capture.events if e.kind == "malloc" and e.size == 6161]
        assert capture.stack_info[event.stack_id].cut == 0
        assert [f.function for f in capture.stacks[event.stack_id]].count("deep_recurse") == 100


@pytest.fixture(scope="module")
def deep_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("deep")
    capture = work / "deep.cytrace"
    proc = subprocess.run([sys.executable, "-m", "cytool", "profile", "-O", "0", "--no-summary", "-o", str(capture),
                           str(DEEP), "--", "3000"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "depths [3001, 3001]" in proc.stdout
    return capture


def test_deep_recursion_keeps_its_root_and_says_what_was_cut(deep_capture: Path) -> None:
    lines = marks(DEEP, "# DEEP")
    with read_capture(deep_capture) as capture:
        profile = analyze(capture)
        by_depth: Dict[str, List[int]] = {"cdeep": [], "pydeep": []}
        for e in capture.events:  # in each thread's order: the outermost level first
            if e.kind != "malloc" or e.size not in (32, 48):
                continue
            frames = capture.stacks[e.stack_id]
            if frames and frames[0].file.endswith("deep.pyx"):
                by_depth["cdeep" if e.size == 32 else "pydeep"].append(capture.stack_info[e.stack_id].cut)
    # every allocation, however deep, sits under the thread's root and deep.go
    go_c = next(l for l in profile.lines() if l.file.endswith("deep.pyx") and l.line == lines["go_c"])
    go_py = next(l for l in profile.lines() if l.file.endswith("deep.pyx") and l.line == lines["go_py"])
    assert go_c.inclusive.count == 3001 and go_py.inclusive.count == 3001
    assert go_c.attributed.count == 0  # (each level's malloc is its own line's)
    for name in ("cdeep", "pydeep"):
        line = next(l for l in profile.lines() if l.file.endswith("deep.pyx") and l.line == lines[name])
        assert line.self.count == 3001
    # one level deeper, the same number of frames more: 1 for a cdef call, k for def -> def
    for name, cuts in by_depth.items():
        assert len(cuts) == 3001
        first = next(i for i, cut in enumerate(cuts) if cut)
        step = cuts[first + 1] - cuts[first]
        assert step >= 1 and all(cuts[i + 1] - cuts[i] == step for i in range(first, 3000)), name
        assert all(cut == 0 for cut in cuts[:first])
    cut_events = sum(1 for cuts in by_depth.values() for cut in cuts if cut)
    assert profile.cut_events == cut_events and profile.max_frames == 1024
    assert profile.cut_most == max(max(c) for c in by_depth.values())
    assert any(f"{cut_events:,} allocations had stacks deeper than 1024 frames" in note for note in profile.notes())


def test_deep_recursion_in_the_collapsed_stacks(deep_capture: Path, run_cytool) -> None:
    result = run_cytool("report", deep_capture, "-f", "collapsed")
    assert result.returncode == 0, result.stderr
    deep = [line for line in result.stdout.splitlines() if "deep.cdeep" in line or "deep.pydeep" in line]
    assert deep and all(line.startswith("Thread._bootstrap") for line in deep)
    assert sum(int(line.rsplit(" ", 1)[1]) for line in deep) == 3001 * 32 + 3001 * 48
    assert sum(1 for line in deep if "… frames cut" in line) > 0


def test_max_frames_option(tmp_path: Path, run_cytool) -> None:
    capture = tmp_path / "small.cytrace"
    result = run_cytool("profile", "-O", "0", "--no-summary", "--max-frames", "64", "-o", capture, DEEP, "--", "200",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with read_capture(capture) as c:
        assert c.header.max_frames == 64
        assert max(len(s.words) for s in c.stack_info.values()) == 64
        profile = analyze(c)
    go_c = next(l for l in profile.lines() if l.file.endswith("deep.pyx") and l.line == marks(DEEP, "# DEEP")["go_c"])
    assert go_c.inclusive.count == 201
    bad = run_cytool("profile", "--max-frames", "8", DEEP, "--", "1", cwd=tmp_path)
    assert bad.returncode == 2 and "--max-frames takes 16 to 65536 frames, not 8" in bad.stderr


# ---- a library unloaded and another loaded at its address -----------------------------------


RELOAD_PROGRAM = """
import ctypes, _ctypes, sys, cytool
with cytool.Tracker(sys.argv[1]):
    for lib in sys.argv[2:]:
        handle = ctypes.CDLL(lib)
        handle.work(50)
        _ctypes.dlclose(handle._handle)
"""


@pytest.fixture(scope="module")
def reload_libs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    out = tmp_path_factory.mktemp("reload")
    libs = {}
    for variant, flags in (("a", []), ("b", ["-DVARIANT_B"])):
        libs[variant] = out / f"libreload_{variant}.so"
        subprocess.run(["cc", "-shared", "-fPIC", "-g", "-O0", *flags, "-o", str(libs[variant]), str(RELOAD)], check=True)
    return libs


def object_lines(profile, name: str) -> Dict[int, int]:
    return {l.line: l.inclusive.bytes for l in profile.lines() if Path(l.object).name == name and l.file}


def test_a_library_reloaded_at_the_same_address_keeps_its_own_lines(tmp_path: Path, reload_libs) -> None:
    capture = tmp_path / "reload.cytrace"
    run_python(RELOAD_PROGRAM, capture, reload_libs["a"], reload_libs["b"], cwd=tmp_path)
    lines = marks(RELOAD, "ALLOC")
    with read_capture(capture) as c:
        a = [o for o in c.objects if o.path == str(reload_libs["a"])]
        b = [o for o in c.objects if o.path == str(reload_libs["b"])]
        assert len(a) == 1 and len(b) == 1
        # the point of the test: b was mapped where a had been
        assert a[0].segments[0][0] == b[0].segments[0][0]
        assert a[0].unload_generation is not None and a[0].unload_generation < b[0].load_generation
        profile = analyze(c, native_frames=True)
    assert object_lines(profile, "libreload_a.so") == {lines["a loop"]: sum(range(100, 150)), lines["a kept"]: 50}
    assert object_lines(profile, "libreload_b.so") == {lines["b loop"]: sum(range(1000, 1050)), lines["b kept"]: 70}


def test_the_same_library_loaded_twice(tmp_path: Path, reload_libs) -> None:
    capture = tmp_path / "twice.cytrace"
    run_python(RELOAD_PROGRAM, capture, reload_libs["a"], reload_libs["a"], cwd=tmp_path)
    lines = marks(RELOAD, "ALLOC")
    profile = load_profile(capture, native_frames=True)
    assert object_lines(profile, "libreload_a.so") == {lines["a loop"]: 2 * sum(range(100, 150)), lines["a kept"]: 100}


# ---- thread names -------------------------------------------------------------------------


def test_native_thread_names(helpers: Path, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "names.cytrace"
    out = run_helper(helpers, path, "names")
    with read_capture(path) as capture:
        names = {t.tid: t.name for t in capture.threads.values()}
        mallocs = Counter((names[capture.threads[e.thread_id].tid], e.size) for e in capture.events
                          if e.kind == "malloc" and e.size in (3131, 3232, 3333))
    assert names[int(out["tid_native-early"])] == "native-early"
    assert names[int(out["tid_renamed"])] == "renamed"  # the last name it had
    assert names[int(out["tid_unnamed"])] == "helper-main"  # inherited from the thread that made it
    assert mallocs == Counter({("native-early", 3131): 10, ("renamed", 3232): 20, ("helper-main", 3333): 10})


PYTHON_THREADS = """
import sys, threading, cytool
def work(size, n):
    blocks = [bytearray(size) for _ in range(n)]
with cytool.Tracker(sys.argv[1]):
    work(3000, 5)
    threads = [threading.Thread(target=work, args=(4000 + i, 10 * (i + 1)), name=f"loader-{i}") for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    late = threading.Thread(target=work, args=(5000, 7))
    late.name = "renamed-before-start"
    late.start()
    late.join()
"""


def test_python_thread_names_and_the_threads_option(tmp_path: Path, run_cytool) -> None:
    capture = tmp_path / "threads.cytrace"
    run_python(PYTHON_THREADS, capture, cwd=tmp_path)
    with read_capture(capture) as c:
        names = Counter(t.name for t in c.threads.values() if t.nevents > 1)
    assert {"MainThread", "loader-0", "loader-1", "loader-2", "renamed-before-start"} <= set(names)
    assert "python" not in names and "cytool" not in names
    result = run_cytool("report", capture, "-f", "json", "--threads", "loader-1,renamed-before-start")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    sizes = {size: 0 for size in (4001, 4002, 5001)}  # bytearray(n) asks for n + 1 bytes
    for thread in document["threads"]:
        assert thread["name"] in ("loader-1", "renamed-before-start")
    line = next(l for l in document["lines"] if l["line"] == 4 and l["function"].startswith("work"))
    assert line["count"] == 20 + 7 and line["bytes"] == 20 * 4002 + 7 * 5001
    del sizes
    unknown = run_cytool("report", capture, "--threads", "nobody")
    assert unknown.returncode == 2 and "no thread named 'nobody'" in unknown.stderr
    assert "loader-0" in unknown.stderr  # the hint lists them


# ---- another tracer -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["hook", "real"])
def test_another_tracer_rewriting_our_slots_is_reported(helpers: Path, tmp_path: Path, how: str) -> None:  # noqa: F811
    """The helper overwrites its own GOT slot of malloc for 300 ms, then gives it back:
    either what it held (our hook) or libc's malloc (as memray does when it stops: the
    tracer then patches the slot again). Allocations in between are not recorded, and the
    capture says so, naming the object and from when."""
    path = tmp_path / f"takeover-{how}.cytrace"
    run_helper(helpers, path, "takeover", how)
    with read_capture(path) as capture:
        sizes = Counter(e.size for e in capture.events if e.kind == "malloc" and e.size in (7001, 7002, 7003))
        taken = [t for t in capture.takeovers if t.state == "taken"]
        restored = [t for t in capture.takeovers if t.state == "restored"]
        profile = analyze(capture)
    assert sizes == Counter({7001: 100, 7003: 100})
    assert [(t.what, Path(t.object).name, t.function) for t in taken] == [("got", "test_trace_helper", "malloc")]
    assert Path(taken[0].target).name == "test_trace_helper"
    assert [(t.function, Path(t.object).name) for t in restored] == [("malloc", "test_trace_helper")]
    assert taken[0].time_ns < restored[0].time_ns
    notes = profile.warnings()
    assert any(note.startswith("another tracer took over malloc in 1 object (test_trace_helper)") for note in notes)
    assert any(note.startswith("malloc in 1 object (test_trace_helper) lead to cytool's tracer again") for note in notes)


PYMEM_TAKEOVER = """
import ctypes, sys, time, cytool
class Allocator(ctypes.Structure):
    _fields_ = [("ctx", ctypes.c_void_p), ("malloc", ctypes.c_void_p), ("calloc", ctypes.c_void_p),
                ("realloc", ctypes.c_void_p), ("free", ctypes.c_void_p)]
api = ctypes.pythonapi
OBJ = 2
before = Allocator()
api.PyMem_GetAllocator(OBJ, ctypes.byref(before))
with cytool.Tracker(sys.argv[1], trace_python_allocators=True):
    kept = [bytearray(100) for _ in range(10)]
    api.PyMem_SetAllocator(OBJ, ctypes.byref(before))  # "another tracer" puts in its own
    time.sleep(0.3)
    more = [bytearray(100) for _ in range(10)]
after = Allocator()
api.PyMem_GetAllocator(OBJ, ctypes.byref(after))
print("left alone", after.malloc == before.malloc)
"""


def test_another_tracer_replacing_our_python_allocators_is_reported(tmp_path: Path) -> None:
    capture = tmp_path / "pymem.cytrace"
    proc = run_python(PYMEM_TAKEOVER, capture, cwd=tmp_path)
    assert "left alone True" in proc.stdout  # stopping did not undo the other tracer's allocator
    with read_capture(capture) as c:
        taken = [t for t in c.takeovers if t.what == "pymem"]
        profile = analyze(c)
    assert [(t.object, t.function, t.state) for t in taken] == [("obj", "PyObject_Malloc", "taken")]
    assert "libpython" in taken[0].target or "python" in Path(taken[0].target).name
    assert any("took over the Python allocator domains obj" in note for note in profile.warnings())


MEMRAY_INSIDE = """
import sys, time, cytool, memray
with cytool.Tracker(sys.argv[1]):
    first = [bytearray(6001) for _ in range(100)]
    with memray.Tracker(sys.argv[2], native_traces=True):
        time.sleep(0.3)
    time.sleep(0.3)
    last = [bytearray(6003) for _ in range(100)]
"""


def test_memray_inside_a_cytool_session_is_reported(tmp_path: Path) -> None:
    pytest.importorskip("memray")
    capture = tmp_path / "memray.cytrace"
    run_python(MEMRAY_INSIDE, capture, tmp_path / "memray.bin", cwd=tmp_path)
    with read_capture(capture) as c:
        taken = [t for t in c.takeovers if t.state == "taken"]
        sizes = Counter(e.size for e in c.events if e.kind == "malloc" and e.size in (6002, 6004))
    assert any("memray" in Path(t.target).name for t in taken)
    assert {t.function for t in taken} >= {"malloc", "free"}
    # before, and after memray gave the slots back: recorded
    assert sizes == Counter({6002: 100, 6004: 100})
