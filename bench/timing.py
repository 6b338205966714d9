"""Shared helpers for cytool's benchmarks: time whole commands, round-robin, report medians."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them ("?" if unknown)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def compile_bytecode(tree: Path = REPO) -> None:
    """Byte-compile the cytool package of `tree`, as pip does when it installs one: else,
    under PYTHONDONTWRITEBYTECODE (set on some machines, this one included), every timed
    command compiles cytool's modules from source again (about 10 ms for `cytool profile`,
    which imports more of them than `cytool run`). Raises CalledProcessError."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "cytool")], check=True,
                   stdout=subprocess.DEVNULL)


def build_baseline(ref: str, into: Path) -> Path:
    """The git revision `ref` of this repository extracted into `into`, its runtime and
    extension built in place and its bytecode compiled (run it with PYTHONPATH=into).
    Raises CalledProcessError."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], stdout=subprocess.PIPE, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=into, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    compile_bytecode(into)
    return into


def time_command(argv: Sequence[str], env: Optional[Mapping[str, str]] = None, cwd: Optional[Path] = None) -> float:
    """Wall seconds of one run; the command must succeed."""
    start = time.perf_counter()
    done = subprocess.run(list(argv), env=dict(env) if env else None, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"benchmark command failed ({done.returncode}): {' '.join(argv)}\n{done.stderr}")
    return elapsed


def round_robin(commands: Mapping[str, Sequence[str]], repeats: int, env: Optional[Mapping[str, str]] = None, warmup: int = 1) -> Dict[str, List[float]]:
    """Run every command `repeats` times, interleaved, so drift hits all of them alike."""
    for _ in range(warmup):
        for argv in commands.values():
            time_command(argv, env)
    samples: Dict[str, List[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, argv in commands.items():
            samples[name].append(time_command(argv, env))
    return samples


def median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000.0


def machine_line() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"


def write_result(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(text, encoding="utf-8")
    return path
