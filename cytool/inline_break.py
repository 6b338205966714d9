"""`cytool.breakpoint()`: PDB's `breakpoint()` for compiled code, stopping at the caller's
.pyx (or .py) line.

Owns what a breakpoint does where it runs:
- under a debugger (this process has a tracer: `cytool debug`, gdb): the thread raises
  SIGTRAP; cytool's gdb extension (cytool_gdb_stepping.report) shows the caller's line
  with the cy-* commands ready;
- not under a debugger, on a terminal: gdb (TUI, cy-* commands) is started attached to
  this process, which waits for it and then stops the same way;
- not on a terminal: `cytool stack` of this thread goes to stderr, and the program goes on.
`CYTOOL_BREAKPOINT=0` turns every breakpoint into a no-op (read once, at import);
`PYTHONBREAKPOINT=cytool.breakpoint` routes Python's built-in `breakpoint()` here.
Cython code without the GIL uses `from cytool.debug cimport breakpoint` (cytool/debug.pxd),
which stops by itself under a debugger and calls `from_c()` here otherwise.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

DISABLED = os.environ.get("CYTOOL_BREAKPOINT", "") == "0"
ATTACH_TIMEOUT = 60.0  # seconds to wait for gdb to attach
PR_SET_PTRACER = 0x59616D61  # <linux/prctl.h>: Yama's "this process may trace me"


def breakpoint(*args: object, when: object = True, **kwargs: object) -> None:
    """Stop here (see the module's docstring); `when=False` (any false value) skips it.
    Extra arguments, which Python's `breakpoint()` may pass on, are ignored."""
    if DISABLED:
        return
    try:
        wanted = bool(when)
    except Exception as error:  # as gdb and pdb do with a condition that fails: stop
        print(f"cytool.breakpoint: when= could not be tested ({type(error).__name__}: {error}); stopping",
              file=sys.stderr)
        wanted = True
    if wanted:
        _stop()


def from_c() -> None:
    """Called by `cytool.debug.breakpoint()` in Cython code (GIL taken) when no debugger
    is attached."""
    if not DISABLED:
        _stop()


def tracer_pid() -> int:
    """The pid of the process tracing this one (0: none), from /proc/self/status."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


# One breakpoint at a time in the process: threads that reach one together would each
# start a gdb or a `cytool stack`, and ptrace lets only one of them in.
_one_at_a_time = threading.Lock()


def _new_lock_in_child() -> None:
    global _one_at_a_time
    _one_at_a_time = threading.Lock()  # a forked child has only the thread that forked


os.register_at_fork(after_in_child=_new_lock_in_child)


def _stop() -> None:
    with _one_at_a_time:
        if tracer_pid():
            _trap()
        elif _on_terminal():
            _debug_here()
        else:
            _print_stack()


def _trap() -> None:
    """Stop this thread for the debugger that traces the process (gdb does not pass the
    SIGTRAP on to the program)."""
    signal.pthread_kill(threading.get_ident(), signal.SIGTRAP)


def _on_terminal() -> bool:
    try:
        return os.isatty(0) and os.isatty(1)
    except OSError:
        return False


def _debug_here() -> None:
    """Start gdb on the terminal, attached to this process; stop once it is there."""
    from cytool.debugger import find_gdb, gdb_scripts_dir
    from cytool.errors import CytoolError
    from cytool.module_index import index_dir

    try:
        gdb, _ = find_gdb()
        scripts = gdb_scripts_dir()
    except CytoolError as error:
        print(f"cytool.breakpoint: {error.message}; printing the stack instead", file=sys.stderr)
        _print_stack()
        return
    argv = [gdb, "-tui", "-q", "-iex", "set pagination off", "-ex", f"source {scripts / 'cytool_gdb.py'}",
            "-ex", f"set cy-module-index {index_dir()}", "-ex", f"attach {os.getpid()}",
            # attaching refused (ptrace): gdb leaves, and this process goes on without it
            "-ex", "python gdb.selected_inferior().pid or gdb.execute('quit 1')",
            "-ex", "layout src", "-ex", "cy-cont", "-ex", "set pagination on"]
    # gdb outlives this call (it is the user's session), so it is not our child: `sh` starts
    # it in the background on the terminal, says its pid and exits at once.
    started = subprocess.run(["sh", "-c", '"$@" </dev/tty >/dev/tty 2>&1 & echo $!', "sh", *argv],
                             stdout=subprocess.PIPE, text=True, check=False, env=_untraced_environment())
    try:
        gdb_pid = int(started.stdout.strip())
    except ValueError:
        gdb_pid = 0
    if gdb_pid:
        _allow_tracer(gdb_pid)
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while not tracer_pid():
        if not _running(gdb_pid):
            print("cytool.breakpoint: gdb could not attach to this process; printing the stack instead",
                  file=sys.stderr)
            _print_stack()
            return
        if time.monotonic() > deadline:
            print(f"cytool.breakpoint: gdb did not attach within {ATTACH_TIMEOUT:.0f} s; going on", file=sys.stderr)
            return
        time.sleep(0.01)
    _trap()


def _allow_tracer(pid: int) -> None:
    """Let process `pid` (gdb, our descendant) attach where Yama's ptrace_scope 1 allows only
    ancestors: prctl(PR_SET_PTRACER, pid). Without Yama the call fails, and nothing is needed."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PTRACER, ctypes.c_ulong(pid), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _running(pid: int) -> bool:
    """Process `pid` exists and has not exited (a zombie counts as exited)."""
    if pid <= 0:
        return True  # not known: the deadline decides
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"


def _print_stack() -> None:
    """`cytool stack` of this thread, on stderr (this thread waits for it: its frames below
    this breakpoint are the caller's)."""
    tid = threading.get_native_id()
    command = _cytool_command()
    if command is None:
        print(f"cytool.breakpoint: no Python to run `cytool stack` with (sys.executable is {sys.executable!r}, "
              "and no `cytool` on PATH); going on", file=sys.stderr)
        return
    argv = [*command, "stack", "--below-breakpoint", "--thread", str(tid), str(os.getpid())]
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                              env=_untraced_environment())
    except OSError as error:
        print(f"cytool.breakpoint: cannot run `cytool stack` ({error}); going on", file=sys.stderr)
        return
    text = done.stdout or f"(`{' '.join(command)} stack` printed nothing, exit status {done.returncode})\n"
    sys.stderr.write(f"cytool.breakpoint: stack of thread {tid}\n{text}")
    if not text.endswith("\n"):
        sys.stderr.write("\n")
    sys.stderr.flush()


def _untraced_environment() -> "dict[str, str]":
    """This process's environment without CYTOOL_PROFILE: the tools a breakpoint starts are
    not the program, and must not leave captures of their own beside its capture."""
    return {name: value for name, value in os.environ.items() if name != "CYTOOL_PROFILE"}


def _cytool_command() -> "list[str] | None":
    """How to run cytool from here: this interpreter when it is a program (an embedding
    application's sys.executable may be empty or another program), else `cytool` on PATH."""
    import shutil

    executable = sys.executable
    if executable and os.path.isfile(executable) and os.access(executable, os.X_OK) \
            and os.path.basename(executable).startswith("python"):
        return [executable, "-m", "cytool"]
    found = shutil.which("cytool")
    return [found] if found else None
