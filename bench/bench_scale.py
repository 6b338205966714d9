"""Benchmark for issue 14, targets 1 and 2 (capture size and tracer overhead at scale): the
mixed workload (bench/mixed_workload.pyx: heap blocks of mixed sizes, a realloc-grown
buffer, Python containers; about 2.2 events an iteration) run side by side in one run as

- a plain `cytool run` (the module prebuilt at -O2),
- `cytool profile` of a baseline git ref (BENCH_BASELINE_REF, default `main`: "before"),
- `cytool profile` of this tree ("after"),
- `memray run --native` (memray from the bench extras),
- `heaptrack` (Debian package; its zstd trace),

each a whole process, round-robin, BENCH_REPEATS times (default 3) after a warm-up; wall
and CPU time (user + system of the child, os.wait4) medians, the ratio to the plain run
(median of the rounds' ratios), the capture's bytes and bytes per event (the events are
cytool's count for the same workload: every tool sees the same allocations and frees).
Then the capture sizes (one run each, not timed: bench_pyframes.py times it) on the
Python-heavy workload (bench/pyframes_workload.pyx), the other workload of issue 14's
size target. Results: bench/results/scale.md.

Environment: BENCH_SCALE_N (iterations, default 9,100,000: about 20 M events),
BENCH_SCALE_PY_N (calls of the Python-heavy workload, default 150,000; 0 skips it),
BENCH_REPEATS, BENCH_BASELINE_REF ("" skips the baseline).
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from timing import build_baseline, compile_bytecode, load_average, machine_line, write_result

N = int(os.environ.get("BENCH_SCALE_N", "9100000"))
PY_N = int(os.environ.get("BENCH_SCALE_PY_N", "150000"))
PY_DEPTH = 20
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
BASELINE_REF = os.environ.get("BENCH_BASELINE_REF", "main")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIZE_TARGET = 0.3  # bytes per event (issue 14, target 1)
OVERHEAD_TARGET = 1.5  # profile wall / plain wall (issue 14, target 2)


def measure(argv: Sequence[str], env: Mapping[str, str]) -> Tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the child and its threads) of one run of
    a command that must succeed."""
    start = time.perf_counter()
    child = subprocess.Popen(list(argv), env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    err = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.stderr:
        child.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"failed ({code}): {' '.join(map(str, argv))}\n{err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime




def capture_events(path: Path, env: Mapping[str, str]) -> int:
    """Events recorded in a cytool capture (read by this tree's reader, which reads the
    baseline's older format too)."""
    code = "import sys\nfrom cytool.capture import read_capture\nwith read_capture(sys.argv[1]) as c: print(c.stats.events)"
    done = subprocess.run([sys.executable, "-c", code, str(path)], env=dict(env), stdout=subprocess.PIPE, text=True,
                          check=True)
    return int(done.stdout.strip())


def memray_available() -> bool:
    try:
        import memray  # noqa: F401
    except ImportError:
        return False
    return True


def python_heavy_sizes(work: Path, env: Mapping[str, str], base_env: Optional[Mapping[str, str]],
                       heaptrack: Optional[str], use_memray: bool) -> Tuple[Dict[str, int], int]:
    """({tool: capture bytes}, cytool's events) of one run of each tool on the Python-heavy
    workload; the names are those of the mixed workload's table."""
    from cytool.build import BuildOptions, build_module

    py = sys.executable
    source = HERE / "pyframes_workload.pyx"
    module = build_module(source, BuildOptions(opt_level="2")).module_path
    program = [str(source), "--", str(PY_N), str(PY_DEPTH)]
    plain = [py, "-m", "cytool", "run", "--prebuilt", str(module), *program]
    runs: Dict[str, Tuple[List[str], Mapping[str, str], Path]] = {}
    if base_env is not None:
        runs[f"cytool profile, before (`{BASELINE_REF}`)"] = (
            [py, "-m", "cytool", "profile", "--no-summary", "-o", str(work / "py-before.cytrace"), *program], base_env,
            work / "py-before.cytrace")
    runs["cytool profile, after (this tree)"] = (
        [py, "-m", "cytool", "profile", "--no-summary", "-o", str(work / "py-after.cytrace"), *program], env,
        work / "py-after.cytrace")
    if use_memray:
        runs["memray run"] = ([py, "-m", "memray", "run", "-q", "-f", "-o", str(work / "py.memray"), *plain[1:]],
                              env, work / "py.memray")
    if heaptrack:
        runs["heaptrack"] = ([heaptrack, "-o", str(work / "py.heaptrack"), *plain], env, work / "py.heaptrack")
    sizes: Dict[str, int] = {}
    for name, (argv, cmd_env, path) in runs.items():
        print(f"Python-heavy workload: {name}", file=sys.stderr, flush=True)
        measure(argv, cmd_env)
        found = sorted(work.glob(path.name + "*")) if name == "heaptrack" else [path]
        if found and found[0].exists():
            sizes[name] = found[0].stat().st_size
    return sizes, capture_events(work / "py-after.cytrace", env)


def main() -> int:
    py = sys.executable
    heaptrack = shutil.which("heaptrack")
    use_memray = memray_available()
    sys.path.insert(0, str(REPO))
    from cytool.build import BuildOptions, build_module

    with tempfile.TemporaryDirectory(prefix="cytool-bench-scale-") as scratch:
        work = Path(scratch)
        env = dict(os.environ, CYTOOL_CACHE_DIR=str(work / "cache"), PYTHONPATH=str(REPO))
        env.pop("CYTOOL_PROFILE", None)
        compile_bytecode()  # (as installed: see timing.py)
        source = work / "mixed.pyx"
        source.write_text((HERE / "mixed_workload.pyx").read_text())
        os.environ["CYTOOL_CACHE_DIR"] = env["CYTOOL_CACHE_DIR"]
        module = build_module(source, BuildOptions(opt_level="2")).module_path
        program = ["--", str(N)]
        files: Dict[str, Path] = {}
        commands: Dict[str, Tuple[List[str], Mapping[str, str]]] = {
            "plain `cytool run`": ([py, "-m", "cytool", "run", "--prebuilt", str(module), str(source), *program], env),
        }
        if BASELINE_REF:
            base = build_baseline(BASELINE_REF, work / "baseline")
            base_env = dict(env, PYTHONPATH=str(base), CYTOOL_CACHE_DIR=str(work / "baseline-cache"))
            files[f"cytool profile, before (`{BASELINE_REF}`)"] = work / "before.cytrace"
            commands[f"cytool profile, before (`{BASELINE_REF}`)"] = (
                [py, "-m", "cytool", "profile", "--no-summary", "-o", str(work / "before.cytrace"), str(source), *program],
                base_env)
        files["cytool profile, after (this tree)"] = work / "after.cytrace"
        commands["cytool profile, after (this tree)"] = (
            [py, "-m", "cytool", "profile", "--no-summary", "-o", str(work / "after.cytrace"), str(source), *program], env)
        if use_memray:
            files["memray run --native"] = work / "mixed.memray"
            commands["memray run --native"] = (
                [py, "-m", "memray", "run", "--native", "-q", "-f", "-o", str(work / "mixed.memray"),
                 "-m", "cytool", "run", "--prebuilt", str(module), str(source), *program], env)
        if heaptrack:
            commands["heaptrack"] = (
                [heaptrack, "-o", str(work / "mixed.heaptrack"), py, "-m", "cytool", "run", "--prebuilt", str(module),
                 str(source), *program], env)

        def heaptrack_trace() -> Optional[Path]:
            traces = sorted(work.glob("mixed.heaptrack*"))
            return traces[0] if traces else None

        for name, (argv, cmd_env) in commands.items():  # warm-up: builds, caches, page cache
            print(f"warm-up: {name}", file=sys.stderr, flush=True)
            measure(argv, cmd_env)
        load_before = load_average()
        samples: Dict[str, List[Tuple[float, float]]] = {name: [] for name in commands}
        for round_ in range(REPEATS):
            for name, (argv, cmd_env) in commands.items():
                if name == "heaptrack":
                    for old in work.glob("mixed.heaptrack*"):
                        old.unlink()
                samples[name].append(measure(argv, cmd_env))
                print(f"round {round_ + 1}: {name}: {samples[name][-1][0]:.2f} s wall, {samples[name][-1][1]:.2f} s CPU",
                      file=sys.stderr, flush=True)
        load_after = load_average()
        trace = heaptrack_trace()
        if trace is not None:
            files["heaptrack"] = trace
        sizes = {name: path.stat().st_size for name, path in files.items()}
        events = capture_events(work / "after.cytrace", env)
        before_events = capture_events(work / "before.cytrace", env) if BASELINE_REF else 0
        py_sizes: Dict[str, int] = {}
        py_events = 0
        if PY_N:
            py_sizes, py_events = python_heavy_sizes(work, env, base_env if BASELINE_REF else None, heaptrack,
                                                     use_memray)

    plain = "plain `cytool run`"

    def ratio(name: str, index: int) -> float:
        return statistics.median(s[index] / p[index] for s, p in zip(samples[name], samples[plain]))

    def median(name: str, index: int) -> float:
        return statistics.median(s[index] for s in samples[name])

    lines = [
        "# Capture size and tracer overhead at scale: the mixed workload",
        "",
        f"Machine: {machine_line()}; load average {load_before} at the start, {load_after} at the end (a shared "
        "machine: other work ran at the same time). "
        f"Workload: bench/mixed_workload.pyx, {N:,} iterations: a Cython loop that replaces one of 4,096 heap "
        "blocks per iteration (sizes 16-2,000 bytes from an inlined helper, 16-215 bytes from another line), "
        "grows a buffer with realloc (64 B doubling to 1 MiB, then again), and every 8th iteration builds a dict "
        f"holding a list of 40-167 items and a str; cytool's capture holds {events:,} events. "
        f"{REPEATS} rounds, round-robin, after a warm-up; medians. Ratios are the median of each round's "
        "ratio to the plain run of that round. CPU is user + system time of the whole command, all threads "
        "(os.wait4): on a busy machine it is steadier than wall time. Bytes per event: each file's size over "
        "cytool's event count (every tool sees the same allocations and frees).",
        "",
        "| command | wall s | CPU s | wall ratio | CPU ratio | capture bytes | B/event |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in commands:
        size = sizes.get(name)
        per_event = f"{size / events:.3f}" if size is not None else ""
        lines.append(f"| {name} | {median(name, 0):.2f} | {median(name, 1):.2f} | {ratio(name, 0):.2f}x | "
                     f"{ratio(name, 1):.2f}x | {size:,} | {per_event} |" if size is not None else
                     f"| {name} | {median(name, 0):.2f} | {median(name, 1):.2f} | {ratio(name, 0):.2f}x | "
                     f"{ratio(name, 1):.2f}x | | |")
    after = "cytool profile, after (this tree)"
    after_bpe = sizes[after] / events
    lines += [
        "",
        f"- capture size: {after_bpe:.3f} B/event (target <= {SIZE_TARGET}: "
        f"{'met' if after_bpe <= SIZE_TARGET else 'NOT met'})",
        f"- tracer overhead: {ratio(after, 0):.2f}x wall (target <= {OVERHEAD_TARGET}x: "
        f"{'met' if ratio(after, 0) <= OVERHEAD_TARGET else 'NOT met'}), {ratio(after, 1):.2f}x CPU",
    ]
    if BASELINE_REF:
        before = f"cytool profile, before (`{BASELINE_REF}`)"
        lines.append(f"- before (`{BASELINE_REF}`): {sizes[before] / before_events:.3f} B/event "
                     f"({before_events:,} events), {ratio(before, 0):.2f}x wall, {ratio(before, 1):.2f}x CPU")
    if py_sizes:
        lines += [
            "",
            f"## Capture size on the Python-heavy workload: bench/pyframes_workload.pyx -- {PY_N} {PY_DEPTH}",
            "",
            "Cython calls a Python function that recurses 20-23 calls deep and builds strings and lists (mostly "
            f"pymalloc blocks); cytool's capture holds {py_events:,} events. One run of each tool, default "
            "settings (memray: Python allocators, no `--native`; it records other allocations than cytool, so "
            "its bytes per cytool event only compare file sizes).",
            "",
            "| command | capture bytes | B/event |",
            "|---|---:|---:|",
        ]
        lines += [f"| {name} | {size:,} | {size / py_events:.3f} |" for name, size in py_sizes.items()]
        py_bpe = py_sizes[after] / py_events
        lines.append(f"\n- capture size: {py_bpe:.3f} B/event (target <= {SIZE_TARGET}: "
                     f"{'met' if py_bpe <= SIZE_TARGET else 'NOT met'})")
    if not use_memray:
        lines.append("- memray is not installed (`pip install -e '.[bench]'`): its row is missing")
    if not heaptrack:
        lines.append("- heaptrack is not installed (`apt-get install heaptrack`): its row is missing")
    lines.append("")
    path = write_result("scale.md", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
