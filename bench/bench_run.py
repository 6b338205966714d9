"""Benchmark for `cytool run` (issue 2): warm run overhead and cold build time.

Side by side in one run, round-robin, medians of REPEATS:
  * warm `cytool run examples/demo.pyx` (cache hit: key check, load, run)
  * plain `python` importing the same prebuilt module and calling its main()
  * pyximport importing the same source (warm: its build directory is populated)
and the cold build (`cytool build --force`). Target: warm cytool run within 60 ms of
the plain import. Results: bench/results/run.md.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import machine_line, median_ms, round_robin, time_command, write_result

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "demo.pyx"
REPEATS = int(os.environ.get("BENCH_REPEATS", "21"))
ARG = "1000"


def main() -> int:
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="cytool-bench-") as scratch:
        env = dict(os.environ, CYTOOL_CACHE_DIR=str(Path(scratch) / "cache"))
        built = subprocess.run([python, "-m", "cytool", "build", str(EXAMPLE)], env=env, capture_output=True, text=True, check=True)
        module_dir = Path(built.stdout.strip()).parent
        pyx_dir = Path(scratch) / "pyximport"
        commands = {
            "cytool run (warm)": [python, "-m", "cytool", "run", str(EXAMPLE), "--", ARG],
            "python import prebuilt": [python, "-c", f"import sys; sys.path.insert(0, {str(module_dir)!r}); import demo; demo.main(['demo', {ARG!r}])"],
            "pyximport (warm)": [
                python, "-c",
                f"import pyximport; pyximport.install(build_dir={str(pyx_dir)!r}, language_level=3); "
                f"import sys; sys.path.insert(0, {str(EXAMPLE.parent)!r}); import demo; demo.main(['demo', {ARG!r}])",
            ],
        }
        samples = round_robin(commands, REPEATS, env=env, warmup=2)
        cold = [time_command([python, "-m", "cytool", "build", "--force", str(EXAMPLE)], env) for _ in range(5)]

    medians = {name: median_ms(values) for name, values in samples.items()}
    plain = medians["python import prebuilt"]
    lines = [
        "# cytool run: warm overhead and cold build",
        "",
        f"Machine: {machine_line()}. Workload: `examples/demo.pyx -- {ARG}`; {REPEATS} runs each, round-robin; medians.",
        "",
        "| command | median ms | vs plain import |",
        "|---|---:|---:|",
    ]
    for name, value in medians.items():
        lines.append(f"| {name} | {value:.1f} | {value - plain:+.1f} ms |")
    lines.append(f"| cold build (`cytool build --force`, 5 runs) | {median_ms(cold):.0f} | |")
    overhead = medians["cytool run (warm)"] - plain
    verdict = "met" if overhead < 60 else "NOT met"
    lines += ["", f"Target: warm `cytool run` under 60 ms over the plain import: {overhead:.1f} ms, {verdict}.", ""]
    path = write_result("run.md", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
