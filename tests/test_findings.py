"""The papers' claims judged from tables: the verdict rules, seed fragility, and the committed findings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from diffdict.studies.claim_stats import paired, unpaired, z_for
from diffdict.studies.claims import (
    FAILS,
    HOLDS,
    NOT_TESTABLE,
    PARTLY,
    UNMEASURED,
    above,
    judge_claims,
    shabalin_interpretable,
    shabalin_itda_fvu,
    shabalin_standardise,
    surkov_blocks,
)
from diffdict.studies.findings import read_export, render

ROOT = Path(__file__).resolve().parents[1]


def test_above_needs_two_standard_errors():
    assert above(0.9, 16, 0.1, 16)
    assert not above(0.25, 8, 0.125, 8)
    assert not above(0.0, 16, 0.0, 16)


def _compare(itda_fvu: float) -> dict[str, pl.DataFrame]:
    return {
        "compare_metrics": pl.DataFrame(
            {
                "pair": ["p", "p"],
                "method": ["sae", "itda"],
                "kind": ["dictionary", "dictionary"],
                "architecture": ["topk_sae", "itda"],
                "fvu": [0.20, itda_fvu],
                "l0": [8.0, 8.0],
                "n": [512, 512],
            }
        )
    }


def test_itda_claim_follows_its_stated_rule():
    assert shabalin_itda_fvu(_compare(0.21)).verdict == HOLDS
    assert shabalin_itda_fvu(_compare(0.30)).verdict == FAILS


def _training(dead_standardised: float, dead_raw: float) -> dict[str, pl.DataFrame]:
    return {
        "training_summary": pl.DataFrame(
            {
                "dictionary": ["flux-sae", "flux-sae-raw"],
                "heldout_dead_fraction": [dead_standardised, dead_raw],
                "heldout_fvu": [0.2, 0.3],
            }
        )
    }


def test_standardisation_claim_needs_many_more_dead_features_without_it():
    assert shabalin_standardise(_training(0.01, 0.60)).verdict == HOLDS
    assert shabalin_standardise(_training(0.01, 0.03)).verdict == FAILS


def _map(rows: list[tuple], prompts: int = 100) -> dict[str, pl.DataFrame]:
    """An editability map: (unit, attribute, method, held-out clean success[, tuning clean success])."""
    unit, attribute, method, success = (list(c) for c in zip(*[r[:4] for r in rows]))
    tune = [r[-1] for r in rows]  # the tuning clean success, else the held-out one
    return {
        "editability_best": pl.DataFrame(
            {
                "model": ["turbo"] * len(rows),
                "unit": unit,
                "attribute": attribute,
                "window": ["early"] * len(rows),
                "method": method,
                "kind": ["dictionary" if m == "sae" else m for m in method],
                "best_strength": [4.0] * len(rows),
                "success": success,
                "clean_success": success,
                "target_before": [0.05] * len(rows),
                "prompts": [prompts] * len(rows),
                "tune_clean_success": tune,
                "tune_success": tune,
                "tune_prompts": [32] * len(rows),
            }
        )
    }


def _roles(scale: float = 1.0) -> list[tuple]:
    cells = []
    for attribute, good in (("shape", "down.2.1"), ("position", "down.2.1"), ("colour", "up.0.1"), ("style", "up.0.1")):
        for unit in ("down.2.1", "up.0.1"):
            cells += [
                (unit, attribute, "oracle", scale * (0.9 if unit == good else 0.1)),
                (unit, attribute, "random", 0.0),
            ]
    return cells


def test_block_roles_hold_only_where_the_papers_block_is_best_and_above_its_floor():
    cells = _roles()
    assert surkov_blocks(_map(cells)).verdict == HOLDS
    moved = [
        (
            u,
            a,
            m,
            0.9
            if (a == "colour" and u == "down.2.1" and m == "oracle")
            else 0.0
            if (a == "colour" and u == "up.0.1" and m == "oracle")
            else s,
        )
        for u, a, m, s in cells
    ]
    assert surkov_blocks(_map(moved)).verdict == PARTLY


def test_a_verdict_on_too_few_prompts_or_without_a_ceiling_is_not_testable():
    assert surkov_blocks(_map(_roles(), prompts=16)).verdict == NOT_TESTABLE
    assert surkov_blocks(_map(_roles(scale=0.0))).verdict == NOT_TESTABLE  # no block edits anything


def test_a_papers_block_clearly_worse_than_the_best_is_a_no_however_wide_the_errors():
    def colour(there: float, best: float) -> list[tuple]:
        return [
            ("up.0.1", "colour", "oracle", there),
            ("up.1.1", "colour", "oracle", best),
            ("up.0.1", "colour", "random", 0.0),
            ("up.1.1", "colour", "random", 0.0),
        ]

    # at 64 prompts two standard errors of the gap are over 0.1; 0.05 against 0.40 is still far apart
    assert surkov_blocks(_map(colour(0.05, 0.40), prompts=64)).verdict == FAILS
    # 0.35 against 0.45 is not two standard errors apart, and too wide to call the blocks equal
    assert surkov_blocks(_map(colour(0.35, 0.45), prompts=64)).verdict == NOT_TESTABLE


def test_the_best_block_is_chosen_on_tuning_prompts_not_on_the_scored_ones():
    # held out, up.0.1 looks best for shape; on the tuning prompts down.2.1 was: the claim reads down.2.1
    cells = [
        ("down.2.1", "shape", "oracle", 0.80, 0.9),
        ("up.0.1", "shape", "oracle", 0.85, 0.2),
        ("down.2.1", "shape", "random", 0.0),
        ("up.0.1", "shape", "random", 0.0),
    ]
    body = surkov_blocks(_map(cells)).body
    assert "| down.2.1 (0.80) |" in body and "up.0.1 (0.85)" not in body


def test_groups_of_blocks_are_not_read_as_blocks():
    cells = _roles() + [("up.0.x", "shape", "oracle", 1.0, 1.0), ("up.0.x", "shape", "random", 0.0)]
    assert "up.0.x" not in surkov_blocks(_map(cells)).body


def test_paired_differences_use_the_per_prompt_differences():
    same = [1.0, 0.0] * 50
    assert paired(same, same).diff == 0 and not paired(same, same).above()
    # 0.60 vs 0.55 on the same prompts, where the second method succeeds only where the first does: paired,
    # the five extra successes are a consistent gain; unpaired, the two rates are within noise
    better, worse = [1.0] * 60 + [0.0] * 40, [1.0] * 55 + [0.0] * 45
    assert paired(better, worse).above() and not unpaired(0.60, 100, 0.55, 100).above()
    # swapped outcomes on the same prompts: no consistent gain, whatever the rates
    assert not paired([1.0, 0.0] * 50, [0.0, 1.0] * 50).above()
    assert z_for(1) == 2.0 and z_for(12) > 2.8


def _alignment(world: str, frame: tuple[str, str], f1: dict[str, float], concepts: int = 30) -> list[dict]:
    kinds = {
        "sae": "dictionary",
        "raw channels": "raw channels",
        "random": "random",
        "fg/bg only": "fg/bg only",
        "base rate": "base rate",
        "logistic probe": "probe",
    }
    rng = np.random.default_rng(len(world))
    return [
        {
            "world": world,
            "pair": "p",
            "method": m,
            "kind": kinds[m],
            "scope": frame[0],
            "family": frame[1],
            "concept": f"c{c}",
            "attribute": "colour",
            "auroc": 0.5,
            "f1": v + 0.02 * rng.standard_normal(),
        }
        for m, v in f1.items()
        for c in range(concepts)
    ]


def _interpretability(toy_sae: float, twin_sae: float) -> dict[str, pl.DataFrame]:
    floors = {"raw channels": 0.3, "random": 0.35, "fg/bg only": 0.4, "base rate": 0.1, "logistic probe": 0.9}
    rows = []
    for frame in (("within group", "global"), ("within group", "cell")):
        rows += _alignment("toy", frame, {"sae": toy_sae, **floors}) + _alignment(
            "twin", frame, {"sae": twin_sae, **floors}
        )
    metrics = pl.DataFrame(
        {
            "pair": ["p"],
            "method": ["sae"],
            "kind": ["dictionary"],
            "architecture": ["topk_sae"],
            "scoring_prompts": [128],
            "selection_prompts": [192],
        }
    )
    return {"compare_metrics": metrics, "compare_alignment": pl.DataFrame(rows)}


def test_sae_vs_neurons_needs_the_highest_floor_and_a_twin_that_detects_a_positive():
    assert shabalin_interpretable(_interpretability(0.6, 0.8)).verdict == HOLDS
    # above raw channels (0.3) but not above the fg/bg predictor (0.4): not aligned
    assert shabalin_interpretable(_interpretability(0.38, 0.8)).verdict == FAILS
    # the twin's SAE cannot beat its floor either: the pipeline cannot show a positive, so no negative
    assert shabalin_interpretable(_interpretability(0.38, 0.38)).verdict == NOT_TESTABLE


def test_every_claim_says_not_measured_without_its_tables():
    assert {f.verdict for f in judge_claims({})} == {UNMEASURED}


def test_a_verdict_that_changes_with_the_seed_is_marked_fragile():
    seeds = {0: _compare(0.21), 1: _compare(0.30)}
    markdown = render(seeds, {"study_seed": 0})
    assert "holds (fragile; seed 1: does not hold here)" in markdown


def test_committed_findings_are_what_the_generator_makes_of_the_committed_tables():
    seeds, provenance = read_export(ROOT / "docs" / "findings")
    assert seeds, "docs/findings holds no exported tables"
    assert render(seeds, provenance) == (ROOT / "docs" / "findings.md").read_text()


def test_the_header_names_the_tables_it_was_rendered_from():
    seeds = {0: _compare(0.21)}
    assert "from the tables in runs/other/findings/ (do not edit" in render(
        seeds, {"study_seed": 0}, source="runs/other/findings"
    )
    assert "docs/findings/" not in render(seeds, {"study_seed": 0}, source="runs/other/findings")


def test_a_no_edit_rate_of_zero_is_shown_as_zero_not_as_missing():
    cells = _roles()
    table = _map(cells)
    table["editability_best"] = table["editability_best"].with_columns(pl.lit(0.0).alias("target_before"))
    assert "| shape | down.2.1 | 0.90 | 0.00 | 0.00 |" in surkov_blocks(table).body
