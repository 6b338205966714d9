"""Checkers for the file formats other tools read, written from their published
descriptions (not from our exporter): speedscope's file format (the fields and rules of
speedscope's src/lib/file-format-spec.ts and what its importer requires) and the
folded-stack format that flamegraph.pl, inferno and speedscope read. Each returns the
list of problems found (empty: valid)."""
from __future__ import annotations

import re
from typing import Any, Dict, List

SPEEDSCOPE_SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"
SPEEDSCOPE_UNITS = {"none", "nanoseconds", "microseconds", "milliseconds", "seconds", "bytes"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def speedscope_problems(document: Any) -> List[str]:
    problems: List[str] = []
    if not isinstance(document, dict):
        return ["the file is not a JSON object"]
    if not isinstance(document.get("version"), str) or not document.get("version"):
        problems.append("`version` (string) is required")
    if document.get("$schema") != SPEEDSCOPE_SCHEMA_URL:
        problems.append(f"`$schema` must be {SPEEDSCOPE_SCHEMA_URL}")
    for key, kind in (("name", str), ("exporter", str)):
        if key in document and not isinstance(document[key], kind):
            problems.append(f"`{key}` must be a string")
    shared = document.get("shared")
    frames = shared.get("frames") if isinstance(shared, dict) else None
    if not isinstance(frames, list):
        return problems + ["`shared.frames` (array) is required"]
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("name"), str) or not frame["name"]:
            problems.append(f"frame {index}: `name` (non-empty string) is required")
            continue
        unknown = set(frame) - {"name", "file", "line", "col"}
        if unknown:
            problems.append(f"frame {index}: unknown fields {sorted(unknown)}")
        if "file" in frame and not isinstance(frame["file"], str):
            problems.append(f"frame {index}: `file` must be a string")
        for key in ("line", "col"):
            if key in frame and (not isinstance(frame[key], int) or frame[key] < 1):
                problems.append(f"frame {index}: `{key}` must be a 1-based number, got {frame[key]!r}")
    profiles = document.get("profiles")
    if not isinstance(profiles, list) or not profiles:
        return problems + ["`profiles` (non-empty array) is required"]
    active = document.get("activeProfileIndex", 0)
    if not isinstance(active, int) or not 0 <= active < len(profiles):
        problems.append(f"`activeProfileIndex` {active!r} is not an index into profiles")
    for number, profile in enumerate(profiles):
        where = f"profile {number}"
        if not isinstance(profile, dict):
            problems.append(f"{where}: not an object")
            continue
        if profile.get("type") != "sampled":
            problems.append(f"{where}: `type` must be 'sampled' (cytool writes sampled profiles)")
        if not isinstance(profile.get("name"), str):
            problems.append(f"{where}: `name` (string) is required")
        if profile.get("unit") not in SPEEDSCOPE_UNITS:
            problems.append(f"{where}: `unit` {profile.get('unit')!r} is not one of {sorted(SPEEDSCOPE_UNITS)}")
        start, end = profile.get("startValue"), profile.get("endValue")
        if not _is_number(start) or not _is_number(end) or end < start:
            problems.append(f"{where}: `startValue` <= `endValue` (numbers) are required")
        samples, weights = profile.get("samples"), profile.get("weights")
        if not isinstance(samples, list) or not isinstance(weights, list):
            problems.append(f"{where}: `samples` and `weights` (arrays) are required")
            continue
        if len(samples) != len(weights):
            problems.append(f"{where}: {len(samples)} samples but {len(weights)} weights")
        for stack in samples:
            if not isinstance(stack, list) or not all(isinstance(i, int) and 0 <= i < len(frames) for i in stack):
                problems.append(f"{where}: a sample is not a list of frame indices: {stack!r}")
                break
        if not all(_is_number(w) and w >= 0 for w in weights):
            problems.append(f"{where}: weights must be non-negative numbers")
        elif _is_number(start) and _is_number(end) and sum(weights) > end - start:
            problems.append(f"{where}: the weights add up to more than endValue - startValue")
    return problems


# one stack per line: frames separated by `;` (none empty), one space, a count
_FOLDED_LINE = re.compile(r"^(?P<stack>[^;\n]+(?:;[^;\n]+)*) (?P<count>\d+)$")


def folded_problems(text: str) -> List[str]:
    problems: List[str] = []
    if text and not text.endswith("\n"):
        problems.append("the last line has no newline")
    seen: Dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _FOLDED_LINE.match(line)
        if not match:
            problems.append(f"line {number} is not `frame;frame;... count`: {line!r}")
            continue
        stack = match.group("stack")
        if any(frame != frame.strip() or not frame for frame in stack.split(";")):
            problems.append(f"line {number}: a frame name is empty or has leading/trailing spaces: {line!r}")
        if stack in seen:
            problems.append(f"line {number}: the stack of line {seen[stack]} again (stacks must be merged)")
        seen[stack] = number
    return problems


def folded_stacks(text: str) -> Dict[tuple, int]:
    """{(outer, ..., inner): count} of a valid folded file."""
    stacks: Dict[tuple, int] = {}
    for line in text.splitlines():
        match = _FOLDED_LINE.match(line)
        assert match, line
        stacks[tuple(match.group("stack").split(";"))] = int(match.group("count"))
    return stacks
