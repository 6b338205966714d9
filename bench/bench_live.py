"""Benchmark: what the live view costs the traced program. `cytool profile` of
examples/bench_alloc.pyx with and without a live view following its capture (the view is
`cytool live CAPTURE --pid PID` on a pseudo-terminal, a process of its own, as
`cytool profile --live` starts it), runs interleaved; the program's CPU time (user + sys
of the profiled process, from os.wait4: the view is not its child here) and wall time,
medians. Writes bench/results/live.md.

    python bench/bench_live.py [--n 2000000] [--threads 1] [--runs 5]
"""
from __future__ import annotations

import argparse
import fcntl
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
WORKLOAD = REPO / "examples" / "bench_alloc.pyx"
RESULTS = REPO / "bench" / "results" / "live.md"


def run_profile(capture: Path, n: int, threads: int, live: bool) -> Tuple[float, float, float]:
    """(program CPU s, program wall s, view CPU s) of one traced run."""
    if capture.exists():
        capture.unlink()
    command = [sys.executable, "-m", "cytool", "profile", "--no-summary", "-o", str(capture), str(WORKLOAD), "--",
               str(n), str(threads)]
    start = time.perf_counter()
    program = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    view = None
    if live:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        view = subprocess.Popen([sys.executable, "-m", "cytool", "live", str(capture), "--pid", str(program.pid)],
                                stdin=slave, stdout=slave, stderr=slave, close_fds=True)
        os.close(slave)

        def drain() -> None:
            try:
                while os.read(master, 65536):
                    pass
            except OSError:
                pass

        threading.Thread(target=drain, daemon=True).start()
    _, status, usage = os.wait4(program.pid, 0)
    wall = time.perf_counter() - start
    view_cpu = 0.0
    if view is not None:
        time.sleep(1.0)  # the view reads the end of the capture
        os.write(master, b"q")
        _, _, view_usage = os.wait4(view.pid, 0)
        view_cpu = view_usage.ru_utime + view_usage.ru_stime
        os.close(master)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the profiled run failed: {command}")
    return usage.ru_utime + usage.ru_stime, wall, view_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results: Dict[bool, List[Tuple[float, float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "bench.cytrace"
        run_profile(capture, 1000, 1, False)  # build the module once
        for _ in range(args.runs):
            for live in (False, True):
                results[live].append(run_profile(capture, args.n, args.threads, live))
    load = os.getloadavg()
    rows = []
    for live in (False, True):
        cpu = statistics.median(r[0] for r in results[live])
        wall = statistics.median(r[1] for r in results[live])
        view = statistics.median(r[2] for r in results[live])
        rows.append((live, cpu, wall, view))
    base_cpu, base_wall = rows[0][1], rows[0][2]
    lines = [
        "# Live view: the traced program's cost",
        "",
        f"`python bench/bench_live.py --n {args.n} --threads {args.threads} --runs {args.runs}` "
        f"({platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
        f"at the end; five engineers share this machine). `cytool profile` of examples/bench_alloc.pyx "
        f"({args.n:,} mallocs and frees per thread), with and without `cytool live` following its capture "
        "on a pseudo-terminal (a process of its own, as `profile --live` starts it); runs interleaved, medians.",
        "",
        "| run | program CPU (user+sys) | ratio | program wall | ratio | the view's own CPU |",
        "|---|---|---|---|---|---|",
    ]
    for live, cpu, wall, view in rows:
        lines.append(f"| {'with the live view' if live else 'profile alone'} | {cpu:.2f} s | {cpu / base_cpu:.2f} | "
                     f"{wall:.2f} s | {wall / base_wall:.2f} | {view:.2f} s |")
    lines += ["", "Every run (program CPU s, wall s, view CPU s):", ""]
    for live in (False, True):
        lines.append(f"- {'live' if live else 'alone'}: " + ", ".join(f"({c:.2f}, {w:.2f}, {v:.2f})" for c, w, v in results[live]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
