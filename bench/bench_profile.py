"""Benchmark: cost of `cytool profile` against plain `cytool run` and `memray run --native`
on the same built module (examples/bench_alloc.pyx: millions of small mallocs and frees
without the GIL, in 1 and 4 threads), and what a SIGKILL loses. Writes
bench/results/profile.md.

    python bench/bench_profile.py [--n 2000000] [--runs 5] [--threads 1,4] [--no-memray]
                                  [--baseline DIR] [--kills 10]

Targets (issue 3): profile overhead (profile time / plain time) at most half of memray
--native's; capture bytes per event no larger than memray's; the 4-thread overhead at most
1.5x the 1-thread one. Issue 12: the default settings no slower than a baseline cytool
(--baseline: a source tree of an earlier cytool with its runtime built in place, e.g. the
main branch), and at most the last ~10 ms of events lost at SIGKILL (bench/kill_workload.pyx
killed N times at a random moment, busy and paced). Runs of the tools are interleaved;
medians are reported.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from timing import build_baseline, compile_bytecode  # noqa: E402

WORKLOAD = REPO / "examples" / "bench_alloc.pyx"
KILL_WORKLOAD = REPO / "bench" / "kill_workload.pyx"
RESULTS = REPO / "bench" / "results" / "profile.md"


def baseline_env(baseline: Optional[Path], cache: Path) -> Dict[str, str]:
    """The environment that runs the baseline cytool (its own build cache)."""
    env = dict(os.environ)
    if baseline is not None:
        env["PYTHONPATH"] = str(baseline)
        env["CYTOOL_CACHE_DIR"] = str(cache)
    return env



CPU_SECONDS: Dict[str, List[float]] = {}  # command label -> CPU seconds (user + system) of its runs


def timed(argv: List[str], cwd: Path, env: Optional[Dict[str, str]] = None, label: str = "") -> float:
    """Wall seconds of one run; its CPU seconds go to CPU_SECONDS[label] when labelled."""
    env = dict(env or os.environ)
    env.pop("CYTOOL_PROFILE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr}")
    if label:
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        CPU_SECONDS.setdefault(label, []).append(cpu)
    return elapsed


def memray_available() -> bool:
    try:
        import memray  # noqa: F401
    except ImportError:
        return False
    return True


def capture_events(path: Path) -> int:
    from cytool.capture import read_capture

    with read_capture(path) as capture:
        return capture.stats.events if capture.stats else len(capture.events)


def memray_events(path: Path) -> int:
    from memray import FileReader

    return FileReader(str(path)).metadata.total_allocations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000_000, help="mallocs per thread")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", default="1,4")
    parser.add_argument("--no-memray", action="store_true")
    parser.add_argument("--baseline", type=Path, help="an earlier cytool source tree, built in place, to compare with")
    parser.add_argument("--baseline-ref", metavar="REF",
                        help="build the git revision REF of this repository (e.g. main) as the baseline")
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs per workload for the loss window")
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

    result = build_module(WORKLOAD, BuildOptions(opt_level="2"))
    use_memray = not args.no_memray and memray_available()
    py = sys.executable
    rows: List[Dict[str, object]] = []
    kills: Dict[str, Dict[str, List[Dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="cytool-bench-") as tmp:
        work = Path(tmp)
        base_env = baseline_env(args.baseline, work / "baseline-cache")
        for nthreads in [int(t) for t in args.threads.split(",")]:
            program = ["--", str(args.n), str(nthreads)]
            ours = work / "bench.cytrace"
            theirs = work / "bench.memray"
            commands = {
                "plain": [py, "-m", "cytool", "run", "--prebuilt", str(result.module_path), str(WORKLOAD), *program],
                "profile": [py, "-m", "cytool", "profile", "--no-summary", "-o", str(ours), str(WORKLOAD), *program],
            }
            # the other settings: exact event times (the per-event TSC read), and zstd level 3
            variants = {"exact": ["--time-resolution", "1"], "compact": ["--compression", "3"]}
            variant_paths = {name: work / f"{name}.cytrace" for name in variants}
            for name, flags in variants.items():
                commands[name] = [
                    py, "-m", "cytool", "profile", "--no-summary", *flags, "-o", str(variant_paths[name]),
                    str(WORKLOAD), *program,
                ]  # fmt: skip
            if args.baseline is not None:  # the same default profile, by the earlier cytool
                commands["baseline"] = [
                    py, "-m", "cytool", "profile", "--no-summary", "-o", str(work / "baseline.cytrace"),
                    str(WORKLOAD), *program,
                ]  # fmt: skip
            if use_memray:
                commands["memray"] = [
                    py, "-m", "memray", "run", "--native", "-q", "-f", "-o", str(theirs),
                    "-m", "cytool", "run", "--prebuilt", str(result.module_path), str(WORKLOAD), *program,
                ]  # fmt: skip
            # the same commands with no work (N=0): interpreter start, imports, tracer set-up
            renames = {str(args.n): "0", str(ours): str(ours) + ".idle", str(theirs): str(theirs) + ".idle",
                       str(work / "baseline.cytrace"): str(work / "baseline.cytrace.idle"),
                       **{str(p): str(p) + ".idle" for p in variant_paths.values()}}  # fmt: skip
            envs = {name: base_env if name == "baseline" else None for name in commands}
            idle = {name: [renames.get(arg, arg) for arg in argv] for name, argv in commands.items()}
            times: Dict[str, List[float]] = {name: [] for name in commands}
            idle_times: Dict[str, List[float]] = {name: [] for name in commands}
            for name, argv in commands.items():  # warm-up: caches, page cache
                timed(argv, work, envs[name])
            order = list(commands)
            if "baseline" in order:  # the two defaults back to back, in turns first (drift hits both alike)
                order.remove("baseline")
                order.insert(order.index("profile") + 1, "baseline")
            for round_ in range(args.runs):
                names = list(order)
                if round_ % 2 and "baseline" in names:
                    i = names.index("profile")
                    names[i], names[i + 1] = names[i + 1], names[i]
                for name in names:
                    argv = commands[name]
                    times[name].append(timed(argv, work, envs[name], label=f"{nthreads}:{name}"))
                    idle_times[name].append(timed(idle[name], work, envs[name]))
                    print(f"threads={nthreads} {name}: {times[name][-1]:.3f} s (idle {idle_times[name][-1]:.3f} s)", file=sys.stderr)
            medians = {name: statistics.median(values) for name, values in times.items()}
            idle_medians = {name: statistics.median(values) for name, values in idle_times.items()}
            work_medians = {name: max(medians[name] - idle_medians[name], 1e-6) for name in medians}
            row: Dict[str, object] = {"threads": nthreads, **{f"{k}_s": v for k, v in medians.items()}}
            row.update({f"{k}_idle_s": v for k, v in idle_medians.items()})
            row["profile_overhead"] = medians["profile"] / medians["plain"]
            row["profile_work_overhead"] = work_medians["profile"] / work_medians["plain"]
            events = capture_events(ours)
            row["profile_events"] = events
            row["profile_bytes"] = ours.stat().st_size
            row["profile_bpe"] = ours.stat().st_size / max(events, 1)
            for name, path in variant_paths.items():
                row[f"{name}_s"] = medians[name]
                row[f"{name}_overhead"] = medians[name] / medians["plain"]
                row[f"{name}_work_overhead"] = work_medians[name] / work_medians["plain"]
                row[f"{name}_bytes"] = path.stat().st_size
                row[f"{name}_bpe"] = path.stat().st_size / max(capture_events(path), 1)
            if args.baseline is not None:
                row["baseline_s"] = medians["baseline"]
                row["baseline_overhead"] = medians["baseline"] / medians["plain"]
                row["baseline_work_overhead"] = work_medians["baseline"] / work_medians["plain"]
                row["baseline_bpe"] = (work / "baseline.cytrace").stat().st_size / max(capture_events(work / "baseline.cytrace"), 1)
                row["baseline_cpu_s"] = statistics.median(CPU_SECONDS[f"{nthreads}:baseline"])
                row["profile_cpu_s"] = statistics.median(CPU_SECONDS[f"{nthreads}:profile"])
                # each round ran the two back to back: the median of the rounds' ratios
                row["paired_wall"] = statistics.median(a / b for a, b in zip(times["profile"], times["baseline"]))
                row["paired_cpu"] = statistics.median(
                    a / b for a, b in zip(CPU_SECONDS[f"{nthreads}:profile"], CPU_SECONDS[f"{nthreads}:baseline"]))
            if use_memray:
                row["memray_overhead"] = medians["memray"] / medians["plain"]
                row["memray_work_overhead"] = work_medians["memray"] / work_medians["plain"]
                mevents = memray_events(theirs)
                row["memray_events"] = mevents
                row["memray_bytes"] = theirs.stat().st_size
                row["memray_bpe"] = theirs.stat().st_size / max(mevents, 1)
            rows.append(row)
        variants = {"this cytool": None}
        if args.baseline is not None:
            variants["baseline"] = base_env
        for label, env in variants.items():
            kills[label] = {mode: measure_kills(py, work, mode, args.kills, env) for mode in ("busy", "paced")}
    write_report(args, rows, use_memray, kills)
    print(args.output.read_text())
    return 0


def measure_kills(py: str, work: Path, mode: str, count: int, env: Optional[Dict[str, str]]) -> List[Dict[str, float]]:
    """SIGKILL `cytool profile bench/kill_workload.pyx -- MODE` at a random moment after it
    started allocating, `count` times: how old the newest event in the capture was at the
    kill (ms), and what the reader says is missing."""
    from cytool.capture import read_capture

    env = dict(env or os.environ)
    env.pop("CYTOOL_PROFILE", None)
    capture = work / f"killed-{mode}.cytrace"
    found = []
    rng = random.Random(12)
    for _ in range(count + 1):  # the first run builds the module: not counted
        capture.unlink(missing_ok=True)
        proc = subprocess.Popen([py, "-m", "cytool", "profile", "--no-summary", "-o", str(capture), str(KILL_WORKLOAD),
                                 "--", mode], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        while proc.stdout.readline().strip() != "ready":
            if proc.poll() is not None:
                raise SystemExit(f"the kill workload ended early ({proc.returncode})")
        time.sleep(rng.uniform(0.3, 0.9))
        killed_at = time.time_ns()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with read_capture(capture) as c:
            last = c.events[-1].time_ns if len(c.events) else 0  # (in time order)
            found.append({
                "window_ms": max(0.0, (killed_at - c.header.start_time_ns - last) / 1e6),
                "events": float(len(c.events)),
                "missing": float(c.missing_events),
                "said": float("may be missing" in c.truncation_message()),
            })
    return found[1:]


def write_report(args: argparse.Namespace, rows: List[Dict[str, object]], use_memray: bool,
                 kills: Dict[str, Dict[str, List[Dict[str, float]]]]) -> None:
    lines = [
        "# `cytool profile` vs plain `cytool run` vs `memray run --native`",
        "",
        f"Workload: `examples/bench_alloc.pyx`, {args.n:,} mallocs per thread (16..271 bytes, a ring of 4096 live "
        "blocks, one free per malloc), no GIL. Wall time of the whole command (interpreter start included), "
        f"median of {args.runs} interleaved runs after one warm-up. Built at -O2 once, from the cache.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}"
        + (f", memray {memray_version()}" if use_memray else ", memray not installed"),
        "",
        "Wall time (whole command, median):",
        "",
        "| threads | plain s | profile s | memray --native s | profile overhead | memray overhead |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = use_memray
        lines.append(
            f"| {r['threads']} | {r['plain_s']:.3f} | {r['profile_s']:.3f} | {r['memray_s']:.3f} | "
            f"{r['profile_overhead']:.2f}x | {r['memray_overhead']:.2f}x |"
            if m
            else f"| {r['threads']} | {r['plain_s']:.3f} | {r['profile_s']:.3f} | - | {r['profile_overhead']:.2f}x | - |"
        )
    lines += [
        "",
        "The workload alone: each command's median time with N=0 (interpreter start, imports, tracer "
        "set-up and, for memray, its post-run compression of an empty run) subtracted first:",
        "",
        "| threads | plain idle s | profile idle s | memray idle s | profile work overhead | memray work overhead |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if use_memray:
            lines.append(
                f"| {r['threads']} | {r['plain_idle_s']:.3f} | {r['profile_idle_s']:.3f} | {r['memray_idle_s']:.3f} | "
                f"{r['profile_work_overhead']:.2f}x | {r['memray_work_overhead']:.2f}x |"
            )
        else:
            lines.append(f"| {r['threads']} | {r['plain_idle_s']:.3f} | {r['profile_idle_s']:.3f} | - | {r['profile_work_overhead']:.2f}x | - |")
    lines += [
        "",
        "Capture size:",
        "",
        "| threads | profile events | profile bytes | profile B/event | memray events | memray bytes | memray B/event |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if use_memray:
            lines.append(
                f"| {r['threads']} | {r['profile_events']:,} | {r['profile_bytes']:,} | {r['profile_bpe']:.3f} | "
                f"{r['memray_events']:,} | {r['memray_bytes']:,} | {r['memray_bpe']:.3f} |"
            )
        else:
            lines.append(f"| {r['threads']} | {r['profile_events']:,} | {r['profile_bytes']:,} | {r['profile_bpe']:.3f} | - | - | - |")
    lines += [
        "",
        "Other settings, same runs: `--time-resolution 1` (exact: every event reads the TSC, so events of "
        "different threads are ordered to the ns; the format-1 default) and `--compression 3` (zstd level 3, 1 MiB "
        "of events per thread):",
        "",
        "| threads | setting | time s | overhead | work overhead | bytes | B/event |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for name, label in (("exact", "`--time-resolution 1`"), ("compact", "`--compression 3`")):
            lines.append(
                f"| {r['threads']} | {label} | {r[f'{name}_s']:.3f} | {r[f'{name}_overhead']:.2f}x | "
                f"{r[f'{name}_work_overhead']:.2f}x | {r[f'{name}_bytes']:,} | {r[f'{name}_bpe']:.3f} |"
            )
    lines += ["", "Targets:", ""]
    for r in rows:
        if use_memray:
            for label, ours, theirs in (
                ("wall", r["profile_overhead"], r["memray_overhead"]),
                ("workload", r["profile_work_overhead"], r["memray_work_overhead"]),
            ):
                ok = ours <= theirs / 2  # type: ignore[operator]
                lines.append(
                    f"- {r['threads']} thread(s), {label}: profile overhead {ours:.2f}x vs half of memray's "
                    f"{theirs / 2:.2f}x: {'met' if ok else 'NOT met'}"  # type: ignore[operator]
                )
            ok = r["profile_bpe"] <= r["memray_bpe"]  # type: ignore[operator]
            lines.append(
                f"- {r['threads']} thread(s): capture {r['profile_bpe']:.3f} B/event vs memray {r['memray_bpe']:.3f}: "
                f"{'met' if ok else 'NOT met'}"
            )
    by_threads = {r["threads"]: r for r in rows}
    if 1 in by_threads and 4 in by_threads:
        for label, key in (("wall", "profile_overhead"), ("workload", "profile_work_overhead")):
            ratio = by_threads[4][key] / by_threads[1][key]  # type: ignore[operator]
            lines.append(
                f"- {label}: 4-thread overhead / 1-thread overhead = {ratio:.2f} (target <= 1.5): "
                f"{'met' if ratio <= 1.5 else 'NOT met'}"
            )
    if args.baseline is not None:
        lines += [
            "",
            "The default settings against the baseline cytool ("
            + (f"git revision `{args.baseline_ref}`" if args.baseline_ref else str(args.baseline))
            + "), same runs, same workload:",
            "",
            "| threads | baseline s | this s | baseline CPU s | this CPU s | baseline overhead | this overhead | "
            "baseline work overhead | this work overhead | baseline B/event | this B/event |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['threads']} | {r['baseline_s']:.3f} | {r['profile_s']:.3f} | {r['baseline_cpu_s']:.3f} | "
                f"{r['profile_cpu_s']:.3f} | {r['baseline_overhead']:.2f}x | {r['profile_overhead']:.2f}x | "
                f"{r['baseline_work_overhead']:.2f}x | {r['profile_work_overhead']:.2f}x | "
                f"{r['baseline_bpe']:.3f} | {r['profile_bpe']:.3f} |"
            )
        lines.append("")
        for r in rows:
            wall, cpu = r["paired_wall"], r["paired_cpu"]
            lines.append(
                f"- {r['threads']} thread(s): this default / baseline default, the median of the {args.runs} rounds' "
                f"ratios (each round ran both back to back): {wall:.3f} wall, {cpu:.3f} CPU time (user + system of "
                f"the whole command) (target: not worse, within this machine's noise, <= 1.05): "
                f"{'met' if max(wall, cpu) <= 1.05 else 'NOT met'}"  # type: ignore[type-var]
            )
    if kills:
        lines += [
            "",
            f"SIGKILL loss window: `cytool profile bench/kill_workload.pyx -- busy|paced` killed {args.kills} times at a "
            "random moment 0.3-0.9 s after it started allocating; the window is how old the newest event of the "
            "capture was at the kill (1 ms clock ticks, so up to 1 ms too much). \"missing\" is what the report "
            "counts as recorded but not in the file (from the tracer's progress marks):",
            "",
            "| cytool | workload | median window ms | max window ms | median events read | median missing counted | "
            "report says events may be missing |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for label, modes in kills.items():
            for mode, found in modes.items():
                windows = [k["window_ms"] for k in found]
                lines.append(
                    f"| {label} | {mode} | {statistics.median(windows):.1f} | {max(windows):.1f} | "
                    f"{statistics.median(k['events'] for k in found):,.0f} | "
                    f"{statistics.median(k['missing'] for k in found):,.0f} | "
                    f"{sum(k['said'] for k in found):.0f} of {len(found)} |"
                )
        mine = [k["window_ms"] for found in kills["this cytool"].values() for k in found]
        lines.append("")
        lines.append(
            f"- loss window at SIGKILL: median {statistics.median(mine):.1f} ms, at most {max(mine):.1f} ms over "
            f"{len(mine)} kills (target: ~10 ms: an event waits at most a 5 ms tick after it is 5 ms old; with a "
            f"chunk still on its way to the file, within 20 ms): {'met' if max(mine) <= 20 else 'NOT met'}"
        )
    if use_memray:
        lines += ["", "The other settings against memray's capture (for information; the targets are for the default):", ""]
        for r in rows:
            for name, label in (("exact", "--time-resolution 1"), ("compact", "--compression 3")):
                ratio = r[f"{name}_bpe"] / r["memray_bpe"]  # type: ignore[operator]
                lines.append(f"- {r['threads']} thread(s), `{label}`: {r[f'{name}_bpe']:.3f} B/event, {ratio:.2f}x memray's")
    lines += [
        "",
        "Notes: by default event times come from a clock thread ticking every 1 ms (one memory "
        "read per event; the time field is a flag bit that is almost never set), events are "
        "stored by column (heads, times, addresses, sizes, stacks) in independent zstd frames of "
        "up to 256 KiB per thread, handed to the writer when full or when their oldest event is 5 ms "
        "old at the writer's 5 ms tick (the threads that did not run, by the writer itself; a progress "
        "mark every 10 ms), and the reader orders the events of "
        "different threads within a tick so that every address keeps a possible history "
        "(runtime/FORMAT.md, \"Order\"). memray "
        "keeps no per-event time (one lock orders all threads) and compresses its file after "
        "the run, inside its wall time. Sizes are of the files as left on disk. The machine is "
        "shared, so single runs are noisy: compare within one table.",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines), encoding="utf-8")


def memray_version() -> str:
    try:
        from importlib.metadata import version

        return version("memray")
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
