"""`cytool attach PID`: start (and stop) cytool's tracer inside a running Python process.

    start(pid, capture, duration)  -> AttachResult   inject the tracer (gdb), wait for it to run
    stop(pid)                      -> dict           end a session started by start()
    wait_until_stopped(...)                          follow a session to its end

Flow: check the process (exists, is Python, runs the Python this cytool's tracer is built
for, is not under another debugger), make the session's control folder in cytool's
private cache (`attach/<pid>-<start time>`: request.json, status.json, the stop FIFO;
cytool.attach_agent owns their meaning; `lock`, held by the one cytool attach at work
there), then run gdb in batch mode on
cytool/attach_gdb.py, which stops the process at a safe moment, loads the tracer's
extension and starts a thread that runs the agent with the GIL held. The agent starts the
tracer (the capture is flagged as attached: blocks allocated before are unknown) and says
so in status.json. Errors are CytoolError with what to do.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from cytool.errors import CytoolError

HERE = Path(__file__).resolve().parent
AGENT = HERE / "attach_agent.py"
GDB_SCRIPT = HERE / "attach_gdb.py"
IDLE_INTERRUPT_S = 1.0  # no allocation for this long: SIGURG stops it where it sleeps (attach_gdb.py)
SAFE_POINT_TIMEOUT_S = 30.0  # for a thread to allocate or block in a system call (attach_gdb.py)
GDB_TIMEOUT_S = 90.0  # gdb is killed after this only (it gives up cleanly before)
START_TIMEOUT_S = 10.0
OLDEST_PYTHON = (3, 9)  # for the agent to get the GIL and start


@dataclass
class TargetProcess:
    pid: int
    start_ticks: int  # /proc/PID/stat field 22: with the pid, names the process for good
    executable: str
    python_version: str  # "3.11", or "" when it cannot be told
    command: str


@dataclass
class AttachResult:
    capture: Path
    pause_ms: float  # how long the process was stopped by gdb, in milliseconds
    folder: Path
    process: TargetProcess
    python_frames: bool  # False when the program had a profiler of its own (sys.setprofile)


def _proc(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read().decode("utf-8", "replace")


def inspect_process(pid: int) -> TargetProcess:
    """What cytool needs to know about process `pid`. Raises CytoolError when it does not
    exist or is not a Python process."""
    try:
        stat = _proc(pid, "stat")
    except FileNotFoundError:
        raise CytoolError(f"no process with pid {pid}", hint="check the pid (ps -ef | grep python)", exit_code=2) from None
    except PermissionError:
        raise CytoolError(f"process {pid} cannot be read (/proc/{pid}: permission denied)",
                          hint="run cytool as the process's user (or root)", exit_code=2) from None
    start_ticks = int(stat[stat.rindex(")") + 2:].split()[19])
    if stat[stat.rindex(")") + 2] in "ZX":
        raise CytoolError(f"process {pid} has exited (a zombie: its parent has not collected its exit status)",
                          exit_code=2)
    try:
        executable = os.readlink(f"/proc/{pid}/exe")
        maps = _proc(pid, "maps")
    except OSError as error:
        raise CytoolError(f"process {pid} cannot be inspected ({error.strerror})",
                          hint="run cytool as the process's user (or root)", exit_code=2) from None
    command = _proc(pid, "cmdline").replace("\0", " ").strip()
    library = re.search(r"/libpython(\d+\.\d+)[^/\s]*\.so", maps)
    named = re.match(r"python(\d+\.\d+)", os.path.basename(executable))
    version = library.group(1) if library else named.group(1) if named else ""
    if not library and not _exports_python(pid):
        raise CytoolError(f"process {pid} ({os.path.basename(executable)}) is not a Python process",
                          hint="cytool attach traces Python programs (and the Cython modules they load)",
                          exit_code=2)
    return TargetProcess(pid, start_ticks, executable, version, command)


def _exports_python(pid: int) -> bool:
    """The process's program has the interpreter linked in (read through /proc/PID/exe:
    right even when the file was deleted or replaced since the process started)."""
    try:
        with open(f"/proc/{pid}/exe", "rb") as f:
            return b"PyGILState_Ensure" in f.read()
    except OSError:
        return False


def _state(pid: int) -> str:
    """The process's state letter (/proc/PID/stat): R, S, D, T (stopped), Z ...; "" when gone."""
    try:
        stat = _proc(pid, "stat")
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2]


def _refuse_stopped(pid: int) -> None:
    """A process stopped by a signal (SIGSTOP, Ctrl-Z) cannot run the tracer's thread, and
    gdb would set it running: it is the user's to continue."""
    if _state(pid) == "T":
        raise CytoolError(f"process {pid} is stopped (by SIGSTOP, SIGTSTP or Ctrl-Z): it cannot start the tracer",
                          hint=f"continue it first (kill -CONT {pid}), then run cytool attach {pid} again",
                          exit_code=2)


def _tracer_pid(pid: int) -> int:
    match = re.search(r"^TracerPid:\s*(\d+)", _proc(pid, "status"), re.M)
    return int(match.group(1)) if match else 0


def _check_debuggable(process: TargetProcess) -> None:
    uid = re.search(r"^Uid:\s*\d+\s+(\d+)", _proc(process.pid, "status"), re.M)
    if uid and int(uid.group(1)) != os.geteuid():
        import pwd

        try:
            user = pwd.getpwuid(int(uid.group(1))).pw_name
        except KeyError:
            user = uid.group(1)
        # the process writes the capture and the session's files in our private cache
        raise CytoolError(f"process {process.pid} runs as user {user}, not as you",
                          hint=f"run cytool attach as that user (sudo -u {user} cytool attach {process.pid})",
                          exit_code=2)
    tracer = _tracer_pid(process.pid)
    if tracer:
        try:
            name = _proc(tracer, "comm").strip()
        except OSError:
            name = "?"
        raise CytoolError(f"process {process.pid} is being traced by process {tracer} ({name}): "
                          "a process can have only one debugger or tracer at a time",
                          hint=f"detach that one (or end it) first, then run cytool attach {process.pid} again",
                          exit_code=2)


def _extension_for(process: TargetProcess) -> Path:
    """The tracer's Python extension for the target's Python: this cytool's when the
    versions match, else one built for that version (cached) from the extension's C
    source, which a source checkout or editable install has."""
    from cytool import tracker

    ours = "%d.%d" % sys.version_info[:2]
    if process.python_version and tuple(map(int, process.python_version.split("."))) < OLDEST_PYTHON:
        raise CytoolError(f"process {process.pid} runs Python {process.python_version}: cytool's tracer needs "
                          f"Python {'.'.join(map(str, OLDEST_PYTHON))} or later", exit_code=2)
    extension = Path(tracker._driver().__file__)
    if not process.python_version:
        if _same_program(process.pid, sys.executable):
            return extension
        # a tracer built for another Python would read its frames wrongly (and crash it)
        raise CytoolError(f"cannot tell which Python version process {process.pid} runs: its program "
                          f"({process.executable}) is neither named pythonX.Y nor linked to libpythonX.Y",
                          hint=f"run the cytool installed for that Python: /proc/{process.pid}/exe -m cytool "
                          f"attach {process.pid} (or pythonX.Y -m cytool attach {process.pid})", exit_code=2)
    if process.python_version == ours:
        return extension
    interpreter = process.executable
    source_dir = HERE.parent / "runtime" / "python"  # the extension's C files (setup.py builds them all)
    headers = HERE.parent / "runtime" / "include"
    library = HERE / "_lib" / "libcytrace.so"
    what_to_do = (f"install cytool for Python {process.python_version} and run its cytool: "
                  f"python{process.python_version} -m pip install cytool, then "
                  f"python{process.python_version} -m cytool attach {process.pid}")
    if not re.match(r"python\d", os.path.basename(interpreter)) or not (source_dir / "cytrace_module.c").exists() \
            or not library.exists():
        raise CytoolError(f"process {process.pid} runs Python {process.python_version}; this cytool's tracer is "
                          f"built for Python {ours} ({sys.executable})", hint=what_to_do, exit_code=2)
    return _build_extension(process, interpreter, source_dir, headers, library, what_to_do)


def _same_program(pid: int, executable: str) -> bool:
    """Process `pid` runs the very program `executable` (same GNU build-id)."""
    from cytool.elf import build_id

    ours = build_id(Path(os.path.realpath(executable)))
    return ours is not None and build_id(Path(f"/proc/{pid}/exe")) == ours


def _build_extension(process: TargetProcess, interpreter: str, source_dir: Path, headers: Path, library: Path,
                     what_to_do: str) -> Path:
    from cytool.cache import cache_root, hash_file, hash_text

    query = ("import json, sysconfig; print(json.dumps([sysconfig.get_paths()['include'], "
             "sysconfig.get_config_var('EXT_SUFFIX') or '.so']))")
    try:
        found = subprocess.run([interpreter, "-I", "-c", query], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, timeout=30)
        include, suffix = json.loads(found.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        raise CytoolError(f"process {process.pid} runs Python {process.python_version}, whose headers cannot be "
                          f"found ({interpreter})", hint=what_to_do, exit_code=2) from None
    if not (Path(include) / "Python.h").exists():
        raise CytoolError(f"process {process.pid} runs Python {process.python_version}, without its C headers "
                          f"({include}/Python.h): cytool cannot build its tracer for it",
                          hint=f"install them (apt-get install python{process.python_version}-dev), or {what_to_do}",
                          exit_code=2)
    sources = sorted(source_dir.glob("*.c"))
    inputs = sources + sorted(source_dir.glob("*.h")) + [headers / "cytrace.h"]
    key = hash_text(*(f"{path.name}:{hash_file(path)}" for path in inputs), str(library), include, suffix)
    folder = cache_root() / "attach" / "extensions" / key[:16]
    target = folder / f"_cytrace{suffix}"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = folder / f".{os.getpid()}{suffix}"
    compiler = os.environ.get("CC", "gcc").split()
    command = [*compiler, "-shared", "-fPIC", "-O2", "-g", "-std=gnu11", "-fno-omit-frame-pointer",
               f"-I{headers}", f"-I{source_dir}", f"-I{include}", *map(str, sources), f"-L{library.parent}", "-lcytrace",
               f"-Wl,-rpath,{library.parent}", "-o", str(partial)]
    built = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if built.returncode != 0:
        partial.unlink(missing_ok=True)
        raise CytoolError(f"cannot build the tracer for Python {process.python_version}", detail=built.stdout[-2000:],
                          hint=what_to_do)
    os.replace(partial, target)
    return target


def control_folder(process: TargetProcess) -> Path:
    from cytool.cache import cache_root

    return cache_root() / "attach" / f"{process.pid}-{process.start_ticks}"


def read_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_status(folder: Path) -> Optional[Dict[str, Any]]:
    return read_json(folder / "status.json")


def _alive(process: TargetProcess) -> bool:
    try:
        stat = _proc(process.pid, "stat")
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19]) == process.start_ticks and fields[0] != "Z"


def _session_running(folder: Path) -> Optional[Dict[str, Any]]:
    """The session's status while its agent runs: it keeps the stop FIFO open, so a writer
    can open it. A process that exec()'d another program keeps its pid and start time but
    not the agent: its session is over."""
    status = read_status(folder)
    if not (status and status.get("state") == "tracing"):
        return None
    try:
        fd = os.open(folder / "stop", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # no such FIFO, or nobody reads it (ENXIO)
        return None
    os.close(fd)
    return status


def default_capture(process: TargetProcess, directory: Optional[Path] = None) -> Path:
    """`<script>.<pid>.cytrace` in `directory` (default: here), `-N` added when taken."""
    from cytool.commands.profile import default_capture_path

    words = process.command.split()
    script = next((w for w in words[1:] if w.endswith((".py", ".pyx"))), "")
    stem = Path(script).stem if script else Path(process.executable.replace(" (deleted)", "")).name
    return default_capture_path(stem, directory or Path.cwd(), process.pid)


def _capture_path(requested: Optional[Path], process: TargetProcess) -> Path:
    """Where the capture goes, as `cytool profile -o` chooses it: a folder gets the default
    name; a file that is not a capture is never overwritten. CytoolError otherwise."""
    from cytool.commands.profile import is_replaceable_capture

    if requested is None or requested.is_dir():
        return default_capture(process, requested).absolute()
    requested = requested.absolute()
    if requested.exists() and not requested.is_file():
        raise CytoolError(f"{requested}: not a regular file (a FIFO, a device?); a capture is written to a file",
                          hint="choose another -o path", exit_code=2)
    if requested.exists() and not is_replaceable_capture(requested):
        raise CytoolError(f"{requested}: exists and is not a cytool capture; refusing to overwrite it",
                          hint="choose another -o path (an existing capture file is replaced)", exit_code=2)
    if not requested.parent.is_dir():
        raise CytoolError(f"{requested.parent}: no such directory (for the capture)", exit_code=2)
    return requested


def _bootstrap(folder: Path) -> str:
    code = (
        "import sys, importlib.util as u\n"
        "m = sys.modules.get('_cytool_attach_agent')\n"
        "if m is None:\n"
        f"    s = u.spec_from_file_location('_cytool_attach_agent', {str(AGENT)!r})\n"
        "    m = u.module_from_spec(s)\n"
        "    s.loader.exec_module(m)\n"
        "    sys.modules['_cytool_attach_agent'] = m\n"
        f"m.start({str(folder)!r})\n"
    )
    return f"exec({code!r}, {{'__name__': '_cytool_attach'}})"


def _gdb() -> str:
    gdb = shutil.which("gdb")
    if gdb is None:
        raise CytoolError("gdb is not installed: cytool attach injects the tracer with gdb",
                          hint="apt-get install gdb", exit_code=2)
    return gdb


def _ptrace_hint() -> str:
    try:
        scope = Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()
    except OSError:
        scope = ""
    said = f" (it is {scope})" if scope else ""
    return (f"allow it with `echo 0 | sudo tee /proc/sys/kernel/yama/ptrace_scope`{said}, run cytool as root, "
            "or give it CAP_SYS_PTRACE (in a container: --cap-add=SYS_PTRACE)")


def _run_gdb(process: TargetProcess, folder: Path, extension: Path) -> Dict[str, Any]:
    result_path = folder / "gdb-result.json"
    calling = Path(f"{result_path}.calling")  # gdb is calling into the process: no more nudges
    for stale in (result_path, Path(f"{result_path}.running"), calling):
        stale.unlink(missing_ok=True)
    request = folder / "gdb-request.json"
    abort = folder / "gdb-abort"
    abort.unlink(missing_ok=True)
    request.write_text(json.dumps({"pid": process.pid, "extension": str(extension), "code": _bootstrap(folder),
                                   "result": str(result_path), "abort": str(abort), "timeout": SAFE_POINT_TIMEOUT_S}))
    env = dict(os.environ, CYTOOL_ATTACH_REQUEST=str(request))
    command = [_gdb(), "-nx", "-batch", "-q", "-x", str(GDB_SCRIPT)]
    gdb = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    started = time.monotonic()
    nudged = 0.0  # when the process was last nudged, or seen waiting for an allocation
    running = Path(f"{result_path}.running")
    interrupted = False
    while gdb.poll() is None:
        try:
            time.sleep(0.02)
        except KeyboardInterrupt:  # gdb gives up at its next stop: nudge it there now
            abort.touch()
            interrupted, nudged = True, 1.0
        now = time.monotonic()
        if not nudged and running.exists():
            nudged = now
        if nudged and now - nudged > IDLE_INTERRUPT_S and not result_path.exists() and not calling.exists():
            try:
                os.kill(process.pid, signal.SIGURG)  # nothing allocates: stop it where it sleeps
            except OSError:
                pass
            nudged = now
        if now - started > GDB_TIMEOUT_S:
            gdb.kill()
            gdb.wait()
            raise CytoolError(f"gdb did not finish attaching to process {process.pid} within {GDB_TIMEOUT_S:.0f} s")
    if interrupted:
        result = read_json(result_path)
        if result is None or result.get("error") == "aborted":
            raise CytoolError("interrupted: the process was left as it was", exit_code=130)
    output = gdb.stdout.read() if gdb.stdout else ""
    try:
        return json.loads(result_path.read_text())
    except (OSError, ValueError):
        raise CytoolError(f"gdb could not attach to process {process.pid}", detail=output[-2000:]) from None


def start(pid: int, capture: Optional[Path] = None, duration: Optional[float] = None) -> AttachResult:
    """Start tracing process `pid` into `capture` (absolute; default <script>.<pid>.cytrace
    here), for `duration` seconds (None: until stop() or the process ends). Returns once
    the tracer runs. Raises CytoolError: no such process, not Python, another Python
    version, ptrace refused, already traced, the injection failed."""
    process = inspect_process(pid)
    folder = control_folder(process)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _attaching(folder, pid):
        return _start_locked(process, folder, capture, duration)


@contextmanager
def _attaching(folder: Path, pid: int) -> Iterator[None]:
    """One `cytool attach` at a time per process: an exclusive lock on the session's
    folder for the whole attach (two at once would share its request and status files)."""
    import fcntl

    with open(folder / "lock", "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CytoolError(f"another cytool attach is attaching to process {pid} right now",
                              hint=f"wait for it to finish; `cytool attach --stop {pid}` ends its tracing",
                              exit_code=2) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _start_locked(process: TargetProcess, folder: Path, capture: Optional[Path],
                  duration: Optional[float]) -> AttachResult:
    pid = process.pid
    running = _session_running(folder)
    if running:
        raise CytoolError(f"process {pid} is already traced by cytool attach, into {running.get('capture')}",
                          hint=f"stop it with `cytool attach --stop {pid}` first", exit_code=2)
    _refuse_stopped(pid)
    extension = _extension_for(process)
    _check_debuggable(process)
    capture = _capture_path(capture, process)
    (folder / "status.json").unlink(missing_ok=True)
    (folder / "stop").unlink(missing_ok=True)  # a session before an exec() left it: nobody reads it
    (folder / "request.json").write_text(json.dumps({"capture": str(capture), "extension": str(extension),
                                                      "duration": duration}))
    injected = time.time()
    result = _run_gdb(process, folder, extension)
    if not result.get("ok"):
        _raise_injection_error(process, result)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        status = read_status(folder)
        if status is not None:
            break
        if not _alive(process):
            status = read_status(folder)  # it may have started, and written so, just before the exit
            if status is not None:
                break
            if _written_since(capture, injected):  # started, and the exit came before it could say so
                raise CytoolError(f"process {pid} exited just after tracing started; {capture} holds what was "
                                  "written until then", hint=f"cytool report {capture} (it says whether the "
                                  "capture is complete)", exit_code=1)
            raise CytoolError(f"process {pid} exited before the tracer could start", exit_code=1)
        if not _maps_file(pid, extension):  # it was dlopen()ed: gone with an exec()
            raise CytoolError(f"process {pid} replaced its program (exec) before the tracer could start",
                              hint=f"run cytool attach {pid} again to trace the new program", exit_code=1)
        if _state(pid) == "T":
            raise CytoolError(f"process {pid} was stopped (SIGSTOP, Ctrl-Z) just after the tracer was injected: "
                              "it starts tracing once it is continued",
                              hint=f"kill -CONT {pid}; watch for {capture}, and end it with cytool attach --stop {pid}",
                              exit_code=1)
        if time.monotonic() > deadline:
            raise CytoolError(
                f"the tracer was injected into process {pid} but has not started after {START_TIMEOUT_S:.0f} s: "
                "no thread let the GIL go (a long call that holds it?)",
                hint=f"it starts as soon as one does; watch for {capture}, and end it with cytool attach --stop {pid}",
                exit_code=1)
        time.sleep(0.02)
    state = status.get("state")
    if state == "stopped":  # it started, and the process exited before we read that it had
        raise CytoolError(f"process {pid} exited just after tracing started; {status.get('capture')} is complete "
                          f"up to its exit ({(status.get('stats') or {}).get('events', 0):,} events)",
                          hint=f"cytool report {status.get('capture')}", exit_code=1)
    if state == "refused":
        raise CytoolError(f"process {pid} is already traced by cytool, into {status.get('capture')}",
                          hint="one tracer per process: stop that one first (cytool attach --stop for an attach; "
                          "a cytool profile run ends with its program)", exit_code=2)
    if state != "tracing":
        raise CytoolError(f"the tracer could not start in process {pid}: {status.get('reason', '?')}")
    return AttachResult(Path(status["capture"]), float(result.get("pause_ms", 0.0)), folder, process,
                        bool(status.get("python_frames", True)))


def _maps_file(pid: int, path: Path) -> bool:
    """Process `pid` has `path` mapped (True too when its maps cannot be read)."""
    try:
        return str(path.resolve()) in _proc(pid, "maps")
    except OSError:
        return True


def _written_since(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since - 1.0  # file times are coarser than time.time()
    except OSError:
        return False


def _raise_injection_error(process: TargetProcess, result: Dict[str, Any]) -> None:
    kind, message = result.get("error"), result.get("message", "")
    if kind == "attach" and ("not permitted" in message or "Operation not permitted" in message):
        raise CytoolError(f"not allowed to attach to process {process.pid} (ptrace: operation not permitted)",
                          hint=_ptrace_hint(), exit_code=2)
    if kind == "attach" and "No such process" in message:
        raise CytoolError(f"no process with pid {process.pid} (it exited)", exit_code=2)
    if kind == "exited" and _alive(process):
        raise CytoolError(f"process {process.pid} replaced its program (exec) while cytool was attaching",
                          hint=f"run cytool attach {process.pid} again to trace the new program", exit_code=1)
    if kind == "exited":
        raise CytoolError(f"process {process.pid} exited while cytool was attaching", exit_code=1)
    if kind == "busy":
        raise CytoolError(f"could not attach to process {process.pid}: {message}",
                          hint="its threads compute without allocating or waiting: try again in a moment",
                          exit_code=1)
    raise CytoolError(f"could not inject the tracer into process {process.pid}: {message}", exit_code=1)


def stop(pid: int, timeout: float = 10.0) -> Dict[str, Any]:
    """End the session started by start() in process `pid`; returns its final status
    (capture, stats). Raises CytoolError when no session of cytool attach runs there."""
    process = inspect_process(pid)
    folder = control_folder(process)
    status = _session_running(folder)
    if status is None:
        raise CytoolError(f"process {pid} is not traced by cytool attach", hint=f"start with cytool attach {pid}",
                          exit_code=2)
    try:
        fd = os.open(folder / "stop", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        raise CytoolError(f"process {pid} is not traced by cytool attach any more", exit_code=2) from None
    try:
        os.write(fd, b"s")
    finally:
        os.close(fd)
    if _state(pid) == "T":
        raise CytoolError(f"process {pid} is stopped (SIGSTOP, Ctrl-Z): it ends its tracing once it is continued",
                          hint=f"kill -CONT {pid}", exit_code=1)
    final = wait_until_stopped(process, folder, timeout=timeout)
    if final is None:
        raise CytoolError(f"process {pid} ended without finishing its capture (killed?); {status.get('capture')} "
                          "holds what was written until then (cytool report says what is missing)", exit_code=1)
    return final


def wait_until_stopped(process: TargetProcess, folder: Path, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """Wait for the session in `folder` to end; its final status, or None when the process
    ended without saying so (killed). Raises CytoolError after `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    agent_gone_since = 0.0
    while True:
        status = read_status(folder)
        if status and status.get("state") == "stopped":
            return status
        if not _alive(process):
            status = read_status(folder)
            return status if status and status.get("state") == "stopped" else None
        if status and status.get("state") == "tracing" and _session_running(folder) is None:
            # nobody reads the stop FIFO: the agent went with an exec() (or is saying it
            # stopped right now: give it a moment)
            agent_gone_since = agent_gone_since or time.monotonic()
            if time.monotonic() - agent_gone_since > 1.0:
                raise CytoolError(f"process {process.pid} replaced its program (exec) while traced: the tracer went "
                                  f"with it; {status.get('capture')} holds what was written before",
                                  hint=f"cytool report {status.get('capture')}; cytool attach {process.pid} traces "
                                  "the new program", exit_code=1)
        if deadline is not None and time.monotonic() > deadline:
            raise CytoolError(f"process {process.pid} did not stop tracing within {timeout:.0f} s", exit_code=1)
        time.sleep(0.05)
