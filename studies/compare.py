"""SAE vs ITDA on the same hook, at the same size and sparsity, with baselines.

Reconstruction (held-out maps from the store): FVU, L0, dead fraction, fit time.
Concept alignment (toy world): for every ground-truth concept the best single feature's
AUROC at predicting it per location, and the share of concepts with a feature above 0.9.
Baselines in the same tables: the block's raw channels and random directions (both signs).

Tables:
  compare_metrics     pair, method, fvu, l0, dead_fraction, fit_seconds, concepts_above_0_9, mean_best_auroc
  compare_alignment   pair, method, concept, attribute, best_auroc, best_feature
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from .concepts import auroc_matrix, concept_matrix, dense_codes, location_concepts
from .run import Run

ALIGNED = 0.9


@dataclass
class AlignmentData:
    """Held-out prompts generated with capture: tokens and (toy world) their concepts, per location."""

    x: torch.Tensor  # (N, d) tokens: every step of the cond branch, every location, every prompt
    concepts: list[str]
    targets: np.ndarray  # (N, C) bool
    prompt_index: np.ndarray  # (N,) index into `prompts`
    location: np.ndarray  # (N,) row-major cell index on the grid
    grid: tuple[int, int]
    prompts: list
    images: list


def alignment_data(run: Run, model: str, hook: str, count: int) -> AlignmentData:
    """Generate up to `count` held-out prompts on `model`; label every hook location (toy world)."""
    key = ("alignment", model, hook, count)
    if key in run.cache:
        return run.cache[key]
    ids = run.eval_prompt_ids(model)[:count]
    prompts = [run.prompts[i] for i in ids]
    if not prompts:
        raise ValueError(f"no held-out prompts for {model!r}: raise prompts.count or prompts.eval_fraction")
    gen = run.generate(model, [p.text for p in prompts], [run.config.prompts.seeds[0]] * len(prompts), hooks=[hook])
    maps = gen.stacked(hook, "cond")  # (steps, batch, h, w, d)
    steps, batch, h, w, d = maps.shape
    # Real-model prompts have no ground truth: their tokens come without concepts.
    toy = all(p.scene is not None for p in prompts)
    labels_per_prompt = [location_concepts(p.scene, (h, w)) if toy else [set()] * (h * w) for p in prompts]
    labels = [labels_per_prompt[b][cell] for _ in range(steps) for b in range(batch) for cell in range(h * w)]
    concepts, targets = concept_matrix(labels)
    data = AlignmentData(
        x=maps.reshape(-1, d).float(), concepts=concepts, targets=targets,
        prompt_index=np.tile(np.repeat(np.arange(batch), h * w), steps),
        location=np.tile(np.arange(h * w), steps * batch), grid=(h, w), prompts=prompts, images=gen.images,
    )
    run.cache[key] = data
    return data


def best_alignment(scores: np.ndarray, data: AlignmentData) -> tuple[np.ndarray, np.ndarray]:
    """(best AUROC per concept (C,), index of the best feature per concept (C,))."""
    auc = auroc_matrix(scores, data.targets)  # (F, C)
    filled = np.where(np.isnan(auc), -np.inf, auc)
    best = filled.argmax(axis=0)
    return auc[best, np.arange(auc.shape[1])], best


def _baseline_scores(x: torch.Tensor, method: str, count: int, seed: int) -> np.ndarray:
    if method == "raw channels":
        directions = torch.eye(x.shape[1])
    else:
        generator = torch.Generator().manual_seed(seed)
        directions = torch.nn.functional.normalize(torch.randn(count, x.shape[1], generator=generator), dim=-1)
    projections = (x @ directions.T).numpy()
    return np.concatenate([projections, -projections], axis=1)  # both signs: a channel may predict by its absence


def run_compare(run: Run) -> dict[str, pl.DataFrame]:
    from dictionaries.metrics import evaluate

    study = run.config.studies.compare
    metric_rows, alignment_rows = [], []
    toy = run.config.prompts.source == "toyworld"
    for first, second in study.pairs:
        pair = f"{first} vs {second}"
        entry = run.config.dictionary(first)
        store = run.store(entry.model)
        prompts = run.config.prompts
        rows = store.select(entry.hook, branch=entry.branch, split="eval", eval_fraction=prompts.eval_fraction,
                            split_seed=run.config.seed)
        held_out = store.tokens(rows)
        data = alignment_data(run, entry.model, entry.hook, study.prompts) if toy else None
        methods = {name: run.dictionary(name) for name in (first, second)}
        for method, dictionary in methods.items():
            metrics = evaluate(dictionary, [held_out])
            row = {"pair": pair, "method": method, "architecture": run.config.dictionary(method).architecture,
                   "fvu": metrics["fvu"], "l0": metrics["l0"], "dead_fraction": metrics["dead_fraction"],
                   "n": int(dictionary.atoms.shape[0]), "fit_seconds": run.fit_seconds(method)}
            if data is not None:
                best, feature = best_alignment(dense_codes(dictionary, data.x), data)
                row.update(_alignment_summary(best))
                alignment_rows += _alignment_rows(pair, method, data, best, feature)
            metric_rows.append(row)
        if data is not None:
            count = study.random_directions or int(methods[first].atoms.shape[0])
            for method in ("raw channels", "random directions"):
                best, feature = best_alignment(_baseline_scores(data.x, method, count, run.config.seed), data)
                metric_rows.append({"pair": pair, "method": method, "architecture": "baseline",
                                    **_alignment_summary(best)})
                alignment_rows += _alignment_rows(pair, method, data, best, feature)
    return {"compare_metrics": pl.DataFrame(metric_rows, infer_schema_length=None),
            "compare_alignment": pl.DataFrame(alignment_rows)}


def _alignment_summary(best: np.ndarray) -> dict:
    valid = best[~np.isnan(best)]
    return {"concepts_above_0_9": float((valid > ALIGNED).mean()) if valid.size else float("nan"),
            "mean_best_auroc": float(valid.mean()) if valid.size else float("nan")}


def _alignment_rows(pair: str, method: str, data: AlignmentData, best: np.ndarray, feature: np.ndarray) -> list[dict]:
    return [{"pair": pair, "method": method, "concept": concept, "attribute": concept.split(":")[0],
             "best_auroc": float(best[i]), "best_feature": int(feature[i])}
            for i, concept in enumerate(data.concepts) if not np.isnan(best[i])]


def plot_compare(run: Run, tables: dict[str, pl.DataFrame]) -> list[tuple[str, object]]:
    from analysis.plots import bar_plot, scatter_plot

    plots = []
    metrics = tables["compare_metrics"].filter(pl.col("architecture") != "baseline")
    if not metrics.is_empty():
        path = scatter_plot(metrics, "l0", "fvu", "method", run.plot_path("compare_fvu_l0"), "FVU against L0 per method")
        plots.append(("SAE vs ITDA: FVU against L0 (held-out maps)", path))
    alignment = tables["compare_alignment"]
    for pair in alignment["pair"].unique(maintain_order=True).to_list() if not alignment.is_empty() else []:
        subset = alignment.filter(pl.col("pair") == pair)
        safe = pair.replace(" ", "_")
        path = bar_plot(subset, "concept", "best_auroc", "method", run.plot_path(f"compare_alignment_{safe}"),
                        f"{pair}: best single-feature AUROC per concept")
        plots.append((f"Concept alignment, {pair}", path))
    return plots
