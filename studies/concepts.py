"""Ground-truth concepts per hook-grid location, and how well single features predict them.

A location (cell of the hook's grid) belongs to an object when at least half of its pixels
are inside the object's exact mask; it then carries the object's colour, shape, size,
position and the scene's style. Every other location carries the scene's background colour and
pattern.
Alignment of a feature with a concept is the AUROC of the feature's activation as a
predictor of the concept over all locations (ties, i.e. the many zeros, get average ranks).
"""

from __future__ import annotations

import numpy as np
import torch


def location_concepts(scene, grid: tuple[int, int]) -> list[set[str]]:
    """One set of concept names (`colour:red`, `background:black`, ...) per grid cell, row-major."""
    from diffdict.toyworld.render import render

    rendered = render(scene)
    size = rendered.image.shape[0]
    h, w = grid
    cells = rendered.masks.reshape(len(scene.objects), h, size // h, w, size // w).mean(axis=(2, 4))  # (obj, h, w)
    labels: list[set[str]] = []
    for row in range(h):
        for col in range(w):
            owner = int(np.argmax(cells[:, row, col])) if cells.shape[0] else -1
            if owner >= 0 and cells[owner, row, col] >= 0.5:
                obj = scene.objects[owner]
                labels.append(
                    {
                        f"colour:{obj.colour}",
                        f"shape:{obj.shape}",
                        f"size:{obj.size}",
                        f"position:{obj.position}",
                        f"style:{scene.style}",
                    }
                )
            else:
                labels.append({f"background:{scene.background}", f"pattern:{scene.pattern}"})
    return labels


def concept_matrix(labels: list[set[str]]) -> tuple[list[str], np.ndarray]:
    """(concept names, (N, C) bool) from per-location label sets."""
    names = sorted(set().union(*labels)) if labels else []
    index = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(labels), len(names)), dtype=bool)
    for row, label_set in enumerate(labels):
        for name in label_set:
            matrix[row, index[name]] = True
    return names, matrix


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """(N, F) float32 ranks of each score column (N, F), 1-based with ties averaged: scipy's
    `rankdata(scores, axis=0)`, but a column's exact zeros share one rank without being sorted, so a
    top-k code (a few non-zeros per token) costs a sort of its non-zeros only. float32 holds average
    ranks (halves) exactly below 2**23 tokens at half float64's memory."""
    n, width = scores.shape
    columns = np.ascontiguousarray(scores.T)  # (F, N): one contiguous row per column
    out = np.empty((width, n), dtype=np.float32)
    for f in range(width):
        column = columns[f]
        nonzero = np.flatnonzero(column)
        nonzero_values = column[nonzero]
        order = np.argsort(nonzero_values)
        values = nonzero_values[order]
        negatives = int(np.count_nonzero(values < 0))
        zeros = n - len(values)
        out[f].fill(negatives + (zeros + 1) / 2)
        if not len(values):
            continue
        position = np.arange(1, len(values) + 1, dtype=np.float64)
        position[negatives:] += zeros  # positive values rank above every zero
        tie_group = np.cumsum(np.r_[True, values[1:] != values[:-1]]) - 1
        averaged = np.bincount(tie_group, position) / np.bincount(tie_group)
        out[f, nonzero[order]] = averaged[tie_group]
    return out.T


def auroc_matrix(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(F, C) AUROC of each score column (N, F) for each boolean target column (N, C).

    Mann-Whitney form: (sum of positive ranks - P(P+1)/2) / (P * N_neg), with average
    ranks for ties. A concept with no positives or no negatives gets NaN.
    """
    return auroc_from_ranks(average_ranks(scores), targets)


def auroc_from_ranks(ranks: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """`auroc_matrix` from the scores' column ranks (N, F) (average ranks for ties), computed once
    when many target sets are scored against the same scores."""
    positives = targets.sum(axis=0).astype(np.float64)  # (C,)
    negatives = targets.shape[0] - positives
    rank_sums = ranks.T @ targets.astype(np.float64)  # (F, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sums - positives * (positives + 1) / 2) / (positives * negatives)
    auc[:, (positives == 0) | (negatives == 0)] = np.nan
    return auc


def dense_codes(dictionary, x: torch.Tensor, chunk: int = 4096) -> np.ndarray:
    """(N, n) activations of every atom; for the alignment analysis on small evaluation sets only."""
    out = np.zeros((x.shape[0], dictionary.atoms.shape[0]), dtype=np.float32)
    for start in range(0, x.shape[0], chunk):
        code = dictionary.encode(x[start : start + chunk].to(getattr(dictionary, "device", x.device)))
        rows = np.arange(code.values.shape[0])[:, None] + start
        np.add.at(out, (rows, code.indices.cpu().numpy()), code.values.detach().cpu().numpy())
    return out
