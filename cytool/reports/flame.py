"""Flame graphs: the tree for the HTML page (built in C), and the two text exports built
from stacks: collapsed stacks and speedscope JSON."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

from cytool.analysis import Location, Profile
from cytool.reports.source import display_name


def compact_tree(profile: Profile) -> Tuple[List[List[Any]], List[List[int]]]:
    """(frames, nodes) for the HTML page, from the tree libcyanalyze built (outermost
    frame at the root, small nodes of big trees pruned): frames = [[function, file,
    line, kind]]; nodes = [[frame index, parent node index (-1 for the root), bytes,
    peak bytes, leaked bytes, count]], parents before children."""
    frames: List[List[Any]] = [["all", "", 0, "unknown"]]
    index: Dict[int, int] = {-1: 0}
    nodes: List[List[int]] = []
    for location, parent, *values in profile.flame:
        if location not in index:
            where = profile.locations[location]
            index[location] = len(frames)
            frames.append([where.function, where.file, where.line, where.kind])
        nodes.append([index[location], parent, *values])
    if not nodes:
        nodes.append([0, -1, 0, 0, 0, 0])
    return frames, nodes


# The speedscope file format version whose fields we write (name, activeProfileIndex and
# exporter came in 0.6.0); speedscope's importer requires the field.
SPEEDSCOPE_VERSION = "0.6.0"
SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def folded_frame(location: Location) -> str:
    """A frame's name in the folded-stack format: `;` separates frames and a line ends at
    its newline, so both are replaced (`;` by `:`, line breaks by spaces) in names; other
    control characters (a capture's names are not trusted) become `\\xNN` escapes."""
    return display_name(" ".join(location.label().replace(";", ":").splitlines()))


def render_collapsed(profile: Profile, mode: str = "bytes") -> str:
    """flamegraph.pl / inferno input: one `outer;...;inner VALUE` line per distinct stack
    (VALUE in bytes, or a count for count modes), biggest first."""
    merged: Dict[str, int] = {}
    for stack in profile.stacks:
        value = stack.metrics.value(mode)
        if not value:
            continue
        key = ";".join(folded_frame(f) for f in reversed(stack.frames or [stack.self_location]))
        merged[key] = merged.get(key, 0) + value
    return "".join(f"{k} {v}\n" for k, v in sorted(merged.items(), key=lambda kv: -kv[1]))


def render_speedscope(profile: Profile, mode: str = "bytes") -> str:
    """A speedscope file (SPEEDSCOPE_SCHEMA; the fields of speedscope's file-format-spec)
    with one sampled profile per metric, weighted in bytes; the chosen mode comes first.
    A frame carries its file and its line when they are known (lines are 1-based: a
    frame whose line is unknown has none)."""
    frames: List[Dict[str, Any]] = []
    index: Dict[Location, int] = {}

    def frame_index(location: Location) -> int:
        if location not in index:
            index[location] = len(frames)
            entry: Dict[str, Any] = {"name": location.function}
            if location.file:
                entry["file"] = location.file
                if location.line > 0:
                    entry["line"] = location.line
            elif location.object:
                entry["file"] = location.object
            frames.append(entry)
        return index[location]

    titles = {
        "bytes": "allocated bytes",
        "peak_bytes": "bytes live at peak",
        "leaked_bytes": "leaked bytes",
        "temporary_bytes": "temporary allocations (bytes)",
    }
    order = [mode] + [m for m in titles if m != mode]
    profiles = []
    for metric in order:
        samples, weights = [], []
        for stack in profile.stacks:
            value = stack.metrics.value(metric)
            if value:
                samples.append([frame_index(f) for f in reversed(stack.frames or [stack.self_location])])
                weights.append(value)
        profiles.append(
            {
                "type": "sampled",
                "name": f"{' '.join(profile.argv) or profile.capture_path.name}: {titles[metric]}",
                "unit": "bytes",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        )
    document = {
        "version": SPEEDSCOPE_VERSION,
        "$schema": SPEEDSCOPE_SCHEMA,
        "shared": {"frames": frames},
        "profiles": profiles,
        "name": str(profile.capture_path.name),
        "activeProfileIndex": 0,
        "exporter": "cytool",
    }
    return json.dumps(document, separators=(",", ":")) + "\n"
