"""The report's opening sentences are computed from the study tables."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import polars as pl

from diffdict.studies.atlas import summarize_atlas
from diffdict.studies.compare import summarize_compare
from diffdict.studies.summaries import summarize_transfer, summarize_windows

if TYPE_CHECKING:
    from diffdict.studies.run import Run

# a stand-in Run: the summaries read only its windows study's settings
RUN = cast(
    "Run",
    SimpleNamespace(
        config=SimpleNamespace(
            studies=SimpleNamespace(
                windows=SimpleNamespace(windows={"early": [0.6, 1.0], "middle": [0.2, 0.6], "late": [0.0, 0.2]})
            )
        )
    ),
)


def test_transfer_summary_names_each_model_and_splice():
    metrics = pl.DataFrame(
        {
            "dictionary": ["sae"] * 4,
            "source_model": ["turbo"] * 4,
            "hook": ["down.2.1"] * 4,
            "target_model": ["turbo", "base", "base", "base"],
            "branch": ["cond", "cond", "cond", "uncond"],
            "fvu": [0.2, 0.4, 0.6, 9.0],
        }
    )
    splice = pl.DataFrame(
        {"dictionary": ["sae", "sae"], "target_model": ["turbo", "base"], "judge_agreement": [0.97, 0.5]}
    )
    text = summarize_transfer(RUN, {"transfer_metrics": metrics, "transfer_splice": splice})
    assert "0.200 on turbo, 0.500 on base" in text  # cond branch, mean over steps
    assert "97% on turbo, 50% on base" in text


def test_windows_summary_orders_windows_and_names_the_best_cell():
    table = pl.DataFrame(
        {
            "model": ["base"] * 4,
            "hook": ["up.0.1"] * 4,
            "edit": ["colour", "colour", "background", "background"],
            "style": ["sdlens"] * 4,
            "window": ["late", "early", "late", "early"],
            "success": [0.0, 0.5, 0.0, 1.0],
            "preservation": [1.0, 0.8, 1.0, 0.6],
        }
    )
    text = summarize_windows(RUN, {"windows": table})
    assert "early 75%, late 0%" in text and "preservation of the other attributes: early 70%, late 100%" in text
    assert "Most editable: background in the early window with sdlens at base up.0.1 (100% of 1 prompts)" in text
    calibrated = pl.concat(
        [
            table.with_columns(pl.lit("dictionary").alias("kind")),
            table.with_columns(
                pl.lit("oracle").alias("kind"), pl.lit("oracle").alias("style"), pl.lit(1.0).alias("success")
            ),
            table.with_columns(
                pl.lit("random").alias("kind"), pl.lit("random").alias("style"), pl.lit(0.0).alias("success")
            ),
        ]
    )
    text = summarize_windows(RUN, {"windows": calibrated})
    assert "early 75%, late 0%" in text  # dictionary rows only
    assert "oracle (diff-in-means) / random direction of the same norm: early 100% / 0%, late 100% / 0%" in text


def test_compare_and_atlas_summaries_and_missing_columns():
    methods = ["a", "b", "raw channels", "random", "diff-in-means", "logistic probe"]
    metrics = pl.DataFrame(
        {
            "pair": ["a vs b"] * 6,
            "method": methods,
            "kind": ["dictionary", "dictionary", "raw channels", "random", "oracle", "probe"],
            "fvu": [0.2, 0.3, None, None, None, None],
            "l0": [8.0, 8.0, None, None, None, None],
            "mean_f1": [0.3, 0.2, 0.31, 0.29, 0.4, 0.6],
            "f1_share_of_probe": [0.5, 1 / 3, 0.52, 0.48, 0.67, 1.0],
            "mean_f1_sparse_k8": [0.41, 0.35, 0.38, 0.39, None, None],
            "selection_prompts": [72] * 6,
            "scoring_prompts": [24] * 6,
        }
    )
    text = summarize_compare(RUN, {"compare_metrics": metrics})
    assert "a FVU 0.200 at L0 8.0, b FVU 0.300 at L0 8.0" in text
    assert "24 held-out prompts (chosen on 72 train prompts)" in text
    assert (
        "a 0.30, b 0.20; floor: random 0.29, raw channels 0.31; ceiling: diff-in-means 0.40, logistic probe 0.60"
        in text
    )
    assert "The best dictionary (a) reaches 50% of the probe's F1; with 8 features (k-sparse probing) 0.41." in text
    atlas = pl.DataFrame(
        {
            "dictionary": ["a", "a", "b"],
            "feature": [3, 4, 5],
            "label": ["colour:red", "shape:circle", "colour:red"],
            "auroc": [0.95, 0.7, 0.99],
            "frequency": [0.1, 0.2, 0.3],
        }
    )
    text = summarize_atlas(RUN, {"atlas": atlas})
    assert "3 features from 2 dictionaries; 2 of 3 predict" in text and "b #5 = colour:red (AUROC 0.990)" in text
