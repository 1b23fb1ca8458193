"""One self-contained HTML page: every table and plot of a run, images inlined as data URIs.

It opens from disk in any browser, with no server and no other files. A small script marks
on <body> how many images decoded (`data-images-loaded` / `data-images-broken`), which the
tests read back from headless Chromium.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from PIL import Image

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f0f0f0; } td.text { text-align: left; }
figure { display: inline-block; margin: 0.5rem; vertical-align: top; }
figure img { max-width: 100%; } figcaption { font-size: 0.8rem; color: #555; max-width: 14rem; }
.grid img { width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #ddd; }
"""
_CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var ok = images.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', images.length);
  document.body.setAttribute('data-images-loaded', ok);
  document.body.setAttribute('data-images-broken', images.length - ok);
});
"""


def png_data_uri(source: Path | Image.Image) -> str:
    """A PNG file or PIL image as a data: URI."""
    if isinstance(source, Image.Image):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        data = Path(source).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


@dataclass
class Section:
    """A titled part of the report: prose, tables, plots and captioned image grids, in that order."""

    title: str
    text: str = ""
    tables: list[tuple[str, pl.DataFrame]] = field(default_factory=list)
    plots: list[tuple[str, Path]] = field(default_factory=list)
    galleries: list[tuple[str, list[tuple[str, Image.Image]]]] = field(default_factory=list)


def table_html(table: pl.DataFrame, max_rows: int = 60) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    rows = []
    for row in table.head(max_rows).iter_rows():
        cells = []
        for value in row:
            if isinstance(value, float):
                cells.append(f"<td>{value:.4g}</td>")
            else:
                cells.append(f'<td class="text">{html.escape(str(value))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p>({table.height - max_rows} more rows in the parquet file)</p>" if table.height > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def render(title: str, sections: list[Section], summary: str = "") -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if summary:
        parts.append(f"<p>{html.escape(summary)}</p>")
    parts.append("<nav><ul>" + "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>'
                                       for i, s in enumerate(sections)) + "</ul></nav>")
    for i, section in enumerate(sections):
        parts.append(f'<h2 id="s{i}">{html.escape(section.title)}</h2>')
        if section.text:
            parts.extend(f"<p>{html.escape(p)}</p>" for p in section.text.split("\n\n"))
        for caption, table in section.tables:
            parts.append(f"<h3>{html.escape(caption)}</h3>{table_html(table)}")
        for caption, path in section.plots:
            parts.append(f'<figure><img src="{png_data_uri(path)}" alt="{html.escape(caption)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        for caption, images in section.galleries:
            cells = "".join(f'<figure><img src="{png_data_uri(im)}" alt="{html.escape(label)}">'
                            f"<figcaption>{html.escape(label)}</figcaption></figure>" for label, im in images)
            parts.append(f'<h3>{html.escape(caption)}</h3><div class="grid">{cells}</div>')
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style><script>{_CHECK_SCRIPT}</script></head><body>\n{body}\n</body></html>")


def write_report(path: Path, title: str, sections: list[Section], summary: str = "") -> Path:
    """Write the page atomically (temp file, then rename): a reader never sees half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(render(title, sections, summary), encoding="utf-8")
    tmp.replace(path)
    return path
