"""Reading the stacks of a running process or of a core file, through gdb in batch mode.

Owns the checks before gdb starts (the process exists, the core is a core and its
program is found), the gdb command line (cytool's gdb extension, the module index for
.pyx lines, gdb's index cache in cytool's cache), and turning gdb's answer
(cy-stack-json, gdb/cytool_gdb_stack.py) or its failure into a StackReport or one clear
CytoolError. A live process is stopped only between gdb's attach and detach, its
libraries' symbols being read before (gdb/cytool_gdb_preload.py); nothing runs in it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from cytool.errors import CytoolError

BEGIN = "@@cytool-stack-begin"
END = "@@cytool-stack-end"
GDB_TIMEOUT = 300.0


@dataclass
class StackTarget:
    """A live process (pid) or a core (core + the executable it is of)."""

    pid: Optional[int] = None
    core: Optional[Path] = None
    executable: Optional[Path] = None


def live_target(pid: int) -> StackTarget:
    """CytoolError if there is no such process, or it has exited (a zombie)."""
    if pid <= 0 or not os.path.isdir(f"/proc/{pid}"):
        raise CytoolError(f"no process with pid {pid}", exit_code=1)
    if _state(pid) in ("Z", "X"):
        raise CytoolError(f"process {pid} has exited (a zombie: its parent has not collected its exit status): "
                          "it has no stacks left to read", exit_code=1)
    return StackTarget(pid=pid)


def _state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, D, T, Z ...), "" when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
        return stat[stat.rindex(")") + 2]
    except (OSError, ValueError, IndexError):
        return ""


def core_target(core: Path, executable: Optional[Path]) -> StackTarget:
    """The core and its program: --executable, else the file the core says it was."""
    from cytool.core_file import read_core

    info = read_core(core)
    if executable is None:
        named = info.executable()
        if named is None:
            raise CytoolError(f"{core}: the core does not say which program it is of",
                              hint="give the Python that wrote it with --executable PYTHON")
        executable = Path(named)
        if not executable.is_file():
            raise CytoolError(f"{core}: the core is of {named}, which is not there any more",
                              hint="give the Python that wrote it with --executable PYTHON")
    elif not executable.is_file():
        raise CytoolError(f"{executable}: no such executable")
    return StackTarget(core=core, executable=executable)


def _index_cache() -> Optional[Path]:
    """gdb's index of each library's symbols, kept in cytool's cache (by build-id): the
    second look at a process reads its libraries' symbols in about a third of the time."""
    from cytool.cache import BuildCache

    try:
        cache = BuildCache()
        cache.prepare()
        folder = cache.root / "gdb-index"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder
    except (OSError, CytoolError):
        return None  # gdb reads the symbols without it


def gdb_argv(target: StackTarget, gdb: str, with_locals: bool, index_cache: Optional[Path] = None) -> List[str]:
    from cytool.debugger import gdb_scripts_dir
    from cytool.module_index import index_dir

    scripts = gdb_scripts_dir()
    argv = [gdb, "-nx", "-batch", "-iex", "set pagination off", "-iex", "set print thread-events off"]
    if index_cache is not None:
        argv += ["-iex", f"set index-cache directory {index_cache}", "-iex", "set index-cache enabled on"]
    argv += ["-ex", f"source {scripts / 'cytool_gdb.py'}", "-ex", f"set cy-module-index {index_dir()}"]
    command = "cy-stack-json" + (" --locals" if with_locals else "")
    if target.pid is not None:
        exe = f"/proc/{target.pid}/exe"
        if os.path.exists(exe):  # its symbols are read before the process is stopped
            program = os.path.realpath(exe)
            # a program deleted or replaced since the process started: its inode is still there
            argv += ["-ex", f"file {program if _same_file(program, exe) else exe}"]
        argv += ["-ex", f"{command} --attach {target.pid}"]
    else:
        argv += ["-ex", f"file {target.executable}", "-ex", f"core-file {target.core}", "-ex", command]
    for text in argv:
        if "\n" in text:
            raise CytoolError(f"a newline cannot be passed to gdb: {text!r}")
    return argv


def _same_file(path: str, other: str) -> bool:
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


def read_stacks(target: StackTarget, with_locals: bool = False, gdb: Optional[str] = None) -> dict:
    """The gdb extension's report (see gdb/cytool_gdb_stack.py for its shape); CytoolError
    for every way it can fail (gdb missing, attach refused, not Python, core mismatch)."""
    from cytool.debugger import find_gdb

    path, _ = find_gdb(gdb)
    argv = gdb_argv(target, path, with_locals, _index_cache())
    was_stopped = target.pid is not None and _state(target.pid) in ("T", "t")
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              text=True, errors="replace", timeout=GDB_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CytoolError(f"gdb did not finish reading the stacks in {GDB_TIMEOUT:.0f} s")
    except OSError as error:
        raise CytoolError(f"cannot run {path}: {error}")
    finally:
        if target.pid is not None and not was_stopped:
            _never_leave_stopped(target.pid)
    report = _parse(done.stdout)
    if report is None:
        raise CytoolError(_what_failed(target, done.stdout + done.stderr), detail=_gdb_errors(done.stderr))
    if report.get("error") == "attach":
        raise attach_error(target.pid or 0, report.get("message", ""))
    if report.get("error"):
        raise CytoolError(f"{_name(target)}: {report.get('message')}", detail=_gdb_errors(done.stderr))
    if target.core is not None and "may not match specified executable" in done.stderr:
        raise CytoolError(f"{target.core} is not a core of {target.executable}",
                          hint="give the Python that wrote the core with --executable PYTHON")
    if not report.get("python"):
        program = target.executable or _exe_of(target.pid)
        raise CytoolError(f"{_name(target)} is not a Python process (no Python interpreter in {program})")
    return report


def _never_leave_stopped(pid: int) -> None:
    """A process that ran before gdb attached runs after it: one that gdb left stopped (gdb
    killed or failing while attached leaves its SIGSTOP in force) is continued."""
    if _state(pid) == "T":
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass


def _parse(output: str) -> Optional[dict]:
    if BEGIN not in output:
        return None
    text = output.split(BEGIN, 1)[1].split(END, 1)[0]
    try:
        return json.loads(text)
    except ValueError:
        return None


def _name(target: StackTarget) -> str:
    return f"process {target.pid}" if target.pid is not None else str(target.core)


def _exe_of(pid: Optional[int]) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return "its program"


def _gdb_errors(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and "warning: " not in line.lower()[:9]]
    return "\n".join(lines[-5:])


def _what_failed(target: StackTarget, output: str) -> str:
    if target.core is not None:
        if "not in executable format" in output or "format not recognized" in output:
            return f"gdb cannot read {target.executable} as the program of {target.core}"
        return f"gdb could not read the core {target.core}"
    return f"gdb could not read the stacks of process {target.pid}"


def attach_error(pid: int, message: str) -> CytoolError:
    """Why gdb could not attach, and what to do about it."""
    if not os.path.isdir(f"/proc/{pid}"):
        return CytoolError(f"no process with pid {pid} (it exited)")
    if "not permitted" not in message and "EPERM" not in message:
        return CytoolError(f"cannot attach to process {pid}: {message.strip()}")
    tracer = _tracer_of(pid)
    if tracer:
        return CytoolError(f"cannot attach to process {pid}: it is already traced by process {tracer} "
                           f"({_comm(tracer)})", hint="detach that debugger or tracer first")
    from cytool.debugger import ptrace_scope

    scope = ptrace_scope()
    reasons = []
    if scope is not None and scope > 0:
        reasons.append(f"/proc/sys/kernel/yama/ptrace_scope is {scope} (0 lets you attach to your own "
                       "processes: `sudo sysctl kernel.yama.ptrace_scope=0`)")
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
        if owner != os.getuid() and os.geteuid() != 0:
            reasons.append(f"the process belongs to another user (uid {owner})")
    except OSError:
        pass
    reasons.append("attaching needs CAP_SYS_PTRACE otherwise (run as root, or in a container "
                   "`--cap-add=SYS_PTRACE`)")
    return CytoolError(f"cannot attach to process {pid}: ptrace is not permitted", hint="; ".join(reasons))


def _tracer_of(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"

