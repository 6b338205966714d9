"""Reports on a profile (cytool.analysis.Profile): terminal table, self-contained HTML,
JSON for scripts, speedscope and collapsed stacks for other tools."""
from __future__ import annotations

FORMATS = ("table", "html", "json", "speedscope", "collapsed")

# What a report ranks by: allocated bytes, bytes live at the peak, leaked bytes, or bytes
# of temporary allocations (freed right after being made).
MODES = {"bytes": "allocated", "peak_bytes": "live at peak", "leaked_bytes": "leaked", "temporary_bytes": "temporary"}
