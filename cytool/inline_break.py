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


def breakpoint(*args: object, when: object = True, **kwargs: object) -> None:
    """Stop here (see the module's docstring); `when=False` (any false value) skips it.
    Extra arguments, which Python's `breakpoint()` may pass on, are ignored."""
    if DISABLED:
        return
    if not when:
        return
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


def _stop() -> None:
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
            "-ex", f"set cy-module-index {index_dir()}", "-ex", f"attach {os.getpid()}", "-ex", "layout src",
            "-ex", "cy-cont", "-ex", "set pagination on"]
    # gdb outlives this call (it is the user's session), so it is not our child: `sh` starts
    # it in the background on the terminal and exits at once.
    subprocess.run(["sh", "-c", 'exec "$@" </dev/tty >/dev/tty 2>&1 &', "sh", *argv], check=False)
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while not tracer_pid():
        if time.monotonic() > deadline:
            print(f"cytool.breakpoint: gdb did not attach within {ATTACH_TIMEOUT:.0f} s; going on", file=sys.stderr)
            return
        time.sleep(0.01)
    _trap()


def _print_stack() -> None:
    """`cytool stack` of this thread, on stderr (this thread waits for it: its frames below
    this breakpoint are the caller's)."""
    argv = [sys.executable, "-m", "cytool", "stack", "--below-breakpoint", "--thread",
            str(threading.get_native_id()), str(os.getpid())]
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    sys.stderr.write(f"cytool.breakpoint: stack of thread {threading.get_native_id()}\n{done.stdout}")
    if not done.stdout.endswith("\n"):
        sys.stderr.write("\n")
    sys.stderr.flush()
