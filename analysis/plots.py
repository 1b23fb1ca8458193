"""Plots from tidy polars tables, with seaborn, written as PNG files."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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


def line_plot(table: pl.DataFrame, x: str, y: str, hue: str | None, path: Path, title: str = "",
              style: str | None = None) -> Path:
    """One line per `hue` value (e.g. FVU against normalised t, one line per model)."""
    _need(table, [c for c in (x, y, hue, style) if c], "line_plot")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sns.lineplot(data=_frame(table), x=x, y=y, hue=hue, style=style, marker="o", ax=ax)
    ax.set_title(title)
    return _save(fig, path)


def scatter_plot(table: pl.DataFrame, x: str, y: str, hue: str | None, path: Path, title: str = "") -> Path:
    """Points coloured by `hue` (e.g. FVU against L0 per method)."""
    _need(table, [c for c in (x, y, hue) if c], "scatter_plot")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sns.scatterplot(data=_frame(table), x=x, y=y, hue=hue, s=70, ax=ax)
    ax.set_title(title)
    return _save(fig, path)


def bar_plot(table: pl.DataFrame, x: str, y: str, hue: str | None, path: Path, title: str = "") -> Path:
    """Grouped bars (e.g. concept alignment per concept, one colour per method)."""
    _need(table, [c for c in (x, y, hue) if c], "bar_plot")
    fig, ax = plt.subplots(figsize=(max(6.4, 0.35 * table[x].n_unique() + 2), 4.2))
    sns.barplot(data=_frame(table), x=x, y=y, hue=hue, ax=ax)
    ax.tick_params(axis="x", rotation=60)
    ax.set_title(title)
    return _save(fig, path)


def heatmap(table: pl.DataFrame, rows: str, columns: str, values: str, path: Path, title: str = "",
            fmt: str = ".2f", vmin: float | None = 0.0, vmax: float | None = 1.0,
            column_order: list[str] | None = None) -> Path:
    """A rows x columns grid of the mean of `values` (e.g. edit type x time window -> success)."""
    _need(table, [rows, columns, values], "heatmap")
    grid = _frame(table.group_by([rows, columns]).agg(pl.col(values).mean()))
    grid = grid.pivot(index=rows, columns=columns, values=values)
    if column_order is not None:
        grid = grid[[c for c in column_order if c in grid.columns]]
    fig, ax = plt.subplots(figsize=(1.2 * len(grid.columns) + 3, 0.5 * len(grid.index) + 2))
    sns.heatmap(grid, annot=True, fmt=fmt, cmap="viridis", vmin=vmin, vmax=vmax, ax=ax)
    ax.set_title(title)
    return _save(fig, path)


def lines_with_references(table: pl.DataFrame, x: str, y: str, hue: str, references: dict[str, float], path: Path,
                          title: str = "", xlabel: str | None = None, ylabel: str | None = None,
                          invert_x: bool = False) -> Path:
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
