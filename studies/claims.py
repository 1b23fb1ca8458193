"""The four papers' claims, each judged from a run's tables against its floor and ceiling.

Every claim is one function `(tables) -> Finding`: it reads the small tables `studies.findings`
collects from a run (names below), writes its numbers as markdown and gives a verdict by a rule
stated in its text. Differences between success rates count only when they exceed two standard
errors (`above`), so a verdict never rests on one lucky prompt.

Tables read (as collected by studies/findings.py):
  editability_best      the editability map at each method's best strength
  transfer_metrics, transfer_splice, transfer_edit_success
  compare_metrics, compare_alignment
  training_summary
  windows_success       windows, mean success per (model, hook, dictionary, edit, style, kind, window)
  layout
Models and dictionaries are found by the names configs/toy_papers.toml gives them (below).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

HOLDS, PARTLY, FAILS, UNMEASURED = "holds", "holds partly", "does not hold here", "not measured"
Tables = dict[str, pl.DataFrame]

# The names configs/toy_papers.toml gives its model entries and its Flux standardisation pair.
TURBO, BASE, FLUX = "turbo", "base", "flux"
FLUX_STANDARDISED, FLUX_RAW = "flux-sae", "flux-sae-raw"


@dataclass(frozen=True)
class Finding:
    key: str  # a stable id, e.g. "surkov-blocks"
    paper: str
    claim: str
    body: str  # markdown: the numbers, floor and ceiling, and the rule behind the verdict
    verdict: str


def above(a: float, n_a: int, b: float, n_b: int) -> bool:
    """Success rate a (of n_a prompts) is above b (of n_b) by more than two standard errors."""
    se = math.sqrt(a * (1 - a) / max(n_a, 1) + b * (1 - b) / max(n_b, 1))
    return a - b > 2 * max(se, 1 / max(min(n_a, n_b), 1))


def combine(parts: list[bool]) -> str:
    if not parts:
        return UNMEASURED
    return HOLDS if all(parts) else PARTLY if any(parts) else FAILS


def _has(tables: Tables, *names: str) -> bool:
    return all(name in tables and not tables[name].is_empty() for name in names)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if value != value else f"{value:.2f}"
    return str(value)


def _unmeasured(key: str, paper: str, claim: str, missing: str) -> Finding:
    return Finding(key, paper, claim, f"Not measured: the run has no {missing}.", UNMEASURED)


# ---- Surkov et al. ------------------------------------------------------------------------------

SURKOV = "Surkov et al., Unpacking SDXL Turbo (arXiv 2410.22366)"
# The paper's roles, by attribute; detail (up.0.0) has no toy attribute to measure it.
PAPER_BLOCKS = {"shape": "down.2.1", "position": "down.2.1", "colour": "up.0.1", "style": "up.0.1"}


def _map(tables: Tables, model: str) -> pl.DataFrame:
    best = tables["editability_best"]
    return best.filter((pl.col("model") == model) & ~pl.col("unit").str.contains(r"\+"))


def _cell_of(rows: pl.DataFrame, unit: str, attribute: str, method: str) -> dict | None:
    """The best window of one (unit, attribute, method) cell of the map."""
    hit = rows.filter((pl.col("unit") == unit) & (pl.col("attribute") == attribute) & (pl.col("method") == method))
    return hit.sort(["success", "clean_success"], descending=True).row(0, named=True) if hit.height else None


def surkov_blocks(tables: Tables) -> Finding:
    claim = ("Blocks specialise: down.2.1 sets composition (shape, position), up.0.1 colour, light and style, "
             "up.0.0 local detail.")
    if not _has(tables, "editability_best"):
        return _unmeasured("surkov-blocks", SURKOV, claim, "editability map")
    rows = _map(tables, TURBO)
    table, verdicts = [], []
    for attribute, block in PAPER_BLOCKS.items():
        oracle = rows.filter((pl.col("attribute") == attribute) & (pl.col("method") == "oracle"))
        if oracle.is_empty():
            continue
        best = oracle.sort(["success", "clean_success"], descending=True).row(0, named=True)
        there, floor = _cell_of(rows, block, attribute, "oracle"), _cell_of(rows, block, attribute, "random")
        if there is None or floor is None:
            continue
        n = int(best["prompts"])
        plays_role = above(there["success"], n, floor["success"], n) and not above(best["success"], n, there["success"], n)
        verdicts.append(plays_role)
        table.append([attribute, block, there["success"], floor["success"], f"{best['unit']} ({best['success']:.2f})",
                      "yes" if plays_role else "no"])
    if not table:
        return _unmeasured("surkov-blocks", SURKOV, claim, "Turbo editability rows")
    prompts = int(rows["prompts"].max())
    body = (f"Editability map of toy/sdxl-turbo (1 step): success of the diff-in-means direction (oracle) at each "
            f"attention block, best of its strength sweep, {prompts} held-out prompts per cell; the floor is a "
            f"random direction of the same norm.\n\n"
            + _table(["attribute", "paper's block", "oracle there", "random there", "best block (oracle)", "plays the role"],
                     table)
            + "\n\nA block plays the paper's role for an attribute when its oracle edit beats the random floor and "
            "no other block beats it (both by two standard errors). Detail (up.0.0) has no toy attribute and is "
            "not scored.")
    return Finding("surkov-blocks", SURKOV, claim, body, combine(verdicts))


def surkov_causal(tables: Tables) -> Finding:
    claim = "SAE features edit causally: turning a feature on draws its concept."
    if not _has(tables, "editability_best"):
        return _unmeasured("surkov-causal", SURKOV, claim, "editability map")
    rows = _map(tables, TURBO)
    features = rows.filter(pl.col("kind") == "dictionary")
    if features.is_empty():
        return _unmeasured("surkov-causal", SURKOV, claim, "dictionary rows in the Turbo editability map")
    table, per_block = [], {}
    for (unit, method), group in features.group_by(["unit", "method"], maintain_order=True):
        for row in group.sort("attribute").iter_rows(named=True):
            floor = _cell_of(rows, unit, row["attribute"], "random")
            ceiling = _cell_of(rows, unit, row["attribute"], "oracle")
            if floor is None or ceiling is None:
                continue
            n = int(row["prompts"])
            beats = above(row["success"], n, floor["success"], n)
            if above(ceiling["success"], n, floor["success"], n):  # the block can edit this attribute at all
                per_block[(unit, method)] = per_block.get((unit, method), False) or beats
            table.append([f"{method} at {unit}", row["attribute"], row["success"], floor["success"],
                          ceiling["success"], "yes" if beats else "no"])
    body = ("Each SAE's best distinct features for the source and target concepts (chosen on train prompts), "
            "edited in at the block's mean update norm times the best strength of the sweep, on held-out prompts: "
            "success beside a random direction (floor) and the diff-in-means direction (ceiling) of the same norm.\n\n"
            + _table(["dictionary", "attribute", "SAE features", "random", "oracle", "above floor"], table)
            + "\n\nHolds when every SAE edits, above the floor (two standard errors), at least one attribute that "
            "its block can edit (whose oracle beats the floor there); blocks that edit nothing are not counted.")
    if not per_block:
        body += "\n\nNo dictionary's block edits any attribute (no oracle beats the floor), so the claim cannot be tested."
    return Finding("surkov-causal", SURKOV, claim, body, combine(list(per_block.values())))


def surkov_transfer(tables: Tables) -> Finding:
    claim = "An SAE trained on 1-step SDXL Turbo transfers to 4-step Turbo and to SDXL Base."
    if not _has(tables, "transfer_metrics"):
        return _unmeasured("surkov-transfer", SURKOV, claim, "transfer tables")
    metrics = tables["transfer_metrics"]
    splice = tables.get("transfer_splice", pl.DataFrame())
    edits = tables.get("transfer_edit_success", pl.DataFrame())
    table, verdicts = [], []
    for (name, source), rows in metrics.group_by(["dictionary", "source_model"], maintain_order=True):
        own = rows.filter(pl.col("target_model") == source)["fvu"].mean()
        for (target,), group in rows.group_by(["target_model"], maintain_order=True):
            by_branch = {b: g for (b,), g in group.group_by(["branch"])}
            fvu = group["fvu"].mean()
            fvu_text = ", ".join(f"{b} {g['fvu'].mean():.2f} (steps {g['fvu'].min():.2f}–{g['fvu'].max():.2f})"
                                 for b, g in sorted(by_branch.items()))
            agreement = (splice.filter((pl.col("dictionary") == name) & (pl.col("target_model") == target))
                         ["judge_agreement"].mean() if "judge_agreement" in splice.columns else float("nan"))
            edit = _transfer_edit(edits, name, target)
            if target == source:
                table.append([target, fvu_text, agreement, *edit["text"], "(source)"])
                continue
            reconstructs = fvu <= 2 * own
            steers = edit["beats_floor"]
            verdicts.append(reconstructs and steers and (agreement != agreement or agreement >= 0.9))
            table.append([target, fvu_text, agreement, *edit["text"],
                          "yes" if verdicts[-1] else f"no ({'FVU' if not reconstructs else 'edits' if not steers else 'splice'})"])
    body = ("Held-out FVU per CFG branch (mean over steps, and the range over steps); splice fidelity: the "
            "judge reads the same attributes with the block's update replaced by the SAE's reconstruction; "
            "edits on each model at the SAE's block with the transferred features, beside that model's own SAE "
            "there and its own oracle (ceiling) and random (floor) directions, mean success over the edited "
            "attributes at each method's best strength.\n\n"
            + _table(["target", "FVU", "splice agreement", "transferred SAE", "own SAE", "oracle", "random",
                      "transfers"], table)
            + "\n\nTransfers when the FVU is at most twice the source's own, splicing keeps at least 90% of the "
            "judged attributes, and the transferred features edit above the floor (two standard errors, pooled "
            "over attributes).")
    return Finding("surkov-transfer", SURKOV, claim, body, combine(verdicts))


def _transfer_edit(edits: pl.DataFrame, name: str, target: str) -> dict:
    if edits.is_empty():
        return {"text": [float("nan")] * 4, "beats_floor": False}
    rows = edits.filter((pl.col("dictionary") == name) & (pl.col("target_model") == target))
    means = {m: (g["success"].mean(), int(g["prompts"].sum())) for (m,), g in rows.group_by(["method"])}
    own = [m for m in means if m not in (name, "oracle", "random")]
    transferred, floor = means.get(name, (float("nan"), 0)), means.get("random", (float("nan"), 0))
    text = [transferred[0], means[own[0]][0] if own else float("nan"),
            means.get("oracle", (float("nan"), 0))[0], floor[0]]
    beats = transferred[1] > 0 and floor[1] > 0 and above(transferred[0], transferred[1], floor[0], floor[1])
    return {"text": text, "beats_floor": beats}


# ---- Shabalin et al. ----------------------------------------------------------------------------

SHABALIN = "Shabalin et al., Interpreting Large Text-to-Image Diffusion Models with Dictionary Learning (arXiv 2505.24360)"


def _pairs(tables: Tables) -> list[tuple[str, pl.DataFrame]]:
    metrics = tables["compare_metrics"]
    return [(pair, rows) for (pair,), rows in metrics.group_by(["pair"], maintain_order=True)]


def shabalin_itda_fvu(tables: Tables) -> Finding:
    claim = "ITDA matches or beats a top-k SAE on reconstruction at equal size and L0."
    if not _has(tables, "compare_metrics"):
        return _unmeasured("shabalin-itda", SHABALIN, claim, "compare tables")
    table, verdicts = [], []
    for pair, rows in _pairs(tables):
        dictionaries = rows.filter(pl.col("kind") == "dictionary")
        sae = dictionaries.filter(pl.col("architecture") == "topk_sae")
        itda = dictionaries.filter(pl.col("architecture") == "itda")
        if sae.is_empty() or itda.is_empty():
            continue
        s, i = sae.row(0, named=True), itda.row(0, named=True)
        ratio = i["fvu"] / s["fvu"]
        verdicts.append(ratio <= 1.1)
        table.append([pair, f"{s['n']} / {i['n']}", f"{s['l0']:.1f} / {i['l0']:.1f}", s["fvu"], i["fvu"],
                      f"{ratio:.2f}"])
    body = ("Held-out FVU (lower is better) at the same hook, atoms n (ITDA: atoms admitted, at most the SAE's "
            "n) and L0.\n\n" + _table(["pair", "n (SAE / ITDA)", "L0 (SAE / ITDA)", "SAE FVU", "ITDA FVU",
                                       "ITDA / SAE"], table)
            + "\n\nHolds when ITDA's FVU is within 10% of the SAE's (or lower).")
    return Finding("shabalin-itda", SHABALIN, claim, body, combine(verdicts))


def shabalin_interpretable(tables: Tables) -> Finding:
    claim = "SAE features are more interpretable than neurons (the block's raw channels)."
    if not _has(tables, "compare_metrics", "compare_alignment"):
        return _unmeasured("shabalin-neurons", SHABALIN, claim, "concept-alignment tables")
    alignment = tables["compare_alignment"]
    table, verdicts = [], []
    for pair, rows in _pairs(tables):
        mean = {r["method"]: r for r in rows.iter_rows(named=True)}
        kinds = {r["kind"]: r for r in rows.iter_rows(named=True)}
        sae = rows.filter((pl.col("kind") == "dictionary") & (pl.col("architecture") == "topk_sae"))
        if sae.is_empty() or "raw channels" not in kinds:
            continue
        name = sae["method"][0]
        own = alignment.filter(pl.col("pair") == pair)
        per = (own.filter(pl.col("method") == name).select("concept", pl.col("f1").alias("sae"))
               .join(own.filter(pl.col("kind") == "raw channels").select("concept", pl.col("f1").alias("raw")),
                     on="concept"))
        diff = (per["sae"] - per["raw"]).to_numpy()
        se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else float("inf")
        better = diff.mean() > 2 * se
        verdicts.append(bool(better))
        auroc = {kind: own.filter(pl.col("method") == name if kind == "dictionary" else pl.col("kind") == kind)
                 ["auroc"].mean() for kind in ("dictionary", "raw channels", "random")}
        table.append([pair, mean[name]["mean_f1"], kinds["raw channels"]["mean_f1"], kinds["random"]["mean_f1"],
                      kinds["oracle"]["mean_f1"], kinds["probe"]["mean_f1"],
                      f"{int((diff > 0).sum())}/{len(diff)}", f"{diff.mean():+.2f} ± {2 * se:.2f}",
                      " / ".join(_cell(auroc[k]) for k in ("dictionary", "raw channels", "random"))])
    prompts = int(tables["compare_metrics"]["scoring_prompts"].max())
    selection = int(tables["compare_metrics"]["selection_prompts"].max())
    body = (f"Mean F1 over ground-truth concepts of each method's best single feature (feature and threshold "
            f"chosen on {selection} train prompts, scored on {prompts} held-out prompts); floor: raw channels "
            f"and random directions; ceiling: the diff-in-means direction and a logistic probe on all channels.\n\n"
            + _table(["pair", "SAE", "raw channels", "random", "diff-in-means", "probe", "concepts SAE > raw",
                      "SAE − raw (± 2 SE)", "AUROC SAE / raw / random"], table)
            + "\n\nHolds when the SAE's F1 beats the raw channels' by more than two standard errors of the "
            "per-concept difference. F1 is the verdict's metric because it judges a feature as it fires: a top-k "
            "code is zero on most tokens, which caps a single feature's AUROC (it cannot rank the tokens it is "
            "silent on), while raw channels and random directions are dense; the AUROC column shows that gap.")
    return Finding("shabalin-neurons", SHABALIN, claim, body, combine(verdicts))


def shabalin_flux_steering(tables: Tables) -> Finding:
    claim = "Adding an SAE feature's direction to Flux's image tokens steers the image (activation addition)."
    if not _has(tables, "editability_best"):
        return _unmeasured("shabalin-steering", SHABALIN, claim, "editability map")
    best = tables["editability_best"].filter(pl.col("model") == FLUX)
    features = best.filter(pl.col("kind") == "dictionary")
    if features.is_empty():
        return _unmeasured("shabalin-steering", SHABALIN, claim, "Flux dictionary rows in the editability map")
    unit, name = features.row(0, named=True)["unit"], features.row(0, named=True)["method"]
    at = best.filter(pl.col("unit") == unit)
    table, verdicts = [], []
    for attribute in sorted(set(at["attribute"].to_list())):
        sae, floor, ceiling = (_cell_of(at, unit, attribute, m) for m in (name, "random", "oracle"))
        if sae is None or floor is None or ceiling is None:
            continue
        n = int(sae["prompts"])
        editable = above(ceiling["success"], n, floor["success"], n)
        beats = above(sae["success"], n, floor["success"], n)
        if editable:
            verdicts.append(beats)
        table.append([attribute, f"{sae['success']:.2f} ({sae['window']}, ×{sae['best_strength']:g})", floor["success"],
                      ceiling["success"], "yes" if editable else "no", "yes" if beats else "no"])
    body = (f"toy/flux (4 steps) at {unit}: {name}'s best distinct features, their direction added on the "
            f"edited region at the block's mean update norm times the best strength of the sweep (in the window "
            f"where it works best), beside a random direction (floor) and the diff-in-means direction (ceiling) "
            f"of the same norm, {int(at['prompts'].max())} held-out prompts per cell.\n\n"
            + _table(["attribute", "SAE features", "random", "oracle", "block edits it (oracle > floor)",
                      "SAE above floor"], table)
            + _flux_add_rows(tables)
            + "\n\nJudged on the attributes the block can edit at all (its oracle beats the floor): holds when the "
            "SAE's directions beat the floor (two standard errors) for every one, partly for some.")
    if not verdicts:
        body += f"\n\nNo attribute is editable at {unit} (no oracle beats the floor), so the claim cannot be tested there."
    return Finding("shabalin-steering", SHABALIN, claim, body, combine(verdicts))


def _flux_add_rows(tables: Tables) -> str:
    """The windows study's flux_add edits on Flux (one strength: the mean token norm), when present."""
    if not _has(tables, "windows_success"):
        return ""
    rows = tables["windows_success"].filter((pl.col("model") == FLUX)
                                            & pl.col("style").is_in(["flux_add", "random", "oracle"]))
    if rows.is_empty():
        return ""
    table = []
    for (edit,), group in rows.group_by(["edit"], maintain_order=True):
        cell = {(r["style"], r["window"]): r for r in group.iter_rows(named=True)}
        window = max(sorted({w for _, w in cell}), key=lambda w: cell.get(("flux_add", w), {}).get("success", -1))
        table.append([edit, window, *[cell.get((s, window), {}).get("success", float("nan"))
                                      for s in ("flux_add", "random", "oracle")]])
    return ("\n\nThe paper's own edit (windows study, `flux_add`: the unit direction at the mean token norm, one "
            "strength; random and oracle at the sdlens edit's norm):\n\n"
            + _table(["attribute", "window", "flux_add", "random", "oracle"], table))


def shabalin_standardise(tables: Tables) -> Finding:
    claim = "Flux's stream is so anisotropic that without standardising the input most SAE features die."
    if not _has(tables, "training_summary"):
        return _unmeasured("shabalin-standardise", SHABALIN, claim, "training summary")
    summary = {r["dictionary"]: r for r in tables["training_summary"].iter_rows(named=True)}
    standardised, raw = summary.get(FLUX_STANDARDISED), summary.get(FLUX_RAW)
    if standardised is None or raw is None:
        return _unmeasured("shabalin-standardise", SHABALIN, claim, "flux-sae / flux-sae-raw pair")
    dead_std, dead_raw = standardised["heldout_dead_fraction"], raw["heldout_dead_fraction"]
    matters = dead_raw - dead_std >= 0.05 and dead_raw >= 2 * dead_std
    table = [["standardised", dead_std, standardised["heldout_fvu"]], ["raw", dead_raw, raw["heldout_fvu"]]]
    body = ("The same top-k SAE on toy/flux's image tokens (flux-sae and flux-sae-raw), with and without standardised input: "
            "dead fraction and FVU on held-out tokens.\n\n" + _table(["input", "dead fraction", "FVU"], table)
            + "\n\nHolds when the raw SAE has at least twice the dead fraction, and 5 points more.")
    return Finding("shabalin-standardise", SHABALIN, claim, body, HOLDS if matters else FAILS)


# ---- Leask et al. ---------------------------------------------------------------------------------

LEASK = "Leask et al., Inference-Time Decomposition of Activations (ITDA) (arXiv 2505.17769)"


def leask_fit_time(tables: Tables) -> Finding:
    claim = "ITDA is about 100 times cheaper to train than an SAE of the same size."
    if not _has(tables, "compare_metrics", "training_summary"):
        return _unmeasured("leask-time", LEASK, claim, "compare and training tables")
    summary = {r["dictionary"]: r for r in tables["training_summary"].iter_rows(named=True)}
    table, verdicts = [], []
    for pair, rows in _pairs(tables):
        names = dict(rows.filter(pl.col("kind") == "dictionary").select("architecture", "method").iter_rows())
        if "topk_sae" not in names or "itda" not in names:
            continue
        s, i = summary.get(names["topk_sae"]), summary.get(names["itda"])
        if s is None or i is None:
            continue
        ratio = i["fit_seconds"] / s["fit_seconds"]
        verdicts.append(ratio <= 0.1)
        table.append([pair, f"{s['fit_seconds']:.1f} s ({s['tokens']:,} tokens, {'flat' if s['plateaued'] else 'still falling'})",
                      f"{i['fit_seconds']:.1f} s ({i['tokens']:,} tokens, {'flat' if i['plateaued'] else 'still falling'})",
                      f"{ratio:.2f}"])
    body = ("Wall time of each fit on this machine's CPU (the dictionary's own steps; reading the store is "
            "shared and not counted), each trained until its FVU curve flattened (less than 5% change over the "
            "last tenth).\n\n" + _table(["pair", "SAE", "ITDA", "ITDA / SAE"], table)
            + "\n\nHolds when ITDA takes at most a tenth of the SAE's time (the paper's hundredth, within an order "
            "of magnitude); partly when it is faster but not that much.")
    verdict = combine(verdicts)
    if verdict == FAILS and table and any(float(r[-1]) < 1 for r in table):
        verdict = PARTLY
    return Finding("leask-time", LEASK, claim, body, verdict)


# ---- Tinaz et al. -----------------------------------------------------------------------------------

TINAZ = "Tinaz et al., Emergence and Evolution of Interpretable Concepts in Diffusion Models (arXiv 2504.15473)"


def tinaz_layout(tables: Tables) -> Finding:
    claim = "The layout is predictable before the first denoising step ends."
    if not _has(tables, "layout"):
        return _unmeasured("tinaz-layout", TINAZ, claim, "layout table")
    layout = tables["layout"]
    probes = layout.filter(pl.col("method") == "probe").sort("step")
    caption = layout.filter(pl.col("method") == "caption alone")["iou_foreground"].max()
    other = layout.filter(pl.col("method") == "other seed")["iou_foreground"].max()
    reference = max(caption, other)
    table, first_step, early = [], None, None
    for (hook,), rows in probes.group_by(["hook"], maintain_order=True):
        beats = rows.filter(pl.col("iou_foreground") > reference)
        first = beats.row(0, named=True) if beats.height else None
        start = rows.row(0, named=True)
        table.append([hook, f"{start['iou_foreground']:.2f} (t = {start['t']:.2f})",
                      f"step {first['step']} (t = {first['t']:.2f})" if first else "never",
                      rows["iou_foreground"].max()])
        if first and (first_step is None or first["step"] < first_step):
            first_step, early = first["step"], first["t"]
    prompts = int(layout["prompts"].max())
    body = (f"toy/sdxl-base (25 steps): the final image's foreground predicted from one step's activations by a "
            f"logistic probe (fit on train prompts), IoU on {prompts} held-out prompts, beside what the caption "
            f"alone gives ({caption:.2f}) and another seed's image of the same caption ({other:.2f}).\n\n"
            + _table(["hook", "probe IoU at the first step", "first step above both baselines", "best probe IoU"],
                     table)
            + "\n\nHolds when a probe beats both baselines at the first step; partly when it does within the "
            "early window (t ≥ 0.6).")
    verdict = FAILS if early is None else HOLDS if first_step == 0 else PARTLY if early >= 0.6 else FAILS
    return Finding("tinaz-layout", TINAZ, claim, body, verdict)


COMPOSITION = ("shape", "position")


def tinaz_windows(tables: Tables) -> Finding:
    claim = "Edits early change composition, in the middle style; late edits change only texture."
    if not _has(tables, "windows_success"):
        return _unmeasured("tinaz-windows", TINAZ, claim, "windows table")
    rows = tables["windows_success"].filter(pl.col("model") == BASE)
    if rows.is_empty():
        return _unmeasured("tinaz-windows", TINAZ, claim, "Base windows rows")
    table, late_small, composition_early, style_middle = [], [], [], []
    for (edit,), group in rows.group_by(["edit"], maintain_order=True):
        oracle = group.filter(pl.col("kind") == "oracle")
        hook = oracle.sort("success", descending=True)["hook"][0]
        at = group.filter(pl.col("hook") == hook)
        cell = {(r["kind"], r["style"], r["window"]): r for r in at.iter_rows(named=True)}
        success = {w: cell.get(("oracle", "oracle", w), {}).get("success", float("nan")) for w in ("early", "middle", "late")}
        n = int(at["prompts"].max())
        floor = {w: cell.get(("random", "random", w), {}).get("success", float("nan")) for w in success}
        features = at.filter(pl.col("kind") == "dictionary").group_by("window").agg(pl.col("success").max())
        best_feature = dict(features.iter_rows())
        table.append([edit, hook, *[f"{success[w]:.2f} / {best_feature.get(w, float('nan')):.2f} / {floor[w]:.2f}"
                                    for w in ("early", "middle", "late")], n])
        late_small.append(success["late"] <= 0.25 or above(success["early"], n, success["late"], n))
        if edit in COMPOSITION:
            composition_early.append(above(success["early"], n, floor["early"], n)
                                     and success["early"] >= max(success["middle"], success["late"]))
        if edit == "style":
            style_middle.append(above(success["middle"], n, floor["middle"], n) and success["middle"] >= success["early"])
    parts = {"composition early": all(composition_early) if composition_early else None,
             "style in the middle": all(style_middle) if style_middle else None,
             "late edits change little": all(late_small)}
    measured = [v for v in parts.values() if v is not None]
    body = ("toy/sdxl-base (25 steps, CFG): each attribute edited at the block where its oracle edits best, "
            "inside one window at a time (early t ∈ [0.6, 1], middle [0.2, 0.6], late [0, 0.2]); each cell is "
            "oracle / best SAE edit style / random success.\n\n"
            + _table(["attribute", "block", "early", "middle", "late", "prompts"], table)
            + "\n\nSub-claims: " + "; ".join(f"{k}: {'yes' if v else 'no' if v is not None else 'not measured'}"
                                             for k, v in parts.items())
            + ". Composition early: the shape and position oracles beat the floor early and do best there. Style "
            "in the middle: the style oracle beats the floor in the middle window and does at least as well as "
            "early. Late edits change little: late success is at most 0.25, or below early by two standard errors.")
    return Finding("tinaz-windows", TINAZ, claim, body, combine(measured))


CLAIMS = (surkov_blocks, surkov_causal, surkov_transfer, shabalin_itda_fvu, shabalin_interpretable,
          shabalin_flux_steering, shabalin_standardise, leask_fit_time, tinaz_layout, tinaz_windows)


def judge_claims(tables: Tables) -> list[Finding]:
    return [claim(tables) for claim in CLAIMS]
