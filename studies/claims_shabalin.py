"""Shabalin et al.'s claims: ITDA against the SAE, SAE features against neurons, steering Flux, standardising."""

from __future__ import annotations

import polars as pl

from .aggregates import number
from .claim_base import (
    FAILS,
    FLUX,
    FLUX_RAW,
    FLUX_STANDARDISED,
    HOLDS,
    NOT_TESTABLE,
    Finding,
    Tables,
    combine,
    has,
    markdown_table,
    unmeasured,
    yes_no,
)
from .claim_stats import MIN_PROMPTS, paired, too_few
from .claims_surkov import map_cell, single_units

SHABALIN = (
    "Shabalin et al., Interpreting Large Text-to-Image Diffusion Models with Dictionary Learning (arXiv 2505.24360)"
)


def compare_pairs(tables: Tables) -> list[tuple[str, pl.DataFrame]]:
    metrics = tables["compare_metrics"]
    return [(pair, rows) for (pair,), rows in metrics.group_by(["pair"], maintain_order=True)]


def shabalin_itda_fvu(tables: Tables) -> Finding:
    claim = "ITDA matches or beats a top-k SAE on reconstruction at equal size and L0."
    if not has(tables, "compare_metrics"):
        return unmeasured("shabalin-itda", SHABALIN, claim, "compare tables")
    table, verdicts = [], []
    for pair, rows in compare_pairs(tables):
        dictionaries = rows.filter(pl.col("kind") == "dictionary")
        sae = dictionaries.filter(pl.col("architecture") == "topk_sae")
        itda = dictionaries.filter(pl.col("architecture") == "itda")
        if sae.is_empty() or itda.is_empty():
            continue
        s, i = sae.row(0, named=True), itda.row(0, named=True)
        ratio = i["fvu"] / s["fvu"]
        verdicts.append(ratio <= 1.1)
        table.append(
            [pair, f"{s['n']} / {i['n']}", f"{s['l0']:.1f} / {i['l0']:.1f}", s["fvu"], i["fvu"], f"{ratio:.2f}"]
        )
    body = (
        "Held-out FVU (lower is better) at the same hook, atoms n (ITDA: atoms admitted, at most the SAE's "
        "n) and L0.\n\n"
        + markdown_table(["pair", "n (SAE / ITDA)", "L0 (SAE / ITDA)", "SAE FVU", "ITDA FVU", "ITDA / SAE"], table)
        + "\n\nHolds when ITDA's FVU is within 10% of the SAE's (or lower)."
    )
    return Finding("shabalin-itda", SHABALIN, claim, body, combine(verdicts))


def shabalin_standardise(tables: Tables) -> Finding:
    claim = "Flux's stream is so anisotropic that without standardising the input most SAE features die."
    if not has(tables, "training_summary"):
        return unmeasured("shabalin-standardise", SHABALIN, claim, "training summary")
    summary = {r["dictionary"]: r for r in tables["training_summary"].iter_rows(named=True)}
    standardised, raw = summary.get(FLUX_STANDARDISED), summary.get(FLUX_RAW)
    if standardised is None or raw is None:
        return unmeasured("shabalin-standardise", SHABALIN, claim, "flux-sae / flux-sae-raw pair")
    dead_std, dead_raw = standardised["heldout_dead_fraction"], raw["heldout_dead_fraction"]
    matters = dead_raw - dead_std >= 0.05 and dead_raw >= 2 * dead_std
    table = [["standardised", dead_std, standardised["heldout_fvu"]], ["raw", dead_raw, raw["heldout_fvu"]]]
    body = (
        "The same top-k SAE on toy/flux's image tokens (flux-sae and flux-sae-raw), with and without standardised "
        "input: "
        "dead fraction and FVU on held-out tokens.\n\n"
        + markdown_table(["input", "dead fraction", "FVU"], table)
        + "\n\nHolds when the raw SAE has at least twice the dead fraction, and 5 points more."
    )
    return Finding("shabalin-standardise", SHABALIN, claim, body, HOLDS if matters else FAILS)


FLOOR_KINDS = ("raw channels", "random", "fg/bg only", "base rate")
# The frames a verdict reads (studies.concept_frames): concepts within their group (object concepts on object
# cells, background on background cells), as scene-wide values and as values at one cell.
VERDICT_FRAMES = (("within group", "global"), ("within group", "cell"))
INFO_FRAMES = (("all cells", "global"),)


def _alignment(tables: Tables) -> pl.DataFrame:
    """Per-concept F1 of every method, random draws averaged; tables from before frames and twins read as
    the real hook's tokens, all cells, global concepts."""
    alignment = tables["compare_alignment"]
    defaults = {"world": "toy", "scope": "all cells", "family": "global", "group": "all"}
    alignment = alignment.with_columns([pl.lit(v).alias(k) for k, v in defaults.items() if k not in alignment.columns])
    keys = ["world", "pair", "method", "kind", "scope", "family", "concept"]
    return alignment.group_by(keys).agg(pl.col("f1").mean())


def _frame(rows: pl.DataFrame, sae: str) -> dict | None:
    """The verdict's numbers in one frame: per-concept F1 of the SAE, the raw channels, every floor and the
    ceiling (the better of the probe and the diff-in-means direction: in a frame of hundreds of location
    concepts the probe is a shrunk discriminant, which need not beat the plain mean difference)."""
    per = {m: dict(zip(g["concept"], g["f1"])) for (m,), g in rows.group_by(["method"])}
    kinds = dict(rows.select("method", "kind").unique().iter_rows())
    if sae not in per or "raw channels" not in per or "probe" not in kinds.values():
        return None
    concepts = sorted(per[sae])
    values = {m: [per[m].get(c, float("nan")) for c in concepts] for m in per}
    mean = {m: sum(v) / len(v) for m, v in values.items()}
    floors = {m: mean[m] for m, k in kinds.items() if k in FLOOR_KINDS}
    floor = max(floors, key=lambda m: floors[m])
    probe = max((m for m, k in kinds.items() if k in ("probe", "oracle")), key=lambda m: mean[m])
    return {
        "concepts": len(concepts),
        "mean": mean,
        "floor": floor,
        "vs_raw": paired(values[sae], values["raw channels"]),
        "vs_floor": paired(values[sae], values[floor]),
        "ceiling": paired(values[probe], values[floor]),
        "ceiling_method": probe,
    }


def shabalin_interpretable(tables: Tables) -> Finding:
    claim = "SAE features are more interpretable than neurons (the block's raw channels)."
    if not has(tables, "compare_metrics", "compare_alignment"):
        return unmeasured("shabalin-neurons", SHABALIN, claim, "concept-alignment tables")
    alignment = _alignment(tables)
    table, parts = [], []
    for pair, rows in compare_pairs(tables):
        sae = rows.filter((pl.col("kind") == "dictionary") & (pl.col("architecture") == "topk_sae"))
        if sae.is_empty():
            continue
        name = sae["method"][0]
        own = alignment.filter(pl.col("pair") == pair)
        for scope, family in (*INFO_FRAMES, *VERDICT_FRAMES):
            in_frame = own.filter((pl.col("scope") == scope) & (pl.col("family") == family))
            toy = _frame(in_frame.filter(pl.col("world") == "toy"), name)
            if toy is None:
                continue
            twin = _frame(in_frame.filter(pl.col("world") == "twin"), name)
            counted = (scope, family) in VERDICT_FRAMES
            testable = toy["ceiling"].above() and twin is not None and twin["vs_floor"].above()
            part = (toy["vs_raw"].above() and toy["vs_floor"].above()) if testable else None
            if counted:
                parts.append(part)
            m = toy["mean"]
            table.append(
                [
                    pair,
                    f"{scope}, {family}",
                    toy["concepts"],
                    m[name],
                    m["raw channels"],
                    m.get("random", float("nan")),
                    m.get("fg/bg only", float("nan")),
                    m.get("base rate", float("nan")),
                    m[toy["ceiling_method"]],
                    toy["vs_raw"].text(),
                    f"{toy['floor']}: {toy['vs_floor'].text()}",
                    "–" if twin is None else f"{twin['vs_floor'].text()} ({twin['floor']})",
                    yes_no(part) if counted else "(context)",
                ]
            )
    if not table:
        return unmeasured("shabalin-neurons", SHABALIN, claim, "SAE rows in the compare tables")
    prompts = int(number(tables["compare_metrics"]["scoring_prompts"].max()))
    selection = int(number(tables["compare_metrics"]["selection_prompts"].max()))
    body = (
        f"F1 over ground-truth concepts of each method's best single feature (feature and threshold chosen on "
        f"{selection} train prompts, scored on {prompts} held-out prompts), per frame: all cells (context), and "
        f"within group (object concepts on object cells, background concepts on background cells) for scene-wide "
        f"values and for values at one cell. Floors: raw channels, random directions (mean of 5 draws), the "
        f"label-only fg/bg predictor (it knows a token's group and, for a cell concept, its cell) and the base "
        f"rate; ceiling: the better of a probe on all channels and the diff-in-means direction. The twin is the "
        f"hook's planted positive control "
        f"(studies/twin.py): the same study on activations with sparse additive concepts in the hook's "
        f"proportions, with the SAE retrained there.\n\n"
        + markdown_table(
            [
                "pair",
                "frame",
                "concepts",
                "SAE",
                "raw channels",
                "random",
                "fg/bg only",
                "base rate",
                "ceiling",
                "SAE − raw (± 2 SE)",
                "SAE − highest floor (± 2 SE)",
                "twin: SAE − highest floor",
                "holds",
            ],
            table,
        )
        + "\n\nIn each verdict frame the claim holds when the SAE beats the raw channels and the highest floor, "
        "each by two standard errors of the per-concept difference. A frame is not testable when its ceiling "
        "does not beat the highest floor by two standard errors (no room for a verdict), or when the twin's SAE "
        "does not beat its floor (the pipeline cannot detect a positive there), or when the run has no twin."
    )
    if not parts:
        body += (
            "\n\nThe run's tables have no within-group frames (they were made before them), so no verdict "
            "frame and no positive control: not testable."
        )
        return Finding("shabalin-neurons", SHABALIN, claim, body, NOT_TESTABLE)
    return Finding("shabalin-neurons", SHABALIN, claim, body, combine(parts))


def shabalin_flux_steering(tables: Tables) -> Finding:
    claim = "Adding an SAE feature's direction to Flux's image tokens steers the image (activation addition)."
    if not has(tables, "editability_best"):
        return unmeasured("shabalin-steering", SHABALIN, claim, "editability map")
    rows = single_units(tables, FLUX)
    features = rows.filter(pl.col("kind") == "dictionary")
    if features.is_empty():
        return unmeasured("shabalin-steering", SHABALIN, claim, "Flux dictionary rows in the editability map")
    unit, name = features.row(0, named=True)["unit"], features.row(0, named=True)["method"]
    table, parts = [], []
    for attribute in sorted(set(rows.filter(pl.col("unit") == unit)["attribute"].to_list())):
        sae = map_cell(tables, rows, unit, attribute, name)
        if sae is None:
            continue
        window = sae.row["window"]
        floor, ceiling = (map_cell(tables, rows, unit, attribute, m, window) for m in ("random", "oracle"))
        if floor is None or ceiling is None:
            continue
        editable = ceiling.minus(floor).above()
        difference = sae.minus(floor)
        part = None if too_few(sae.n) or not editable else difference.above()
        parts.append(part)
        table.append(
            [
                attribute,
                f"{sae.rate:.2f} ({window}, ×{sae.row['best_strength']:g})",
                floor.rate,
                ceiling.rate,
                sae.before,
                difference.text(),
                yes_no(editable),
                yes_no(part),
            ]
        )
    n = int(number(rows.filter(pl.col("unit") == unit)["prompts"].max()))
    body = (
        f"toy/flux (4 steps) at {unit}: {name}'s best distinct features, their direction added on the edited "
        f"region at the block's mean update norm times the strength its tuning sweep chose, in the window chosen "
        f"on tuning prompts, beside a random direction (floor) and the diff-in-means direction (ceiling) of the "
        f"same norm and the no-edit rate; held-out clean success, {n} prompts per cell.\n\n"
        + markdown_table(
            [
                "attribute",
                "SAE features",
                "random",
                "oracle",
                "no edit",
                "SAE − random (± 2 SE)",
                "block edits it (oracle > floor)",
                "SAE above floor",
            ],
            table,
        )
        + _flux_add_rows(tables)
        + f"\n\nJudged on the attributes the block can edit (its oracle beats the floor by two standard errors, "
        f"paired over prompts): holds when the SAE's directions beat the floor for every one, partly for some. "
        f"Not testable with fewer than {MIN_PROMPTS} prompts per cell."
    )
    return Finding("shabalin-steering", SHABALIN, claim, body, combine(parts))


def _flux_add_rows(tables: Tables) -> str:
    """The windows study's flux_add edits on Flux (one strength: the mean token norm), when present."""
    if not has(tables, "windows_success"):
        return ""
    rows = tables["windows_success"].filter(
        (pl.col("model") == FLUX) & pl.col("style").is_in(["flux_add", "random", "oracle"])
    )
    if "split" in rows.columns:
        rows = rows.filter(pl.col("split") == "score")
    if rows.is_empty():
        return ""
    table = []
    prompts = {s: int(number(rows.filter(pl.col("style") == s)["prompts"].max() or 0)) for s in ("flux_add", "random")}
    for (edit,), group in rows.group_by(["edit"], maintain_order=True):
        cell = {(r["style"], r["window"]): r for r in group.iter_rows(named=True)}
        for window in sorted({w for _, w in cell}):
            table.append(
                [
                    edit,
                    window,
                    *[
                        cell.get((s, window), {}).get("clean_success", float("nan"))
                        for s in ("flux_add", "random", "oracle")
                    ],
                ]
            )
    return (
        "\n\nThe paper's own edit (windows study, `flux_add`: the unit direction at the mean token norm, one "
        f"strength; random and oracle at the sdlens edit's norm), held-out clean success in every window "
        f"({prompts['flux_add']} prompts per flux_add cell, {prompts['random']} per random and oracle cell):\n\n"
        + markdown_table(["attribute", "window", "flux_add", "random", "oracle"], table)
    )
