"""Turn Cython's and the C compiler's output into one short, actionable error."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

from cytool.errors import CytoolError

# "mod.pyx:5:8: Expected ':', found 'NEWLINE'"
_CYTHON_POSITION = re.compile(r"^(?P<file>[^\s:][^:\n]*):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$", re.M)
# "mod.pyx:5:3: error: ..." / "mod.c:12: fatal error: ..."
_CC_ERROR = re.compile(r"^(?P<loc>[^\s:][^:\n]*(:\d+)+): (fatal )?error: ", re.M)

MAX_COMPILER_ERRORS = 5
MAX_DETAIL_LINES = 40


def cython_failure(source: Path, output: str) -> CytoolError:
    """Cython's first error, with its source excerpt, as one CytoolError."""
    text = output.strip()
    match = _CYTHON_POSITION.search(text)
    if match:
        where = f"{match.group('file')}:{match.group('line')}:{match.group('col')}"
        message = f"Cython could not compile {source.name}: {where}: {match.group('msg')}"
    else:
        message = f"Cython could not compile {source.name}"
    # Cython repeats a block per error; keep the first block (excerpt + message).
    blocks = text.split("Error compiling Cython file:")
    blocks = [block.strip() for block in blocks if block.strip()]
    detail = blocks[0] if blocks else text
    extra = len(blocks) - 1
    if extra > 0:
        detail += f"\n({extra} more error{'s' if extra > 1 else ''}; fix this one first)"
    return CytoolError(message, detail=_clip(detail), hint=f"fix {source.name} and run cytool again")


def compiler_failure(source: Path, compiler: str, output: str) -> CytoolError:
    """The compiler's first errors (with their context lines), not its whole log."""
    lines = output.splitlines()
    picked: List[str] = []
    errors = 0
    index = 0
    while index < len(lines) and errors < MAX_COMPILER_ERRORS:
        if _CC_ERROR.match(lines[index]):
            errors += 1
            picked.append(lines[index])
            index += 1
            # gcc's context: the source line and the caret line that follow
            while index < len(lines) and lines[index].startswith(" "):
                picked.append(lines[index])
                index += 1
            continue
        index += 1
    if not picked:
        picked = [line for line in lines if line.strip()][-MAX_DETAIL_LINES:]
    total = sum(1 for line in lines if _CC_ERROR.match(line))
    message = f"the C compiler ({compiler}) failed on {source.name}"
    detail = "\n".join(picked)
    if total > errors:
        detail += f"\n({total - errors} more errors not shown; run with -v for the full log)"
    return CytoolError(message, detail=_clip(detail), hint="fix the first error above and run cytool again")


def _clip(text: str) -> str:
    lines = text.splitlines()
    if len(lines) <= MAX_DETAIL_LINES:
        return text
    return "\n".join(lines[:MAX_DETAIL_LINES] + [f"... ({len(lines) - MAX_DETAIL_LINES} more lines)"])
