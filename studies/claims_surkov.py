"""Surkov et al.'s claims: block roles, causal SAE features, transfer across Turbo's steps and Base."""

from __future__ import annotations

import polars as pl

from .aggregates import number
from .claim_base import TURBO, Finding, Tables, combine, has, markdown_table, unmeasured, yes_no
from .claim_cells import SINGLE_HOOK, EditCell, choose, chosen_cell, pooled
from .claim_stats import MIN_PROMPTS, too_few, z_for

SURKOV = "Surkov et al., Unpacking SDXL Turbo (arXiv 2410.22366)"
# The paper's roles, by attribute; detail (up.0.0) has no toy attribute to measure it.
PAPER_BLOCKS = {"shape": "down.2.1", "position": "down.2.1", "colour": "up.0.1", "style": "up.0.1"}
MARGIN = 0.1  # "as good as the best block" needs the power to see a difference this large


def single_units(tables: Tables, model: str) -> pl.DataFrame:
    """The model's editability map without its groups of blocks."""
    best = tables["editability_best"]
    return best.filter((pl.col("model") == model) & pl.col("unit").str.contains(SINGLE_HOOK.pattern))


def map_cell(
    tables: Tables, rows: pl.DataFrame, unit: str, attribute: str, method: str, window: str | None = None
) -> EditCell | None:
    """One (unit, attribute, method) cell of the map, in `window` or the one chosen on tuning prompts."""
    match = {"unit": unit, "attribute": attribute, "method": method, **({"window": window} if window else {})}
    return chosen_cell(rows, tables.get("editability_prompts"), match, carried=("model", "window"))


def _prompts_note(n: int) -> str:
    return f"{n} held-out prompts per cell" + ("" if n >= MIN_PROMPTS else f" (a verdict needs {MIN_PROMPTS})")


def surkov_blocks(tables: Tables) -> Finding:
    claim = (
        "Blocks specialise: down.2.1 sets composition (shape, position), up.0.1 colour, light and style, "
        "up.0.0 local detail."
    )
    if not has(tables, "editability_best"):
        return unmeasured("surkov-blocks", SURKOV, claim, "editability map")
    rows = single_units(tables, TURBO)
    table, parts = [], []
    for attribute, block in PAPER_BLOCKS.items():
        oracle = rows.filter((pl.col("attribute") == attribute) & (pl.col("method") == "oracle"))
        best_row = choose(oracle)
        there = map_cell(tables, rows, block, attribute, "oracle")
        if best_row is None or there is None:
            continue
        floor = map_cell(tables, rows, block, attribute, "random", there.row["window"])
        best = map_cell(tables, rows, best_row["unit"], attribute, "oracle", best_row["window"])
        best_floor = map_cell(tables, rows, best_row["unit"], attribute, "random", best_row["window"])
        if floor is None or best is None or best_floor is None:
            continue
        above_floor = there.minus(floor)
        gap = best.minus(there)
        editable = best.minus(best_floor).above()
        if too_few(there.n) or not editable:
            part = None
        elif best_row["unit"] == block:
            part = above_floor.above()
        elif gap.above():
            part = False  # the best block edits it better by two standard errors, however wide they are
        elif 2 * gap.se > MARGIN:
            part = None  # not significantly worse than the best, but too wide to call it as good
        else:
            part = above_floor.above()
        parts.append(part)
        table.append(
            [
                attribute,
                block,
                there.rate,
                floor.rate,
                there.before,
                above_floor.text(),
                f"{best_row['unit']} ({best.rate:.2f})",
                gap.text() if best_row["unit"] != block else "–",
                yes_no(part),
            ]
        )
    if not table:
        return unmeasured("surkov-blocks", SURKOV, claim, "Turbo editability rows")
    n = int(number(rows["prompts"].max()))
    body = (
        f"Editability map of toy/sdxl-turbo (1 step): clean success of the diff-in-means direction (oracle) at "
        f"each attention block, at the strength its tuning sweep chose (train prompts), {_prompts_note(n)}; the "
        f"floors are a random direction of the same norm and the no-edit rate (the unedited image already reads "
        f"as the target). The best block is chosen on the tuning prompts and scored on the held-out ones.\n\n"
        + markdown_table(
            [
                "attribute",
                "paper's block",
                "oracle there",
                "random there",
                "no edit",
                "oracle − random (± 2 SE)",
                "best block (oracle)",
                "best − paper's (± 2 SE)",
                "plays the role",
            ],
            table,
        )
        + f"\n\nA block plays the paper's role for an attribute when its oracle beats the random floor by two "
        f"standard errors (paired over prompts) and it is the best block or within two standard errors of it, "
        f"with two standard errors of at most {MARGIN}. Not testable: fewer than {MIN_PROMPTS} prompts, no block "
        f"whose oracle beats its floor, or too little power to tell the paper's block from the best (not two "
        f"standard errors below it, but with two standard errors above {MARGIN}). Detail "
        f"(up.0.0) has no toy attribute and is not scored."
    )
    return Finding("surkov-blocks", SURKOV, claim, body, combine(parts))


def surkov_causal(tables: Tables) -> Finding:
    claim = "SAE features edit causally: turning a feature on draws its concept."
    if not has(tables, "editability_best"):
        return unmeasured("surkov-causal", SURKOV, claim, "editability map")
    rows = single_units(tables, TURBO)
    features = rows.filter(pl.col("kind") == "dictionary")
    if features.is_empty():
        return unmeasured("surkov-causal", SURKOV, claim, "dictionary rows in the Turbo editability map")
    table, parts = [], []
    for (unit, method), group in features.group_by(["unit", "method"], maintain_order=True):
        attributes = sorted(set(group["attribute"].to_list()))
        cells = {}
        for a in attributes:
            sae = map_cell(tables, rows, unit, a, method)
            window = sae.row["window"] if sae else None
            cells[a] = [
                sae,
                map_cell(tables, rows, unit, a, "random", window),
                map_cell(tables, rows, unit, a, "oracle", window),
            ]
        editable = [
            a
            for a, (_, floor, ceiling) in cells.items()
            if floor and ceiling and not too_few(ceiling.n) and ceiling.minus(floor).above()
        ]
        z = z_for(len(editable))  # "at least one attribute" reads the best of them
        beats = []
        for attribute, (sae, floor, ceiling) in cells.items():
            if sae is None or floor is None or ceiling is None:
                continue
            difference = sae.minus(floor)
            counted = attribute in editable
            if counted:
                beats.append(difference.above(z))
            table.append(
                [
                    f"{method} at {unit}",
                    attribute,
                    sae.rate,
                    floor.rate,
                    ceiling.rate,
                    sae.before,
                    difference.text(z),
                    "yes" if counted else "no",
                    yes_no(difference.above(z)) if counted else "–",
                ]
            )
        parts.append(any(beats) if beats else None)
    body = (
        "Each SAE's best distinct features for the source and target concepts (chosen on train prompts), edited "
        "in at the block's mean update norm times the strength its tuning sweep chose: held-out clean success "
        "beside a random direction (floor) and the diff-in-means direction (ceiling) of the same norm, and the "
        "no-edit rate.\n\n"
        + markdown_table(
            [
                "dictionary",
                "attribute",
                "SAE features",
                "random",
                "oracle",
                "no edit",
                "SAE − random (± z SE)",
                "block edits it",
                "above floor",
            ],
            table,
        )
        + f"\n\nHolds when every SAE edits, above the floor, at least one attribute that its block can edit (whose "
        f"oracle beats the floor by two standard errors, on at least {MIN_PROMPTS} prompts). Since that reads the "
        "best of m attributes, z is Bonferroni's for m tests at 5%. A dictionary whose block edits nothing is "
        "not testable."
    )
    return Finding("surkov-causal", SURKOV, claim, body, combine(parts))


def surkov_transfer(tables: Tables) -> Finding:
    claim = "An SAE trained on 1-step SDXL Turbo transfers to 4-step Turbo and to SDXL Base."
    if not has(tables, "transfer_metrics"):
        return unmeasured("surkov-transfer", SURKOV, claim, "transfer tables")
    metrics = tables["transfer_metrics"]
    splice = tables.get("transfer_splice", pl.DataFrame())
    table, parts = [], []
    for (name, source), rows in metrics.group_by(["dictionary", "source_model"], maintain_order=True):
        own = rows.filter(pl.col("target_model") == source)["fvu"].mean()
        for (target,), group in rows.group_by(["target_model"], maintain_order=True):
            by_branch = {b: g for (b,), g in group.group_by(["branch"])}
            fvu = group["fvu"].mean()
            fvu_text = ", ".join(
                f"{b} {g['fvu'].mean():.2f} (steps {g['fvu'].min():.2f}–{g['fvu'].max():.2f})"
                for b, g in sorted(by_branch.items())
            )
            agreement = (
                splice.filter((pl.col("dictionary") == name) & (pl.col("target_model") == target))[
                    "judge_agreement"
                ].mean()
                if "judge_agreement" in splice.columns
                else float("nan")
            )
            edit = transfer_edit(tables, name, target, source)
            if target == source:
                table.append([target, fvu_text, agreement, *edit["text"], "(source)"])
                continue
            reconstructs = number(fvu) <= 2 * number(own)
            splices = agreement != agreement or number(agreement) >= 0.9
            part = None if edit["untestable"] else reconstructs and splices and edit["steers"]
            parts.append(part)
            if part is None:
                why = f" ({edit['untestable']})"
            elif part:
                why = ""
            else:
                why = " (FVU)" if not reconstructs else " (splice)" if not splices else " (edits)"
            table.append([target, fvu_text, agreement, *edit["text"], yes_no(part) + why])
    body = (
        "Held-out FVU per CFG branch (mean over steps, and the range over steps); splice fidelity: the judge "
        "reads the same attributes with the block's update replaced by the SAE's reconstruction; edits on each "
        "model at the SAE's block with the transferred features, beside that model's own SAE of the same "
        "architecture there and its own oracle (ceiling) and random (floor) directions: clean success pooled "
        "over the edited attributes, each method at the strength its tuning sweep chose.\n\n"
        + markdown_table(
            [
                "target",
                "FVU",
                "splice agreement",
                "transferred SAE",
                "own SAE",
                "oracle",
                "random",
                "transferred − random (± 2 SE)",
                "transfers",
            ],
            table,
        )
        + f"\n\nTransfers when the FVU is at most twice the source's own, splicing keeps at least 90% of the "
        f"judged attributes, and the transferred features edit above the floor (two standard errors, paired over "
        f"prompts and attributes). Not testable when the target's oracle does not beat its floor or the cells "
        f"rest on fewer than {MIN_PROMPTS} prompts."
    )
    return Finding("surkov-transfer", SURKOV, claim, body, combine(parts))


def transfer_edit(tables: Tables, name: str, target: str, source: str) -> dict:
    """The transferred dictionary's pooled edit cells on one target model, beside the target's own."""
    blank = {"text": [float("nan")] * 5, "steers": False, "untestable": "no edits"}
    if not has(tables, "transfer_edit_success"):
        return blank
    rows = tables["transfer_edit_success"].filter((pl.col("dictionary") == name) & (pl.col("target_model") == target))
    prompts = tables.get("transfer_edit_prompts")
    methods = set(rows["method"].to_list())
    # the target's own dictionary: on the source model that is the transferred one itself
    own_name = (
        name if target == source else next((m for m in sorted(methods) if m not in (name, "oracle", "random")), None)
    )
    attributes = sorted(set(rows["attribute"].to_list()))

    def cell_of(method: str | None) -> EditCell | None:
        if method is None:
            return None
        cells = [
            chosen_cell(rows, prompts, {"attribute": a, "method": method}, carried=("dictionary", "target_model"))
            for a in attributes
        ]
        return pooled(cells)

    transferred, own, oracle, floor = (cell_of(m) for m in (name, own_name, "oracle", "random"))
    if transferred is None or floor is None:
        return blank
    difference = transferred.minus(floor)
    per_attribute = int(number(rows["prompts"].min()))
    untestable = too_few(per_attribute) or (
        None if oracle is not None and oracle.minus(floor).above() else "the oracle does not beat the floor"
    )
    text = [
        transferred.rate,
        own.rate if own else float("nan"),
        oracle.rate if oracle else float("nan"),
        floor.rate,
        difference.text(),
    ]
    return {"text": text, "steers": difference.above(), "untestable": untestable}
