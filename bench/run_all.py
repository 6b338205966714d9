"""`make bench`: run every benchmark in bench/ and leave their tables in bench/results/."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "bench_run.py",
    "bench_warm.py",
    "bench_profile.py",
    "bench_pyframes.py",
    "bench_report.py",
    "bench_stream_report.py",
    "bench_scale.py",
    "bench_processes.py",
    "bench_debug_agent.py",
    "bench_live.py",
)


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        script = HERE / name
        if not script.exists():
            print(f"== {name}: not present, skipped")
            continue
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=HERE).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
