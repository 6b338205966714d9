"""Everything `cytool debug` needs before it hands over to gdb.

Owns: finding a usable gdb (present, version 13 or newer, with Python), checking that
this system lets a debugger trace its child (Yama's ptrace_scope, seccomp in
containers), finding the cy-* gdb scripts (package data `cytool/gdb/` in a wheel, the
repository's `gdb/` in a checkout), and composing the gdb command line that runs the
built module under `python -m cytool run --prebuilt`.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from cytool.errors import CytoolError

MIN_GDB_VERSION = (13, 0)
GDB_SCRIPT = "cytool_gdb.py"


@dataclass
class DebugSession:
    """What gdb is started with: the module, the breakpoints and how gdb runs."""

    module_path: Optional[Path]
    source: Optional[Path]
    build_dir: Optional[Path]
    program_args: List[str] = field(default_factory=list)
    breakpoints: List[str] = field(default_factory=list)
    command_file: Optional[Path] = None
    batch: bool = False
    # what follows `python -m cytool run` in the inferior (None: --prebuilt MODULE SOURCE)
    launch_args: Optional[List[str]] = None
    build_dirs: List[Path] = field(default_factory=list)


def find_gdb(gdb: Optional[str] = None) -> Tuple[str, Tuple[int, int]]:
    """The gdb executable and its version; CytoolError if it is missing or too old."""
    name = gdb or os.environ.get("CYTOOL_GDB", "gdb")
    path = shutil.which(name)
    if path is None:
        raise CytoolError(
            f"{name} not found",
            hint="install gdb 13 or newer (Debian/Ubuntu: apt-get install gdb), or set CYTOOL_GDB",
        )
    try:
        output = subprocess.run(
            [path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CytoolError(f"cannot run {path}: {error}")
    version = parse_gdb_version(output)
    if version is None:
        raise CytoolError(f"cannot tell the version of {path}", detail=output.splitlines()[0] if output else "")
    if version < MIN_GDB_VERSION:
        raise CytoolError(
            f"{path} is gdb {version[0]}.{version[1]}; cytool debug needs gdb 13 or newer",
            hint="install a newer gdb, or point CYTOOL_GDB at one",
        )
    return path, version


def parse_gdb_version(text: str) -> Optional[Tuple[int, int]]:
    """`GNU gdb (Debian 13.1-3) 13.1` -> (13, 1)."""
    first = text.splitlines()[0] if text else ""
    match = re.search(r"(\d+)\.(\d+)(?:\.\d+)?\s*$", first) or re.search(r"\b(\d+)\.(\d+)", first)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def ptrace_scope() -> Optional[int]:
    try:
        return int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip())
    except (OSError, ValueError):
        return None


def check_ptrace() -> None:
    """CytoolError when a debugger cannot trace the program it starts."""
    scope = ptrace_scope()
    if scope is not None and scope >= 3:
        raise CytoolError(
            "ptrace is disabled on this system (kernel.yama.ptrace_scope = 3), so gdb cannot run programs",
            hint="a reboot is needed to lower it; scope 3 cannot be changed at run time",
        )
    error = _traceme_probe()
    if error:
        raise CytoolError(
            f"ptrace is not permitted here ({error}), so gdb cannot trace the program",
            hint="in a container, run it with --cap-add=SYS_PTRACE (or a seccomp profile allowing ptrace); "
            "otherwise check kernel.yama.ptrace_scope",
        )


def _traceme_probe() -> Optional[str]:
    """Fork a child that asks to be traced, as gdb's inferior does; report a refusal."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    pid = os.fork()
    if pid == 0:  # child: PTRACE_TRACEME = 0
        status = 0
        try:
            if libc.ptrace(0, 0, None, None) != 0:
                status = ctypes.get_errno() or 1
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8
    if code == 0:
        return None
    return os.strerror(code) if code > 0 else f"status {code}"


def gdb_scripts_dir() -> Path:
    """Where cytool_gdb.py lives: package data in a wheel, gdb/ in a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "gdb", package.parent / "gdb"):
        if (candidate / GDB_SCRIPT).is_file():
            return candidate
    raise CytoolError(
        f"the cytool gdb scripts ({GDB_SCRIPT}) are missing from this installation",
        hint=f"reinstall cytool; looked in {package / 'gdb'} and {package.parent / 'gdb'}",
    )


def _quote_gdb(text: str) -> str:
    """gdb takes the rest of a `source`/`cy-*` line verbatim; refuse line breaks."""
    if "\n" in text:
        raise CytoolError(f"a newline cannot be passed to gdb: {text!r}")
    return text


def gdb_command(session: DebugSession, gdb: str) -> List[str]:
    """The full gdb argv for a session."""
    scripts = gdb_scripts_dir()
    interpreter = os.path.realpath(sys.executable)
    argv: List[str] = [gdb]
    if session.batch:
        argv += ["-nx", "-batch"]
    else:
        argv += ["-tui", "-q"]
    argv += [
        # the interpreter's python-gdb.py (Python frames for cy-bt) may load quietly
        "-iex", f"add-auto-load-safe-path {os.path.dirname(interpreter)}",
        "-iex", "set pagination off",  # the start-up messages must not wait for a key
        "-ex", "set breakpoint pending on",
        "-ex", _quote_gdb(f"source {scripts / GDB_SCRIPT}"),
    ]
    if session.batch:  # a refused breakpoint ends the run, one that matched nothing fails it
        argv += ["-ex", "set cy-batch on"]
    argv += ["-ex", _quote_gdb(f"set cy-module-index {_module_index()}")]  # modules built later, by build-id
    for build_dir in session.build_dirs or ([session.build_dir] if session.build_dir else []):
        argv += ["-ex", _quote_gdb(f"cy-load {build_dir}")]
    for spec in session.breakpoints:
        argv += ["-ex", _quote_gdb(f"cy-break {spec}")]
    if not session.batch:
        argv += ["-ex", "layout src", "-ex", "cy-list", "-ex", "set pagination on"]
    if session.command_file is not None:
        argv += ["-x", str(session.command_file)]
    argv += ["--args", sys.executable, "-m", "cytool", "run"]
    if session.launch_args is not None:
        argv += session.launch_args
    else:
        argv += ["--prebuilt", str(session.module_path), str(session.source)]
    if session.program_args:
        argv += ["--", *session.program_args]
    return argv


def _module_index() -> str:
    from cytool.module_index import index_dir

    return str(index_dir())


def exec_gdb(argv: Sequence[str]) -> None:
    """Replace this process with gdb (the terminal is gdb's from here on)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], list(argv))
