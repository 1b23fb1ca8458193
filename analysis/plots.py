"""Plots from tidy polars tables, with seaborn, written as PNG files.

Every plot of a run uses one palette for methods, keyed by what a method *is*
(`method_kind`): each dictionary its own hue from one family of blues, and the
calibration methods fixed colours (oracle = diff-in-means, random directions, probe,
raw channels), so a colour means the same thing in every figure. Legends sit outside
the data; lines carry markers so that overlapping ones stay distinguishable; axes are
labelled with units (`AXIS_LABELS`, or the caller's own label).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import overload

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")

METHOD_KINDS = ("dictionary", "oracle", "random", "probe", "raw channels")
# Fixed colours of the calibration methods; dictionaries take blues (_DICTIONARY_FAMILY).
KIND_COLOURS = {
    "oracle": "#d95f02",  # orange: the diff-in-means ceiling
    "random": "#8c8c8c",  # grey: the floor
    "probe": "#7b3294",  # purple: logistic probe on all channels
    "raw channels": "#a6761d",  # brown: the block's own channels
}
_DICTIONARY_FAMILY = "Blues"
KIND_MARKERS = {"dictionary": "o", "oracle": "*", "random": "X", "probe": "P", "raw channels": "s"}
_DICTIONARY_MARKERS = ("o", "D", "^", "v", "<", ">", "p", "h")
# Plain line/marker cycle for hues that are not methods (models, branches, windows).
_OTHER_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

AXIS_LABELS = {
    "t": "normalised time t (1 = pure noise, 0 = clean)",
    "fvu": "FVU (unexplained / total variance)",
    "l0": "L0 (active features per token)",
    "explained_variance": "explained variance (fraction)",
    "best_auroc": "best single-feature AUROC (0.5 = chance)",
    "auroc": "AUROC (0.5 = chance)",
    "success": "edit success rate (fraction of prompts)",
    "clean_success": "clean edit success rate (fraction of prompts)",
    "preservation": "preservation (fraction of attributes kept)",
    "frequency": "firing frequency (fraction of tokens)",
    "step": "denoising step (index)",
    "concept": "ground-truth concept",
    "window": "time window",
    "style": "edit style",
    "edit": "edited attribute",
    "method": "method",
    "mean_best_auroc": "mean best AUROC over concepts",
    "concepts_above_0_9": "share of concepts with AUROC > 0.9",
    "fit_seconds": "fit time (s)",
}


def method_kind(name: str) -> str:
    """What a method is, from its name: 'dictionary' unless it names a calibration method.

    'diff-in-means', 'oracle', 'mean difference' -> 'oracle'; 'random ...' -> 'random';
    '... probe' -> 'probe'; 'raw channels' / 'raw' / 'channels' -> 'raw channels'.
    """
    lowered = name.lower().strip()
    if "diff-in-means" in lowered or "diff in means" in lowered or "oracle" in lowered or "mean diff" in lowered:
        return "oracle"
    if lowered.startswith("random"):
        return "random"
    if "probe" in lowered:
        return "probe"
    if lowered in ("raw", "channels") or lowered.startswith("raw channel"):
        return "raw channels"
    return "dictionary"


def method_palette(methods: Iterable[str]) -> dict[str, str]:
    """{method name: hex colour}: dictionaries in the given order get distinct blues (dark to
    mid); calibration methods get their kind's fixed colour. Pass every method of a study at
    once so a dictionary keeps its hue across that study's plots."""
    methods = list(dict.fromkeys(methods))
    dictionaries = [m for m in methods if method_kind(m) == "dictionary"]
    # Skip the palest blues: they vanish on a white background.
    blues = sns.color_palette(_DICTIONARY_FAMILY, len(dictionaries) + 2)[2:][::-1] if dictionaries else []
    colours = {m: to_hex(c) for m, c in zip(dictionaries, blues)}
    for m in methods:
        if m not in colours:
            colours[m] = KIND_COLOURS[method_kind(m)]
    return {m: colours[m] for m in methods}


def method_markers(methods: Iterable[str]) -> dict[str, str]:
    """{method name: matplotlib marker}: one per kind, and distinct ones among dictionaries."""
    markers, dictionaries = {}, 0
    for m in dict.fromkeys(methods):
        kind = method_kind(m)
        if kind == "dictionary":
            markers[m] = _DICTIONARY_MARKERS[dictionaries % len(_DICTIONARY_MARKERS)]
            dictionaries += 1
        else:
            markers[m] = KIND_MARKERS[kind]
    return markers


@overload
def _hue_style(table: pl.DataFrame, hue: str) -> tuple[dict, dict]: ...
@overload
def _hue_style(table: pl.DataFrame, hue: str | None) -> tuple[dict | None, dict | None]: ...
def _hue_style(table: pl.DataFrame, hue: str | None) -> tuple[dict | None, dict | None]:
    """(palette, markers) for a hue column: the method palette when the hue is `method`."""
    if hue is None:
        return None, None
    values = [str(v) for v in table[hue].unique(maintain_order=True).to_list()]
    if hue == "method":
        return method_palette(values), method_markers(values)
    colours = sns.color_palette("colorblind", len(values))
    return (
        {v: to_hex(c) for v, c in zip(values, colours)},
        {v: _OTHER_MARKERS[i % len(_OTHER_MARKERS)] for i, v in enumerate(values)},
    )


def _label(ax: plt.Axes, x: str, y: str, xlabel: str | None, ylabel: str | None, title: str) -> None:
    ax.set_xlabel(AXIS_LABELS.get(x, x) if xlabel is None else xlabel)
    ax.set_ylabel(AXIS_LABELS.get(y, y) if ylabel is None else ylabel)
    ax.set_title(title)


def _legend_outside(ax: plt.Axes, title: str | None = None) -> None:
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title=title)


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # tight: keeps the outside legend in the file
    plt.close(fig)
    return path


def _frame(table: pl.DataFrame):
    """A pandas frame for seaborn, without polars' pyarrow dependency."""
    import pandas as pd

    return pd.DataFrame(table.to_dict(as_series=False))


def _need(table: pl.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what}: table has no column(s) {missing}; it has {table.columns}")
    if table.is_empty():
        raise ValueError(f"{what}: the table is empty, nothing to plot")


def line_plot(
    table: pl.DataFrame,
    x: str,
    y: str,
    hue: str | None,
    path: Path,
    title: str = "",
    style: str | None = None,
    facet: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    dodge: float = 0.015,
) -> Path:
    """One line per `hue` value (e.g. FVU against normalised t, one line per model); the mean
    of `y` where several rows share an x.

    Each hue has its own colour and marker and is shifted by `dodge` x the x range from the
    next, so lines that coincide stay visible; `style` dashes lines by a second column;
    `facet` draws one panel per value of a column (sharing the y axis).
    """
    from matplotlib.lines import Line2D

    _need(table, [c for c in (x, y, hue, style, facet) if c], "line_plot")
    hue_values = [str(v) for v in table[hue].unique(maintain_order=True).to_list()] if hue else [""]
    palette, markers = _hue_style(table, hue) if hue else ({"": "#1764ab"}, {"": "o"})
    style_values = [str(v) for v in table[style].unique(maintain_order=True).to_list()] if style else [""]
    dashes = dict(zip(style_values, ("-", "--", ":", "-.") * 4))
    panels = table[facet].unique(maintain_order=True).to_list() if facet else [None]
    low, high = table.select(pl.col(x).min().alias("low"), pl.col(x).max().alias("high")).row(0)
    span = float(high - low) or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels) + 1.8, 4.0), sharey=True, squeeze=False)
    for i, (ax, panel) in enumerate(zip(axes[0], panels)):
        subset = table if facet is None or panel is None else table.filter(pl.col(facet) == panel)
        for j, value in enumerate(hue_values):
            offset = (j - (len(hue_values) - 1) / 2) * dodge * span
            for line_style in style_values:
                rows = subset
                if hue:
                    rows = rows.filter(pl.col(hue).cast(pl.Utf8) == value)
                if style:
                    rows = rows.filter(pl.col(style).cast(pl.Utf8) == line_style)
                if rows.is_empty():
                    continue
                points = rows.group_by(x).agg(pl.col(y).mean()).sort(x)
                ax.plot(
                    points[x].to_numpy() + offset,
                    points[y].to_numpy(),
                    color=palette[value],
                    marker=markers[value],
                    linestyle=dashes[line_style],
                    markersize=6,
                    linewidth=1.6,
                    markeredgecolor="white",
                    markeredgewidth=0.6,
                )
        _label(ax, x, y, xlabel, ylabel if i == 0 else "", f"{facet} = {panel}" if facet else "")
    handles = [Line2D([], [], color=palette[v], marker=markers[v], label=v) for v in hue_values if hue]
    handles += [
        Line2D([], [], color="#444", linestyle=dashes[s], label=f"{style} = {s}") for s in style_values if style
    ]
    if handles:
        axes[0][-1].legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            frameon=False,
            title=hue.replace("_", " ") if hue else None,
        )
    fig.suptitle(title)
    return _save(fig, path)


def scatter_plot(
    table: pl.DataFrame,
    x: str,
    y: str,
    hue: str | None,
    path: Path,
    title: str = "",
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> Path:
    """Points coloured by `hue` (e.g. FVU against L0 per method), one marker per hue value."""
    _need(table, [c for c in (x, y, hue) if c], "scatter_plot")
    palette, markers = _hue_style(table, hue)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sns.scatterplot(data=_frame(table), x=x, y=y, hue=hue, style=hue, palette=palette, markers=markers, s=90, ax=ax)
    _label(ax, x, y, xlabel, ylabel, title)
    _legend_outside(ax)
    return _save(fig, path)


def bar_plot(
    table: pl.DataFrame,
    x: str,
    y: str,
    hue: str | None,
    path: Path,
    title: str = "",
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> Path:
    """Grouped bars of the mean of `y` (e.g. concept alignment per concept, one colour per method), error bars
    ± 1 standard error (analytic: seaborn's default bootstrap takes minutes on tables of thousands of bars)."""
    _need(table, [c for c in (x, y, hue) if c], "bar_plot")
    palette, _ = _hue_style(table, hue)
    groups = table[hue].n_unique() if hue else 1
    fig, ax = plt.subplots(figsize=(max(6.4, 0.18 * groups * table[x].n_unique() + 2), 4.2))
    sns.barplot(data=_frame(table), x=x, y=y, hue=hue, palette=palette, errorbar="se", ax=ax)
    ax.tick_params(axis="x", rotation=60)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    _label(ax, x, y, xlabel, ylabel, title)
    _legend_outside(ax)
    return _save(fig, path)


def heatmap(
    table: pl.DataFrame,
    rows: str,
    columns: str,
    values: str,
    path: Path,
    title: str = "",
    fmt: str = ".2f",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    column_order: list[str] | None = None,
    colorbar_label: str | None = None,
) -> Path:
    """A rows x columns grid of the mean of `values` (e.g. edit type x time window -> success)."""
    _need(table, [rows, columns, values], "heatmap")
    grid = _frame(table.group_by([rows, columns]).agg(pl.col(values).mean()))
    grid = grid.pivot(index=rows, columns=columns, values=values)
    if column_order is not None:
        grid = grid[[c for c in column_order if c in grid.columns]]
    fig, ax = plt.subplots(figsize=(1.2 * len(grid.columns) + 3, 0.5 * len(grid.index) + 2))
    sns.heatmap(
        grid,
        annot=True,
        fmt=fmt,
        cmap="viridis",
        vmin=vmin,
        vmax=vmax,
        ax=ax,
        cbar_kws={"label": colorbar_label or AXIS_LABELS.get(values, values)},
    )
    _label(ax, columns, rows, None, None, title)
    return _save(fig, path)


def lines_with_references(
    table: pl.DataFrame,
    x: str,
    y: str,
    hue: str,
    references: dict[str, float],
    path: Path,
    title: str = "",
    xlabel: str | None = None,
    ylabel: str | None = None,
    invert_x: bool = False,
) -> Path:
    """One line per `hue` value plus a dashed horizontal line per named reference value (a baseline)."""
    _need(table, [x, y, hue], "lines_with_references")
    fig, ax = plt.subplots(figsize=(7.4, 4.2))
    sns.lineplot(data=_frame(table), x=x, y=y, hue=hue, style=hue, markers=True, dashes=False, ax=ax)
    palette = sns.color_palette("Greys", len(references) + 2)[2:]
    for (name, value), colour in zip(references.items(), palette):
        ax.axhline(value, linestyle="--", color=colour, label=f"{name} ({value:.2f})")
    if invert_x:
        ax.invert_xaxis()
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)
