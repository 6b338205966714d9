"""Source text of the lines a report shows (read once per file, never required)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional


class SourceCache:
    def __init__(self) -> None:
        self._files: Dict[str, Optional[List[str]]] = {}

    def lines(self, file: str) -> Optional[List[str]]:
        """All lines of `file` (without newlines), or None when it cannot be read."""
        if file not in self._files:
            try:
                text = Path(file).read_text(encoding="utf-8", errors="replace")
                self._files[file] = text.splitlines()
            except OSError:
                self._files[file] = None
        return self._files[file]

    def line(self, file: str, number: int) -> str:
        """The stripped text of line `number` (1-based), "" when unknown."""
        lines = self.lines(file) if file else None
        if not lines or not 1 <= number <= len(lines):
            return ""
        return lines[number - 1].strip()
