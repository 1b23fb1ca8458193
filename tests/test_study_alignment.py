"""Alignment metrics on synthetic data where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from diffdict.studies.alignment import (
    best_f1_threshold,
    diff_in_means,
    distinct_features,
    f1_at,
    logistic_scores,
    select_and_score,
    sparse_probe,
)
from diffdict.studies.concepts import auroc_matrix, average_ranks


def _half_firing(n: int = 400, seed: int = 0):
    """A concept on the first half of the rows; feature 0 fires (value 1) on exactly half of its rows."""
    rng = np.random.default_rng(seed)
    target = np.zeros(n, dtype=bool)
    target[: n // 2] = True
    feature = np.zeros(n)
    feature[: n // 4] = 1.0 + rng.random(n // 4)
    return feature, target


def test_half_firing_feature_gets_its_honest_f1_precision_recall_and_auroc():
    feature, target = _half_firing()
    threshold, f1 = best_f1_threshold(feature, target)
    assert f1 == pytest.approx(2 / 3)  # precision 1, recall 1/2
    f1_held, precision, recall = f1_at(feature, target, threshold)
    assert (f1_held, precision, recall) == (pytest.approx(2 / 3), 1.0, 0.5)
    # AUROC ties every non-firing row at zero: 0.75, not the 1.0 of a perfect detector.
    assert auroc_matrix(feature[:, None], target[:, None])[0, 0] == pytest.approx(0.75)


def test_best_f1_threshold_can_predict_everything_positive():
    scores = np.array([0.0, 0.0, 0.0, 0.0])
    target = np.array([True, True, True, False])
    threshold, f1 = best_f1_threshold(scores, target)
    assert f1 == pytest.approx(2 * 3 / (4 + 3)) and (scores > threshold).all()


def _separable(n: int = 2000, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    direction = np.zeros(d)
    direction[3] = 1.0
    target = x @ direction > 0.5
    x[target] += 3.0 * direction  # a clear margin along one direction
    return x, target


def test_perfect_direction_scores_one_and_random_direction_scores_chance():
    x, target = _separable()
    train, test = slice(0, 1000), slice(1000, 2000)
    oracle = diff_in_means(x[train], target[train])
    threshold, _ = best_f1_threshold(x[train] @ oracle, target[train])
    f1, precision, recall = f1_at(x[test] @ oracle, target[test], threshold)
    assert f1 > 0.98 and auroc_matrix((x[test] @ oracle)[:, None], target[test, None])[0, 0] > 0.999
    rng = np.random.default_rng(1)
    random = rng.normal(size=(200, x.shape[1]))
    random[:, 3] = 0.0  # orthogonal to the concept's direction: pure chance
    auc = auroc_matrix(x[test] @ random.T, target[test, None])[:, 0]
    assert abs(auc.mean() - 0.5) < 0.02


def test_feature_is_chosen_on_selection_and_scored_on_held_out():
    rng = np.random.default_rng(0)
    n = 600
    sel_target = rng.random(n) < 0.3
    held_target = rng.random(n) < 0.3
    # Feature 0 is perfect on selection and noise on held-out; feature 1 is decent on both.
    sel = np.stack([sel_target + 0.0, sel_target + rng.normal(0, 0.8, n)], axis=1)
    held = np.stack([rng.random(n), held_target + rng.normal(0, 0.8, n)], axis=1)
    (chosen,) = select_and_score(sel, sel_target[:, None], held, held_target[:, None])
    assert chosen is not None
    assert chosen.feature == 0 and chosen.selection_auroc == pytest.approx(1.0)
    assert abs(chosen.auroc - 0.5) < 0.08  # the held-out number does not inherit the selection luck
    (other,) = select_and_score(sel, sel_target[:, None], held, held_target[:, None], exclude={0: {0}})
    assert other is not None
    assert other.feature == 1 and other.auroc > 0.7


def test_mirrored_candidates_match_their_negations_built_out():
    """A direction that predicts by its absence wins as a negation; deriving the negations' AUROCs and
    scores gives the same choice and numbers as materialising [scores, -scores]."""
    rng = np.random.default_rng(1)
    n, width, concepts = 800, 5, 3
    sel_t, held_t = rng.random((n, concepts)) < 0.3, rng.random((n, concepts)) < 0.3
    sel, held = rng.normal(size=(n, width)), rng.normal(size=(n, width))
    sel[:, 2] -= 2 * sel_t[:, 0]  # concept 0 lowers channel 2: its best candidate is channel 2 negated
    held[:, 2] -= 2 * held_t[:, 0]
    sel[:, 4] = np.round(sel[:, 4] + sel_t[:, 1])  # concept 1 raises a tie-heavy channel
    held[:, 4] = np.round(held[:, 4] + held_t[:, 1])
    built = select_and_score(np.c_[sel, -sel], sel_t, np.c_[held, -held], held_t)
    derived = select_and_score(sel, sel_t, held, held_t, mirrored=True)
    assert built[0] is not None and built[0].feature == width + 2 and built[0].auroc > 0.8
    for a, b in zip(built, derived):
        assert a is not None and b is not None
        assert a.feature == b.feature
        assert (a.selection_auroc, a.threshold, a.auroc, a.f1) == pytest.approx(
            (b.selection_auroc, b.threshold, b.auroc, b.f1), abs=1e-12
        )


def test_sparse_probing_finds_a_concept_split_over_two_features():
    rng = np.random.default_rng(0)
    n = 2000
    target = rng.random(n) < 0.4
    half = rng.random(n) < 0.5
    codes = np.zeros((n, 6))
    codes[target & half, 0] = 1.0 + rng.random((target & half).sum())
    codes[target & ~half, 1] = 1.0 + rng.random((target & ~half).sum())
    codes[:, 2:] = rng.random((n, 4)) * (rng.random((n, 4)) < 0.2)  # unrelated sparse features
    train, test = slice(0, 1000), slice(1000, n)
    one = sparse_probe(codes[train], target[train], codes[test], target[test], k=1)
    two = sparse_probe(codes[train], target[train], codes[test], target[test], k=2)
    assert one["f1"] == pytest.approx(2 / 3, abs=0.06)
    assert two["f1"] > 0.99 and two["auroc"] > 0.99


def test_logistic_probe_is_a_ceiling_on_a_concept_no_single_channel_carries():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 8))
    target = x[:, 0] + x[:, 1] > 0  # diagonal: each channel alone is weaker
    train_scores, test_scores = logistic_scores(x[:1500], target[:1500], x[1500:])
    probe_auc = auroc_matrix(test_scores[:, None], target[1500:, None])[0, 0]
    single = auroc_matrix(x[1500:, :2], target[1500:, None])[:, 0].max()
    assert probe_auc > 0.99 and single < 0.9


def test_distinct_features_gives_the_weaker_concept_its_next_best_feature():
    rng = np.random.default_rng(0)
    n = 4000
    red = rng.random(n) < 0.3
    blue = ~red & (rng.random(n) < 0.29)
    codes = np.zeros((n, 3))
    codes[:, 0] = red * 1.0 + blue * 1.0  # fires for both colours: the best feature of each (AUROC ~0.86, ~0.81)
    codes[:, 1] = blue * 1.0 + rng.normal(0, 1.2, n)  # a noisier blue-only feature (AUROC ~0.72)
    codes[:, 2] = rng.random(n)
    targets = np.stack([red, blue], axis=1)
    chosen = distinct_features(codes, targets, [[0, 1]])
    assert chosen[0] == (0, 0)  # red keeps its best feature
    assert chosen[1] == (1, 1)  # blue's best (0) is taken: its next best, rank 1


def test_average_ranks_match_scipy_on_sparse_signed_and_tied_columns():
    rng = np.random.default_rng(3)
    n = 500
    sparse = np.where(rng.random(n) < 0.9, 0.0, rng.random(n))  # a top-k code: mostly exact zeros
    signed = np.where(rng.random(n) < 0.5, 0.0, np.round(rng.normal(size=n), 1))  # negatives, zeros, ties
    scores = np.stack([sparse, signed, np.zeros(n), rng.normal(size=n), -np.abs(sparse)], axis=1).astype(np.float32)
    ranks = average_ranks(scores)
    assert ranks.dtype == np.float32 and ranks.shape == scores.shape
    np.testing.assert_array_equal(ranks, rankdata(scores, axis=0))
