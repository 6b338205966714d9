"""A program in a real terminal for tests: a detached tmux session, its screen as text,
keys sent to it, and waiting until some text appears (TUIs and live views)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from typing import Iterator, List

import pytest

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Terminal:
    """`command` (a shell command line) running in a `width` x `height` tmux window."""

    def __init__(self, name: str, command: str, width: int = 120, height: int = 36) -> None:
        self.session = f"{name}-{os.getpid()}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height),
                        command], check=True)

    def screen(self) -> str:
        """What the window shows now, one line of text per terminal row."""
        return subprocess.run(["tmux", "capture-pane", "-t", self.session, "-p"], stdout=subprocess.PIPE,
                              text=True).stdout

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

    def send(self, keys: str, enter: bool = True) -> None:
        """Type `keys` (tmux key names such as "q" or "C-c" work too), then Enter unless told not to."""
        subprocess.run(["tmux", "send-keys", "-t", self.session, keys] + (["Enter"] if enter else []), check=True)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], stderr=subprocess.DEVNULL)


def marked_lines(screen: str, text: str) -> List[str]:
    """The screen's lines that carry a current-line marker ('>') and `text`."""
    return [line for line in screen.splitlines() if ">" in line and text in line]


@contextmanager
def terminal(name: str, command: str, width: int = 120, height: int = 36) -> Iterator[Terminal]:
    """`with terminal(...) as term:` runs `command` in tmux and kills the session at the end."""
    shown = Terminal(name, command, width, height)
    try:
        yield shown
    finally:
        shown.close()
