"""Benchmark for the warm start (issue 14, target 5): a warm `cytool run` against a plain
`python -c "import mod"` of the same module built in place, for one module and for a
package module with cimports, plus the cost of the cache verification alone.

Side by side in one run, round-robin, medians of REPEATS whole processes:
  * `python -c "import demo"`           examples/demo.pyx built with `cytool build --inplace`
  * `cytool run demo.pyx -- 1000`       warm (a cache hit)
  * `python -c "import shapes.geo.square"`  tests/fixtures/projects/crossref, built in place
  * `cytool run shapes/geo/square.pyx`  warm: the package imports point.pyx, square cimports base
and, in-process, the cache verification of one module (manifest read, stat of every
dependency, entry ownership/mode/stat checks: `BuildCache.lookup`) and the whole warm
`build_module` (settings, key, lookup). Target: warm run at most 30 ms over the plain
import; verification under 5 ms. When valgrind is installed, the instructions of one run
of each command (callgrind) are given too: unlike wall time they do not move with the
load other processes put on the machine. Results: bench/results/warm.md.
Environment: BENCH_REPEATS (default 21).
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from timing import compile_bytecode, machine_line, median_ms, write_result

REPO = Path(__file__).resolve().parent.parent
REPEATS = int(os.environ.get("BENCH_REPEATS", "21"))
TARGET_MS = 30.0
VERIFY_TARGET_MS = 5.0


def callgrind_instructions(argv: List[str], env: Dict[str, str], cwd: Path) -> Optional[int]:
    """Instructions one run executes (valgrind's callgrind), or None without valgrind."""
    if shutil.which("valgrind") is None:
        return None
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
                          env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    return None


IN_PROCESS = r'''
import statistics, sys, time
from pathlib import Path
from cytool.build.module import REQUIRED_FILES, build_module, build_settings_values, resolve_target
from cytool.build.options import BuildOptions
from cytool.cache import BuildCache, hash_text

path, repeats = Path(sys.argv[1]), int(sys.argv[2])
options = BuildOptions()
target = resolve_target(path, options)
values = build_settings_values(target, options)
key = hash_text(*(f"{k}={v}" for k, v in sorted(values.items())))
cache = BuildCache()
assert cache.lookup(key, REQUIRED_FILES) is not None, "not a cache hit"
def median_ms(work):
    samples = []
    for _ in range(repeats):
        start = time.perf_counter(); work(); samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000
print(median_ms(lambda: cache.lookup(key, REQUIRED_FILES)), median_ms(lambda: build_module(path, options)))
'''


def main() -> int:
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="cytool-bench-warm-") as scratch_text:
        scratch = Path(scratch_text)
        env = dict(os.environ, CYTOOL_CACHE_DIR=str(scratch / "cache"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed cytool has its bytecode
        compile_bytecode()
        single = scratch / "single"
        single.mkdir()
        shutil.copy(REPO / "examples" / "demo.pyx", single / "demo.pyx")
        project = scratch / "crossref"
        shutil.copytree(REPO / "tests" / "fixtures" / "projects" / "crossref", project)
        for folder, sources in ((single, ["demo.pyx"]), (project, ["shapes/point.pyx", "shapes/base.pyx", "shapes/geo/square.pyx"])):
            subprocess.run([python, "-m", "cytool", "build", "--inplace", *sources], env=env, cwd=folder,
                           check=True, stdout=subprocess.DEVNULL)
        cases = {
            "demo": (single, [python, "-c", "import demo"], [python, "-m", "cytool", "run", "demo.pyx", "--", "1000"]),
            "crossref": (project, [python, "-c", "import shapes.geo.square"],
                         [python, "-m", "cytool", "run", "shapes/geo/square.pyx"]),
        }
        samples: Dict[str, List[float]] = {}
        cpu_samples: Dict[str, List[float]] = {}
        instructions: Dict[str, Optional[int]] = {}
        for label, (folder, plain, warm) in cases.items():
            commands = {f"{label}: plain import": plain, f"{label}: warm cytool run": warm}
            wall, cpu = round_robin_in(commands, folder, env)
            samples.update(wall)
            cpu_samples.update(cpu)
            for name, argv in commands.items():
                instructions[name] = callgrind_instructions(argv, env, folder)
        verify = subprocess.run([python, "-c", IN_PROCESS, "demo.pyx", "200"], env=env, cwd=single,
                                capture_output=True, text=True, check=True).stdout.split()
        verify_cross = subprocess.run([python, "-c", IN_PROCESS, "shapes/geo/square.pyx", "200"], env=env, cwd=project,
                                      capture_output=True, text=True, check=True).stdout.split()

    medians = {name: median_ms(values) for name, values in samples.items()}
    cpu_medians = {name: median_ms(values) for name, values in cpu_samples.items()}
    lines = [
        "# cytool run: warm start against a plain import",
        "",
        f"Machine: {machine_line()}; load average at the end {os.getloadavg()[0]:.1f} "
        "(other builds and tests ran on this machine: wall times carry their noise, instruction counts do not).",
        "",
        f"Method: every command is a whole process, {REPEATS} runs each, round-robin after a warm-up, medians; "
        "cytool's bytecode compiled beforehand (as an installed package has it); the plain import loads the module "
        "`cytool build --inplace` put beside its .pyx; `cytool run` finds its build in the cache (warm). "
        "Instructions: one run under valgrind's callgrind (user space, the whole process).",
        "",
        "| command | wall median ms | over plain import | CPU median ms (user+sys) | over plain import | instructions (M) | over plain (M) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for label in cases:
        plain_name, warm_name = f"{label}: plain import", f"{label}: warm cytool run"
        for name in (plain_name, warm_name):
            ir = instructions.get(name)
            base_ir = instructions.get(plain_name)
            ir_text = f"{ir / 1e6:.0f}" if ir else "n/a"
            ir_over = f"{(ir - base_ir) / 1e6:+.0f}" if ir and base_ir else "n/a"
            over = medians[name] - medians[plain_name]
            cpu_over = cpu_medians[name] - cpu_medians[plain_name]
            lines.append(f"| {name} | {medians[name]:.1f} | {over:+.1f} ms | {cpu_medians[name]:.1f} | {cpu_over:+.1f} ms "
                         f"| {ir_text} | {ir_over} |")
        over = medians[warm_name] - medians[plain_name]
        cpu_over = cpu_medians[warm_name] - cpu_medians[plain_name]
        verdicts.append(
            f"{label}: warm `cytool run` {over:+.1f} ms wall ({medians[warm_name] / medians[plain_name]:.2f}x), "
            f"{cpu_over:+.1f} ms CPU ({cpu_medians[warm_name] / cpu_medians[plain_name]:.2f}x) over the plain import: "
            f"wall {'met' if over <= TARGET_MS else 'NOT met'}, CPU {'met' if cpu_over <= TARGET_MS else 'NOT met'} "
            f"(target at most {TARGET_MS:.0f} ms)"
            + (f"; instructions {instructions[warm_name] / instructions[plain_name]:.2f}x the plain import's, which at "
               f"this run's fastest plain import ({min(samples[plain_name]) * 1000:.1f} ms wall) is "
               f"{(instructions[warm_name] / instructions[plain_name] - 1) * min(samples[plain_name]) * 1000:+.1f} ms."
               if instructions.get(warm_name) and instructions.get(plain_name) else "."))
    lookup_ms, build_ms = (float(v) for v in verify)
    lookup_cross_ms, build_cross_ms = (float(v) for v in verify_cross)
    lines += [
        "",
        "In-process, medians of 200 calls:",
        "",
        "| | cache verification (`BuildCache.lookup`) ms | whole warm `build_module` ms |",
        "|---|---:|---:|",
        f"| demo.pyx | {lookup_ms:.2f} | {build_ms:.2f} |",
        f"| shapes/geo/square.pyx | {lookup_cross_ms:.2f} | {build_cross_ms:.2f} |",
        "",
        *verdicts,
        f"Cache verification: {max(lookup_ms, lookup_cross_ms):.2f} ms: "
        f"{'met' if max(lookup_ms, lookup_cross_ms) < VERIFY_TARGET_MS else 'NOT met'} (target under {VERIFY_TARGET_MS:.0f} ms).",
        "",
    ]
    path = write_result("warm.md", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")
    return 0


def timed_run(argv: List[str], cwd: Path, env: Dict[str, str]) -> Tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one run of a command that must succeed.
    CPU time hardly moves when other processes load the machine; wall time does."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark command failed ({done.returncode}): {' '.join(argv)}\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def round_robin_in(commands: Dict[str, List[str]], cwd: Path, env: Dict[str, str]) -> Tuple[Dict[str, List[float]], Dict[str, List[float]]]:
    """Wall and CPU seconds of REPEATS runs of each command, interleaved after 2 warm-ups."""
    for _ in range(2):
        for argv in commands.values():
            timed_run(argv, cwd, env)
    wall: Dict[str, List[float]] = {name: [] for name in commands}
    cpu: Dict[str, List[float]] = {name: [] for name in commands}
    for _ in range(REPEATS):
        for name, argv in commands.items():
            w, c = timed_run(argv, cwd, env)
            wall[name].append(w)
            cpu[name].append(c)
    return wall, cpu


if __name__ == "__main__":
    sys.exit(main())
