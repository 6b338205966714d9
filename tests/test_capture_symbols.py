"""The symboliser (runtime/src/symbolize_*.c) on a real Cython module built at -O2:
return addresses of its malloc calls, found with objdump, resolve to .pyx lines with
inline frames expanded and Cython names; deleted and rebuilt modules degrade clearly."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "reports"))

from capture_writer import CaptureWriter, pc_word, py_word  # noqa: E402

from cytool.build import BuildOptions, build_module  # noqa: E402
from cytool.capture import read_capture  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "reports" / "symmod.pyx"
BIAS = 0x7F0000000000


def malloc_return_addresses(so: Path) -> List[int]:
    """Offsets of the instructions right after each `call malloc@plt`."""
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(so)], check=True,
                          stdout=subprocess.PIPE, text=True).stdout
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if re.search(r"call\s+\w+ <malloc@plt>", line):
            nxt = re.match(r"\s*([0-9a-f]+):", lines[i + 1])
            assert nxt
            found.append(int(nxt.group(1), 16))
    return found


def build_id(so: Path) -> bytes:
    out = subprocess.run(["readelf", "-n", str(so)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return bytes.fromhex(re.search(r"Build ID: ([0-9a-f]+)", out).group(1))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    source = tmp_path_factory.mktemp("symsrc") / "symmod.pyx"
    shutil.copy(FIXTURE, source)
    return build_module(source, BuildOptions(opt_level="2"))


def write(path: Path, so: Path, ident: bytes, stacks: Dict[int, List[int]]) -> None:
    with CaptureWriter(path) as w:
        w.object(1, BIAS, str(so), ident, [(BIAS, BIAS + 0x100000)])
        w.pyframe(1, 5, "main", "/tmp/driver.py")
        for sid, words in stacks.items():
            w.stack(sid, words)
        w.batch(0, 0, [("malloc", 1, 0x10 * sid, 8, sid) for sid in stacks])
        w.end(10)


def test_pyx_lines_inline_frames_and_cython_names(built, tmp_path: Path) -> None:
    so = built.module_path
    returns = malloc_return_addresses(so)
    assert len(returns) == 2  # helper (inlined into work) and Klass.method
    path = tmp_path / "sym.cytrace"
    write(path, so, build_id(so), {1: [pc_word(BIAS + r) for r in returns] + [py_word(1)]})
    with read_capture(path) as capture:
        frames = [(f.function, Path(f.file).name, f.line, f.kind) for f in capture.stacks[1]]
        assert capture.symbol_warnings == []
    # objdump lists helper's call first (it sits in work, earlier in the file)
    assert frames == [
        ("symmod.helper", "symmod.pyx", 4, "pyx"),
        ("symmod.work", "symmod.pyx", 16, "pyx"),
        ("symmod.Klass.method", "symmod.pyx", 9, "pyx"),
        ("main", "driver.py", 5, "python"),
    ]
    assert Path(capture.stacks[1][0].file) == built.source


def test_deleted_module_falls_back_to_raw_addresses(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYTOOL_CACHE_DIR", str(tmp_path / "empty-cache"))  # no other build to fall back on
    copy = tmp_path / built.module_path.name
    shutil.copy(built.module_path, copy)
    returns = malloc_return_addresses(copy)
    path = tmp_path / "deleted.cytrace"
    write(path, copy, build_id(copy), {1: [pc_word(BIAS + returns[0])]})
    copy.unlink()
    with read_capture(path) as capture:
        (frame,) = capture.stacks[1]
        assert frame.kind == "unknown"
        assert frame.function == f"{copy.name}+{hex(returns[0])}"
        (warning,) = capture.symbol_warnings
        assert warning.startswith(f"{copy}: deleted since the capture was made")


def test_deleted_module_found_by_build_id(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "builds" / "old"
    elsewhere.mkdir(parents=True)
    shutil.copy(built.module_path, elsewhere / "renamed-away.so")  # wrong name: not a candidate
    copy = tmp_path / built.module_path.name
    shutil.copy(built.module_path, copy)
    shutil.copy(built.module_path, elsewhere / copy.name)
    monkeypatch.setenv("CYTOOL_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("CYTOOL_SYMBOL_PATH", str(tmp_path / "builds" / "*"))
    returns = malloc_return_addresses(copy)
    path = tmp_path / "found.cytrace"
    write(path, copy, build_id(copy), {1: [pc_word(BIAS + returns[0])]})
    copy.unlink()
    with read_capture(path) as capture:
        assert [(f.function, f.line, f.kind) for f in capture.stacks[1]] == [
            ("symmod.helper", 4, "pyx"), ("symmod.work", 16, "pyx")]
        assert capture.symbol_warnings == [
            f"{copy}: deleted since the capture was made; symbols come from the identical build {elsewhere / copy.name}"]


def test_rebuilt_module_is_not_trusted(built, tmp_path: Path) -> None:
    so = built.module_path
    returns = malloc_return_addresses(so)
    path = tmp_path / "changed.cytrace"
    write(path, so, b"\x01" * 20, {1: [pc_word(BIAS + returns[0])]})
    with read_capture(path) as capture:
        (frame,) = capture.stacks[1]
        assert frame.kind == "unknown" and frame.function.endswith(hex(returns[0]))
        (warning,) = capture.symbol_warnings
        assert "changed since the capture was made (build-id differs)" in warning


def test_unknown_python_frame_and_address(tmp_path: Path) -> None:
    path = tmp_path / "unknown.cytrace"
    with CaptureWriter(path) as w:
        w.stack(1, [pc_word(0x1234), py_word(99)])
        w.batch(0, 0, [("malloc", 1, 0x10, 8, 1)])
        w.end(10)
    with read_capture(path) as capture:
        assert [(f.function, f.kind) for f in capture.stacks[1]] == [("0x1234", "unknown"), ("<unknown>", "unknown")]
