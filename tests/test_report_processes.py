"""`cytool report` over the captures of a process tree: a program with a multiprocessing
pool of 4 forked workers, profiled with --follow-fork, reported as one (table, JSON, HTML)
with a per-process breakdown whose figures are each process's own report."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "processes"
TASKS, PER_TASK = 8, 2000
METRICS = ("bytes", "count", "peak_bytes", "peak_count", "leaked_bytes", "leaked_count", "temporary_bytes", "temporary_count")


@pytest.fixture(scope="module")
def pool_captures(tmp_path_factory: pytest.TempPathFactory) -> List[Path]:
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("pool")
    for name in ("pool_main.py", "pool_work.pyx"):
        shutil.copy(FIXTURE / name, folder / name)
    done = subprocess.run(
        [sys.executable, "-m", "cytool", "profile", "--no-summary", "--follow-fork", "-o", "pool.cytrace",
         "pool_main.py", str(PER_TASK), str(TASKS)],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(TASKS * PER_TASK)
    children = sorted(p for p in folder.glob("pool.cytrace.*") if p.suffix[1:].isdigit())
    assert len(children) == 4, sorted(p.name for p in folder.iterdir())
    return [folder / "pool.cytrace", *children]


def report_json(run_cytool, *captures: object) -> Dict:
    done = run_cytool("report", *captures, "-f", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def line_count(document: Dict, file_end: str, text: str) -> int:
    return sum(l["count"] for l in document["lines"] if l["file"].endswith(file_end) and text in l["source"])


def test_merged_totals_are_the_sum_of_each_process_report(pool_captures: List[Path], run_cytool) -> None:
    merged = report_json(run_cytool, *pool_captures)
    singles = [report_json(run_cytool, path) for path in pool_captures]
    for metric in METRICS:
        assert merged["totals"][metric] == sum(s["totals"][metric] for s in singles), metric
    assert merged["totals"]["events"] == sum(s["totals"]["events"] for s in singles)
    # each process listed, the root first, with its pid, parent and its own report's figures
    processes = merged["processes"]
    assert [p["pid"] for p in processes] == [s["capture"]["pid"] for s in singles]
    root = processes[0]
    assert all(p["parent_pid"] == root["pid"] for p in processes[1:])
    for process, single in zip(processes, singles):
        assert process["capture"] == single["capture"]["path"]
        for metric in METRICS:
            assert process[metric] == single["totals"][metric], (process["pid"], metric)
    # the workers ran every task: the loop's allocations add up across the processes
    assert line_count(merged, "pool_work.pyx", "malloc(1000)") == TASKS * PER_TASK
    assert sum(line_count(s, "pool_work.pyx", "malloc(1000)") for s in singles) == TASKS * PER_TASK
    assert line_count(singles[0], "pool_work.pyx", "malloc(1000)") == 0  # the parent ran no task
    assert sum(1 for s in singles[1:] if line_count(s, "pool_work.pyx", "malloc(1000)")) >= 2
    # a merged stack's figures are the sum of that stack in each process
    assert sum(s["bytes"] for s in merged["stacks"]) <= merged["totals"]["bytes"]


def test_glob_and_folder_name_the_same_captures(pool_captures: List[Path], run_cytool) -> None:
    listed = report_json(run_cytool, *pool_captures)
    by_glob = report_json(run_cytool, str(pool_captures[0]) + "*")
    by_folder = report_json(run_cytool, pool_captures[0].parent)
    for document in (by_glob, by_folder):
        assert sorted(p["pid"] for p in document["processes"]) == sorted(p["pid"] for p in listed["processes"])
        assert document["totals"] == listed["totals"]


def test_table_and_html_show_the_breakdown(pool_captures: List[Path], run_cytool, tmp_path: Path) -> None:
    pids = [report_json(run_cytool, path)["capture"]["pid"] for path in pool_captures]
    table = run_cytool("report", *pool_captures)
    assert table.returncode == 0, table.stderr
    assert "5 processes" in table.stdout
    for pid in pids:
        assert f" {pid} " in table.stdout
    out = tmp_path / "merged.html"
    done = run_cytool("report", *pool_captures, "-o", out)
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert "<h2>Processes</h2>" in html
    for pid in pids:
        assert f"<td>{pid}</td>" in html
    single = run_cytool("report", pool_captures[0], "-f", "json")
    assert json.loads(single.stdout)["processes"] == []


def test_bad_process_lists(pool_captures: List[Path], run_cytool, tmp_path: Path) -> None:
    done = run_cytool("report", str(tmp_path / "nothing") + "*.cytrace")
    assert done.returncode == 2 and "no such capture" in done.stderr and "Traceback" not in done.stderr
    done = run_cytool("report", *pool_captures[:2], "--threads", "MainThread")
    assert done.returncode == 2 and "--threads" in done.stderr


def test_every_worker_capture_is_complete(pool_captures: List[Path], run_cytool) -> None:
    """Workers that leave through os._exit (pool.close(); pool.join()) end their captures,
    and the Python frames they inherited from the parent are defined again in their own
    capture (ids cached before the fork belong to the parent's capture)."""
    for path in pool_captures:
        capture = report_json(run_cytool, path)["capture"]
        assert not capture["truncated"], (path.name, capture["truncation_message"])
        assert capture["warnings"] == [], (path.name, capture["warnings"])


def test_a_program_and_the_one_it_execs_count_the_higher_peak(tmp_path: Path, run_cytool) -> None:
    """A child that execs Python again leaves two captures of one pid, one after the other:
    the merged peak counts the higher of their peaks (they never held memory at the same
    time), and the program after the exec is the same child of the root."""
    from test_tracer_exec import run_exec_chain

    done = run_exec_chain(tmp_path)
    assert done.returncode == 0, done.stderr
    captures = sorted(tmp_path.glob("chain.cytrace*"), key=lambda p: len(p.name))
    assert len(captures) == 3, captures
    merged = report_json(run_cytool, *captures)
    singles = [report_json(run_cytool, path) for path in captures]
    root, before, after = merged["processes"]
    assert before["pid"] == after["pid"] != root["pid"]
    assert before["parent_pid"] == after["parent_pid"] == root["pid"]
    assert [p["capture"] for p in merged["processes"]] == [s["capture"]["path"] for s in singles]
    peaks = [s["totals"]["peak_bytes"] for s in singles]
    assert merged["totals"]["peak_bytes"] == peaks[0] + max(peaks[1], peaks[2]) < sum(peaks)
    assert merged["totals"]["bytes"] == sum(s["totals"]["bytes"] for s in singles)
    table = run_cytool("report", *captures)
    assert table.returncode == 0, table.stderr
    assert "count the highest of theirs" in table.stdout


SPAWN_POOL = """\
import multiprocessing


def work(n):
    return len([bytearray(1000) for _ in range(n)])


if __name__ == "__main__":
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        print(sum(pool.map(work, [50] * 8)))
"""


def test_processes_started_traced_are_the_children_of_their_starter(tmp_path: Path, run_cytool) -> None:
    """CYTOOL_PROFILE and a `spawn` pool: each worker (a new Python, traced from its start)
    gives its parent in its capture, so the merged report is one tree under the program."""
    import os
    import subprocess
    import sys

    (tmp_path / "spawn_pool.py").write_text(SPAWN_POOL)
    env = dict(os.environ, CYTOOL_PROFILE=str(tmp_path / "spawn.cytrace"))
    done = subprocess.run([sys.executable, "spawn_pool.py"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "400", done.stderr
    captures = sorted(tmp_path.glob("spawn.cytrace*"))
    assert len(captures) >= 3, captures  # the program and its 2 workers (and multiprocessing's helpers)
    merged = report_json(run_cytool, *captures)
    root, *children = merged["processes"]
    assert root["capture"] == str(tmp_path / "spawn.cytrace")
    assert root["parent_pid"] == os.getpid()  # this test started it (untraced)
    assert children and all(p["parent_pid"] == root["pid"] for p in children), merged["processes"]


def test_an_earlier_process_with_the_same_pid_does_not_hide_a_later_exec_chain(tmp_path: Path, run_cytool) -> None:
    """Captures of one pid: an earlier process that had that pid (no exec), then a process
    that execs its second program. The earlier one counts its own peak; of the exec chain,
    only the higher peak counts."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "reports"))
    from capture_writer import CaptureWriter, pc_word

    start = 1_700_000_000_000_000_000

    def capture(name: str, start_ns: int, size: int, exec_at: int = 0) -> Path:
        path = tmp_path / name
        with CaptureWriter(path, version=5, pid=500, start_ns=start_ns) as w:
            w.thread(1, 500, "MainThread")
            w.stack(1, [pc_word(0x401000)])
            w.batch(1, 0, [("malloc", 0, 0x1000, size, 1)])
            w.flush()
            if exec_at:
                w.exec_(exec_at, "/usr/bin/python3")
            w.stats(1)
            w.end((exec_at or 3_000_000) + 100_000)
        return path

    earlier = capture("a.cytrace", start, 1000)
    before_exec = capture("a.cytrace.500", start + 1_000_000_000, 3000, exec_at=2_000_000)
    after_exec = capture("a.cytrace.500.2", start + 1_010_000_000, 2000)
    merged = report_json(run_cytool, earlier, before_exec, after_exec)
    assert merged["totals"]["bytes"] == 6000
    assert merged["totals"]["peak_bytes"] == 1000 + 3000
