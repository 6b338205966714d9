"""Stacks as a tree (outermost frame at the root) for flame graphs, and the two text
exports built from stacks: collapsed stacks and speedscope JSON."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from cytool.analysis import Location, Profile

# the values each flame node carries, in this order
FLAME_METRICS = ("bytes", "peak_bytes", "leaked_bytes", "count")


@dataclass
class FlameNode:
    location: Location
    values: List[int] = field(default_factory=lambda: [0] * len(FLAME_METRICS))
    children: Dict[Location, "FlameNode"] = field(default_factory=dict)


def build_tree(profile: Profile) -> FlameNode:
    root = FlameNode(Location("all", "", 0, "unknown", ""))
    for stack in profile.stacks:
        values = [stack.metrics.value(m) for m in FLAME_METRICS]
        node = root
        for i, v in enumerate(values):
            node.values[i] += v
        for location in reversed(stack.frames or [stack.self_location]):
            child = node.children.get(location)
            if child is None:
                child = node.children[location] = FlameNode(location)
            for i, v in enumerate(values):
                child.values[i] += v
            node = child
    return root


def compact_tree(root: FlameNode, max_nodes: int = 50000) -> Tuple[List[List[Any]], List[List[int]]]:
    """(frames, nodes) for the HTML page: frames = [[function, file, line, kind]], nodes
    = [[frame index, parent node index (-1 for the root), *values]] in depth-first
    order, children biggest first. Flat, so that deep recursion stays cheap to encode.
    Nodes too small to see are left out when the tree has more than max_nodes (their
    values stay in their parent's)."""
    frames: List[List[Any]] = []
    index: Dict[Location, int] = {}

    def frame_id(location: Location) -> int:
        if location not in index:
            index[location] = len(frames)
            frames.append([location.function, location.file, location.line, location.kind])
        return index[location]

    count, todo = 0, [root]
    while todo:
        node = todo.pop()
        count += 1
        todo.extend(node.children.values())
    threshold = max(1, max(root.values[:3])) / 20000.0 if count > max_nodes else 0.0

    nodes: List[List[int]] = []
    stack: List[Tuple[FlameNode, int]] = [(root, -1)]
    while stack:
        node, parent = stack.pop()
        me = len(nodes)
        nodes.append([frame_id(node.location), parent, *node.values])
        kids = sorted(node.children.values(), key=lambda c: -c.values[0])
        stack.extend((c, me) for c in reversed(kids) if max(c.values[:3]) >= threshold)
    return frames, nodes


def _label(location: Location) -> str:
    return location.label().replace(";", ":")


def render_collapsed(profile: Profile, mode: str = "bytes") -> str:
    """flamegraph.pl / inferno input: `outer;...;inner VALUE` per stack."""
    merged: Dict[str, int] = {}
    for stack in profile.stacks:
        value = stack.metrics.value(mode)
        if not value:
            continue
        key = ";".join(_label(f) for f in reversed(stack.frames or [stack.self_location]))
        merged[key] = merged.get(key, 0) + value
    return "".join(f"{k} {v}\n" for k, v in sorted(merged.items(), key=lambda kv: -kv[1]))


def render_speedscope(profile: Profile, mode: str = "bytes") -> str:
    """A speedscope file (https://www.speedscope.app/file-format-schema.json) with one
    sampled profile per metric, weighted in bytes; the chosen mode comes first."""
    frames: List[Dict[str, Any]] = []
    index: Dict[Location, int] = {}

    def frame_index(location: Location) -> int:
        if location not in index:
            index[location] = len(frames)
            entry: Dict[str, Any] = {"name": location.function}
            if location.file:
                entry["file"] = location.file
                entry["line"] = location.line
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
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": profiles,
        "name": str(profile.capture_path.name),
        "activeProfileIndex": 0,
        "exporter": "cytool",
    }
    return json.dumps(document, separators=(",", ":")) + "\n"
