"""The papers' claims judged from tables: the verdict rules, seed fragility, and the committed findings."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from diffdict.studies.claims import FAILS, HOLDS, PARTLY, UNMEASURED, above, judge_claims, shabalin_itda_fvu, \
    shabalin_standardise, surkov_blocks
from diffdict.studies.findings import read_export, render

ROOT = Path(__file__).resolve().parents[1]


def test_above_needs_two_standard_errors():
    assert above(0.9, 16, 0.1, 16)
    assert not above(0.25, 8, 0.125, 8)
    assert not above(0.0, 16, 0.0, 16)


def _compare(itda_fvu: float) -> dict[str, pl.DataFrame]:
    return {"compare_metrics": pl.DataFrame({
        "pair": ["p", "p"], "method": ["sae", "itda"], "kind": ["dictionary", "dictionary"],
        "architecture": ["topk_sae", "itda"], "fvu": [0.20, itda_fvu], "l0": [8.0, 8.0], "n": [512, 512]})}


def test_itda_claim_follows_its_stated_rule():
    assert shabalin_itda_fvu(_compare(0.21)).verdict == HOLDS
    assert shabalin_itda_fvu(_compare(0.30)).verdict == FAILS


def _training(dead_standardised: float, dead_raw: float) -> dict[str, pl.DataFrame]:
    return {"training_summary": pl.DataFrame({
        "dictionary": ["flux-sae", "flux-sae-raw"], "heldout_dead_fraction": [dead_standardised, dead_raw],
        "heldout_fvu": [0.2, 0.3]})}


def test_standardisation_claim_needs_many_more_dead_features_without_it():
    assert shabalin_standardise(_training(0.01, 0.60)).verdict == HOLDS
    assert shabalin_standardise(_training(0.01, 0.03)).verdict == FAILS


def _map(rows: list[tuple[str, str, str, float]], prompts: int = 16) -> dict[str, pl.DataFrame]:
    unit, attribute, method, success = zip(*rows)
    return {"editability_best": pl.DataFrame({
        "model": ["turbo"] * len(rows), "unit": list(unit), "attribute": list(attribute), "window": ["early"] * len(rows),
        "method": list(method), "kind": ["dictionary" if m == "sae" else m for m in method],
        "best_strength": [4.0] * len(rows), "success": list(success), "clean_success": list(success),
        "prompts": [prompts] * len(rows)})}


def test_block_roles_hold_only_where_the_papers_block_is_best_and_above_its_floor():
    cells = []
    for attribute, good in (("shape", "down.2.1"), ("position", "down.2.1"), ("colour", "up.0.1"), ("style", "up.0.1")):
        for unit in ("down.2.1", "up.0.1"):
            cells += [(unit, attribute, "oracle", 0.9 if unit == good else 0.1), (unit, attribute, "random", 0.0)]
    assert surkov_blocks(_map(cells)).verdict == HOLDS
    moved = [(u, a, m, 0.9 if (a == "colour" and u == "down.2.1" and m == "oracle") else
              0.0 if (a == "colour" and u == "up.0.1" and m == "oracle") else s) for u, a, m, s in cells]
    assert surkov_blocks(_map(moved)).verdict == PARTLY


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
    assert "from the tables in runs/other/findings/ (do not edit" in render(seeds, {"study_seed": 0},
                                                                            source="runs/other/findings")
    assert "docs/findings/" not in render(seeds, {"study_seed": 0}, source="runs/other/findings")
