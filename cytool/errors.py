"""The one exception type the CLI turns into a clear message and a non-zero exit."""
from __future__ import annotations


class CytoolError(Exception):
    """A problem the user can act on.

    `message` says what went wrong (naming the file and line where there is one),
    `hint` what to do about it, `detail` optional extra text (a tool's own output),
    `exit_code` the process status the CLI returns.
    """

    def __init__(self, message: str, *, hint: str = "", detail: str = "", exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail
        self.exit_code = exit_code

    def render(self) -> str:
        parts = [f"cytool: error: {self.message}"]
        if self.detail:
            parts.append(self.detail.rstrip("\n"))
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)
