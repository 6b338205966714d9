"""What a build says while it works: a spinner on a terminal, the commands with -v,
silence otherwise (pipes, CI logs). rich is imported only when a spinner is shown."""
from __future__ import annotations

import shlex
import sys
from typing import Any, List, Optional, Sequence


class Progress:
    def __init__(self, verbose: bool = False, stream: Any = None):
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self._status: Optional[Any] = None
        self._interactive = bool(getattr(self.stream, "isatty", lambda: False)()) and not verbose

    def step(self, message: str) -> None:
        if self.verbose:
            print(f"cytool: {message}", file=self.stream, flush=True)
        elif self._interactive:
            if self._status is None:
                from rich.console import Console

                self._status = Console(file=self.stream, stderr=True).status(message)
                self._status.start()
            else:
                self._status.update(message)

    def command(self, argv: Sequence[str], cwd: Optional[str] = None) -> None:
        if self.verbose:
            where = f"(in {cwd}) " if cwd else ""
            print(f"  {where}$ {shlex.join(list(argv))}", file=self.stream, flush=True)

    def done(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def quiet() -> Progress:
    return Progress(verbose=False, stream=_NullStream())


class _NullStream:
    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


__all__: List[str] = ["Progress", "quiet"]
