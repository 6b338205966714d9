"""Benchmark for the debugger's Python agent (gdb/cytool_gdb_agent.py, issue 11).

The agent traces Python code with sys.settrace while a Python breakpoint or a
Python-level step needs it. This measures what that costs a Python workload (many small
function calls and loop lines), in a child process per setting, medians of REPEATS:
  * no agent (the program as it runs under gdb with no Python breakpoint)
  * agent with a function breakpoint that never matches (`cy-break -p nosuch.func`)
  * agent with a line breakpoint in another file (`cy-break other.py:1`)
  * agent with a line breakpoint in the workload's file, on a line never reached
    (the worst case: every line of that file's code is traced)
on this interpreter and on those named by BENCH_PYTHONS (comma-separated paths).
Results: bench/results/debug_agent.md.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

from timing import machine_line, write_result

REPO = Path(__file__).resolve().parent.parent
AGENT = REPO / "gdb" / "cytool_gdb_agent.py"
REPEATS = int(os.environ.get("BENCH_REPEATS", "7"))
SETTINGS = {
    "no agent": None,
    "agent, function breakpoint (no match)": ("function", "nosuch.func"),
    "agent, line breakpoint in another file": ("line", "other.py:1"),
    "agent, line breakpoint in the workload, never reached": ("line", "THIS:NEVER"),
}


def workload() -> None:
    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    total = 0
    for i in range(200000):
        total += i % 7
        if total < 0:
            total = -1  # never runs: the worst case puts a breakpoint here
    fib(22)


def child(setting: str) -> None:
    spec = SETTINGS[setting]
    if spec is not None:
        module = types.ModuleType("_cytool_gdb_agent")
        exec(compile(AGENT.read_text(), str(AGENT), "exec"), module.__dict__)
        agent = module.agent
        kind, value = spec
        if kind == "function":
            agent.set_function_break(1, value)
        else:
            filename, line = value.rsplit(":", 1)
            if filename == "THIS":
                source = Path(__file__).read_text().split("\n")
                filename, line = __file__, str(next(i for i, t in enumerate(source, 1) if "total = -1  #" in t))
            agent.set_line_break(1, filename, int(line))
    start = time.perf_counter()
    workload()
    print(time.perf_counter() - start)


def measure(python: str) -> dict:
    samples = {name: [] for name in SETTINGS}
    for _ in range(REPEATS):
        for name in SETTINGS:
            done = subprocess.run([python, __file__, "--child", name], stdout=subprocess.PIPE, text=True, check=True)
            samples[name].append(float(done.stdout.strip()))
    return {name: statistics.median(values) * 1000.0 for name, values in samples.items()}


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return 0
    pythons = [sys.executable] + [p for p in os.environ.get("BENCH_PYTHONS", "").split(",") if p]
    lines = ["# Debugger agent: cost of Python tracing on a Python workload", "",
             f"{machine_line()}; medians of {REPEATS} child runs; workload: 200000 loop lines + fib(22).", ""]
    for python in pythons:
        version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                                 stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
        results = measure(python)
        base = results["no agent"]
        lines += [f"## Python {version}", "", "| setting | ms | vs no agent |", "|---|---:|---:|"]
        for name, ms in results.items():
            lines.append(f"| {name} | {ms:.1f} | {ms / base:.2f}x |")
        lines.append("")
    path = write_result("debug_agent.md", "\n".join(lines) + "\n")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
