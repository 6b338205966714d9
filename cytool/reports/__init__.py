"""Reports on a profile (cytool.analysis.Profile): terminal table, self-contained HTML,
JSON for scripts, speedscope and collapsed stacks for other tools."""
from __future__ import annotations

FORMATS = ("table", "html", "json", "speedscope", "collapsed")

# What a report ranks by: allocated bytes, bytes live at the peak, or leaked bytes.
MODES = {"bytes": "allocated", "peak_bytes": "live at peak", "leaked_bytes": "leaked"}
