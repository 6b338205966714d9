"""`cytool report --format html`: one self-contained page (inline CSS and JS, no network):
totals and a live-bytes timeline, the top lines, an interactive flame graph, and each
profiled .pyx file as annotated source with heat columns (bytes, count, leaked)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import jinja2
from markupsafe import Markup

from cytool.analysis import CYTHON_KINDS, USER_KINDS, LineStats, Metrics, Profile
from cytool.process_merge import peak_rule
from cytool.reports import MODES
from cytool.reports.flame import compact_tree
from cytool.reports.ranking import ranked_lines
from cytool.reports.source import SourceCache, display_name
from cytool.reports.table import table_rows
from cytool.reports.units import human_bytes, human_count, human_duration

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
MAX_PYTHON_FILES = 10


def _printable(value: Any) -> Any:
    """Every value the page prints, before autoescaping: control characters from a
    capture's names and lines become visible `\\xNN` escapes (Markup is ours: kept)."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return display_name(value)
    return value


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        finalize=_printable,
        trim_blocks=False,
        lstrip_blocks=False,
    )


def _script_json(value: Any) -> Markup:
    """JSON to embed in a <script type="application/json"> element: `<`, `>` and `&` are
    written as \\u escapes, so no text from a capture can end the element (`</script>`)
    or open a comment (`<!--`); control characters are escaped by json itself."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _anchor(file: str, line: int, files: Dict[str, int]) -> str:
    return f"f{files[file]}-l{line}"


def _heat(value: int, top: int, hue: int) -> str:
    if not value or not top:
        return ""
    alpha = 0.12 + 0.78 * (value / top) ** 0.5
    return f"background: hsla({hue}, 95%, 55%, {alpha:.2f})"


def _timeline(profile: Profile) -> str:
    points = profile.timeline
    if len(points) < 2:
        return ""
    t0, t1 = points[0][0], max(points[-1][0], profile.end_time_ns, points[0][0] + 1)
    peak = max(1, max(b for _, b in points))
    coords = ["0,120"]
    for t, b in points:
        x = 1000.0 * (t - t0) / (t1 - t0)
        coords.append(f"{x:.1f},{120 - 112.0 * b / peak:.1f}")
    coords.append(f"{coords[-1].split(',')[0]},120")
    return " ".join(coords)


def _count(n: int) -> str:
    return human_count(n) if n else ""


def _bytes(n: int) -> str:
    return human_bytes(n) if n else ""


def _figures(line: LineStats) -> Metrics:
    """What a line is charged with on this page: for a .pyx line, everything it caused
    (attributed: its own allocations and those of the code it called); otherwise self."""
    return line.attributed if line.kind in CYTHON_KINDS else line.self


def _top_row(line: LineStats, m: Metrics, sources: SourceCache, file_ids: Dict[str, int]) -> Dict[str, Any]:
    user = line.kind in USER_KINDS and bool(line.file)
    where = (f"{Path(line.file).name}:{line.line}" if line.line else Path(line.file).name) if user \
        else Path(line.object).name
    if line.kind == "cython-c":
        where += " (generated C)"
    source, mark = sources.shown_line(line.file, line.line) if user and line.kind != "cython-c" else ("", "")
    return dict(
        where=where,
        anchor=_anchor(line.file, line.line, file_ids) if line.file in file_ids else "",
        function=line.function,
        source=source,
        mark=mark,
        bytes=human_bytes(m.bytes),
        count=human_count(m.count),
        peak=_bytes(m.peak_bytes) or "-",
        leaked=_bytes(m.leaked_bytes) or "-",
        temporary=_count(m.temporary_count) or "-",
        inclusive=human_bytes(line.inclusive.bytes),
    )


def render(profile: Profile, mode: str = "bytes", *, top: int = 30, show_changed: bool = False) -> str:
    """The page (str). Source text is shown under cytool.reports.source's rules
    (`show_changed`: also files changed since the build, marked); every name and line
    that comes from the capture is escaped."""
    sources = SourceCache(profile, show_changed=show_changed)
    pyx_files = [f for f in profile.source_files() if f.endswith((".pyx", ".pxd", ".pxi"))]
    py_files = [f for f in profile.source_files() if not f.endswith((".pyx", ".pxd", ".pxi"))][:MAX_PYTHON_FILES]
    file_ids = {f: i for i, f in enumerate(pyx_files + py_files)}
    by_file: Dict[str, Dict[int, LineStats]] = {}
    for line in profile.lines():
        if line.file in file_ids:
            by_file.setdefault(line.file, {})[line.line] = line

    # the top table: .pyx lines by what they caused (as on the terminal), and the lines of
    # other code by their own allocations
    title, rows = table_rows(profile, mode, top)
    top_rows = [_top_row(line, m, sources, file_ids) for line, m in rows]
    charged_pyx = bool(rows) and rows[0][0].kind in CYTHON_KINDS and rows[0][1] is rows[0][0].attributed
    hottest: Optional[LineStats] = rows[0][0] if rows and rows[0][0].file in file_ids else None
    other_rows: List[Dict[str, Any]] = []
    if charged_pyx:
        others = [l for l in ranked_lines(profile, mode) if l.kind not in CYTHON_KINDS and l.self.value(mode)][:top]
        other_rows = [_top_row(line, line.self, sources, file_ids) for line in others]

    files: List[Dict[str, Any]] = []
    for file in pyx_files + py_files:
        stats = by_file.get(file, {})
        text = sources.lines(file)
        full = text is not None and file in pyx_files
        numbers = range(1, len(text) + 1) if full and text is not None else sorted(n for n in stats if n > 0)
        figures = {n: _figures(l) for n, l in stats.items()}
        tops = {
            "bytes": max((m.bytes for m in figures.values()), default=0),
            "count": max((m.count for m in figures.values()), default=0),
            "leaked": max((m.leaked_bytes for m in figures.values()), default=0),
            "inclusive": max((l.inclusive.bytes for l in stats.values()), default=0),
        }
        file_rows = []
        for number in numbers:
            s = stats.get(number)
            m = figures.get(number)
            as_built = sources.line_as_built(file, number) if text is None else ""
            file_rows.append(
                dict(
                    number=number,
                    anchor=_anchor(file, number, file_ids),
                    text=(text[number - 1] if text and number <= len(text) else as_built),
                    as_built=bool(as_built),
                    bytes=_bytes(m.bytes) if m else "",
                    count=_count(m.count) if m else "",
                    leaked=_bytes(m.leaked_bytes) if m else "",
                    inclusive=_bytes(s.inclusive.bytes) if s else "",
                    heat_bytes=_heat(m.bytes, tops["bytes"], 18) if m else "",
                    heat_count=_heat(m.count, tops["count"], 38) if m else "",
                    heat_leaked=_heat(m.leaked_bytes, tops["leaked"], 350) if m else "",
                    heat_inclusive=_heat(s.inclusive.bytes, tops["inclusive"], 200) if s else "",
                    hot=bool(m and m.value(mode)),
                    hottest=bool(hottest is not None and s is hottest),
                )
            )
        status = sources.status(file)
        files.append(dict(name=Path(file).name, path=file, rows=file_rows, missing=text is None,
                          why=status.reason or "source not found", changed=sources.changed(file),
                          charged="with what they called" if file in pyx_files else "self"))

    frames, nodes = compact_tree(profile)
    flame_json = _script_json({"frames": frames, "nodes": nodes})
    notes = profile.notes() + sources.notes()  # every file consulted above
    t = profile.totals
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=" ".join(profile.argv) or profile.capture_path.name,
        capture=str(profile.capture_path),
        pid=profile.pid,
        python_version=profile.python_version.split()[0] if profile.python_version else "?",
        events=human_count(profile.events),
        notes=notes,
        mode=mode,
        mode_title=MODES[mode],
        totals=dict(
            bytes=human_bytes(t.bytes),
            count=human_count(t.count),
            peak=human_bytes(t.peak_bytes),
            peak_time="summed over processes" if profile.processes else human_duration(profile.peak_time_ns),
            leaked=human_bytes(t.leaked_bytes),
            leaked_count=human_count(t.leaked_count),
            temporary=human_count(t.temporary_count),
        ),
        timeline=_timeline(profile),
        threads=[
            dict(id=t.id, tid=t.tid, name=t.name, bytes=human_bytes(t.metrics.bytes), count=human_count(t.metrics.count),
                 leaked=_bytes(t.metrics.leaked_bytes) or "-")
            for t in sorted(profile.threads, key=lambda t: -t.metrics.bytes)
        ] if len(profile.threads) > 1 else [],
        processes=[
            dict(pid=p.pid, parent=p.parent_pid, command=" ".join(p.argv) or p.capture_path.name,
                 capture=str(p.capture_path), bytes=human_bytes(p.totals.bytes), count=human_count(p.totals.count),
                 peak=human_bytes(p.totals.peak_bytes), leaked=_bytes(p.totals.leaked_bytes) or "-",
                 events=human_count(p.events))
            for p in profile.processes
        ],
        peak_rule=peak_rule(profile),
        top=top_rows,
        top_title=title,
        other=other_rows,
        files=files,
        flame_json=flame_json,
    )
