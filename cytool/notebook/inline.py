"""What a profiled cell or statement shows in the notebook: the top .pyx lines as text
(for any front end) and cytool's HTML report (per-line memory table, annotated source,
flame graph) in an isolated frame; Cython's annotation for `-a`."""
from __future__ import annotations

import html
import re
from typing import Dict

from cytool.analysis import Profile

FRAME_HEIGHT_PX = 640


def profile_bundle(profile: Profile, title: str) -> Dict[str, str]:
    """A MIME bundle: text/plain (the terminal table) and text/html (the report page in
    an iframe, so its styles and scripts stay out of the notebook's)."""
    from io import StringIO

    from rich.console import Console

    from cytool.reports import html as html_report
    from cytool.reports.table import print_table

    buffer = StringIO()
    print_table(profile, Console(file=buffer, width=120, color_system=None, force_jupyter=False), limit=10)
    text = f"cytool profile: {title}\n{buffer.getvalue()}"
    page = html_report.render(profile)
    frame = (f'<iframe class="cytool-report" title="cytool profile: {html.escape(title)}" '
             f'style="width:100%;height:{FRAME_HEIGHT_PX}px;border:1px solid #ccc" '
             f'srcdoc="{html.escape(page, quote=True)}"></iframe>')
    return {"text/plain": text, "text/html": frame}


def annotation_html(page: str) -> str:
    """Cython's annotated page as a fragment for a cell's output: its styles and body
    (no <html>/<head>), without the link to the generated C file."""
    styles = re.findall(r"<style.*?</style>", page, re.S)
    body = re.search(r"<body[^>]*>(.*)</body>", page, re.S)
    content = body.group(1) if body else page
    content = re.sub(r"<p>\s*Raw output:.*?</p>", "", content, flags=re.S)
    return "".join(styles) + content
