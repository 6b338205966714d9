"""Benchmark for streaming reports (issue 14, target 4): `cytool report` (table, JSON,
HTML) on a ~50 M-event capture of a realistic mixed workload: wall time and peak RSS,
before (the reader of a baseline git ref, default `main`, which held every event in
memory) and after (this tree), and `heaptrack_print` on heaptrack's trace of the same
workload, side by side in one run. Results: bench/results/stream_report.md.

Workload (bench/mixed_workload.pyx, shared with bench_scale.py; run as mixed.pyx): a Cython loop that replaces one of 4,096 heap blocks per
iteration (sizes 16-2,000 bytes from an inlined helper, 16-215 bytes from another line),
grows a buffer with realloc (64 B doubling to 1 MiB, then again), and every 8th iteration
builds a dict holding a list of 40-167 items and a str, keeping the last 1,000-2,000 of
them (lists over 512 bytes go to malloc). About 2.2 events an iteration.

Method: each command is a whole process (start-up, read, symbolise, aggregate, render);
peak RSS is the child's own ru_maxrss (os.wait4); commands run round-robin, BENCH_REPEATS
times each (default 3), medians reported; the load average at the start and end is noted
(the machine is shared). Environment: BENCH_STREAM_N (iterations, default 22,800,000, about
50 M events), BENCH_REPEATS, BENCH_BASELINE_REF (default main; "" skips the baseline),
BENCH_STREAM_HUGE_N (iterations of a once-only huge run, e.g. 228,000,000 for ~500 M events;
default 0: skipped). Needs `heaptrack` (Debian package) for the heaptrack column.
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

from timing import load_average, machine_line, write_result

N = int(os.environ.get("BENCH_STREAM_N", "22800000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
BASELINE_REF = os.environ.get("BENCH_BASELINE_REF", "main")
HUGE_N = int(os.environ.get("BENCH_STREAM_HUGE_N", "0"))
REPO = Path(__file__).resolve().parent.parent

WORKLOAD = (Path(__file__).resolve().parent / "mixed_workload.pyx").read_text()  # copied as mixed.pyx


def run(argv: Sequence[str], env: Mapping[str, str], cwd: Optional[Path] = None) -> str:
    done = subprocess.run(list(argv), env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"failed ({done.returncode}): {' '.join(map(str, argv))}\n{done.stderr[-2000:]}")
    return done.stdout


def measure(argv: Sequence[str], env: Mapping[str, str]) -> Tuple[float, float, float]:
    """(wall seconds, peak RSS in MB, CPU seconds: user + system, all its threads) of one
    run of a command that must succeed."""
    start = time.perf_counter()
    child = subprocess.Popen(list(argv), env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.stderr:
        child.stderr.close()
    if child.returncode != 0:
        raise RuntimeError(f"failed ({child.returncode}): {' '.join(argv)}\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime


def baseline_tree(work: Path) -> Optional[Path]:
    """The baseline ref's cytool (Python package + C runtime) built in work/baseline."""
    if not BASELINE_REF:
        return None
    tree = work / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BASELINE_REF], stdout=subprocess.PIPE, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    run(["make", "-C", str(tree / "runtime"), f"OUT={tree / 'cytool' / '_lib'}"], os.environ)
    return tree



def main() -> int:
    python = sys.executable
    heaptrack = shutil.which("heaptrack")
    heaptrack_print = shutil.which("heaptrack_print")
    if heaptrack is None or heaptrack_print is None:
        print("heaptrack is not installed: apt-get install heaptrack (benchmark-only dependency)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="cytool-bench-stream-") as scratch:
        work = Path(scratch)
        env = dict(os.environ, CYTOOL_CACHE_DIR=str(work / "cache"))
        source = work / "mixed.pyx"
        source.write_text(WORKLOAD)
        run([python, "-m", "cytool", "build", str(source)], env)
        capture = work / "mixed.cytrace"
        run([python, "-m", "cytool", "profile", str(source), "-o", str(capture), "--no-summary", "--", str(N)], env)
        trace_stem = work / "mixed.heaptrack"
        run([heaptrack, "-o", str(trace_stem), python, "-m", "cytool", "run", str(source), "--", str(N)], env)
        traces = sorted(work.glob("mixed.heaptrack*"))
        if not traces:
            raise RuntimeError("heaptrack wrote no trace")
        trace = traces[0]

        sys.path.insert(0, str(REPO))
        from cytool.capture import read_capture

        with read_capture(capture) as c:
            events = len(c.events)

        base = baseline_tree(work)
        base_env = dict(env, PYTHONPATH=str(base)) if base else None
        commands: Dict[str, Tuple[List[str], Mapping[str, str]]] = {}
        for label, tree_env in (("after", env), ("before", base_env)):
            if tree_env is None:
                continue
            commands[f"cytool report, table ({label})"] = ([python, "-m", "cytool", "report", str(capture)], tree_env)
            commands[f"cytool report, JSON ({label})"] = (
                [python, "-m", "cytool", "report", str(capture), "-f", "json", "-o", str(work / f"r-{label}.json")], tree_env)
            commands[f"cytool report, HTML ({label})"] = (
                [python, "-m", "cytool", "report", str(capture), "-o", str(work / f"r-{label}.html")], tree_env)
        commands["heaptrack_print (its trace of the same workload)"] = ([heaptrack_print, str(trace)], env)

        load_before = load_average()
        samples: Dict[str, List[Tuple[float, float, float]]] = {name: [] for name in commands}
        for _ in range(REPEATS):
            for name, (argv, cmd_env) in commands.items():
                samples[name].append(measure(argv, cmd_env))
        load_after = load_average()
        same_json = None
        if base:
            same_json = (work / "r-after.json").read_bytes() == (work / "r-before.json").read_bytes()

        huge = ""
        if HUGE_N:
            big = work / "huge.cytrace"
            run([python, "-m", "cytool", "profile", str(source), "-o", str(big), "--no-summary", "--", str(HUGE_N)], env)
            with read_capture(big) as c:
                big_events = len(c.events)
            size = big.stat().st_size
            wall, rss, cpu = measure([python, "-m", "cytool", "report", str(big)], env)
            huge = (f"Once, {HUGE_N:,} iterations: {big_events:,} events, capture {size / 1e9:.2f} GB: "
                    f"`cytool report` (table) {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss:.0f} MB.")
            big.unlink()
        sizes = {"cytool capture": capture.stat().st_size, "heaptrack trace": trace.stat().st_size}

    def median(name: str, index: int) -> float:
        return statistics.median(s[index] for s in samples[name])

    lines = [
        "# cytool report on a 50 M-event capture: streamed reader and aggregator",
        "",
        f"Machine: {machine_line()}; load average {load_before} at the start, {load_after} at the end "
        "(a shared machine: other work ran at the same time). "
        f"Workload: bench/bench_stream_report.py's mixed.pyx, {N:,} iterations (mixed sizes 16-2,000 bytes, a "
        f"realloc-grown buffer, Python containers); the cytool capture holds {events:,} events. "
        f"{REPEATS} runs of each command, round-robin; medians. Each command is a whole process (start-up, read, "
        "symbolise, aggregate, render); peak RSS is the child's ru_maxrss and CPU its user + system "
        "time, all threads (os.wait4); on a busy machine wall time is mostly waiting for a core. "
        f"Before: `{BASELINE_REF}`'s reader and aggregator (every event in memory); after: this tree (events "
        "streamed: decoded again batch by batch, merged and replayed on two threads).",
        "",
        "| command | median wall s | median CPU s (user + sys) | median peak RSS MB |",
        "|---|---:|---:|---:|",
    ]
    for name in commands:
        lines.append(f"| {name} | {median(name, 0):.2f} | {median(name, 2):.2f} | {median(name, 1):.0f} |")
    lines += ["", "| file | bytes |", "|---|---:|"]
    for name, value in sizes.items():
        lines.append(f"| {name} | {value:,} |")
    after = [n for n in commands if n.endswith("(after)")]
    worst_wall = max(median(n, 0) for n in after)
    worst_rss = max(median(n, 1) for n in after)
    heap = median("heaptrack_print (its trace of the same workload)", 0)
    lines += [
        "",
        f"After, slowest format: {worst_wall:.2f} s (target <= 4 s: {'met' if worst_wall <= 4 else 'NOT met'}), "
        f"largest peak RSS {worst_rss:.0f} MB (target <= 300 MB: {'met' if worst_rss <= 300 else 'NOT met'}); "
        f"heaptrack_print {heap:.2f} s: cytool is {heap / worst_wall:.1f}x "
        f"{'faster' if heap > worst_wall else 'slower'} (target: faster).",
    ]
    if base:
        before = max(median(n.replace("(after)", "(before)"), 0) for n in after)
        lines.append(f"Before, slowest format: {before:.2f} s; the JSON reports before and after are "
                     f"{'identical' if same_json else 'DIFFERENT'}.")
    if huge:
        lines += ["", huge]
    lines.append("")
    path = write_result("stream_report.md", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
