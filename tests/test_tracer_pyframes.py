"""Python frames above Cython allocations, exact, on every supported interpreter: the tracer
reads each thread's interpreter frames at the allocation (runtime/python/python_frames.c,
one frame layout per Python version), so plain calls, generators, coroutines, Python
called back through C functions, deep recursion, threads started before and after the
tracer, and a followed fork's child must all give their true frames and lines
(tests/fixtures/tracer/pyframe_shapes.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from cytool.capture import Capture, read_capture

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tracer"
EXACT = FIXTURES / "alloc_exact.pyx"
SHAPES = FIXTURES / "pyframe_shapes.py"
LINES: Dict[str, int] = {
    m.group(1): i for i, text in enumerate(SHAPES.read_text().splitlines(), 1) for m in [re.search(r"# L:(\w+)", text)] if m
}


def python_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("CYTOOL_PROFILE", None)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture(scope="session")
def tracer_python(debug_python: str) -> str:
    """An interpreter with cytool's tracer extension built for it (in place, as an
    editable install does: cytool/_cytrace.<its ABI>.so)."""
    if debug_python != sys.executable:
        done = subprocess.run([debug_python, "setup.py", "-q", "build_ext", "--inplace"], cwd=REPO, env=python_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:]
    return debug_python


@pytest.fixture(scope="session")
def shapes_capture(tracer_python: str, tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, str]:
    """(capture of pyframe_shapes.py, that interpreter's version)."""
    work = tmp_path_factory.mktemp("pyframes")
    build = ("import sys\nfrom cytool.build import build_module, BuildOptions\n"
             "print(build_module(sys.argv[1], BuildOptions()).module_path)\n")
    done = subprocess.run([tracer_python, "-c", build, str(EXACT)], env=python_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    module = done.stdout.strip().splitlines()[-1]
    capture = work / "shapes.cytrace"
    done = subprocess.run([tracer_python, str(SHAPES), module, str(capture)], cwd=work, env=python_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    version = subprocess.run([tracer_python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    return capture, version


def python_frames_of(capture: Capture, size: int) -> List[List[Tuple[str, int]]]:
    """For each malloc of `size` bytes: its Python frames, innermost first, as (function, line)."""
    found = []
    for event in capture.events:
        if event.kind == "malloc" and event.size == size:
            stack = capture.stacks.get(event.stack_id, [])
            assert stack and stack[0].file.endswith("alloc_exact.pyx"), stack[:3]
            found.append([(f.function, f.line) for f in stack if f.kind == "python"])
    return found


def at(name: str) -> int:
    return LINES[name]


def test_plain_calls_give_their_call_lines(shapes_capture) -> None:
    path, version = shapes_capture
    with read_capture(path) as capture:
        assert capture.complete and capture.header.python_frames
        frames = python_frames_of(capture, 1001)
        assert len(frames) == 6  # outer() twice
        first = [("plain_caller", at("plain")), ("outer", at("outer")), ("<module>", at("module_outer"))]
        again = first[:2] + [("<module>", at("module_outer_again"))]
        assert frames[:3] == [first] * 3, version
        assert frames[3:] == [again] * 3, version
        assert not any(f.function == "<unknown>" for f in capture.pyframes.values())


def test_calls_under_a_pinned_frame(shapes_capture) -> None:
    # a pinned frame (cytool.tracker.frame_pinned: the launcher's, the pytest plugin's) ends
    # the tracer's frame-by-frame check; the frames inside it and its own line stay exact,
    # and so does everything after the pin ends
    path, version = shapes_capture
    with read_capture(path) as capture:
        inner = [("recurse_in_pin", at("pin_leaf"))] + [("recurse_in_pin", at("pin_recurse"))] * 3
        def below(line: str) -> list:
            return inner + [("outer_in_pin", at("outer_in_pin")), ("pinned_runner", at(line)),
                            ("<module>", at("module_pinned"))]
        assert python_frames_of(capture, 1013) == [below("pinned_a")], version
        assert python_frames_of(capture, 1014) == [below("pinned_b")] * 2, version
        assert python_frames_of(capture, 1015) == [below("unpinned")], version
        # record_outside=False: the stack ends at the pinned frame, and only while pinned
        assert python_frames_of(capture, 1016) == [below("pinned_alone")[:-1]], version
        assert python_frames_of(capture, 1017) == [below("unpinned_again")], version


def test_generators_coroutines_and_calls_through_c(shapes_capture) -> None:
    path, version = shapes_capture
    with read_capture(path) as capture:
        module_line = lambda frames: frames[-1][0] == "<module>"  # noqa: E731
        gen = python_frames_of(capture, 1002)
        assert len(gen) == 2 and all(module_line(f) for f in gen)
        assert [f[:2] for f in gen] == [[("gen", at("gen")), ("consume", at("consume"))]] * 2, version
        coro = python_frames_of(capture, 1003)
        assert [f[:2] for f in coro] == [[("coro", at("coro")), ("run_coro", at("run_coro"))]], version
        # map() and list() are C functions: no frame of theirs, the Python caller follows
        mapped = python_frames_of(capture, 1004)
        assert [f[:2] for f in mapped] == [[("in_map", at("in_map")), ("through_c", at("through_c"))]] * 2, version


def test_deep_recursion_and_lines_in_one_function(shapes_capture) -> None:
    path, version = shapes_capture
    with read_capture(path) as capture:
        (deep,) = python_frames_of(capture, 1005)
        assert deep[0] == ("recurse", at("leaf"))
        assert deep[1:61] == [("recurse", at("recurse"))] * 60, version
        assert deep[61][0] == "<module>" and len(deep) == 62
        for size, line in ((1010, "loop_a"), (1011, "loop_a"), (1012, "loop_b")):
            assert [f[0] for f in python_frames_of(capture, size)] == [("same_site_many_lines", at(line))], version


def test_threads_started_before_and_after_the_tracer(shapes_capture) -> None:
    path, version = shapes_capture
    with read_capture(path) as capture:
        for size, function, line in ((1006, "early_thread", "early"), (1007, "late_thread", "late")):
            frames = python_frames_of(capture, size)
            assert len(frames) == 2
            for f in frames:  # threading's bootstrap above the target
                assert f[0] == (function, at(line)), version
                assert "Thread.run" in [name for name, _ in f] or "run" in [name for name, _ in f]
            # named as threading names them, the late one by the hook at its start
            event = next(e for e in capture.events if e.kind == "malloc" and e.size == size)
            assert capture.threads[event.thread_id].name == line, version


def test_followed_fork_child_defines_its_frames(shapes_capture) -> None:
    path, version = shapes_capture
    children = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    assert len(children) == 1
    with read_capture(children[0]) as child:
        assert child.complete and not child.truncated
        assert python_frames_of(child, 1008) == [[("in_child", at("child")), ("<module>", at("module_child"))]], version
        assert python_frames_of(child, 1001) == []
        assert not any(f.function == "<unknown>" for f in child.pyframes.values())


def test_a_programs_profiler_stays_and_frames_are_recorded(tmp_path: Path) -> None:
    """Python frames need no profile function: a profiler the program installed (sys and
    threading) keeps seeing its events while tracing, and is still there after."""
    code = f"""
        import importlib.util, sys, threading
        import cytool
        from cytool.build import BuildOptions, build_module
        spec = importlib.util.spec_from_file_location("alloc_exact", build_module({str(EXACT)!r}, BuildOptions()).module_path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        seen = []
        def mine(frame, event, arg):
            if event == "call":
                seen.append(frame.f_code.co_name)
        def caller():
            mod.allocate(5, 2001)
        sys.setprofile(mine)
        threading.setprofile(mine)
        with cytool.Tracker("prof.cytrace"):
            caller()
        sys.setprofile(None)
        print("kept", threading._profile_hook is mine, "seen", "caller" in seen)
    """
    import textwrap

    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=python_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["kept", "True", "seen", "True"]
    assert "tracing without Python frames" not in done.stderr
    with read_capture(tmp_path / "prof.cytrace") as capture:
        frames = python_frames_of(capture, 2001)
        assert len(frames) == 5 and all(f[0][0] == "caller" for f in frames)


# -- the reuse of a thread's previous walk (frames unchanged since its last allocation) ---
REPEATS = FIXTURES / "pyframe_repeats.py"
NATIVE_THREAD = FIXTURES / "native_thread.pyx"
REPEAT_LINES: Dict[str, int] = {
    m.group(1): i for i, text in enumerate(REPEATS.read_text().splitlines(), 1) for m in [re.search(r"# L:(\w+)", text)] if m
}


@pytest.fixture(scope="session")
def repeats_capture(tracer_python: str, tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, str]:
    """(capture of pyframe_repeats.py, that interpreter's version)."""
    work = tmp_path_factory.mktemp("pyrepeats")
    build = ("import sys\nfrom cytool.build import build_module, BuildOptions\n"
             "for path in sys.argv[1:]: print(build_module(path, BuildOptions()).module_path)\n")
    done = subprocess.run([tracer_python, "-c", build, str(EXACT), str(NATIVE_THREAD)], env=python_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    modules = done.stdout.strip().splitlines()[-2:]
    capture = work / "repeats.cytrace"
    done = subprocess.run([tracer_python, str(REPEATS), *modules, str(capture)], cwd=work, env=python_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    version = subprocess.run([tracer_python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    return capture, version


def frames_in_order(capture: Capture, sizes: Tuple[int, ...]) -> List[Tuple[int, List[Tuple[str, str, int]]]]:
    """Each malloc of one of `sizes` bytes, in the order made: (size, its Python frames
    innermost first as (function, file name, line))."""
    found = []
    for event in sorted((e for e in capture.events if e.kind == "malloc" and e.size in sizes), key=lambda e: e.time_ns):
        stack = capture.stacks.get(event.stack_id, [])
        found.append((event.size, [(f.function, Path(f.file).name, f.line) for f in stack if f.kind == "python"]))
    return found


def here(name: str) -> Tuple[str, int]:
    return REPEATS.name, REPEAT_LINES[name]


def test_a_changed_outer_frame_is_seen(repeats_capture) -> None:
    """The innermost frame is the same (address, code, offset): a caller at another line,
    or another caller function at the same frame address, must still be seen."""
    path, version = repeats_capture
    leaf = ("leaf", *here("leaf"))
    with read_capture(path) as capture:
        frames = [f[:2] for _, f in frames_in_order(capture, (3001,))]
        first, second = ("two_lines", *here("first_line")), ("two_lines", *here("second_line"))
        assert frames == [[leaf, first], [leaf, second], [leaf, first], [leaf, second]], version
        frames = [f[:2] for _, f in frames_in_order(capture, (3002,))]
        assert frames == [[leaf, ("caller_a", *here("caller_a"))], [leaf, ("caller_b", *here("caller_b"))]], version


def test_another_code_object_in_the_same_frame(repeats_capture) -> None:
    path, version = repeats_capture
    with read_capture(path) as capture:
        frames = [f[:2] for _, f in frames_in_order(capture, (3003,))]
        each = ("same_frame_other_code", *here("each_shape"))
        expected = [[(name, *here(name)), each] for name in ("shape_a", "shape_b", "shape_a")]
        assert frames == expected, version
        # compiled one after another, each freed before the next, new ones at old ones'
        # addresses: names and files are each function's own
        count, reused = map(int, Path(f"{path}.made").read_text().split())
        assert reused >= 1, f"{version}: no code object took an earlier one's address in {count}"
        made = [f[:2] for _, f in frames_in_order(capture, (3006,))]
        names = [f"made_{i:02d}" for i in range(count)]
        assert made == [[(name, f"{name}.py", 2), ("made_functions", *here("made"))] for name in names], version


def test_generators_and_coroutines_resumed_by_other_callers(repeats_capture) -> None:
    path, version = repeats_capture
    with read_capture(path) as capture:
        frames = [f[:2] for _, f in frames_in_order(capture, (3004,))]
        gen = ("generator", *here("generator"))
        a, b = ("resume_a", *here("resume_a")), ("resume_b", *here("resume_b"))
        assert frames == [[gen, a], [gen, b], [gen, a]], version
        frames = [f[:2] for _, f in frames_in_order(capture, (3005,))]
        coro = ("coroutine", *here("coroutine"))
        assert frames == [[coro, ("send_a", *here("send_a"))], [coro, ("send_b", *here("send_b"))]], version


def test_a_thread_without_then_with_a_thread_state(repeats_capture) -> None:
    """A C thread: no Python frames while it has no thread state, its callback's frames
    while PyGILState_Ensure gave it one, none again once it was deleted, twice."""
    path, version = repeats_capture
    leaf = ("leaf", *here("leaf"))
    with read_capture(path) as capture:
        found = frames_in_order(capture, (2101, 2102, 2103, 2104, 2105))
        assert found == [
            (2101, []),
            (2104, [leaf, ("first_in_native", *here("first_native"))]),
            (2102, []),
            (2105, [leaf, ("second_in_native", *here("second_native"))]),
            (2103, []),
        ], version
        # the main thread's frames afterwards are its own again
        last = frames_in_order(capture, (3001,))[-1][1]
        assert last[-1] == ("<module>", *here("again")), version
