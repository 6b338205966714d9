"""`cytool stack`, black-box on real processes and cores, through real gdb.

tests/fixtures/stack/driver.py (run by `cytool run`, so hang.pyx is built with its debug
XML) starts two named threads, one blocked in C inside a nogil Cython function and one in
Python called back from Cython, then blocks in C holding the GIL; pure.py is a Python
process with no Cython. Each process is read live, and from a core made by gcore. Runs on
two interpreters (tests/conftest.py TWO_PYTHONS); the error paths on this one.
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
from pathlib import Path
from typing import Iterator, List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "debug"))
import gdbharness as h  # noqa: E402

pytestmark = h.GDB_TESTS

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stack"
HANG = h.markers(FIXTURES / "hang.pyx")
DRIVER = h.markers(FIXTURES / "driver.py")
PURE = h.markers(FIXTURES / "pure.py")


class Program:
    def __init__(self, argv: List[str], cwd: Path, env: dict) -> None:
        self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline()  # "ready" once every thread waits where expected
        assert line.strip() == "ready", \
            f"{argv} did not start: {line!r} {self.process.stderr.read() if self.process.poll() is not None else ''}"
        self.pid = self.process.pid

    def stop(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)


def _start(argv: List[str], cwd: Path, env: dict = None) -> Program:
    return Program(argv, cwd, h.python_env(env))


def stack(*args: object, env: dict = None) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "cytool", "stack", *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=600, env=full)


def gcore(pid: int, folder: Path) -> Path:
    done = subprocess.run(["gcore", "-o", str(folder / "core"), str(pid)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    core = folder / f"core.{pid}"
    assert done.returncode == 0 and core.is_file(), done.stdout
    return core


@pytest.fixture(scope="module")
def threaded(stack_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Program]:
    """driver.py under `cytool run` with that Python, left waiting."""
    folder = tmp_path_factory.mktemp("stack-driver")
    for name in ("driver.py", "hang.pyx"):
        shutil.copy(FIXTURES / name, folder / name)
    program = _start([stack_python, "-m", "cytool", "run", "driver.py"], folder)
    yield program
    program.stop()


@pytest.fixture(scope="module")
def threaded_core(threaded: Program, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("stack-core")
    core = gcore(threaded.pid, folder)
    yield core
    core.unlink()


def threads_of(text: str) -> dict:
    """{"MainThread": [frame lines ...], ...} from the text output."""
    found = {}
    current = None
    for line in text.splitlines():
        match = re.match(r'^Thread (\d+) "([^"]+)"', line)
        if match:
            current = found.setdefault(match.group(2), [])
            current.append(line)
        elif current is not None and line.startswith("    ["):
            current.append(line.strip())
    return found


def frame_heads(lines: List[str]) -> List[str]:
    """`[cy] hang.block_in_c() at hang.pyx:13` with paths cut to their file name."""
    return [re.sub(r" at \S*/", " at ", line) for line in lines[1:]]


def check_threaded(text: str) -> None:
    threads = threads_of(text)
    assert set(threads) == {"MainThread", "waiter-c", "sleeper-py"}, text
    main, waiter, sleeper = threads["MainThread"], threads["waiter-c"], threads["sleeper-py"]
    assert "[holds the GIL]" in main[0] and "(main)" in main[0], text
    assert "GIL" not in waiter[0] + sleeper[0], text
    heads = frame_heads(main)
    cython = [line for line in heads if not line.startswith("[c]")]
    assert cython[:2] == [f"[cy] hang.hold_gil() at hang.pyx:{HANG['hold-gil']}",
                          f"[py] main() at driver.py:{DRIVER['main-hold']}"], text
    assert not any("cytool" in line for line in heads), text  # the launcher's own frames are hidden
    heads = [line for line in frame_heads(waiter) if not line.startswith("[c]")]
    assert heads[:3] == [f"[cy] hang.block_in_c() at hang.pyx:{HANG['blocked']}",
                         f"[cy] hang.wait_nogil() at hang.pyx:{HANG['call-blocked']}",
                         f"[py] in_c() at driver.py:{DRIVER['in-c']}"], text
    assert frame_heads(waiter)[0].startswith("[c] "), text  # the C call it waits in
    heads = [line for line in frame_heads(sleeper) if not line.startswith("[c]")]
    assert heads[:3] == [f"[py] sleepy() at driver.py:{DRIVER['py-sleep']}",
                         f"[cy] hang.call_back() at hang.pyx:{HANG['call-back']}",
                         f"[py] in_python() at driver.py:{DRIVER['in-python']}"], text
    assert "sleep(seconds)  # @blocked" in text and "result = callback(times)" in text, text  # source lines


def test_live_threads(threaded: Program) -> None:
    done = stack("-v", threaded.pid)
    assert done.returncode == 0, done.stderr
    check_threaded(done.stdout)
    assert re.search(rf"^cytool: process {threaded.pid} was stopped for \d+ ms .*; the symbols of [1-9]\d* "
                     r"libraries were read before, while it ran", done.stderr, flags=re.M), done.stderr
    assert os.path.isdir(f"/proc/{threaded.pid}") and threaded.process.poll() is None  # detached, still running


def test_live_json_native_locals(threaded: Program) -> None:
    done = stack("--json", "--native", "--locals", threaded.pid)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["pid"] == threaded.pid and report["gil"] == "held", done.stdout[:2000]
    # the Cython module's symbols were read from /proc/PID/maps before attaching, not by gdb
    # once the process was stopped: the frames below are read from those symbols
    preloaded = [os.path.basename(path) for path in report["preloaded"]]
    assert any(name.startswith("hang.") for name in preloaded), preloaded
    by_name = {t["python_name"]: t for t in report["threads"]}
    waiter = by_name["waiter-c"]["frames"]
    kinds = [f["kind"] for f in waiter]
    assert kinds[0] == "native" and "cython" in kinds and "python" in kinds, kinds
    first_cython = kinds.index("cython")
    assert any(f["name"] for f in waiter[:first_cython]), waiter  # the C frames above the Cython frame
    wait = next(f for f in waiter if f["name"] == "hang.wait_nogil")
    assert ["scale", "2.5"] in wait["locals"], wait
    assert wait["file"].endswith("hang.pyx") and wait["line"] == HANG["call-blocked"], wait
    sleepy = next(f for f in by_name["sleeper-py"]["frames"] if f["name"] == "sleepy")
    assert ["seconds", "1000"] in sleepy["locals"], sleepy
    call_back = next(f for f in by_name["sleeper-py"]["frames"] if f["name"] == "hang.call_back")
    assert ["done", "0"] in call_back["locals"], call_back
    assert by_name["MainThread"]["gil"] and not by_name["waiter-c"]["gil"], report


def test_core_made_by_gcore(threaded: Program, threaded_core: Path, stack_python: str) -> None:
    done = stack("--core", threaded_core)  # the executable is the one the core names
    assert done.returncode == 0, done.stderr
    check_threaded(done.stdout)
    assert done.stdout.startswith(f"Process {threaded.pid} "), done.stdout[:200]
    named = stack("--core", threaded_core, "--executable", os.path.realpath(stack_python), "--locals")
    assert named.returncode == 0 and "scale = 2.5" in named.stdout, named.stderr
    wrong = stack("--core", threaded_core, "--executable", "/bin/sleep")
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr, wrong.stderr
    assert f"{threaded_core} is not a core of /bin/sleep" in wrong.stderr, wrong.stderr


def test_pure_python_live_and_kernel_core(stack_python: str, tmp_path: Path) -> None:
    """pure.py read live, then from the core the kernel writes when it dies of SIGQUIT."""
    import resource

    def allow_core() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        # a shell's background job (`make test &`) ignores SIGQUIT, and exec keeps that
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)

    process = subprocess.Popen([stack_python, str(FIXTURES / "pure.py")], cwd=tmp_path, stdout=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, preexec_fn=allow_core)
    try:
        assert process.stdout.readline().strip() == "ready"
        done = stack("--locals", process.pid)
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:  # say why it did not die
            status = Path(f"/proc/{process.pid}/status").read_text()
            process.kill()
            process.wait(timeout=60)
            wanted = ("State", "TracerPid", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")
            pytest.fail("the process did not die of SIGQUIT in 120 s: " + "; ".join(
                line for line in status.splitlines() if line.split(":")[0] in wanted))
    assert done.returncode == 0, done.stderr
    assert "local_list = [1, 2, 3]" in done.stdout and "seconds = 1000" in done.stdout, done.stdout
    texts = [done.stdout]
    cores = sorted(tmp_path.glob("core*"))
    if cores:  # core_pattern may send cores elsewhere (systemd-coredump, apport)
        from_core = stack("--core", cores[0])
        assert from_core.returncode == 0, from_core.stderr
        texts.append(from_core.stdout)
    for text in texts:
        heads = [line for line in frame_heads(threads_of(text)["MainThread"]) if not line.startswith("[c]")]
        assert heads == [f"[py] inner() at pure.py:{PURE['pure-sleep']}",
                         f"[py] outer() at pure.py:{PURE['outer-call']}",
                         f"[py] <module>() at pure.py:{PURE['module-call']}"], text
    if not cores:
        pytest.skip(f"the kernel wrote no core in {tmp_path} (core_pattern: "
                    f"{Path('/proc/sys/kernel/core_pattern').read_text().strip()})")


# -- errors: one message, a non-zero exit, no traceback ---------------------------------------


def _refused(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert message in done.stderr, done.stderr


def test_no_such_process() -> None:
    _refused(stack(4194303 + 1), "no process with pid 4194304")


def test_not_a_python_process(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        time.sleep(0.2)
        _refused(stack(sleeper.pid), f"process {sleeper.pid} is not a Python process")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_ptrace_not_permitted() -> None:
    """A process some other tracer holds cannot be attached to (EPERM, as ptrace_scope gives)."""
    code = ("import ctypes, sys, time\nctypes.CDLL(None).ptrace(0, 0, None, None)\n"
            "print('ready', flush=True)\ntime.sleep(600)\n")
    program = _start([sys.executable, "-c", code], Path.cwd())
    try:
        done = stack(program.pid)
    finally:
        program.stop()
    _refused(done, f"cannot attach to process {program.pid}: it is already traced by process {os.getpid()}")


def test_not_a_core(tmp_path: Path) -> None:
    _refused(stack("--core", sys.executable), "not a core file")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    _refused(stack("--core", text), "not a core file (not an ELF file)")
    _refused(stack("--core", tmp_path / "missing"), "no such core file")


def test_zombie(tmp_path: Path) -> None:
    """A process that exited and was not reaped has no stacks: said so, not "ptrace refused"."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 60
        while not Path(f"/proc/{child.pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.02)
        _refused(stack(child.pid), f"process {child.pid} has exited (a zombie")
    finally:
        child.wait()


def test_truncated_core(threaded_core: Path, tmp_path: Path) -> None:
    """A core cut short (ulimit -c, a full disk): said so, with how much is missing."""
    data = threaded_core.read_bytes()
    for keep in (100_000, len(data) // 2):
        cut = tmp_path / f"cut-{keep}.core"
        cut.write_bytes(data[:keep])
        _refused(stack("--core", cut), f"{cut}: the core is cut short: {keep:,} of the ")
        _refused(stack("--core", cut, "--executable", sys.executable), "the core is cut short")


def _static_python() -> str:
    """A Python with the interpreter linked into its executable (Debian's), of this venv's
    version, or ""."""
    version = "%d.%d" % sys.version_info[:2]
    candidate = shutil.which(f"python{version}", path="/usr/bin:/usr/local/bin") or ""
    if not candidate:
        return ""
    linked = subprocess.run(["ldd", candidate], stdout=subprocess.PIPE, text=True).stdout
    return "" if "libpython" in linked else os.path.realpath(candidate)


def test_program_deleted_since_it_started(tmp_path: Path) -> None:
    """A Python whose executable was deleted or replaced (an upgrade) after it started is still
    read, through /proc/PID/exe, Python frames included; attach traces it too."""
    original = _static_python()
    if not original:
        pytest.skip("no Python with a static libpython of this version (Debian's python3.X)")
    folder = tmp_path / "bin"
    folder.mkdir()
    copy = folder / os.path.basename(original)
    shutil.copy(original, copy)
    program = _start([str(copy), str(FIXTURES / "pure.py")], tmp_path)
    try:
        copy.unlink()
        assert os.readlink(f"/proc/{program.pid}/exe").endswith("(deleted)")
        done = stack(program.pid)
        capture = tmp_path / "deleted.cytrace"
        attached = subprocess.run([sys.executable, "-m", "cytool", "attach", str(program.pid), "--duration", "0.5",
                                   "-o", str(capture)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  timeout=300)
        alive = program.process.poll() is None
    finally:
        program.stop()
    assert done.returncode == 0, done.stderr
    heads = [line for line in frame_heads(threads_of(done.stdout)["MainThread"]) if not line.startswith("[c]")]
    assert heads[0] == f"[py] inner() at pure.py:{PURE['pure-sleep']}", done.stdout
    assert attached.returncode == 0 and "Traceback" not in attached.stderr, attached.stderr
    assert alive and capture.is_file()


def test_process_in_another_mount_namespace(tmp_path: Path) -> None:
    """A process whose program and libpython exist only in its own mount namespace (a
    container seen from the host): gdb reads them through the process (target:), and the
    stack has its Python frames (it used to say "not a Python process")."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    program = os.path.realpath(sys.executable)
    linked = subprocess.run(["ldd", program], stdout=subprocess.PIPE, text=True).stdout
    library = next((line.split("=>")[1].split("(")[0].strip() for line in linked.splitlines()
                    if "libpython" in line and "=>" in line), "")
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    script = (f'mount -t tmpfs none "{hidden}" && cp "{program}" "{hidden}/python" && '
              + (f'cp "{library}" "{hidden}/" && ' if library else "")
              + f'LD_LIBRARY_PATH="{hidden}" PYTHONHOME="{sys.base_prefix}" exec "{hidden}/python" '
              + f'"{FIXTURES / "pure.py"}"')
    process = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        if line.strip() != "ready":
            pytest.skip(f"cannot start a process in a mount namespace of its own: {process.stderr.read()[:300]}")
        assert not (hidden / "python").exists()  # not from here
        done = stack(process.pid)
    finally:
        process.kill()
        process.wait()
    assert done.returncode == 0, done.stderr
    heads = [line for line in frame_heads(threads_of(done.stdout)["MainThread"]) if not line.startswith("[c]")]
    assert heads[0] == f"[py] inner() at pure.py:{PURE['pure-sleep']}", done.stdout


def test_gdb_missing() -> None:
    _refused(stack(os.getpid(), env={"CYTOOL_GDB": "no-such-gdb"}), "no-such-gdb not found")


def test_arguments() -> None:
    _refused(stack(), "give a PID or --core CORE")
    _refused(stack("--executable", sys.executable, os.getpid()), "--executable goes with --core")


def test_module_built_without_cytool(tmp_path: Path) -> None:
    """hang.pyx built as a plain project would (Cython, gcc -O2 -g, no debug XML, no #line):
    Cython names from its symbols, .pyx lines from the generated C's comments."""
    for name in ("driver.py", "hang.pyx"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    import sysconfig

    subprocess.run([sys.executable, "-m", "cython", "-3", "hang.pyx", "-o", "hang.c"], cwd=tmp_path, check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-g", "-O2", f"-I{sysconfig.get_paths()['include']}", "hang.c",
                    "-o", "hang" + sysconfig.get_config_var("EXT_SUFFIX")], cwd=tmp_path, check=True)
    program = _start([sys.executable, "driver.py"], tmp_path)
    try:
        done = stack(program.pid)
    finally:
        program.stop()
    assert done.returncode == 0, done.stderr
    waiter = [line for line in frame_heads(threads_of(done.stdout)["waiter-c"]) if not line.startswith("[c]")]
    assert waiter[:2] == [f"[cy] hang.block_in_c() at hang.pyx:{HANG['blocked']}",
                          f"[cy] hang.wait_nogil() at hang.pyx:{HANG['call-blocked']}"], done.stdout
    assert "hang has no Cython debug information" in done.stdout and "cytool develop" in done.stdout, done.stdout
