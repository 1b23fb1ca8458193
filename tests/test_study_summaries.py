"""The report's opening sentences are computed from the study tables."""
from __future__ import annotations

from types import SimpleNamespace

import polars as pl

from studies.atlas import summarize_atlas
from studies.summaries import summarize_compare, summarize_transfer, summarize_windows

RUN = SimpleNamespace(config=SimpleNamespace(studies=SimpleNamespace(
    windows=SimpleNamespace(windows={"early": [0.6, 1.0], "middle": [0.2, 0.6], "late": [0.0, 0.2]}))))


def test_transfer_summary_names_each_model_and_splice():
    metrics = pl.DataFrame({"dictionary": ["sae"] * 4, "source_model": ["turbo"] * 4, "hook": ["down.2.1"] * 4,
                            "target_model": ["turbo", "base", "base", "base"], "branch": ["cond", "cond", "cond", "uncond"],
                            "fvu": [0.2, 0.4, 0.6, 9.0]})
    splice = pl.DataFrame({"dictionary": ["sae", "sae"], "target_model": ["turbo", "base"],
                           "judge_agreement": [0.97, 0.5]})
    text = summarize_transfer(RUN, {"transfer_metrics": metrics, "transfer_splice": splice})
    assert "0.200 on turbo, 0.500 on base" in text  # cond branch, mean over steps
    assert "97% on turbo, 50% on base" in text


def test_windows_summary_orders_windows_and_names_the_best_cell():
    table = pl.DataFrame({"model": ["base"] * 4, "hook": ["up.0.1"] * 4, "edit": ["colour", "colour", "background", "background"],
                          "style": ["sdlens"] * 4, "window": ["late", "early", "late", "early"],
                          "success": [0.0, 0.5, 0.0, 1.0], "preservation": [1.0, 0.8, 1.0, 0.6]})
    text = summarize_windows(RUN, {"windows": table})
    assert "early 75%, late 0%" in text and "preservation of the other attributes: early 70%, late 100%" in text
    assert "Most editable: background in the early window with sdlens at base up.0.1 (100% of 1 prompts)" in text


def test_compare_and_atlas_summaries_and_missing_columns():
    metrics = pl.DataFrame({"pair": ["a vs b"] * 3, "method": ["a", "b", "raw channels"],
                            "fvu": [0.2, 0.3, None], "l0": [8.0, 8.0, None], "concepts_above_0_9": [0.5, 0.25, 0.1]})
    text = summarize_compare(RUN, {"compare_metrics": metrics})
    assert "a FVU 0.200 at L0 8.0 vs b FVU 0.300" in text and "raw channels 10%" in text
    assert summarize_compare(RUN, {"compare_metrics": metrics.drop("fvu")}) == ""  # tables changed shape: no sentence
    atlas = pl.DataFrame({"dictionary": ["a", "a", "b"], "feature": [3, 4, 5], "label": ["colour:red", "shape:circle", "colour:red"],
                          "auroc": [0.95, 0.7, 0.99], "frequency": [0.1, 0.2, 0.3]})
    text = summarize_atlas(RUN, {"atlas": atlas})
    assert "3 features from 2 dictionaries; 2 of 3 predict" in text and "b #5 = colour:red (AUROC 0.990)" in text
