"""Concept alignment of one hook's tokens, every method and floor, every frame (studies.concept_frames).

Methods, each scored per concept with its feature and threshold chosen on selection tokens and
its numbers measured on held-out tokens:
  dictionary        each dictionary's codes (ReLU, one sign)
  raw channels      the block's channels, both signs (a floor)
  random            random unit directions, both signs, as many as the dictionary has atoms, over
                    several seeded draws (a floor; its rows carry their draw)
  fg/bg only        the label-only predictor that knows whether a token is an object or background
                    cell (and, for a location concept, its place) and nothing of its value (a floor)
  base rate         every token of the frame predicted positive (a floor)
  diff-in-means     the concept's mean difference direction (the oracle single direction)
  logistic probe    a logistic regression on all channels (the ceiling; location families, with
                    hundreds of concepts, use a shrunk linear discriminant instead: "linear discriminant")

Feature splitting (dictionaries): a feature covers a concept when at least half of its firings on
selection tokens fall on the concept and it fires on at least 2% of the concept's tokens; rows say
how many features cover the concept and what share of its held-out tokens at least one of them fires on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from .alignment import (
    SPARSE_PROBE_KS,
    FeatureScore,
    class_mean_gaps,
    diff_in_means,
    f1_at,
    feature_column,
    logistic_scores,
    score_feature,
    select_and_score,
    sparse_probe,
)
from .concept_frames import ALL_CELLS, GLOBAL, Frame, attribute_of, frames, scorable
from .concepts import auroc_from_ranks, auroc_matrix, average_ranks
from .labelled import HookTokens

DICTIONARY, RAW, RANDOM, ORACLE, PROBE = "dictionary", "raw channels", "random", "oracle", "probe"
LAYOUT, BASE_RATE = "fg/bg only", "base rate"  # label-only floors: method name = kind
ORACLE_METHOD, PROBE_METHOD, DISCRIMINANT_METHOD = "diff-in-means", "logistic probe", "linear discriminant"
FLOOR_KINDS = (RAW, RANDOM, LAYOUT, BASE_RATE)
COVER_PRECISION, COVER_RECALL = 0.5, 0.02


@dataclass
class Candidates:
    """One method's candidate features: scores on selection (N_s, F) and held-out (N_h, F) tokens.

    `mirrored` (raw channels, random directions): the candidates are the F columns and their
    negations, features F..2F-1, since a direction may predict by its absence. The negations are
    derived where read (alignment.mirror_auc, alignment.feature_column) rather than stored, which
    halves these floors' memory and rank work.
    """

    method: str
    kind: str
    selection: np.ndarray
    heldout: np.ndarray
    draw: int | None = None
    mirrored: bool = False


def random_directions(count: int, d: int, seed: int) -> np.ndarray:
    """(count, d) unit directions, seeded."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((count, d))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def projections(x: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """(N, F) projections of tokens x (N, d) on directions (F, d), in the tokens' precision (float64 would
    double every random draw's memory)."""
    return x @ directions.T.astype(x.dtype)


def candidate_sets(
    selection: HookTokens,
    scoring: HookTokens,
    codes: dict[str, tuple[np.ndarray, np.ndarray]],
    n_atoms: int,
    draws: int,
    seed: int,
) -> list[Candidates]:
    """The dictionaries' codes (name -> (selection, held-out) dense codes), raw channels and random draws."""
    xs, xh = selection.x.numpy(), scoring.x.numpy()
    d = xs.shape[1]
    out = [Candidates(name, DICTIONARY, s, h) for name, (s, h) in codes.items()]
    out.append(Candidates(RAW, RAW, xs, xh, mirrored=True))
    for draw in range(draws):
        directions = random_directions(n_atoms, d, seed * 1000 + draw)
        out.append(Candidates(RANDOM, RANDOM, projections(xs, directions), projections(xh, directions), draw, True))
    return out


def _rows(base: dict, frame: Frame, keep: np.ndarray, scores: Sequence[FeatureScore | None], extra=None) -> list[dict]:
    rows = []
    for i, score in zip(keep, scores):
        if score is None:
            continue
        rows.append(
            {
                **base,
                "scope": frame.scope,
                "family": frame.family,
                "group": frame.group,
                "concept": frame.concepts[i],
                "attribute": attribute_of(frame.concepts[i]),
                "feature": score.feature,
                "selection_auroc": score.selection_auroc,
                "threshold": score.threshold,
                "auroc": score.auroc,
                "f1": score.f1,
                "precision": score.precision,
                "recall": score.recall,
                **(extra(i) if extra else {}),
            }
        )
    return rows


def _columns_scored(sel: np.ndarray, held: np.ndarray, sel_t: np.ndarray, held_t: np.ndarray) -> list[FeatureScore]:
    """One given score column per concept: sel (N_s, C), held (N_h, C)."""
    return [score_feature(sel[:, c], held[:, c], sel_t[:, c], held_t[:, c]) for c in range(sel_t.shape[1])]


def _discriminant(xs: np.ndarray, xh: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shrunk linear discriminant per concept: (selection, held-out) scores (N, C)."""
    positives = targets.sum(0)
    means1 = targets.T.astype(np.float64) @ xs / positives[:, None]
    means0 = (~targets).T.astype(np.float64) @ xs / (len(xs) - positives)[:, None]
    covariance = np.cov(xs, rowvar=False)
    covariance += 1e-3 * np.trace(covariance) / xs.shape[1] * np.eye(xs.shape[1])
    weights = np.linalg.solve(covariance, (means1 - means0).T)  # (d, C)
    return xs @ weights, xh @ weights


def _covering(firing_s: np.ndarray, firing_h: np.ndarray, sel_t: np.ndarray, held_t: np.ndarray):
    """(features covering each concept (C,), held-out share of each concept's tokens they fire on (C,))."""
    hits = firing_s.T.astype(np.float32) @ sel_t.astype(np.float32)  # (F, C)
    fires = firing_s.sum(0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(fires > 0, hits / fires, 0.0)
        recall = hits / np.maximum(sel_t.sum(0), 1)[None, :]
    covers = (precision >= COVER_PRECISION) & (recall >= COVER_RECALL)  # (F, C)
    reached = (firing_h.astype(np.float32) @ covers.astype(np.float32)) > 0  # (N_h, C)
    covered = (reached & held_t).sum(0) / np.maximum(held_t.sum(0), 1)
    return covers.sum(0), covered


def rank_key(cand: Candidates, scope: str, group: str) -> tuple:
    """What a candidate's selection ranks are cached under: the frames of one scope and group share rows."""
    return (cand.method, cand.draw, scope, group)


def frame_rows(
    base: dict,
    candidates: list[Candidates],
    sel_frame: Frame,
    held_frame: Frame,
    xs: np.ndarray,
    xh: np.ndarray,
    seed: int,
    rank_cache: dict,
) -> list[dict]:
    """Alignment rows of every method on one frame (concepts with too few positives left out)."""
    keep = scorable(sel_frame, held_frame)
    if not keep.size:
        return []
    sel_t, held_t = sel_frame.targets[:, keep], held_frame.targets[:, keep]
    rs, rh = sel_frame.rows, held_frame.rows
    out = []
    for cand in candidates:
        sel_scores, held_scores = cand.selection[rs], cand.heldout[rh]
        key = rank_key(cand, sel_frame.scope, sel_frame.group)
        if key not in rank_cache:
            rank_cache[key] = average_ranks(sel_scores)
        scores = select_and_score(
            sel_scores,
            sel_t,
            held_scores,
            held_t,
            selection_auc=auroc_from_ranks(rank_cache[key], sel_t),
            mirrored=cand.mirrored,
        )
        extra = None
        if cand.kind == DICTIONARY:
            counts, covered = _covering(sel_scores > 0, held_scores > 0, sel_t, held_t)
            position = {c: j for j, c in enumerate(keep)}
            extra = lambda i, counts=counts, covered=covered, position=position: {  # noqa: E731
                "splitting": int(counts[position[i]]),
                "covered_recall": float(covered[position[i]]),
            }
        out += _rows(
            {**base, "method": cand.method, "kind": cand.kind, "draw": cand.draw}, sel_frame, keep, scores, extra
        )
    places_s, places_h = sel_frame.places[:, keep].astype(float), held_frame.places[:, keep].astype(float)
    out += _rows(
        {**base, "method": LAYOUT, "kind": LAYOUT}, sel_frame, keep, _columns_scored(places_s, places_h, sel_t, held_t)
    )
    out += _rows(
        {**base, "method": BASE_RATE, "kind": BASE_RATE},
        sel_frame,
        keep,
        _columns_scored(np.zeros_like(places_s), np.zeros_like(places_h), sel_t, held_t),
    )
    xs_f, xh_f = xs[rs], xh[rh]
    directions = np.stack([diff_in_means(xs_f, sel_t[:, c]) for c in range(sel_t.shape[1])], axis=1)
    out += _rows(
        {**base, "method": ORACLE_METHOD, "kind": ORACLE},
        sel_frame,
        keep,
        _columns_scored(xs_f @ directions, xh_f @ directions, sel_t, held_t),
    )
    if sel_frame.family == GLOBAL:
        probe = [
            score_feature(*logistic_scores(xs_f, sel_t[:, c], xh_f, seed), sel_t[:, c], held_t[:, c])
            for c in range(sel_t.shape[1])
        ]
        out += _rows({**base, "method": PROBE_METHOD, "kind": PROBE}, sel_frame, keep, probe)
    else:
        out += _rows(
            {**base, "method": DISCRIMINANT_METHOD, "kind": PROBE},
            sel_frame,
            keep,
            _columns_scored(*_discriminant(xs_f, xh_f, sel_t), sel_t, held_t),
        )
    return out


def alignment_rows(
    base: dict,
    selection: HookTokens,
    scoring: HookTokens,
    candidates: list[Candidates],
    seed: int,
    families: tuple[str, ...],
    cache: dict | None = None,
    progress: str | None = None,
) -> list[dict]:
    """Alignment rows of every frame of one hook (one world: the real tokens or their twin). `cache` keeps the
    candidates' selection ranks (rank_key) for the caller's later use (step_rows); `progress` labels a progress
    bar over the frames (none when None)."""
    sel_frames = frames(selection.targets, selection.concepts, selection.location, selection.grid, families)
    held_frames = frames(scoring.targets, scoring.concepts, scoring.location, scoring.grid, families)
    xs, xh = selection.x.numpy(), scoring.x.numpy()
    cache = {} if cache is None else cache
    rows = []
    pairs = tqdm(list(zip(sel_frames, held_frames)), desc=progress, unit="frame", disable=progress is None)
    for i, (sel_frame, held_frame) in enumerate(pairs):
        rows += frame_rows(base, candidates, sel_frame, held_frame, xs, xh, seed, cache)
        _drop_finished_ranks(cache, sel_frame, sel_frames[i + 1 :])
    return rows


def _drop_finished_ranks(cache: dict, frame: Frame, later: list[Frame]) -> None:
    """Free the ranks of a frame's scope and group once no later frame reads them; the all-cells ranks of each
    method's first draw stay for the caller (step_rows reads them)."""
    place = (frame.scope, frame.group)
    if any((f.scope, f.group) == place for f in later):
        return
    kept = place == (ALL_CELLS, "all")
    for key in [k for k in cache if k[2:] == place and not (kept and k[1] in (None, 0))]:
        del cache[key]


def sparse_rows(
    base: dict, selection: HookTokens, scoring: HookTokens, candidates: list[Candidates], seed: int
) -> list[dict]:
    """k-sparse probing on every token (all cells, global concepts), first random draw only. Raw channels and
    random directions enter with one sign each: the probe's weight takes either."""
    concepts = [
        c
        for c in range(len(selection.concepts))
        if 0 < selection.targets[:, c].sum() < len(selection.targets)
        and 0 < scoring.targets[:, c].sum() < len(scoring.targets)
    ]
    rows = []
    for cand in candidates:
        if cand.draw not in (None, 0):
            continue
        gaps = class_mean_gaps(cand.selection, selection.targets[:, concepts])  # (C, F)
        for c, gap in zip(concepts, gaps):
            for k in SPARSE_PROBE_KS:
                result = sparse_probe(
                    cand.selection, selection.targets[:, c], cand.heldout, scoring.targets[:, c], k, seed, gap
                )
                rows.append(
                    {
                        **base,
                        "method": cand.method,
                        "kind": cand.kind,
                        "concept": selection.concepts[c],
                        "attribute": attribute_of(selection.concepts[c]),
                        "k": k,
                        "auroc": result["auroc"],
                        "f1": result["f1"],
                    }
                )
    return rows


def by_step_rows(
    base: dict,
    scoring: HookTokens,
    scores: list[FeatureScore | None],
    column_of: Callable[[int, FeatureScore], np.ndarray],
) -> list[dict]:
    """Held-out AUROC and F1 of each concept's chosen feature at each step."""
    rows = []
    for step in np.unique(scoring.step):
        at = scoring.step == step
        for c, s in enumerate(scores):
            target = scoring.targets[at, c]
            if s is None or not target.any() or target.all():
                continue
            values = column_of(c, s)[at]
            f1, _, _ = f1_at(values, target, s.threshold)
            rows.append(
                {
                    **base,
                    "concept": scoring.concepts[c],
                    "step": int(step),
                    "t": float(scoring.t[at][0]),
                    "auroc": float(auroc_matrix(values[:, None], target[:, None])[0, 0]),
                    "f1": f1,
                }
            )
    return rows


def step_rows(
    base: dict, selection: HookTokens, scoring: HookTokens, candidates: list[Candidates], rank_cache: dict
) -> list[dict]:
    """Per-step rows of every token frame (all cells, global), for the candidates and the oracle; the
    candidates' selection ranks come from `rank_cache` when alignment_rows left them there."""
    rows = []
    for cand in candidates:
        if cand.draw not in (None, 0):
            continue
        ranks = rank_cache.get(rank_key(cand, ALL_CELLS, "all"))
        auc = None if ranks is None else auroc_from_ranks(ranks, selection.targets)
        scores = select_and_score(
            cand.selection, selection.targets, cand.heldout, scoring.targets, selection_auc=auc, mirrored=cand.mirrored
        )
        rows += by_step_rows(
            {**base, "method": cand.method, "kind": cand.kind},
            scoring,
            scores,
            lambda c, s, cand=cand: feature_column(cand.heldout, s.feature, cand.mirrored),
        )
    xs, xh = selection.x.numpy(), scoring.x.numpy()
    valid = [c for c in range(len(selection.concepts)) if 0 < selection.targets[:, c].sum() < len(selection.targets)]
    oracle: list[FeatureScore | None] = [None] * len(selection.concepts)
    columns = {}
    for c in valid:
        direction = diff_in_means(xs, selection.targets[:, c])
        columns[c] = xh @ direction
        if scoring.targets[:, c].any() and not scoring.targets[:, c].all():
            oracle[c] = score_feature(xs @ direction, columns[c], selection.targets[:, c], scoring.targets[:, c])
    rows += by_step_rows({**base, "method": ORACLE_METHOD, "kind": ORACLE}, scoring, oracle, lambda c, s: columns[c])
    return rows


SUMMARY_KEYS = ["world", "pair", "scope", "family", "group", "attribute", "method", "kind"]


def summarize(alignment: pl.DataFrame) -> pl.DataFrame:
    """Mean F1 and AUROC over concepts per (world, pair, scope, family, group, attribute, method), with the
    standard error over concepts; "all" rows pool the attributes. Random rows average each concept over
    the draws first; `draw_sd` is the spread of the per-draw mean F1 over the draws."""
    if alignment.is_empty():
        return pl.DataFrame()
    keys = [k for k in SUMMARY_KEYS if k != "attribute"]
    extras = [c for c in ("splitting", "covered_recall") if c in alignment.columns]
    per_concept = alignment.group_by([*keys, "attribute", "concept"]).agg(
        pl.col("f1").mean(), pl.col("auroc").mean(), *[pl.col(c).mean() for c in extras]
    )
    draws = (
        alignment.filter(pl.col("draw").is_not_null()).group_by([*keys, "attribute", "draw"]).agg(pl.col("f1").mean())
    )
    pooled = per_concept.with_columns(pl.lit("all").alias("attribute"))
    draws_pooled = (
        alignment.filter(pl.col("draw").is_not_null())
        .group_by([*keys, "draw"])
        .agg(pl.col("f1").mean())
        .with_columns(pl.lit("all").alias("attribute"))
    )
    stats = [
        pl.len().alias("concepts"),
        pl.col("f1").mean().alias("mean_f1"),
        (pl.col("f1").std() / pl.len().sqrt()).alias("se_f1"),
        pl.col("auroc").mean().alias("mean_auroc"),
        *[pl.col(c).mean().alias(f"mean_{c}") for c in extras],
    ]
    summary = pl.concat([per_concept, pooled], how="diagonal").group_by(SUMMARY_KEYS).agg(stats)
    spread = (
        pl.concat([draws, draws_pooled.select(draws.columns)])
        .group_by(SUMMARY_KEYS)
        .agg(pl.col("f1").std().alias("draw_sd"), pl.len().alias("draws"))
    )
    return summary.join(spread, on=SUMMARY_KEYS, how="left").sort(SUMMARY_KEYS)


def floors_and_ceiling(summary: pl.DataFrame) -> pl.DataFrame:
    """Per (world, pair, scope, family, group, attribute): the highest floor (its method and F1) and the ceiling."""
    keys = [k for k in SUMMARY_KEYS if k not in ("method", "kind")]
    floors = (
        summary.filter(pl.col("kind").is_in(FLOOR_KINDS))
        .sort("mean_f1", descending=True)
        .group_by(keys, maintain_order=True)
        .agg(
            pl.col("method").first().alias("floor_method"),
            pl.col("mean_f1").first().alias("floor_f1"),
            pl.col("se_f1").first().alias("floor_se"),
        )
    )
    ceiling = summary.filter(pl.col("kind") == PROBE).group_by(keys).agg(pl.col("mean_f1").max().alias("ceiling_f1"))
    return floors.join(ceiling, on=keys, how="left")


def scoped(alignment: pl.DataFrame, scope: str = ALL_CELLS, family: str = GLOBAL) -> pl.DataFrame:
    return alignment.filter((pl.col("scope") == scope) & (pl.col("family") == family))
