"""What each study's tables say, in two or three sentences with the headline numbers.

Every sentence is computed from the tables (never written by hand), so it stays true when a
run changes. A summary returns "" when its tables lack what it reads (e.g. a study whose
tables changed shape), and the report then shows no sentence for that study.
"""

from __future__ import annotations

from typing import TypeGuard

import polars as pl

from .aggregates import number


def _has(table: pl.DataFrame | None, *columns: str) -> TypeGuard[pl.DataFrame]:
    return table is not None and not table.is_empty() and all(c in table.columns for c in columns)


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def summarize_transfer(run, tables: dict[str, pl.DataFrame]) -> str:
    metrics, splice = tables.get("transfer_metrics"), tables.get("transfer_splice")
    if not _has(metrics, "dictionary", "source_model", "target_model", "fvu"):
        return ""
    sentences = []
    for name in metrics["dictionary"].unique(maintain_order=True).to_list()[:3]:
        rows = metrics.filter(pl.col("dictionary") == name)
        source = rows["source_model"][0]
        cond = rows.filter(pl.col("branch") == "cond") if "branch" in rows.columns else rows
        fvu = (
            (cond if not cond.is_empty() else rows)
            .group_by("target_model", maintain_order=True)
            .agg(pl.col("fvu").mean())
        )
        per_model = ", ".join(f"{v:.3f} on {m}" for m, v in fvu.iter_rows())
        hook = f" {rows['hook'][0]}" if "hook" in rows.columns else ""
        sentences.append(
            f"{name} (fit on {source}{hook}) has held-out FVU {per_model} "
            "(mean over steps, cond branch; lower is better)"
        )
        if _has(splice, "dictionary", "target_model"):
            own = splice.filter(pl.col("dictionary") == name)
            column = next((c for c in ("judge_agreement", "clip_similarity") if c in own.columns), None)
            if column and not own.is_empty():
                what = (
                    "the judge reads the same attributes on"
                    if column == "judge_agreement"
                    else "CLIP image similarity to the original is"
                )
                values = ", ".join(
                    f"{_pct(v) if column == 'judge_agreement' else f'{v:.3f}'} on {m}"
                    for m, v in own.select("target_model", column).iter_rows()
                )
                sentences[-1] += f"; splicing its reconstruction into the block, {what} {values}"
    edits = tables.get("transfer_edits")
    if _has(edits, "dictionary", "method", "success"):
        from .transfer import transfer_edit_success

        best = transfer_edit_success(edits)
        for (name, target), rows in best.group_by(["dictionary", "target_model"], maintain_order=True):
            means = rows.group_by("method", maintain_order=True).agg(pl.col("success").mean(), pl.col("prompts").max())
            parts = ", ".join(f"{m} {v:.2f}" for m, v, _ in means.iter_rows())
            sentences.append(
                f"Edits on {target} with {name} (mean success over {rows['attribute'].n_unique()} "
                f"attributes, {int(number(means['prompts'].max()))} held-out prompts each): {parts}"
            )
    return ". ".join(sentences) + "." if sentences else ""


def summarize_windows(run, tables: dict[str, pl.DataFrame]) -> str:
    table = tables.get("windows")
    if not _has(table, "window", "success", "edit"):
        return ""
    order = list(run.config.studies.windows.windows) if run.config.studies.windows else []
    calibration = table.filter(pl.col("kind") != "dictionary") if "kind" in table.columns else None
    if calibration is not None:
        table = table.filter(pl.col("kind") == "dictionary")
        if table.is_empty():
            return ""
    by_window = table.group_by("window").agg(
        pl.col("success").mean(),
        pl.len().alias("edits"),
        *([pl.col("preservation").mean()] if "preservation" in table.columns else []),
    )
    rank = {w: i for i, w in enumerate(order)}
    by_window = by_window.sort(pl.col("window").replace_strict(rank, default=len(rank), return_dtype=pl.Int64))
    parts = [f"{w} {_pct(s)}" for w, s in by_window.select("window", "success").iter_rows()]
    attributes = table["edit"].n_unique()
    text = (
        f"Edit success by time window (mean over {attributes} edited attribute{'s' if attributes > 1 else ''}"
        f"{', edit styles' if 'style' in table.columns else ''} and blocks): {', '.join(parts)}"
    )
    if calibration is not None and not calibration.is_empty():
        rows = calibration.group_by("window", "kind").agg(pl.col("success").mean())
        rates = {(w, k): v for w, k, v in rows.iter_rows()}
        text += "; the same windows with the oracle (diff-in-means) / random direction of the same norm: " + ", ".join(
            f"{w} {_pct(rates.get((w, 'oracle'), float('nan')))} / {_pct(rates.get((w, 'random'), float('nan')))}"
            for w in order
            if (w, "oracle") in rates
        )
    if "preservation" in by_window.columns:
        kept = [f"{w} {_pct(p)}" for w, p in by_window.select("window", "preservation").iter_rows() if p == p]
        if kept:
            text += f"; preservation of the other attributes: {', '.join(kept)}"
    keys = [c for c in ("model", "hook", "edit", "style", "window") if c in table.columns]
    cells = (
        table.group_by(keys).agg(pl.col("success").mean(), pl.len().alias("n")).sort(["success", "n"], descending=True)
    )
    best = cells.row(0, named=True)
    if best["success"] == 0:
        return text + f". No edit succeeded in any window ({table.height} edits)."
    where = " ".join(str(best[c]) for c in ("model", "hook") if c in best)
    how = f" with {best['style']}" if "style" in best else ""
    text += (
        f". Most editable: {best['edit']} in the {best['window']} window{how}"
        f"{f' at {where}' if where else ''} ({_pct(best['success'])} of {best['n']} prompts)."
    )
    return text
