"""Benchmark for `cytool report` (issue 4): time to turn a capture of ~10 million events
into the terminal table and into the HTML report, side by side with memray on memray's
own capture (`memray run --native`) of the same workload: `memray summary` (its terminal
table) and `memray flamegraph` (its HTML). Also the HTML sizes (target: under 10 MB).

Workload: a Cython loop (built at -O2) that keeps a ring of 1024 blocks and replaces one
per iteration from three call sites (malloc in an inlined helper, malloc, calloc):
N iterations = N allocations + N frees. Results: bench/results/report.md.
Also: symbolising 20,000 distinct return addresses in libpython (native stacks), on a
capture written by the test capture writer (tests/fixtures/reports/capture_writer.py).
Environment: BENCH_REPORT_N (default 5,000,000), BENCH_REPEATS (default 3).
"""
from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from timing import machine_line, median_ms, round_robin, write_result

N = int(os.environ.get("BENCH_REPORT_N", "5000000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))

WORKLOAD = '''\
from libc.stdlib cimport malloc, calloc, free

cdef inline void* grab(size_t n):
    return malloc(n)

def churn(long n):
    cdef void** ring = <void**>calloc(1024, sizeof(void*))
    cdef long i, j
    for i in range(n):
        j = i & 1023
        free(ring[j])
        if i % 3 == 0:
            ring[j] = grab(16 + (i & 255))
        elif i % 3 == 1:
            ring[j] = malloc(64)
        else:
            ring[j] = calloc(1, 48)
    for j in range(1024):
        free(ring[j])
    free(ring)

if __name__ == "__main__":
    import sys
    churn(int(sys.argv[1]))
'''


def run(argv, env) -> str:
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"failed ({done.returncode}): {' '.join(map(str, argv))}\n{done.stderr}")
    return done.stdout


REPO = Path(__file__).resolve().parent.parent


def symbolise_many(work: Path, count: int = 20000) -> str:
    """Seconds to symbolise `count` random code addresses of libpython, or why not."""
    library = Path(sysconfig.get_config_var("LIBDIR") or "") / (sysconfig.get_config_var("INSTSONAME") or "")
    if not library.is_file():
        return "skipped (this Python has no shared libpython)"
    headers = subprocess.run(["readelf", "-lW", str(library)], stdout=subprocess.PIPE, text=True, check=True).stdout
    code = [(int(m.group(1), 16), int(m.group(2), 16)) for m in
            re.finditer(r"LOAD\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)\s+R E", headers)]
    if not code:
        return "skipped (no executable segment found)"
    start, size = code[0]
    bias = 0x7F0000000000
    sys.path.insert(0, str(REPO / "tests" / "fixtures" / "reports"))
    sys.path.insert(0, str(REPO))
    from capture_writer import CaptureWriter, pc_word

    from cytool.capture import read_capture

    rng = random.Random(1)
    path = work / "many-pcs.cytrace"
    with CaptureWriter(path) as w:
        w.object(1, bias, str(library), b"", [(bias + start, bias + start + size)])
        for sid in range(1, count // 10 + 1):
            w.stack(sid, [pc_word(bias + start + rng.randrange(size)) for _ in range(10)])
        w.batch(0, 0, [("malloc", 1, 0x1000 + 16 * i, 8, i + 1) for i in range(count // 10)])
        w.end(10)
    begin = time.perf_counter()
    with read_capture(path) as capture:
        capture.symbols_handle
    return f"{time.perf_counter() - begin:.2f} s"


def main() -> int:
    python = sys.executable
    memray = shutil.which("memray", path=str(Path(python).parent)) or shutil.which("memray")
    if memray is None:
        print("memray is not installed: pip install memray (benchmark-only dependency)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="cytool-bench-report-") as scratch:
        work = Path(scratch)
        env = dict(os.environ, CYTOOL_CACHE_DIR=str(work / "cache"))
        source = work / "churn.pyx"
        source.write_text(WORKLOAD)
        run([python, "-m", "cytool", "build", str(source)], env)  # warm the cache for both tracers
        capture = work / "churn.cytrace"
        run([python, "-m", "cytool", "profile", str(source), "-o", str(capture), "--no-summary", "--", str(N)], env)
        memray_capture = work / "churn.bin"
        run([memray, "run", "--native", "-q", "-f", "-o", str(memray_capture), "-m", "cytool", "run", str(source), "--", str(N)], env)

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from cytool.capture import read_capture

        with read_capture(capture) as c:
            events = len(c.events)

        html = work / "cytool.html"
        memray_html = work / "memray.html"
        commands = {
            "cytool report (table)": [python, "-m", "cytool", "report", str(capture)],
            "memray summary (table)": [memray, "summary", str(memray_capture)],
            "cytool report --format html": [python, "-m", "cytool", "report", str(capture), "-o", str(html)],
            "memray flamegraph (html)": [memray, "flamegraph", "-f", "-o", str(memray_html), str(memray_capture)],
        }
        samples = round_robin(commands, REPEATS, env=env, warmup=1)
        symbolise = symbolise_many(work)
        sizes = {
            "cytool capture": capture.stat().st_size,
            "memray capture": memray_capture.stat().st_size,
            "cytool HTML": html.stat().st_size,
            "memray HTML": memray_html.stat().st_size,
        }

    medians = {name: median_ms(values) for name, values in samples.items()}
    lines = [
        "# cytool report: time to the table and the HTML",
        "",
        f"Machine: {machine_line()}. Workload: Cython ring of 1024 blocks, {N:,} iterations "
        f"(one free + one allocation from one of three call sites each); the cytool capture holds "
        f"{events:,} events. {REPEATS} runs each, round-robin after a warm-up; medians; each command is a whole "
        "process (start-up, read, symbolise, aggregate, render).",
        "",
        "| command | median ms |",
        "|---|---:|",
    ]
    for name, value in medians.items():
        lines.append(f"| {name} | {value:.0f} |")
    lines += ["", "| file | bytes |", "|---|---:|"]
    for name, value in sizes.items():
        lines.append(f"| {name} | {value:,} |")
    lines += ["", f"Symbolising 20,000 distinct return addresses in libpython (read + symbolise, in-process): {symbolise}."]
    html_ratio = medians["memray flamegraph (html)"] / medians["cytool report --format html"]
    table_ratio = medians["memray summary (table)"] / medians["cytool report (table)"]
    faster = html_ratio > 1.0
    small = sizes["cytool HTML"] < 10 * 1024 * 1024
    lines += [
        "",
        f"HTML: cytool is {html_ratio:.1f}x {'faster' if faster else 'slower'} than `memray flamegraph` "
        f"(target: faster: {'met' if faster else 'NOT met'}); table: {table_ratio:.1f}x vs `memray summary`.",
        f"HTML size {sizes['cytool HTML'] / 1e6:.2f} MB (target under 10 MB: {'met' if small else 'NOT met'}).",
        "",
    ]
    path = write_result("report.md", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")
    return 0 if faster and small else 1


if __name__ == "__main__":
    sys.exit(main())
