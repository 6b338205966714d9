"""`cytool report --format json`: the document described in docs/report-json.md."""
from __future__ import annotations

import json
from typing import Any, Dict, List

from cytool.analysis import CYTHON_KINDS, Location, Profile
from cytool.reports.ranking import ranked_lines, ranked_stacks
from cytool.reports.source import SourceCache, capture_files

SCHEMA_VERSION = 1


def _frame(location: Location) -> Dict[str, Any]:
    return {"function": location.function, "file": location.file, "line": location.line, "kind": location.kind}


def build(profile: Profile, mode: str = "bytes", *, show_changed: bool = False) -> Dict[str, Any]:
    sources = SourceCache(profile, show_changed=show_changed)
    lines: List[Dict[str, Any]] = []
    for line in ranked_lines(profile, mode):
        entry: Dict[str, Any] = {
            "file": line.file,
            "line": line.line,
            "function": line.function,
            "kind": line.kind,
            "object": line.object,
            "source": sources.shown_line(line.file, line.line)[0] if line.kind in ("pyx", "python") else "",
        }
        entry.update(line.self.as_dict())
        entry["inclusive"] = line.inclusive.as_dict()
        if line.kind in CYTHON_KINDS:
            entry["attributed"] = line.attributed.as_dict()
        lines.append(entry)
    totals: Dict[str, Any] = profile.totals.as_dict()
    totals.update(
        peak_time_ns=profile.peak_time_ns,
        end_time_ns=profile.end_time_ns,
        events=profile.events,
        frees=profile.frees,
        unmatched_frees=profile.unmatched_frees,
        replaced_blocks=profile.replaced_blocks,
        temporary_window=profile.temporary_window,
    )
    source_files = {
        file: {"state": status.state, "shown": status.shown, "reason": status.reason}
        for file, status in ((f, sources.status(f)) for f in capture_files(profile))
    }
    return {
        "version": SCHEMA_VERSION,
        "mode": mode,
        "capture": {
            "path": str(profile.capture_path),
            "pid": profile.pid,
            "argv": list(profile.argv),
            "python_version": profile.python_version,
            "clock": profile.clock,
            "time_resolution_ns": profile.time_resolution_ns,
            "truncated": profile.truncated,
            "truncation_message": profile.truncation_message,
            "dropped_events": profile.dropped_events,
            "missing_events": profile.missing_events,
            "lost_events": profile.lost_events,
            "write_losses": [
                {"from_ns": l.from_ns, "until_ns": l.until_ns, "events": l.events, "frames": l.frames, "reason": l.reason}
                for l in profile.write_losses
            ],
            "takeovers": [
                {"time_ns": t.time_ns, "what": t.what, "object": t.object, "function": t.function, "target": t.target,
                 "state": t.state}
                for t in profile.takeovers
            ],
            "max_frames": profile.max_frames,
            "attached": profile.attached,
            "cut_stacks": {"events": profile.cut_events, "bytes": profile.cut_bytes, "most_frames_cut": profile.cut_most},
            "order_conflicts": {"events": profile.order_conflicts, "first_tick_ns": profile.first_order_conflict_ns},
            "warnings": profile.warnings() + sources.notes(capture_files(profile)),
        },
        "totals": totals,
        "kinds": {kind: {"count": count, "bytes": nbytes} for kind, (count, nbytes) in sorted(profile.kinds.items())},
        "lines": lines,
        "stacks": [
            dict(frames=[_frame(f) for f in stack.frames], self=_frame(stack.self_location), **stack.metrics.as_dict())
            for stack in ranked_stacks(profile, mode)
        ],
        "sources": source_files,
        "threads": [
            dict(id=t.id, tid=t.tid, name=t.name, **t.metrics.as_dict()) for t in profile.threads
        ],
        # several captures merged (cytool.process_merge): each process's own figures
        "processes": [
            dict(pid=p.pid, parent_pid=p.parent_pid, argv=list(p.argv), capture=str(p.capture_path),
                 start_time_ns=p.start_time_ns, events=p.events, peak_time_ns=p.peak_time_ns,
                 end_time_ns=p.end_time_ns, threads=p.threads, warnings=list(p.notes), **p.totals.as_dict())
            for p in profile.processes
        ],
    }


def render(profile: Profile, mode: str = "bytes", *, show_changed: bool = False) -> str:
    return json.dumps(build(profile, mode, show_changed=show_changed), indent=1) + "\n"
