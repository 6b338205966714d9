"""Every subcommand, each kind of bad argument: one clear message and a non-zero exit,
never a Python traceback and never a hang."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def bad(tmp_path: Path) -> dict:
    """Paths of every kind of bad input."""
    (tmp_path / "dir.pyx").mkdir()
    (tmp_path / "empty.pyx").write_text("")
    (tmp_path / "empty.cytrace").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not code\n")
    (tmp_path / "garbage.cytrace").write_bytes(os.urandom(4096))
    fifo = tmp_path / "fifo.pyx"
    os.mkfifo(fifo)
    fifo_capture = tmp_path / "fifo.cytrace"
    os.mkfifo(fifo_capture)
    (tmp_path / "ok.pyx").write_text("print('ok')\n")
    return {
        "missing": tmp_path / "absent.pyx",
        "missing_capture": tmp_path / "absent.cytrace",
        "dir": tmp_path / "dir.pyx",
        "txt": tmp_path / "notes.txt",
        "fifo": fifo,
        "fifo_capture": fifo_capture,
        "empty_capture": tmp_path / "empty.cytrace",
        "garbage_capture": tmp_path / "garbage.cytrace",
        "ok": tmp_path / "ok.pyx",
        "tmp": tmp_path,
    }


CASES = [
    ("build", "{missing}"),
    ("build", "{dir}"),
    ("build", "{txt}"),
    ("build", "{fifo}"),
    ("build", "-O", "99", "{ok}"),
    ("build", "--module-name", "", "{ok}"),
    ("build", "-o", "{txt}", "{ok}"),
    ("run", "{missing}"),
    ("run", "{dir}"),
    ("run", "{fifo}"),
    ("run", "-m", "no..such"),
    ("run", "--prebuilt", "{txt}", "{ok}"),
    ("run", "-X", "=", "{ok}"),
    ("profile", "{missing}"),
    ("profile", "{ok}", "-o", "{txt}"),
    ("profile", "{ok}", "-o", "{tmp}/no/such/dir/x.cytrace"),
    ("profile", "--time-resolution", "-5", "{ok}"),
    ("report", "{missing_capture}"),
    ("report", "{dir}"),
    ("report", "{empty_capture}"),
    ("report", "{garbage_capture}"),
    ("report", "{txt}"),
    ("report", "{fifo_capture}"),
    ("report", "{garbage_capture}", "--limit", "0"),
    ("report", "{garbage_capture}", "--limit", "99999999999999999999999"),
    ("debug", "{missing}"),
    ("debug", "-x", "{missing}", "{ok}"),
    ("debug", "--batch", "{ok}"),
    ("develop", "{missing}"),
    ("develop", "{tmp}", "-j", "0"),
    ("develop", "{tmp}"),
    ("stack",),
    ("stack", "not-a-pid"),
    ("stack", "0"),
    ("stack", "--core", "{missing}"),
    ("stack", "--core", "{dir}"),
    ("stack", "--core", "{txt}"),
    ("stack", "--core", "{fifo}"),
    ("stack", "--core", "{ok}", "--executable", "{missing}"),
]


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c) for c in CASES])
def test_bad_argument_is_one_clear_error(bad: dict, run_cytool, case: tuple) -> None:
    args = [part.format(**bad) for part in case]
    done = run_cytool(*args, cwd=bad["tmp"], timeout=120)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    first = done.stderr.strip().splitlines()[0] if done.stderr.strip() else ""
    assert first.startswith("cytool: error:") or first.startswith("usage: cytool"), done.stderr
