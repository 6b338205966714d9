"""A program in a real terminal for tests: a detached tmux session, its screen as text,
keys sent to it, and waiting until some text appears (TUIs and live views).

Each terminal has a tmux server of its own (`tmux -L`): with one shared server, the last
session's end makes the server exit, and a session started at that moment connects to the
exiting server and fails ("server exited unexpectedly"); and a shared server keeps the
environment of the test that started it."""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional

import pytest

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
_serial = itertools.count(1)


class Terminal:
    """`command` (a shell command line) running in a `width` x `height` tmux window."""

    def __init__(self, name: str, command: str, width: int = 120, height: int = 36, cwd: Optional[str] = None) -> None:
        self.session = f"{name}-{os.getpid()}-{next(_serial)}"
        self.tmux = ["tmux", "-L", self.session]  # its own server (see the top of the file)
        started = subprocess.run(self.tmux + ["new-session", "-d", "-s", self.session, "-x", str(width), "-y",
                                              str(height)] + (["-c", cwd] if cwd else []) + [command],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if started.returncode != 0:
            raise AssertionError(f"tmux could not start {command!r}: {started.stdout}")

    def screen(self, history: int = 0) -> str:
        """What the window shows now, one line of text per terminal row, after the last
        `history` lines that scrolled off it."""
        return subprocess.run(self.tmux + ["capture-pane", "-t", self.session, "-p"] +
                              (["-S", str(-history)] if history else []), stdout=subprocess.PIPE, text=True).stdout

    def wait_for(self, text: str, timeout: float = 120) -> str:
        """The screen once `text` is on it; AssertionError with the last screen after `timeout` s."""
        deadline = time.monotonic() + timeout
        shown = ""
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.3)
        raise AssertionError(f"{text!r} never appeared on screen:\n{shown}")

    def wait_until(self, condition: Callable[[str], bool], timeout: float = 90, history: int = 0) -> str:
        """The screen (with `history` lines) once `condition(screen)` holds; AssertionError
        with the last screen after `timeout` s."""
        deadline = time.monotonic() + timeout
        shown = ""
        while time.monotonic() < deadline:
            shown = self.screen(history)
            if condition(shown):
                return shown
            time.sleep(0.2)
        raise AssertionError(f"the screen never showed what was expected:\n{shown}")

    def send(self, keys: str, enter: bool = True) -> None:
        """Type `keys` (tmux key names such as "q" or "C-c" work too), then Enter unless told not to."""
        subprocess.run(self.tmux + ["send-keys", "-t", self.session, keys] + (["Enter"] if enter else []), check=True)

    def close(self) -> None:
        subprocess.run(self.tmux + ["kill-server"], stderr=subprocess.DEVNULL)


def marked_lines(screen: str, text: str) -> List[str]:
    """The screen's lines that carry a current-line marker ('>') and `text`."""
    return [line for line in screen.splitlines() if ">" in line and text in line]


@contextmanager
def terminal(name: str, command: str, width: int = 120, height: int = 36,
             cwd: Optional[str] = None) -> Iterator[Terminal]:
    """`with terminal(...) as term:` runs `command` in tmux (in `cwd`) and ends it at the end."""
    shown = Terminal(name, command, width, height, cwd)
    try:
        yield shown
    finally:
        shown.close()
