"""Benchmark for reports over a process tree (issue 14, target 6): a program with a
multiprocessing pool of 4 forked workers (tests/fixtures/processes/pool_main.py, 8 tasks
of pool_work.work: N blocks of 1000 bytes each, freed, one block kept) profiled with
`cytool profile --follow-fork`, then `cytool report` over its 5 captures (one merged
report: table and JSON) against the 5 reports of the single captures one after the other.
Medians of REPEATS whole processes, round-robin. Results: bench/results/processes.md.
Environment: BENCH_POOL_N (blocks per task, default 50,000), BENCH_REPEATS (default 5).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import machine_line, median_ms, round_robin, write_result

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "processes"
N = int(os.environ.get("BENCH_POOL_N", "50000"))
TASKS = 8
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))


def main() -> int:
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="cytool-bench-pool-") as scratch_text:
        scratch = Path(scratch_text)
        for name in ("pool_main.py", "pool_work.pyx"):
            shutil.copy(FIXTURE / name, scratch / name)
        env = dict(os.environ, CYTOOL_CACHE_DIR=str(scratch / "cache"))
        subprocess.run([python, "-m", "cytool", "build", "pool_work.pyx"], cwd=scratch, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        profile = [python, "-m", "cytool", "profile", "--no-summary", "--follow-fork", "-o", "pool.cytrace",
                   "pool_main.py", str(N), str(TASKS)]
        start = time.perf_counter()
        subprocess.run(profile, cwd=scratch, env=env, check=True, stdout=subprocess.DEVNULL)
        profile_s = time.perf_counter() - start
        captures = [scratch / "pool.cytrace", *sorted(p for p in scratch.glob("pool.cytrace.*") if p.suffix[1:].isdigit())]
        sizes = [p.stat().st_size for p in captures]
        report = [python, "-m", "cytool", "report"]
        commands = {
            "merged report, table (5 captures)": [*report, *map(str, captures)],
            "merged report, json (5 captures)": [*report, *map(str, captures), "-f", "json", "-o", str(scratch / "m.json")],
            "5 single reports, table, one after the other": [
                "sh", "-c", " && ".join(" ".join([*report, str(c), ">/dev/null"]) for c in captures)],
        }
        here = os.getcwd()
        os.chdir(scratch)
        try:
            samples = round_robin(commands, REPEATS, env=env, warmup=1)
        finally:
            os.chdir(here)
        import json

        merged = json.loads((scratch / "m.json").read_text())

    medians = {name: median_ms(values) for name, values in samples.items()}
    lines = [
        "# cytool report over a process tree: a 4-worker multiprocessing pool",
        "",
        f"Machine: {machine_line()}; load average at the end {os.getloadavg()[0]:.1f} (other engineers' builds "
        "and tests ran at the same time: wall times carry their noise).",
        "",
        f"Workload: `pool_main.py {N} {TASKS}`: a `multiprocessing` pool of 4 forked workers runs {TASKS} tasks, each "
        f"{N:,} mallocs of 1000 bytes (then freed) and one kept block, profiled with `cytool profile --follow-fork` "
        f"({profile_s:.1f} s): {len(captures)} captures, {sum(sizes):,} bytes, {merged['totals']['events']:,} events. "
        f"Method: {REPEATS} runs each, round-robin after a warm-up, medians; every command is a whole process.",
        "",
        "| command | median ms |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {value:.0f} |" for name, value in medians.items()]
    lines += [
        "",
        "| process | parent | events | allocations | bytes |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [f"| {p['pid']} | {p['parent_pid']} | {p['events']:,} | {p['count']:,} | {p['bytes']:,} |" for p in merged["processes"]]
    lines += [
        f"| merged | | {merged['totals']['events']:,} | {merged['totals']['count']:,} | {merged['totals']['bytes']:,} |",
        "",
        f"The merged report costs {medians['merged report, table (5 captures)'] / medians['5 single reports, table, one after the other']:.2f}x "
        "the five single reports run one after the other (one interpreter start instead of five).",
        "",
    ]
    path = write_result("processes.md", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
