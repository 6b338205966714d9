"""Benchmark: the cost of Python frames. `cytool profile` against plain `cytool run`, a
baseline cytool (an earlier git revision, e.g. main) and `memray run` on a
Python-call-heavy workload: bench/pyframes_workload.pyx calls Python functions
(bench/pyframes_calls.py) from Cython, each recursing DEPTH Python calls deep and building
strings and lists; one call in 4 allocates with malloc. Writes bench/results/pyframes.md.

    python bench/bench_pyframes.py [--n 150000] [--depth 20] [--runs 7] [--baseline-ref main]
                                   [--no-memray]

Target (issue 14): profile at most 1.5x plain. Runs of the commands are interleaved, one
round at a time; medians of wall time and of CPU time (user + system of the command, from
os.wait4) are reported, and the same commands with N=0 (interpreter start, imports, tracer
set-up) give the workload's own share.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKLOAD = HERE / "pyframes_workload.pyx"
RESULTS = HERE / "results" / "pyframes.md"

sys.path.insert(0, str(HERE))
from bench_profile import baseline_env, capture_events, memray_available, memray_events  # noqa: E402
from timing import build_baseline, compile_bytecode, load_average  # noqa: E402


def run_once(argv: Sequence[str], cwd: Path, env: Optional[Dict[str, str]]) -> Tuple[float, float]:
    """(wall s, CPU s = user + system) of one run of `argv`, which must succeed."""
    env = dict(env or os.environ)
    env.pop("CYTOOL_PROFILE", None)
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{errors.read().decode(errors='replace')}")
    return wall, usage.ru_utime + usage.ru_stime



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=150_000, help="calls from Cython into Python")
    parser.add_argument("--depth", type=int, default=20, help="Python recursion depth of each call")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--alloc-n", type=int, default=2_000_000, help="mallocs of the bench_alloc comparison")
    parser.add_argument("--no-memray", action="store_true")
    parser.add_argument("--baseline", type=Path, help="an earlier cytool source tree, built in place")
    parser.add_argument("--baseline-ref", metavar="REF", help="build the git revision REF (e.g. main) as the baseline")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    compile_bytecode()  # (as installed: see timing.py)
    baseline_tmp = None
    if args.baseline_ref:
        baseline_tmp = tempfile.TemporaryDirectory(prefix="cytool-baseline-")
        args.baseline = build_baseline(args.baseline_ref, Path(baseline_tmp.name))
    if args.baseline is not None and not (args.baseline / "cytool" / "_lib" / "libcytrace.so").exists():
        raise SystemExit(f"{args.baseline}: not a built cytool tree (no cytool/_lib/libcytrace.so)")

    from cytool.build import BuildOptions, build_module

    module = build_module(WORKLOAD, BuildOptions(opt_level="2")).module_path
    use_memray = not args.no_memray and memray_available()
    py = sys.executable
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="cytool-bench-pyframes-") as tmp:
        work = Path(tmp)
        base_env = baseline_env(args.baseline, work / "baseline-cache")
        outputs = {"profile": work / "profile.cytrace", "baseline": work / "baseline.cytrace", "memray": work / "run.memray"}

        def commands(n: int) -> Dict[str, List[str]]:
            program = [str(WORKLOAD), "--", str(n), str(args.depth)]
            suffix = "" if n else ".idle"  # the measured captures are the busy runs'
            out = {name: str(path) + suffix for name, path in outputs.items()}
            found = {
                "plain": [py, "-m", "cytool", "run", "--prebuilt", str(module), *program],
                "profile": [py, "-m", "cytool", "profile", "--no-summary", "-o", out["profile"], *program],
            }
            if args.baseline is not None:
                found["baseline"] = [py, "-m", "cytool", "profile", "--no-summary", "-o", out["baseline"], *program]
            if use_memray:
                found["memray"] = [py, "-m", "memray", "run", "-q", "-f", "-o", out["memray"],
                                   "-m", "cytool", "run", "--prebuilt", str(module), *program]  # fmt: skip
            return found

        busy, idle = commands(args.n), commands(0)
        envs = {name: base_env if name == "baseline" else None for name in busy}
        for name in busy:  # warm-up: build caches, page cache
            run_once(busy[name], work, envs[name])
        wall: Dict[str, List[float]] = {name: [] for name in busy}
        cpu: Dict[str, List[float]] = {name: [] for name in busy}
        idle_wall: Dict[str, List[float]] = {name: [] for name in busy}
        idle_cpu: Dict[str, List[float]] = {name: [] for name in busy}
        names = list(busy)
        for round_ in range(args.runs):
            order = names if round_ % 2 == 0 else names[::-1]  # drift hits every command alike
            for name in order:
                w, c = run_once(busy[name], work, envs[name])
                wall[name].append(w)
                cpu[name].append(c)
                w, c = run_once(idle[name], work, envs[name])
                idle_wall[name].append(w)
                idle_cpu[name].append(c)
                print(f"{name}: {wall[name][-1]:.3f} s wall, {cpu[name][-1]:.3f} s CPU", file=sys.stderr)
        # the other side: a malloc-heavy nogil loop under 3 Python frames (examples/bench_alloc.pyx),
        # where every allocation reads the Python frames and few calls happen
        alloc_cpu: Dict[str, List[float]] = {}
        if args.baseline is not None:
            alloc = REPO / "examples" / "bench_alloc.pyx"
            alloc_cmds = {name: [py, "-m", "cytool", "profile", "--no-summary", "-o", str(work / f"alloc-{name}.cytrace"),
                                 str(alloc), "--", str(args.alloc_n), "1"] for name in ("profile", "baseline")}
            alloc_cpu = {name: [] for name in alloc_cmds}
            for name, argv in alloc_cmds.items():
                run_once(argv, work, envs[name])
            for round_ in range(args.runs):
                for name in (("profile", "baseline") if round_ % 2 == 0 else ("baseline", "profile")):
                    alloc_cpu[name].append(run_once(alloc_cmds[name], work, envs[name])[1])
        sizes = {}
        for name in busy:
            if name == "plain":
                continue
            path = outputs[name]
            events = memray_events(path) if name == "memray" else capture_events(path)
            sizes[name] = (events, path.stat().st_size)
    load_after = load_average()
    med = {name: statistics.median(v) for name, v in wall.items()}
    med_cpu = {name: statistics.median(v) for name, v in cpu.items()}
    med_idle_cpu = {name: statistics.median(v) for name, v in idle_cpu.items()}
    work_cpu = {name: max(med_cpu[name] - med_idle_cpu[name], 1e-6) for name in busy}
    labels = {"plain": "plain `cytool run`", "profile": "`cytool profile` (this tree)",
              "baseline": f"`cytool profile` ({args.baseline_ref or args.baseline})", "memray": "`memray run`"}
    lines = [
        "# Python frames: `cytool profile` vs plain `cytool run` vs `memray run`, Python-call-heavy",
        "",
        f"Workload: `bench/pyframes_workload.pyx -- {args.n} {args.depth}`: Cython calls the Python function "
        f"`recurse` (bench/pyframes_calls.py) {args.n:,} times; each call recurses {args.depth} to {args.depth + 3} "
        "Python calls deep, then builds strings and a list (list comprehension, %-formatting, slicing, join; "
        "mostly pymalloc blocks), and one call in 4 joins a string big enough for malloc (> 512 bytes). Default settings of each tool (cytool: native "
        "allocators with native and Python frames; memray: Python allocations with Python frames, no `--native`). "
        f"Medians of {args.runs} interleaved rounds after a warm-up; CPU is user + system time of the whole command "
        "(os.wait4), steadier than wall time on a shared machine; \"workload CPU\" subtracts each command's median "
        "CPU with N=0 (interpreter start, imports, tracer set-up, memray's post-processing of an empty run).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
        f"{platform.python_version()}; load average before {load_before}, after {load_after} (other engineers' "
        f"builds and tests ran at the same time). {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| command | wall s | wall / plain | CPU s | CPU / plain | workload CPU / plain | events | bytes | B/event |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in busy:
        events, size = sizes.get(name, (0, 0))
        lines.append(
            f"| {labels[name]} | {med[name]:.3f} | {med[name] / med['plain']:.2f}x | {med_cpu[name]:.3f} | "
            f"{med_cpu[name] / med_cpu['plain']:.2f}x | {work_cpu[name] / work_cpu['plain']:.2f}x | "
            + (f"{events:,} | {size:,} | {size / max(events, 1):.3f} |" if name != "plain" else "- | - | - |")
        )
    lines += ["", "Target: profile at most 1.5x plain (issue 14, target 3)."]
    for label, ratio in (("wall", med["profile"] / med["plain"]), ("CPU", med_cpu["profile"] / med_cpu["plain"]),
                         ("workload CPU", work_cpu["profile"] / work_cpu["plain"])):
        lines.append(f"- {label}: {ratio:.2f}x: {'met' if ratio <= 1.5 else 'NOT met'}")
    if "baseline" in busy:
        paired = statistics.median(a / b for a, b in zip(cpu["profile"], cpu["baseline"]))
        lines.append(f"- this tree / baseline, the median of the rounds' CPU ratios: {paired:.2f}")
    if alloc_cpu:
        paired = statistics.median(a / b for a, b in zip(alloc_cpu["profile"], alloc_cpu["baseline"]))
        lines += [
            "",
            f"The other side, few calls and many allocations: `examples/bench_alloc.pyx -- {args.alloc_n} 1` (mallocs and "
            "frees in a `nogil` loop, 3 Python frames above each) under `cytool profile`, CPU s (median of "
            f"{args.runs} interleaved runs): this tree {statistics.median(alloc_cpu['profile']):.3f}, baseline "
            f"{statistics.median(alloc_cpu['baseline']):.3f}; the median of the rounds' ratios {paired:.3f}.",
        ]
    lines.append("")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
