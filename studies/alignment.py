"""Concept alignment metrics, chosen on a selection split and scored on a held-out split.

Every function works on plain arrays: scores (N, F) of F candidate features over N
locations, and boolean targets (N, C) of C concepts. Selection (which feature, which
threshold, which probe) only ever sees the selection split; the held-out split only scores.

Why not "best AUROC on the evaluation set": a top-k code ties every non-firing location
at zero, so AUROC undersells sparse features, and picking the best of many features on the
prompts that score it inflates every method with many candidates (random directions most
of all). F1 at a threshold chosen on the selection split, and SAEBench-style k-sparse
probing (a logistic regression on the k features whose class means differ most), are fair
to sparse codes; the logistic probe on all channels is the ceiling; the concept's
diff-in-means direction is the oracle single direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .concepts import auroc_matrix

SPARSE_PROBE_KS = (1, 2, 4, 8)
PROBE_MAX_TOKENS = 20_000  # selection tokens the logistic probes are fit on (seeded subsample)


@dataclass
class FeatureScore:
    """One concept's chosen feature (chosen on selection), scored on the held-out split."""

    feature: int  # column of the score matrix
    selection_auroc: float
    threshold: float  # chosen on selection: the best-F1 threshold there
    auroc: float  # held-out
    f1: float  # held-out, at the selection threshold
    precision: float
    recall: float


def best_f1_threshold(scores: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of `scores > threshold` over every distinct score value.

    scores (N,), target (N,) bool. The all-positive prediction is among the candidates, so
    a feature that fires on exactly half of a concept's locations gets its honest F1.
    """
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_target = scores[order], target[order]
    true_positives = np.cumsum(sorted_target)
    predicted = np.arange(1, len(scores) + 1)
    # Only cut between distinct values: ties are predicted together.
    last_of_value = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    positives = max(int(target.sum()), 1)
    f1 = 2 * true_positives / (predicted + positives)
    f1 = np.where(last_of_value, f1, -1.0)
    best = int(np.argmax(f1))
    following = sorted_scores[best + 1] if best + 1 < len(sorted_scores) else sorted_scores[best] - 1.0
    # Midway to the next lower value: `scores > threshold` then keeps exactly the chosen set.
    return float((sorted_scores[best] + following) / 2), float(f1[best])


def f1_at(scores: np.ndarray, target: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(F1, precision, recall) of `scores > threshold`."""
    predicted = scores > threshold
    true_positives = float((predicted & target).sum())
    precision = true_positives / predicted.sum() if predicted.any() else 0.0
    recall = true_positives / target.sum() if target.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return float(f1), float(precision), float(recall)


def score_feature(
    selection: np.ndarray,
    heldout: np.ndarray,
    selection_target: np.ndarray,
    heldout_target: np.ndarray,
    feature: int = -1,
    selection_auroc: float | None = None,
) -> FeatureScore:
    """One given score column, thresholded at its best selection F1 and scored held out.

    selection (N_s,), heldout (N_h,) scores; targets bool. feature = -1 for a single direction
    that is not a column of a candidate matrix (the oracle, a probe's output).
    """
    threshold, _ = best_f1_threshold(selection, selection_target)
    f1, precision, recall = f1_at(heldout, heldout_target, threshold)
    auroc = float(auroc_matrix(heldout[:, None], heldout_target[:, None])[0, 0])
    if selection_auroc is None:
        selection_auroc = float(auroc_matrix(selection[:, None], selection_target[:, None])[0, 0])
    return FeatureScore(feature, selection_auroc, threshold, auroc, f1, precision, recall)


def feature_column(scores: np.ndarray, feature: int, mirrored: bool = False) -> np.ndarray:
    """Column `feature` (N,) of scores (N, F); with `mirrored`, of [scores, -scores] (N, 2F), never built."""
    width = scores.shape[1]
    if mirrored and feature >= width:
        return -scores[:, feature - width]
    return scores[:, feature]


def mirror_auc(auc: np.ndarray) -> np.ndarray:
    """(2F, C) AUROCs of [scores, -scores] from those of scores (F, C): with average ranks for ties,
    rank(-x) = N + 1 - rank(x), so AUROC(-x) = 1 - AUROC(x) exactly (NaN stays NaN)."""
    return np.concatenate([auc, 1.0 - auc], axis=0)


def select_and_score(
    selection_scores: np.ndarray,
    selection_targets: np.ndarray,
    heldout_scores: np.ndarray,
    heldout_targets: np.ndarray,
    exclude: dict[int, set[int]] | None = None,
    selection_auc: np.ndarray | None = None,
    mirrored: bool = False,
) -> list[FeatureScore | None]:
    """Per concept: the feature with the best selection AUROC, its selection threshold, scored held out.

    scores (N, F); targets (N, C). `exclude` maps a concept to features it may not take.
    `selection_auc` (F, C): the selection AUROCs of the score columns when already computed (from
    cached ranks). `mirrored`: the candidates are the columns and their negations (features F..2F-1
    are -scores[:, f - F]), for directions that may predict by their absence; the negations are
    derived (mirror_auc, feature_column), never stored. A concept without positives or negatives in
    either split gets None.
    """
    if selection_auc is None:
        selection_auc = auroc_matrix(selection_scores, selection_targets)  # (F, C)
    if mirrored:
        selection_auc = mirror_auc(selection_auc)  # (2F, C)
    heldout_valid = np.asarray(heldout_targets.any(0) & ~heldout_targets.all(0))  # (C,) bool
    results: list[FeatureScore | None] = []
    for c in range(selection_targets.shape[1]):
        column = selection_auc[:, c].copy()
        if np.all(np.isnan(column)) or not heldout_valid[c]:
            results.append(None)
            continue
        column[np.isnan(column)] = -np.inf
        for f in (exclude or {}).get(c, ()):
            column[f] = -np.inf
        feature = int(np.argmax(column))
        results.append(
            score_feature(
                feature_column(selection_scores, feature, mirrored),
                feature_column(heldout_scores, feature, mirrored),
                selection_targets[:, c],
                heldout_targets[:, c],
                feature,
                float(column[feature]),
            )
        )
    return results


def distinct_features(
    selection_scores: np.ndarray, selection_targets: np.ndarray, groups: list[list[int]]
) -> dict[int, tuple[int, int]]:
    """concept -> (feature, rank): within each group (the values of one attribute) no two concepts
    share a feature; a concept whose best feature is taken gets its next best (rank 1, 2, ...).

    Concepts are served in order of their best AUROC, so the clearest concept keeps its feature.
    """
    auc = np.nan_to_num(auroc_matrix(selection_scores, selection_targets), nan=-np.inf)  # (F, C)
    chosen: dict[int, tuple[int, int]] = {}
    for group in groups:
        taken: set[int] = set()
        valid = [c for c in group if np.isfinite(auc[:, c]).any()]
        for c in sorted(valid, key=lambda c: -auc[:, c].max()):
            ranking = np.argsort(-auc[:, c], kind="stable")
            for rank, feature in enumerate(ranking):
                if int(feature) not in taken and np.isfinite(auc[feature, c]):
                    chosen[c] = (int(feature), rank)
                    taken.add(int(feature))
                    break
    return chosen


def diff_in_means(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(d,) mean of the concept's locations minus the mean of the others. x (N, d), target (N,)."""
    return x[target].mean(0) - x[~target].mean(0)


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def logistic_scores(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(selection scores, held-out scores) of a logistic regression fit on standardised train_x."""
    from sklearn.linear_model import LogisticRegression

    rows = _subsample(len(train_x), PROBE_MAX_TOKENS, seed)
    mean, scale = train_x[rows].mean(0), train_x[rows].std(0) + 1e-6
    model = LogisticRegression(C=1.0, max_iter=300)
    model.fit((train_x[rows] - mean) / scale, train_y[rows])
    return model.decision_function((train_x - mean) / scale), model.decision_function((test_x - mean) / scale)


def class_mean_gaps(codes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(C, F) |mean activation on a concept's tokens - mean on the others| of codes (N, F), targets (N, C),
    for every concept in one product (boolean row selection per concept would copy the codes each time)."""
    positives = targets.sum(0).astype(np.float64)[:, None]  # (C, 1)
    on = (targets.T.astype(codes.dtype) @ codes).astype(np.float64)  # (C, F)
    total = codes.sum(0, dtype=np.float64)[None, :]
    return np.abs(on / positives - (total - on) / (len(codes) - positives))


def sparse_probe_features(codes: np.ndarray, target: np.ndarray, k: int, gap: np.ndarray | None = None) -> np.ndarray:
    """SAEBench's choice: the k features whose mean activation differs most between the classes (`gap` (F,):
    class_mean_gaps' row for this target, when already computed)."""
    gaps = class_mean_gaps(codes, target[:, None])[0] if gap is None else gap
    return np.argsort(-gaps, kind="stable")[:k]


def sparse_probe(
    selection_codes: np.ndarray,
    selection_target: np.ndarray,
    heldout_codes: np.ndarray,
    heldout_target: np.ndarray,
    k: int,
    seed: int = 0,
    gap: np.ndarray | None = None,
) -> dict[str, float]:
    """k-sparse probe: features and a logistic regression chosen on selection; AUROC and F1 held out.
    `gap` (F,): the features' class-mean gaps on selection when already computed (class_mean_gaps)."""
    features = sparse_probe_features(selection_codes, selection_target, k, gap)
    train_scores, test_scores = logistic_scores(
        selection_codes[:, features], selection_target, heldout_codes[:, features], seed
    )
    score = score_feature(train_scores, test_scores, selection_target, heldout_target)
    return {"auroc": score.auroc, "f1": score.f1, "precision": score.precision, "recall": score.recall}
