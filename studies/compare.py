"""SAE vs ITDA on the same hook, at the same size and sparsity, calibrated by a floor and a ceiling.

Reconstruction (held-out maps from the store): FVU, L0, dead fraction, fit time.
Concept alignment (toy world), per ground-truth concept and per method, with every choice
made on selection (train-split) prompts and every number measured on held-out prompts:
  methods   each dictionary (ReLU codes, one sign); the block's raw channels and random
            directions, as many as the dictionary has atoms (the floor; both signs); the
            concept's diff-in-means direction (the oracle single direction); a logistic
            probe on all channels (the ceiling)
  metrics   AUROC of the chosen feature; F1, precision and recall at the selection
            threshold; k-sparse probing (k = 1, 2, 4, 8; SAEBench's feature choice), so a
            concept split over several features is not scored as missed; per step (t)
  summary   mean over concepts, and the share of the probe's F1 (and of its AUROC above
            chance) that each method reaches

Tables:
  compare_metrics     pair, method, kind, fvu, l0, dead_fraction, n, fit_seconds, (ITDA) threshold,
                      atoms_first_batch, atoms_after_first_batch, mean_auroc, mean_f1,
                      mean_f1_sparse_k{1,2,4,8}, f1_share_of_probe, auroc_share_of_probe, selection_prompts, scoring_prompts
  compare_alignment   pair, method, kind, concept, attribute, feature, selection_auroc, threshold, auroc, f1, precision, recall
  compare_sparse_probing  pair, method, kind, concept, attribute, k, auroc, f1
  compare_alignment_by_t  pair, method, kind, concept, step, t, auroc, f1
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from .alignment import (SPARSE_PROBE_KS, FeatureScore, diff_in_means, f1_at, logistic_scores, score_feature,
                        select_and_score, sparse_probe)
from .concepts import auroc_matrix, dense_codes
from .labelled import HookTokens, labelled_set
from .run import Run

# Method kinds: one palette and one legend order across the report.
DICTIONARY, RAW, RANDOM, ORACLE, PROBE = "dictionary", "raw channels", "random", "oracle", "probe"
ORACLE_METHOD, PROBE_METHOD = "diff-in-means", "logistic probe"


@dataclass
class AlignmentData:
    """Held-out prompts with their images and one hook's labelled tokens (what the atlas reads)."""

    x: torch.Tensor  # (N, d), rows ordered (step, prompt, cell)
    concepts: list[str]
    targets: np.ndarray  # (N, C) bool
    grid: tuple[int, int]
    prompts: list
    images: list


def alignment_data(run: Run, model: str, hook: str, count: int) -> AlignmentData:
    """Up to `count` held-out (scoring) prompts of `model`, generated with capture at `hook`."""
    scoring = labelled_set(run, model, [hook], "scoring", count)
    tokens = scoring.tokens(hook)
    return AlignmentData(tokens.x, tokens.concepts, tokens.targets, tokens.grid, scoring.prompts, scoring.images)


def random_directions(count: int, d: int, seed: int) -> torch.Tensor:
    """(count, d) unit directions, seeded."""
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(count, d, generator=generator), dim=-1)


def baseline_scores(x: torch.Tensor, directions: torch.Tensor) -> np.ndarray:
    """(N, 2F) projections on each direction with both signs: a channel may predict by its absence."""
    projections = (x @ directions.T).numpy()
    return np.concatenate([projections, -projections], axis=1)


def candidate_scores(run: Run, method: str, tokens: HookTokens, n_atoms: int) -> np.ndarray:
    """(N, F) scores of every candidate feature of a dictionary or a dense baseline."""
    if method == RAW:
        return baseline_scores(tokens.x, torch.eye(tokens.x.shape[1]))
    if method == RANDOM:
        return baseline_scores(tokens.x, random_directions(n_atoms, tokens.x.shape[1], run.config.seed))
    return dense_codes(run.dictionary(method), tokens.x)


def _admission(meta: dict) -> dict:
    """ITDA's threshold and how its atoms arrived: a size chosen by the threshold shows atoms added
    after the first batch (or a size below the cap)."""
    added = meta.get("added_per_batch")
    if not added:
        return {}
    return {"threshold": float(meta["threshold"]), "atoms_first_batch": int(added[0]),
            "atoms_after_first_batch": int(sum(added[1:]))}


def _score_rows(base: dict, tokens_concepts: list[str], scores: list[FeatureScore | None]) -> list[dict]:
    return [{**base, "concept": concept, "attribute": concept.split(":")[0], "feature": s.feature,
             "selection_auroc": s.selection_auroc, "threshold": s.threshold, "auroc": s.auroc, "f1": s.f1,
             "precision": s.precision, "recall": s.recall}
            for concept, s in zip(tokens_concepts, scores) if s is not None]


def _valid_concepts(selection: HookTokens, scoring: HookTokens) -> list[int]:
    both = lambda t: t.any(0) & ~t.all(0)  # noqa: E731
    return [c for c in range(len(selection.concepts)) if both(selection.targets)[c] and both(scoring.targets)[c]]


def dense_method_scores(selection: HookTokens, scoring: HookTokens, concepts: list[int], seed: int,
                        method: str) -> tuple[list[FeatureScore | None], dict[int, np.ndarray]]:
    """The oracle (diff-in-means direction) or the ceiling (logistic probe), per concept:
    (scores, concept -> held-out score column (N,))."""
    xs, xh = selection.x.numpy(), scoring.x.numpy()
    out: list[FeatureScore | None] = [None] * len(selection.concepts)
    columns: dict[int, np.ndarray] = {}
    for c in concepts:
        target_s, target_h = selection.targets[:, c], scoring.targets[:, c]
        if method == ORACLE_METHOD:
            direction = diff_in_means(xs, target_s)
            sel, held = xs @ direction, xh @ direction
        else:
            sel, held = logistic_scores(xs, target_s, xh, seed)
        out[c] = score_feature(sel, held, target_s, target_h)
        columns[c] = held
    return out, columns


def by_step_rows(base: dict, scoring: HookTokens, scores: list[FeatureScore | None],
                 column_of: Callable[[int, FeatureScore], np.ndarray]) -> list[dict]:
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
            rows.append({**base, "concept": scoring.concepts[c], "step": int(step), "t": float(scoring.t[at][0]),
                         "auroc": float(auroc_matrix(values[:, None], target[:, None])[0, 0]), "f1": f1})
    return rows


def alignment_tables(run: Run, pair: str, methods: list[str], selection: HookTokens, scoring: HookTokens,
                     n_atoms: int) -> dict[str, list[dict]]:
    """Rows of the alignment, sparse-probing and per-step tables for one pair's hook."""
    concepts = _valid_concepts(selection, scoring)
    keep = np.zeros(len(selection.concepts), dtype=bool)
    keep[concepts] = True
    sel_targets = np.where(keep, selection.targets, False)
    out: dict[str, list[dict]] = {"alignment": [], "sparse": [], "by_t": []}
    for method in [*methods, RAW, RANDOM]:
        kind = method if method in (RAW, RANDOM) else DICTIONARY
        base = {"pair": pair, "method": method, "kind": kind}
        sel_scores = candidate_scores(run, method, selection, n_atoms)
        held_scores = candidate_scores(run, method, scoring, n_atoms)
        scores = select_and_score(sel_scores, sel_targets, held_scores, scoring.targets)
        out["alignment"] += _score_rows(base, selection.concepts, scores)
        out["by_t"] += by_step_rows(base, scoring, scores, lambda c, s: held_scores[:, s.feature])
        for c in concepts:
            for k in SPARSE_PROBE_KS:
                result = sparse_probe(sel_scores, selection.targets[:, c], held_scores, scoring.targets[:, c], k,
                                      run.config.seed)
                out["sparse"].append({**base, "concept": selection.concepts[c],
                                      "attribute": selection.concepts[c].split(":")[0], "k": k,
                                      "auroc": result["auroc"], "f1": result["f1"]})
    for method, kind in ((ORACLE_METHOD, ORACLE), (PROBE_METHOD, PROBE)):
        scores, columns = dense_method_scores(selection, scoring, concepts, run.config.seed, method)
        base = {"pair": pair, "method": method, "kind": kind}
        out["alignment"] += _score_rows(base, selection.concepts, scores)
        out["by_t"] += by_step_rows(base, scoring, scores, lambda c, s, columns=columns: columns[c])
    return out


def summarize_alignment(alignment: pl.DataFrame, sparse: pl.DataFrame) -> dict[str, dict]:
    """method -> mean AUROC and F1 over concepts, k-sparse F1, and shares of the probe ceiling."""
    means = alignment.group_by("method").agg(pl.col("auroc").mean().alias("mean_auroc"),
                                             pl.col("f1").mean().alias("mean_f1"))
    summary = {row["method"]: dict(row) for row in means.iter_rows(named=True)}
    probe = summary.get(PROBE_METHOD)
    for method, row in summary.items():
        row.pop("method", None)
        if probe is not None:
            row["f1_share_of_probe"] = row["mean_f1"] / probe["mean_f1"] if probe["mean_f1"] else float("nan")
            above = probe["mean_auroc"] - 0.5
            row["auroc_share_of_probe"] = (row["mean_auroc"] - 0.5) / above if above > 0 else float("nan")
    if not sparse.is_empty():
        for (method, k), group in sparse.sort("k").group_by(["method", "k"], maintain_order=True):
            summary.setdefault(method, {})[f"mean_f1_sparse_k{k}"] = float(group["f1"].mean())
    return summary


def run_compare(run: Run) -> dict[str, pl.DataFrame]:
    from diffdict.dictionaries.metrics import evaluate

    study = run.config.studies.compare
    metric_rows: list[dict] = []
    rows: dict[str, list[dict]] = {"alignment": [], "sparse": [], "by_t": []}
    toy = run.config.has_ground_truth
    for first, second in study.pairs:
        pair = f"{first} vs {second}"
        entry = run.config.dictionary(first)
        store = run.store(entry.model)
        held_out = store.tokens(store.select(entry.hook, branch=entry.branch, split="eval",
                                             eval_fraction=run.config.prompts.eval_fraction, split_seed=run.config.seed))
        pair_rows = []
        for method in (first, second):
            dictionary = run.dictionary(method)
            metrics = evaluate(dictionary, [held_out])
            pair_rows.append({"pair": pair, "method": method, "kind": DICTIONARY,
                              "architecture": run.config.dictionary(method).architecture,
                              "fvu": metrics["fvu"], "l0": metrics["l0"], "dead_fraction": metrics["dead_fraction"],
                              "n": int(dictionary.atoms.shape[0]), "fit_seconds": run.fit_seconds(method),
                              **_admission(dictionary.meta)})
        if toy:
            selection = labelled_set(run, entry.model, [entry.hook], "selection", study.selection_prompts)
            scoring = labelled_set(run, entry.model, [entry.hook], "scoring", study.prompts)
            n_atoms = study.random_directions or int(run.dictionary(first).atoms.shape[0])
            found = alignment_tables(run, pair, [first, second], selection.tokens(entry.hook),
                                     scoring.tokens(entry.hook), n_atoms)
            for name in rows:
                rows[name] += found[name]
            summary = summarize_alignment(pl.DataFrame(found["alignment"]), pl.DataFrame(found["sparse"]))
            counts = {"selection_prompts": len(selection.prompts), "scoring_prompts": len(scoring.prompts)}
            for row in pair_rows:
                row.update(summary.get(row["method"], {}), **counts)
            for method, kind in ((RAW, RAW), (RANDOM, RANDOM), (ORACLE_METHOD, ORACLE), (PROBE_METHOD, PROBE)):
                pair_rows.append({"pair": pair, "method": method, "kind": kind, "architecture": "baseline",
                                  **summary.get(method, {}), **counts})
        metric_rows += pair_rows
    return {"compare_metrics": pl.DataFrame(metric_rows, infer_schema_length=None),
            "compare_alignment": pl.DataFrame(rows["alignment"], infer_schema_length=None),
            "compare_sparse_probing": pl.DataFrame(rows["sparse"], infer_schema_length=None),
            "compare_alignment_by_t": pl.DataFrame(rows["by_t"], infer_schema_length=None)}


def plot_compare(run: Run, tables: dict[str, pl.DataFrame]) -> list[tuple[str, object]]:
    from diffdict.analysis.plots import bar_plot, line_plot, scatter_plot

    plots = []
    metrics = tables["compare_metrics"].filter(pl.col("kind") == DICTIONARY)
    if not metrics.is_empty():
        path = scatter_plot(metrics, "l0", "fvu", "method", run.plot_path("compare_fvu_l0"), "FVU against L0 per method")
        plots.append(("SAE vs ITDA: FVU against L0 (held-out maps)", path))
    alignment = tables["compare_alignment"]
    for pair in alignment["pair"].unique(maintain_order=True).to_list() if not alignment.is_empty() else []:
        subset = alignment.filter(pl.col("pair") == pair)
        safe = pair.replace(" ", "_")
        path = bar_plot(subset, "concept", "f1", "method", run.plot_path(f"compare_alignment_{safe}"),
                        f"{pair}: held-out F1 per concept (feature and threshold chosen on train prompts)")
        plots.append((f"Concept alignment, {pair}: held-out F1, floor (random, raw) and ceiling (probe)", path))
    sparse = tables["compare_sparse_probing"]
    if not sparse.is_empty():
        mean = sparse.group_by(["pair", "method", "k"]).agg(pl.col("f1").mean()).sort("k")
        path = line_plot(mean, "k", "f1", "method", run.plot_path("compare_sparse_probing"),
                         "k-sparse probing: mean held-out F1 over concepts")
        plots.append(("k-sparse probing (features chosen on train prompts)", path))
    by_t = tables["compare_alignment_by_t"]
    if not by_t.is_empty() and by_t["step"].n_unique() > 1:
        mean = by_t.group_by(["method", "t"]).agg(pl.col("f1").mean()).sort("t")
        path = line_plot(mean, "t", "f1", "method", run.plot_path("compare_alignment_by_t"),
                         "Mean held-out F1 against t (1 = noise)")
        plots.append(("Concept alignment per denoising step", path))
    return plots


def summarize_compare(run: Run, tables: dict[str, pl.DataFrame]) -> str:
    """Two or three sentences with the headline numbers, from the tables."""
    metrics = tables["compare_metrics"]
    sentences = []
    for (pair,), rows in metrics.group_by(["pair"], maintain_order=True):
        by_method = {row["method"]: row for row in rows.iter_rows(named=True)}
        dictionaries = [row for row in by_method.values() if row["kind"] == DICTIONARY]
        recon = ", ".join(f"{r['method']} FVU {r['fvu']:.3f} at L0 {r['l0']:.1f}" for r in dictionaries)
        sentences.append(f"{pair}: {recon} on held-out maps.")
        probe = by_method.get(PROBE_METHOD)
        if probe is None or probe.get("mean_f1") is None:
            continue
        f1 = lambda name: by_method[name]["mean_f1"]  # noqa: E731
        best = max(dictionaries, key=lambda r: r["mean_f1"])
        sentences.append(
            f"Concept alignment on {probe['scoring_prompts']} held-out prompts (chosen on {probe['selection_prompts']} "
            f"train prompts), mean F1 over concepts: "
            + ", ".join(f"{r['method']} {r['mean_f1']:.2f}" for r in dictionaries)
            + f"; floor: random {f1(RANDOM):.2f}, raw channels {f1(RAW):.2f}; ceiling: diff-in-means "
            f"{f1(ORACLE_METHOD):.2f}, logistic probe {f1(PROBE_METHOD):.2f}.")
        k8 = best.get("mean_f1_sparse_k8")
        sentences.append(f"The best dictionary ({best['method']}) reaches {100 * best['f1_share_of_probe']:.0f}% of the "
                         f"probe's F1" + (f"; with 8 features (k-sparse probing) {k8:.2f}." if k8 is not None else "."))
    return " ".join(sentences)
