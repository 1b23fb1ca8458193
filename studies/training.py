"""Dictionary training convergence: did each dictionary's FVU flatten before training stopped?

Reads the training metrics every fit writes (fits/GROUP/metrics.parquet: one row per step,
FVU of the training batch; SAEs add the dead fraction, ITDA its size).

Tables:
  training_curves   dictionary, architecture, step, tokens, fvu, dead_fraction, size (means over
                    about 50 equal spans of the run, to keep the table small)
  training_summary  dictionary, architecture, tokens, fvu_last_tenth, fvu_previous_tenth,
                    relative_change (last tenth against the tenth before), plateaued
                    (|relative_change| < PLATEAU), heldout_fvu, heldout_dead_fraction, fit_seconds
                    (wall time of the fit, from the dictionary's metadata)
"""

from __future__ import annotations

import polars as pl

from .aggregates import number
from .run import Run

PLATEAU = 0.05  # a fit whose FVU moved less than 5% over its last tenth has flattened
SPANS = 50


def training_rows(run: Run, name: str) -> pl.DataFrame | None:
    """One dictionary's per-step training metrics, or None when it has none."""
    metrics = run.fit_metrics(name)  # read through the guarded reader: a damaged table names the fix
    if metrics is None:
        return None
    rows = metrics.filter((pl.col("kind") == "train") & (pl.col("name") == name)).sort("step")
    return rows if rows.height else None


def _curve(rows: pl.DataFrame) -> pl.DataFrame:
    span = max(1, rows.height // SPANS)
    columns = [c for c in ("fvu", "dead_fraction", "size") if c in rows.columns]
    return (
        rows.with_columns((pl.col("step") // span).alias("span"))
        .group_by("span", maintain_order=True)
        .agg(pl.col("step").max(), pl.col("tokens").max(), *[pl.col(c).mean() for c in columns])
        .drop("span")
    )


def _summary(rows: pl.DataFrame) -> dict:
    tenth = max(1, rows.height // 10)
    last = float(number(rows["fvu"][-tenth:].mean()))
    previous = float(number(rows["fvu"][-2 * tenth : -tenth].mean())) if rows.height >= 2 * tenth else float("nan")
    change = (last - previous) / previous if previous == previous and previous != 0 else float("nan")
    return {
        "tokens": int(number(rows["tokens"].max())),
        "fvu_last_tenth": last,
        "fvu_previous_tenth": previous,
        "relative_change": change,
        "plateaued": bool(abs(change) < PLATEAU) if change == change else False,
    }


def run_training(run: Run) -> dict[str, pl.DataFrame]:
    names = run.config.studies.training.dictionaries or [d.name for d in run.config.dictionaries]
    curves, summaries = [], []
    for name in names:
        rows = training_rows(run, name)
        if rows is None:
            continue
        architecture = run.config.dictionary(name).architecture
        curves.append(
            _curve(rows).with_columns(pl.lit(name).alias("dictionary"), pl.lit(architecture).alias("architecture"))
        )
        held_out = run.held_out_metrics(name) or {}
        summaries.append(
            {
                "dictionary": name,
                "architecture": architecture,
                **_summary(rows),
                "heldout_fvu": held_out.get("fvu", float("nan")),
                "heldout_dead_fraction": held_out.get("dead_fraction", float("nan")),
                "fit_seconds": run.fit_seconds(name),
            }
        )
    curve_table = pl.concat(curves, how="diagonal_relaxed") if curves else pl.DataFrame()
    return {"training_curves": curve_table, "training_summary": pl.DataFrame(summaries, infer_schema_length=None)}


def plot_training(run: Run, tables: dict[str, pl.DataFrame]) -> list[tuple[str, object]]:
    from diffdict.analysis.plots import line_plot

    curves = tables["training_curves"]
    plots = []
    if curves.is_empty():
        return plots
    path = line_plot(
        curves,
        "tokens",
        "fvu",
        "dictionary",
        run.plot_path("training_fvu"),
        "Training FVU against tokens seen (training batches)",
    )
    plots.append(("Dictionary training: FVU against tokens seen", path))
    if "dead_fraction" in curves.columns and curves["dead_fraction"].drop_nulls().len():
        path = line_plot(
            curves.filter(pl.col("dead_fraction").is_not_null()),
            "tokens",
            "dead_fraction",
            "dictionary",
            run.plot_path("training_dead"),
            "Dead fraction against tokens seen",
        )
        plots.append(("Dictionary training: dead latents against tokens seen", path))
    return plots


def summarize_training(run: Run, tables: dict[str, pl.DataFrame]) -> str:
    summary = tables["training_summary"]
    if summary.is_empty():
        return "No training metrics found."
    flat = summary.filter(pl.col("plateaued"))["dictionary"].to_list()
    rising = summary.filter(~pl.col("plateaued"))
    text = f"{len(flat)} of {summary.height} dictionaries had plateaued (FVU moved < {PLATEAU:.0%} over the last tenth)"
    if rising.height:
        text += "; still improving: " + ", ".join(
            f"{r['dictionary']} ({100 * r['relative_change']:+.1f}%)" for r in rising.iter_rows(named=True)
        )
    return text + "."
