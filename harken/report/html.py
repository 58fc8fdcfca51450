"""The building blocks of harken's self-contained HTML pages (a run's report, the demo's report).

Owns: the page frame and its style, tables, chart galleries, lists of file links, and the page's
chart folder. Every link is relative to the page, so a folder of pages opens from disk with no
server, wherever it was moved.
Does not own: what a page says (`harken.report.run`, `harken.demo.report`), drawing charts
(`harken.report.charts`).
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path
from typing import Any, Sequence

from harken.report.charts import Chart

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; } td.num { text-align: right; }
th { background: #f3f3f3; } .verdict { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.6em 1em; }
.charts { display: flex; flex-wrap: wrap; gap: 10px; } .charts figure { margin: 0; width: 520px; }
.charts figure.wide { width: 100%; }
.charts img { width: 100%; border: 1px solid #eee; } figcaption { font-size: 0.8em; color: #555; }
.warning { background: #fdecea; border-left: 4px solid #d93025; padding: 0.6em 1em; }
code { background: #f5f5f5; padding: 0 0.2em; } .muted { color: #666; font-size: 0.9em; }
"""


def rel_url(target: Path, page_dir: Path) -> str:
    """A URL to `target` relative to the page's folder (forward slashes, escaped)."""
    rel = os.path.relpath(Path(target).resolve(), Path(page_dir).resolve())
    return escape(Path(rel).as_posix(), quote=True)


def html_page(title: str, body: Sequence[str]) -> str:
    """A whole page: `body` is a list of HTML fragments, one after the other."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    """A table whose cells from column `numeric_from` on are right-aligned numbers."""
    out = ["<table>", "<tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            cls = ' class="num"' if i >= numeric_from else ""
            cells.append(f"<td{cls}>{escape(str(c))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def html_charts(charts: Sequence[Chart], page_dir: Path) -> str:
    """The charts side by side (a grid at full width), each a link to the full-size image and
    captioned with the metrics it draws."""
    figs = []
    for c in charts:
        url, cls = rel_url(c.path, page_dir), ' class="wide"' if c.wide else ""
        figs.append(f'<figure{cls}><a href="{url}">'
                    f'<img src="{url}" alt="{escape(c.title, quote=True)}"></a>'
                    f"<figcaption>{escape(', '.join(c.keys))}</figcaption></figure>")
    return '<div class="charts">\n' + "\n".join(figs) + "\n</div>"


def html_links(page_dir: Path, files: Sequence[tuple[str, Path]]) -> str:
    """Links to the files that exist (label, path)."""
    items = [f'<li><a href="{rel_url(p, page_dir)}">{escape(label)}</a></li>' for label, p in files if p.exists()]
    return "<ul>\n" + "\n".join(items) + "\n</ul>" if items else ""


def fresh_plots(plot_dir: Path) -> Path:
    """The page's chart folder, emptied of the PNGs of an earlier report (it owns that folder)."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    for old in plot_dir.glob("*.png"):
        old.unlink()
    return plot_dir
