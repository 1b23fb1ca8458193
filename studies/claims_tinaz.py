"""Tinaz et al.'s claims: the layout is set early, and edits act by time window (composition, style, texture)."""

from __future__ import annotations

import polars as pl

from .aggregates import number
from .claim_base import (
    BASE,
    FAILS,
    HOLDS,
    NOT_TESTABLE,
    PARTLY,
    Finding,
    Tables,
    combine,
    has,
    markdown_table,
    unmeasured,
)
from .claim_cells import EditCell, choose, chosen_cell
from .claim_stats import MIN_PROMPTS, too_few

TINAZ = "Tinaz et al., Emergence and Evolution of Interpretable Concepts in Diffusion Models (arXiv 2504.15473)"
COMPOSITION = ("shape", "position")
WINDOWS = ("early", "middle", "late")
LATE_SMALL = 0.25


def tinaz_layout(tables: Tables) -> Finding:
    claim = "The layout is predictable before the first denoising step ends."
    if not has(tables, "layout"):
        return unmeasured("tinaz-layout", TINAZ, claim, "layout table")
    layout = tables["layout"]
    probes = layout.filter(pl.col("method") == "probe").sort("step")
    caption = number(layout.filter(pl.col("method") == "caption alone")["iou_foreground"].max())
    other = number(layout.filter(pl.col("method") == "other seed")["iou_foreground"].max())
    reference = max(caption, other)
    prompts = int(number(layout["prompts"].max()))
    with_se = "se_vs_baseline" in probes.columns
    table, first_step, early = [], None, None
    for (hook,), rows in probes.group_by(["hook"], maintain_order=True):
        margin = (pl.col("iou_foreground") - reference) > 2 * pl.col("se_vs_baseline") if with_se else pl.lit(False)
        beats = rows.filter(margin)
        first = beats.row(0, named=True) if beats.height else None
        start = rows.row(0, named=True)
        se = f" ± {2 * start['se_vs_baseline']:.2f}" if with_se else ""
        table.append(
            [
                hook,
                f"{start['iou_foreground']:.2f}{se} (t = {start['t']:.2f})",
                f"step {first['step']} (t = {first['t']:.2f})" if first else "never",
                rows["iou_foreground"].max(),
            ]
        )
        if first and (first_step is None or first["step"] < first_step):
            first_step, early = first["step"], first["t"]
    body = (
        f"toy/sdxl-base (25 steps): the final image's foreground predicted from one step's activations by a "
        f"logistic probe (fit on train prompts), IoU on {prompts} held-out prompts, beside what the caption "
        f"alone gives ({caption:.2f}) and another seed's image of the same caption ({other:.2f}).\n\n"
        + markdown_table(
            [
                "hook",
                "probe IoU at the first step (± 2 SE vs the stronger baseline)",
                "first step above both baselines",
                "best probe IoU",
            ],
            table,
        )
        + f"\n\nA step beats the baselines when its probe's IoU exceeds the stronger one's by two standard errors "
        f"of the per-prompt difference. Holds when a probe does at the first step; partly when it does within the "
        f"early window (t ≥ 0.6). Not testable with fewer than {MIN_PROMPTS} prompts or without standard errors."
    )
    if too_few(prompts) or not with_se:
        verdict = NOT_TESTABLE
    else:
        verdict = FAILS if early is None else HOLDS if first_step == 0 else PARTLY if early >= 0.6 else FAILS
    return Finding("tinaz-layout", TINAZ, claim, body, verdict)


def _windows_rows(tables: Tables, split: str) -> pl.DataFrame:
    rows = tables["windows_success"].filter(pl.col("model") == BASE)
    if "split" not in rows.columns:  # tables from before the tuning split: every row is a held-out one
        return rows if split == "score" else rows.clear()
    return rows.filter(pl.col("split") == split)


def _window_cell(tables: Tables, rows: pl.DataFrame, edit: str, hook: str, style: str, window: str) -> EditCell | None:
    """One (attribute, hook, style, window) cell of the windows study (the oracle and random rows' style is
    their kind), with its per-prompt values."""
    match = {"edit": edit, "hook": hook, "style": style, "window": window}
    return chosen_cell(rows, tables.get("windows_prompts"), match, carried=("model", "dictionary"))


def tinaz_windows(tables: Tables) -> Finding:
    claim = "Edits early change composition, in the middle style; late edits change only texture."
    if not has(tables, "windows_success"):
        return unmeasured("tinaz-windows", TINAZ, claim, "windows table")
    scored, tuned = _windows_rows(tables, "score"), _windows_rows(tables, "tune")
    if scored.is_empty():
        return unmeasured("tinaz-windows", TINAZ, claim, "Base windows rows")
    table, late_small, composition_early, style_middle = [], [], [], []
    for (edit,), group in scored.group_by(["edit"], maintain_order=True):
        # the hook where the oracle edits best, chosen on tuning prompts (held-out rows only without them)
        chooser = tuned.filter((pl.col("edit") == edit) & (pl.col("kind") == "oracle"))
        chosen = choose(chooser if chooser.height else group.filter(pl.col("kind") == "oracle"))
        if chosen is None:
            continue
        hook = chosen["hook"]
        cells = {
            w: (
                _window_cell(tables, scored, edit, hook, "oracle", w),
                _window_cell(tables, scored, edit, hook, "random", w),
            )
            for w in WINDOWS
        }
        # the windows with both an oracle and a random cell
        oracle = {w: o for w, (o, f) in cells.items() if o is not None and f is not None}
        floor = {w: f for w, (o, f) in cells.items() if o is not None and f is not None}
        present = list(oracle)
        if not present:
            continue
        n = min(oracle[w].n for w in present)
        features = (
            group.filter((pl.col("hook") == hook) & (pl.col("kind") == "dictionary"))
            .group_by("window")
            .agg(pl.col("clean_success").max())
        )
        best_feature = dict(features.iter_rows())
        table.append(
            [
                edit,
                hook,
                *[
                    f"{oracle[w].rate:.2f} / {best_feature.get(w, float('nan')):.2f} / {floor[w].rate:.2f}"
                    if w in present
                    else "–"
                    for w in WINDOWS
                ],
                n,
            ]
        )
        editable = {w: oracle[w].minus(floor[w]).above() for w in present}
        testable = not too_few(n) and any(editable.values())
        if "late" in present and "early" in present:
            late = oracle["late"]
            late_small.append(late.rate <= LATE_SMALL or oracle["early"].minus(late).above() if testable else None)
        if edit in COMPOSITION and "early" in present:
            others_better = any(oracle[w].minus(oracle["early"]).above() for w in present if w != "early")
            composition_early.append(editable["early"] and not others_better if testable else None)
        if edit == "style" and "middle" in present:
            early_better = "early" in present and oracle["early"].minus(oracle["middle"]).above()
            style_middle.append(editable["middle"] and not early_better if testable else None)
    parts = {
        "composition early": composition_early,
        "style in the middle": style_middle,
        "late edits change little": late_small,
    }
    verdicts = {k: combine(v) for k, v in parts.items() if v}
    n = int(number(scored["prompts"].max()))
    styled = scored.filter(pl.col("kind") == "dictionary")
    n_styles = int(number(styled["prompts"].max())) if styled.height else n
    styles_note = "" if n_styles == n else f" (the SAE edit styles: {n_styles} prompts)"
    body = (
        f"toy/sdxl-base (25 steps, CFG): each attribute edited at the block where its oracle edits best (chosen "
        f"on tuning prompts), inside one window at a time (early t ∈ [0.6, 1], middle [0.2, 0.6], late [0, 0.2]); "
        f"each cell is held-out clean success of oracle / best SAE edit style / random, {n} prompts per cell"
        f"{styles_note}.\n\n"
        + markdown_table(["attribute", "block", "early", "middle", "late", "prompts"], table)
        + "\n\nSub-claims: "
        + "; ".join(f"{k}: {v}" for k, v in verdicts.items())
        + ". Composition early: the shape and position oracles beat the floor early and no other window beats "
        "early. Style in the middle: the style oracle beats the floor in the middle window and early does not "
        f"beat it. Late edits change little: late clean success is at most {LATE_SMALL}, or below early. Every "
        "comparison is by two standard errors, paired over prompts; an attribute is not testable when its "
        f"oracle beats the floor in no window or its cells rest on fewer than {MIN_PROMPTS} prompts."
    )
    flat = [p for v in parts.values() for p in v]
    return Finding("tinaz-windows", TINAZ, claim, body, combine(flat) if flat else NOT_TESTABLE)
