"""One self-contained HTML page a researcher reads top-down: findings, figures, then tables.

Layout: the title; a summary (per study the sentences its `summarize` wrote from its tables,
then what was run); then per study its plots, image galleries and feature cards, with its
tables last, collapsed (`<details>`), sortable by a click on a column head, rounded for
reading and each downloadable as CSV from a data: URI. Images are inlined as data URIs, so
the page opens from disk with no server and no other files.

A small script marks on <body> how many images decoded (`data-images-loaded` /
`data-images-broken`) and how many CSV links decode to their table (`data-csv-ok`), which
the tests read back from headless Chromium.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from PIL import Image

MAX_TABLE_ROWS = 500  # rows shown on the page; the CSV link always carries the whole table

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 80rem; padding: 0 1rem; color: #222; }
h1 { border-bottom: 2px solid #444; margin-bottom: 0.5rem; }
h2 { margin-top: 2.5rem; border-bottom: 1px solid #bbb; }
#summary { background: #f5f8fc; border: 1px solid #d5e0ee; border-radius: 6px; padding: 0.4rem 1.2rem 0.8rem; }
#summary h2 { margin-top: 0.6rem; border: none; }
#summary p.finding { font-size: 1.02rem; line-height: 1.45; margin: 0.5rem 0; }
p.about, p.setup { color: #555; font-size: 0.88rem; }
nav ul { list-style: none; padding: 0; margin: 0.5rem 0 0; } nav li { display: inline; margin-right: 1.2rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.82rem; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: right; }
th { background: #f0f0f0; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[data-sort=asc]::after { content: " \\25B2"; } th[data-sort=desc]::after { content: " \\25BC"; }
td.text { text-align: left; max-width: 28rem; }
details { margin: 0.4rem 0; } details > summary { cursor: pointer; color: #234; }
details > summary a { margin-left: 0.8rem; font-size: 0.85rem; }
figure { display: inline-block; margin: 0.4rem; vertical-align: top; }
figure.plot img { max-width: 100%; }
figcaption { font-size: 0.8rem; color: #555; max-width: 40rem; }
.grid figure { margin: 0.2rem; } .grid figcaption { max-width: 128px; font-size: 0.72rem; }
.tile { width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #ddd; display: block; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8rem; }
.card { border: 1px solid #ccd; border-radius: 6px; padding: 0.5rem 0.7rem; background: #fff; flex: 1 1 100%; }
.card .group { display: inline-block; vertical-align: top; margin-right: 1.2rem; max-width: 100%; }
.card h4 { margin: 0.1rem 0 0.2rem; font-size: 1rem; } .card .meta { color: #555; font-size: 0.8rem; margin: 0 0 0.3rem; }
.card .row { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 0.25rem; margin: 0.15rem 0; }
.card .row-title { font-size: 0.75rem; color: #333; font-weight: 600; margin-top: 0.3rem; max-width: 40rem; }
.card figure { margin: 0; } .card figcaption { font-size: 0.7rem; text-align: center; max-width: 128px; }
input.search { font-size: 0.95rem; padding: 0.3rem 0.5rem; width: 24rem; margin: 0.4rem 0 0.8rem; }
"""
_SCRIPT = """
function sortBy(th) {
  var table = th.closest('table'), body = table.tBodies[0];
  var column = Array.prototype.indexOf.call(th.parentNode.children, th);
  var ascending = th.getAttribute('data-sort') !== 'asc';
  Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute('data-sort'); });
  th.setAttribute('data-sort', ascending ? 'asc' : 'desc');
  function key(row) {
    var cell = row.cells[column], v = cell.getAttribute('data-v');
    v = v === null ? cell.textContent : v;
    var n = parseFloat(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = key(a), y = key(b);
    if (typeof x !== typeof y) { x = String(x); y = String(y); }
    return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
  });
  rows.forEach(function (r) { body.appendChild(r); });
}
function filterCards(input) {
  var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean);
  var cards = input.parentNode.querySelectorAll('.card'), shown = 0;
  Array.prototype.forEach.call(cards, function (card) {
    var text = card.getAttribute('data-search');
    var keep = words.every(function (w) { return text.indexOf(w) >= 0; });
    card.style.display = keep ? '' : 'none';
    shown += keep;
  });
  input.setAttribute('data-shown', shown);
}
window.addEventListener('load', function () {
  document.querySelectorAll('table.sortable th').forEach(function (th) {
    th.addEventListener('click', function () { sortBy(th); });
  });
  var images = Array.from(document.images);
  var ok = images.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', images.length);
  document.body.setAttribute('data-images-loaded', ok);
  document.body.setAttribute('data-images-broken', images.length - ok);
  // A CSV link works when its data: URI decodes to a header and as many lines as the table has rows.
  var links = Array.from(document.querySelectorAll('a.csv')), good = 0;
  links.forEach(function (a) {
    try {
      var text = decodeURIComponent(escape(atob(a.href.split(',')[1])));
      var lines = text.split('\\n').filter(function (l) { return l.length > 0; });
      if (lines.length === Number(a.getAttribute('data-rows')) + 1 && lines[0] === a.getAttribute('data-header')) good++;
    } catch (e) {}
  });
  document.body.setAttribute('data-csv-total', links.length);
  document.body.setAttribute('data-csv-ok', good);
});
"""

ImageSource = Path | str | Image.Image


def png_data_uri(source: ImageSource) -> str:
    """A PNG file or PIL image as a data: URI."""
    if isinstance(source, Image.Image):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
    else:
        data = Path(source).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


@dataclass
class Tile:
    """One image with a short caption under it and a longer text on hover (e.g. the prompt)."""

    image: ImageSource
    caption: str = ""
    hover: str = ""


@dataclass
class FeatureCard:
    """What one dictionary feature is: its label and statistics, where it fires, and what it
    draws when switched on by itself (empty prompt) and at a range of strengths (strip)."""

    dictionary: str
    feature: int
    label: str = ""  # best-aligned concept, "" when there is no ground truth
    score: float = float("nan")  # that concept's AUROC
    provenance: str = ""  # ITDA: where the atom came from
    frequency: float = float("nan")
    mean_activation: float = float("nan")
    top: list[Tile] = field(default_factory=list)
    empty: list[Tile] = field(default_factory=list)
    strip: list[Tile] = field(default_factory=list)
    strip_prompt: str = ""
    architecture: str = ""


@dataclass
class Section:
    """A titled part of the report: its findings (shown in the summary), prose, plots, image
    grids, feature cards and tables, in that order on the page."""

    title: str
    text: str = ""
    tables: list[tuple[str, pl.DataFrame]] = field(default_factory=list)
    plots: list[tuple[str, Path]] = field(default_factory=list)
    galleries: list[tuple[str, list[tuple[str, Image.Image]]]] = field(default_factory=list)
    summary: str = ""  # sentences with the headline numbers, written from the tables
    cards: list[FeatureCard] = field(default_factory=list)


def readable(value: object) -> str:
    """A cell for reading: floats to 3 significant digits, large ones with thousands separators."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value != 0 and abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def csv_text(table: pl.DataFrame) -> str:
    """The whole table as CSV (full precision), nested values as their text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.iter_rows():
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def csv_link(name: str, table: pl.DataFrame) -> str:
    # Every field is one line (no embedded newlines), so the page's check can count rows.
    table = table.with_columns(pl.col(pl.Utf8).str.replace_all("\n", " ")) if table.width else table
    data = base64.b64encode(csv_text(table).encode("utf-8")).decode("ascii")
    header = csv_text(table.head(0)).strip()
    return (
        f'<a class="csv" download="{html.escape(name)}.csv" data-rows="{table.height}" '
        f'data-header="{html.escape(header)}" href="data:text/csv;base64,{data}">CSV</a>'
    )


def table_html(table: pl.DataFrame, max_rows: int = MAX_TABLE_ROWS) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    rows = []
    for row in table.head(max_rows).iter_rows():
        cells = []
        for value in row:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f'<td data-v="{value!r}">{html.escape(readable(value))}</td>')
            else:
                cells.append(f'<td class="text">{html.escape(readable(value))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p>(first {max_rows} of {table.height} rows; the CSV has them all)</p>" if table.height > max_rows else ""
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>{more}'


def collapsed_table(name: str, table: pl.DataFrame) -> str:
    return (
        f"<details><summary>Table <b>{html.escape(name)}</b>: {table.height} rows, {table.width} columns "
        f"{csv_link(name, table)}</summary>{table_html(table)}</details>"
    )


def _figure(tile: Tile, css: str = "tile") -> str:
    hover = f' title="{html.escape(tile.hover)}"' if tile.hover else ""
    caption = f"<figcaption>{html.escape(tile.caption)}</figcaption>" if tile.caption else ""
    return (
        f'<figure{hover}><img class="{css}" src="{png_data_uri(tile.image)}" '
        f'alt="{html.escape(tile.caption or tile.hover)}">{caption}</figure>'
    )


def card_html(card: FeatureCard) -> str:
    label = card.label or "no ground-truth label"
    score = "" if math.isnan(card.score) else f" (AUROC {card.score:.2f})"
    architecture = f" ({card.architecture})" if card.architecture else ""
    meta = [
        f"fires on {card.frequency:.1%} of tokens" if not math.isnan(card.frequency) else "",
        f"mean activation {card.mean_activation:.3g}" if not math.isnan(card.mean_activation) else "",
    ]
    search = " ".join([card.dictionary, str(card.feature), label, card.provenance, card.architecture]).lower()
    parts = [
        f'<div class="card" data-search="{html.escape(search)}">',
        f"<h4>{html.escape(card.dictionary)} #{card.feature}: {html.escape(label)}{score}</h4>",
        f'<p class="meta">{html.escape(" · ".join(m for m in meta if m))}{html.escape(architecture)}</p>',
    ]
    if card.provenance:
        parts.append(f'<p class="meta">ITDA provenance: {html.escape(card.provenance)}</p>')
    rows = (
        ("Top-activating held-out images (red: where it fires; number: peak activation)", card.top),
        ('By itself: the empty prompt "" with it added (x mean activation)', card.empty),
        (f"Modulation (x mean activation) of {card.strip_prompt}", card.strip),
    )
    for title, tiles in rows:  # groups sit side by side where the page is wide enough
        if tiles:
            parts.append(
                f'<div class="group"><div class="row-title">{html.escape(title)}</div>'
                f'<div class="row">{"".join(_figure(t) for t in tiles)}</div></div>'
            )
    parts.append("</div>")
    return "".join(parts)


def cards_html(cards: list[FeatureCard]) -> str:
    """The feature cards behind a search box that filters them by label, dictionary or number."""
    return (
        '<div class="atlas"><input class="search" type="search" placeholder="filter features: label, '
        'dictionary, number" oninput="filterCards(this)">'
        f'<div class="cards">{"".join(card_html(c) for c in cards)}</div></div>'
    )


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>\n{body}\n</body></html>"
    )


def render(title: str, sections: list[Section], summary: str = "") -> str:
    """The page: summary (findings, then `summary`: what was run), then each section."""
    parts = [f"<h1>{html.escape(title)}</h1>", '<section id="summary"><h2>Summary</h2>']
    for section in sections:
        if section.summary:
            parts.append(f'<p class="finding"><b>{html.escape(section.title)}.</b> {html.escape(section.summary)}</p>')
    if summary:
        parts.append(f'<p class="setup">{html.escape(summary)}</p>')
    parts.append(
        "<nav><ul>"
        + "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections))
        + "</ul></nav></section>"
    )
    for i, section in enumerate(sections):
        parts.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>')
        if section.text:
            parts.extend(f'<p class="about">{html.escape(p)}</p>' for p in section.text.split("\n\n"))
        for caption, path in section.plots:
            parts.append(
                f'<figure class="plot"><img src="{png_data_uri(path)}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        for caption, images in section.galleries:
            cells = "".join(_figure(Tile(im, label)) for label, im in images)
            parts.append(f'<h3>{html.escape(caption)}</h3><div class="grid row">{cells}</div>')
        if section.cards:
            parts.append(cards_html(section.cards))
        parts.extend(collapsed_table(name, table) for name, table in section.tables)
        parts.append("</section>")
    return _page(title, "\n".join(parts))


def render_cards_page(title: str, cards: list[FeatureCard], note: str = "") -> str:
    """A page with feature cards only (`diffdict atlas`)."""
    about = f'<p class="about">{html.escape(note)}</p>' if note else ""
    return _page(title, f"<h1>{html.escape(title)}</h1>{about}{cards_html(cards)}")


def write_page(path: Path, text: str) -> Path:
    """Write a page atomically (temp file, then rename): a reader never sees half a page."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_report(path: Path, title: str, sections: list[Section], summary: str = "") -> Path:
    return write_page(path, render(title, sections, summary))
