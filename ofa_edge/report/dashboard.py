"""Write the static dashboard: ``index.html`` (self-contained: every image is inlined as a data
URI, no script or font from the network) and one PNG per panel beside it."""
from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

from ofa_edge.fileio import atomic_path
from ofa_edge.report.panels import Panel

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1.5rem;color:#222}h1{margin-bottom:.2rem}.meta{color:#666;margin-top:0}
section{border-top:1px solid #ddd;padding:1rem 0}img{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:.85rem;margin-top:.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left}th{background:#f4f4f4}code{background:#f4f4f4;padding:0 .25rem}.caption{color:#444}
"""

# Marks the page as rendered once every panel image has decoded (the test reads it).
_CHECK = """
window.addEventListener('load', function () {
  var panels = document.querySelectorAll('section.panel');
  var ok = 0;
  panels.forEach(function (p) {
    var img = p.querySelector('img');
    var rows = p.querySelectorAll('tbody tr').length;
    if (img && img.complete && img.naturalWidth > 0 && rows > 0) { ok += 1; p.dataset.rendered = 'yes'; }
    else { p.dataset.rendered = 'no'; }
  });
  document.body.dataset.panels = String(panels.length);
  document.body.dataset.rendered = String(ok);
});
"""


def _png(panel: Panel) -> bytes:
    buf = io.BytesIO()
    panel.figure.savefig(buf, format="png")
    import matplotlib.pyplot as plt

    plt.close(panel.figure)
    return buf.getvalue()


def _table(rows: list[list[str]]) -> str:
    head, body = rows[0], rows[1:]
    th = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def write_dashboard(panels: list[Panel], out: Path, subtitle: str) -> Path:
    """Write ``out/index.html`` and ``out/<panel>.png`` atomically; returns the HTML path."""
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for p in panels:
        data = _png(p)
        _atomic(out / f"{p.key}.png", data)
        uri = "data:image/png;base64," + base64.b64encode(data).decode()
        sections.append(
            f'<section class="panel" id="{p.key}"><h2>{html.escape(p.title)}</h2>'
            f'<img alt="{html.escape(p.title)}" src="{uri}">'
            f'<p class="caption">{html.escape(p.caption)} Reproduce: <code>{html.escape(p.command)}</code>.</p>'
            f"{_table(p.table)}</section>")
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ofa-edge dashboard</title>"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><style>{_STYLE}</style></head>"
            f"<body><h1>ofa-edge benchmarks</h1><p class=\"meta\">{html.escape(subtitle)} · generated "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>{''.join(sections)}"
            f"<script>{_CHECK}</script></body></html>\n")
    path = out / "index.html"
    _atomic(path, page.encode())
    return path


def _atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
