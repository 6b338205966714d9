"""What `cytool attach` runs inside the process it attaches to.

cytool.attach injects a few lines (through gdb, in a thread of their own that holds the
GIL) that load this file under the name `_cytool_attach_agent` and call start(). This
module is therefore standard library only, runs on the target's Python (3.9+), and never
imports the `cytool` package: a program that imported another cytool keeps it.

The session's control folder (made by cytool attach, private to the user) holds:
  request.json  what to do: capture path, extension path, duration (s) or null;
  status.json   what happened, written atomically at each change:
                {"state": "tracing" | "stopped" | "refused" | "failed", "capture": path,
                 "reason": ..., "stats": {...}, "pid": ...};
  stop          a FIFO: writing one byte into it stops the session (`cytool attach --stop`).

One tracer per process: when the tracer already runs (`cytool profile`, CYTOOL_PROFILE,
cytool.Tracker, an earlier attach), the request is refused, naming its capture.
"""
from __future__ import annotations

import atexit
import errno
import importlib.util
import json
import os
import select
import sys
import threading
import time
from typing import Any, Dict, Optional

_session: Optional["_Session"] = None
_hooks_registered = False


def _write_status(folder: str, status: Dict[str, Any]) -> None:
    _write_text(folder, json.dumps(dict(status, pid=os.getpid())))


def _write_text(folder: str, text: str) -> None:
    """status.json, replaced atomically (os calls only: no Python frames of other modules)."""
    temporary = os.path.join(folder, f"status.json.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(temporary, os.path.join(folder, "status.json"))


def _load_driver(extension: str) -> Any:
    """The tracer's driver: the one this process loaded already, else ours."""
    driver = sys.modules.get("cytool._cytrace")
    if driver is not None:
        return driver
    spec = importlib.util.spec_from_file_location("cytool._cytrace", extension)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {extension}")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)  # type: ignore[union-attr]
    sys.modules["cytool._cytrace"] = driver
    return driver


class _Session:
    def __init__(self, folder: str, driver: Any, capture: str, duration: Optional[float]) -> None:
        self.folder = folder
        self.driver = driver
        self.capture = capture
        self.duration = duration
        self.lock = threading.Lock()
        self.stopped = False
        self.stop_fifo = os.path.join(folder, "stop")
        self.started = threading.Lock()  # held until the tracer runs (or failed to start)
        self.pid = os.getpid()  # a forked child (its atexit too) leaves the session alone
        self.fifo_fd = -1  # the stop FIFO, open for reading while the session runs

    def stop(self, reason: str) -> None:
        if os.getpid() != self.pid:
            return
        with self.lock:
            if self.stopped:
                return
            self.stopped = True
            stats = self.driver.stop() if self.driver.is_active() else None
            stats = {key: stats[key] for key in stats} if stats else {}
            try:
                os.unlink(self.stop_fifo)
            except OSError:
                pass
            try:
                _write_status(self.folder, {"state": "stopped", "capture": self.capture, "reason": reason,
                                            "stats": stats})
            except OSError:
                pass

    def watch(self, fifo: int) -> None:
        """Wait for a byte in the stop FIFO, or the end of the duration; then stop."""
        with self.started:
            pass
        if self.stopped:
            self.fifo_fd = -1
            os.close(fifo)
            return
        deadline = None if self.duration is None else time.monotonic() + self.duration
        reason = "duration"
        while not self.stopped:
            # in steps of at most a minute: select() refuses timeouts past time_t
            timeout = None if deadline is None else min(60.0, max(0.0, deadline - time.monotonic()))
            try:
                readable, _, _ = select.select([fifo], [], [], timeout)
            except InterruptedError:
                continue
            except (OSError, ValueError, OverflowError):  # never die with the tracer on and no way to stop it
                reason = "error"
                break
            if readable:
                reason = "stop"
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        self.fifo_fd = -1
        os.close(fifo)
        self.stop(reason)


def _stop_at_exit() -> None:
    if _session is not None:
        _session.stop("exit")


def _after_fork_in_child() -> None:
    # the child does not follow the capture (the parent's session owns it), nor keep the
    # stop FIFO open (cytool attach takes a reader there for the agent being alive)
    if _session is not None and _session.fifo_fd >= 0:
        try:
            os.close(_session.fifo_fd)
        except OSError:
            pass
        _session.fifo_fd = -1
    try:
        driver = sys.modules.get("cytool._cytrace")
        if driver is not None:
            driver._after_fork_child()
    except Exception:
        pass


def start(folder: str) -> None:
    """Start the session that `folder`/request.json describes; say how it went in
    status.json. Never raises: this runs inside someone else's program."""
    global _session, _hooks_registered
    request: Dict[str, Any] = {}
    try:
        with open(os.path.join(folder, "request.json")) as f:
            request = json.load(f)
        driver = _load_driver(request["extension"])
        if driver.is_active():
            _write_status(folder, {"state": "refused", "reason": "already tracing", "capture": driver.path()})
            return
        if _session is not None and not _session.stopped:
            _write_status(folder, {"state": "refused", "reason": "already tracing", "capture": _session.capture})
            return
        capture = request["capture"]
        if os.path.exists(capture) and not os.path.isfile(capture):
            # opening a FIFO to write would block here, with the GIL held: the program would hang
            _write_status(folder, {"state": "failed", "reason": f"{capture}: not a regular file (a FIFO, a device?)"})
            return
        # Python frames are read from the interpreter's frames at each allocation: a
        # program's own profiler (sys.setprofile, in any thread) is left alone
        frames = True
        session = _Session(folder, driver, capture, request.get("duration"))
        os.mkfifo(session.stop_fifo, 0o600)
        fifo = session.fifo_fd = os.open(session.stop_fifo, os.O_RDWR | os.O_NONBLOCK)
        # everything that allocates in other modules (threading, json) happens before the
        # tracer starts: what this agent allocates afterwards is the "(cytool tracer)" row
        watcher = threading.Thread(target=session.watch, args=(fifo,), name="cytool-attach", daemon=True)
        tracing = json.dumps({"state": "tracing", "capture": capture, "python_frames": frames, "pid": os.getpid()})
        session.started.acquire()  # the watcher waits for the tracer to start
        watcher.start()
        try:
            try:
                driver.start(capture, python_frames=frames, attached=True)
            except TypeError:  # a driver of an older cytool, loaded by the program itself
                driver.start(capture, python_frames=frames)
        except BaseException:
            session.stopped = True
            session.started.release()
            os.unlink(session.stop_fifo)
            raise
        _session = session
        if not _hooks_registered:
            atexit.register(_stop_at_exit)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork_in_child)
            _hooks_registered = True
        _write_text(folder, tracing)
        session.started.release()
    except BaseException as error:  # noqa: B902 - report everything, raise nothing
        if isinstance(error, OSError) and error.errno == errno.EAGAIN:
            reason = f"{request.get('capture')}: another process is writing a capture there right now"
        elif isinstance(error, OSError) and error.strerror:
            reason = f"{error.strerror}" + (f" ({request.get('capture')})" if request else "")
        else:
            reason = f"{type(error).__name__}: {error}"
        try:
            driver = sys.modules.get("cytool._cytrace")
            if driver is not None and driver.is_active() and (_session is None or _session.stopped):
                driver.stop()
            _write_status(folder, {"state": "failed", "reason": reason})
        except Exception:
            pass
