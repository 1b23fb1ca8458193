"""SAE vs ITDA on the same hook, at the same size and sparsity, calibrated by a floor and a ceiling.

Reconstruction (held-out maps from the store): FVU, L0, dead fraction, fit time.
Concept alignment (toy world): studies.alignment_tables scores every method and floor per
ground-truth concept, with features, thresholds and probes chosen on selection (train-split)
prompts and every number measured on held-out prompts, in every frame of studies.concept_frames
(all cells; within group: object concepts on object cells, background on background cells; and
the concepts at one cell, row or column). Floors: raw channels, random directions (several draws),
the label-only fg/bg predictor and the base rate; ceiling: diff-in-means and a probe. The same
study runs on the hook's planted twin (studies.twin), with both dictionaries retrained there: the
positive control that says what the metric can detect at this hook.

Tables:
  compare_metrics     pair, method, kind, fvu, l0, dead_fraction, n, fit_seconds, (ITDA) threshold,
                      atoms_first_batch, atoms_after_first_batch, mean_auroc, mean_f1 (all cells, global),
                      mean_f1_sparse_k{1,2,4,8}, f1_share_of_probe, auroc_share_of_probe, selection_prompts,
                      scoring_prompts
  compare_alignment   world, pair, method, kind, draw, scope, family, group, concept, attribute, feature,
                      selection_auroc, threshold, auroc, f1, precision, recall, (dictionaries) splitting, covered_recall
  compare_alignment_summary  world, pair, scope, family, group, attribute ("all" pools them), method, kind,
                      concepts, mean_f1, se_f1, mean_auroc, mean_splitting, mean_covered_recall, draw_sd, draws
  compare_twin        pair, cell_share, concepts_share, noise_share, noise_std: the proportions the twin keeps
  compare_sparse_probing  world, pair, method, kind, concept, attribute, k, auroc, f1
  compare_alignment_by_t  world, pair, method, kind, concept, step, t, auroc, f1
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from . import twin
from .aggregates import number
from .alignment_tables import (
    BASE_RATE,
    DICTIONARY,
    LAYOUT,
    ORACLE,
    ORACLE_METHOD,
    PROBE,
    PROBE_METHOD,
    RANDOM,
    RAW,
    alignment_rows,
    candidate_sets,
    scoped,
    sparse_rows,
    step_rows,
    summarize,
)
from .concept_frames import FAMILIES, GLOBAL
from .concepts import dense_codes
from .labelled import HookTokens, labelled_set
from .run import Run

TOY, TWIN = "toy", "twin"  # the real hook's tokens, and its planted twin (studies.twin)


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


def _admission(meta: dict) -> dict:
    """ITDA's threshold and how its atoms arrived: a size chosen by the threshold shows atoms added
    after the first batch (or a size below the cap)."""
    added = meta.get("added_per_batch")
    if not added:
        return {}
    return {
        "threshold": float(meta["threshold"]),
        "atoms_first_batch": int(added[0]),
        "atoms_after_first_batch": int(sum(added[1:])),
    }


def summarize_alignment(alignment: pl.DataFrame, sparse: pl.DataFrame) -> dict[str, dict]:
    """method -> mean AUROC and F1 over concepts (all cells, global concepts, random draws averaged),
    k-sparse F1, and shares of the probe ceiling."""
    every = scoped(alignment)
    per_concept = every.group_by(["method", "concept"]).agg(pl.col("auroc").mean(), pl.col("f1").mean())
    means = per_concept.group_by("method").agg(
        pl.col("auroc").mean().alias("mean_auroc"), pl.col("f1").mean().alias("mean_f1")
    )
    summary = {row["method"]: dict(row) for row in means.iter_rows(named=True)}
    probe = summary.get(PROBE_METHOD)
    for row in summary.values():
        row.pop("method", None)
        if probe is not None:
            row["f1_share_of_probe"] = row["mean_f1"] / probe["mean_f1"] if probe["mean_f1"] else float("nan")
            above = probe["mean_auroc"] - 0.5
            row["auroc_share_of_probe"] = (row["mean_auroc"] - 0.5) / above if above > 0 else float("nan")
    if not sparse.is_empty():
        for (method, k), group in sparse.sort("k").group_by(["method", "k"], maintain_order=True):
            summary.setdefault(method, {})[f"mean_f1_sparse_k{k}"] = float(number(group["f1"].mean()))
    return summary


def _world_rows(
    run: Run, study, pair: str, world: str, selection: HookTokens, scoring: HookTokens, dictionaries: dict, n_atoms: int
) -> dict[str, list[dict]]:
    codes = {name: (dense_codes(d, selection.x), dense_codes(d, scoring.x)) for name, d in dictionaries.items()}
    candidates = candidate_sets(selection, scoring, codes, n_atoms, study.random_draws, run.config.seed)
    base = {"world": world, "pair": pair}
    families = FAMILIES if study.location_concepts else (GLOBAL,)
    ranks: dict = {}  # the candidates' selection ranks, computed once for the alignment and the per-step rows
    out = {
        "alignment": alignment_rows(
            base,
            selection,
            scoring,
            candidates,
            run.config.seed,
            families,
            ranks,
            progress=f"alignment {pair} ({world})" if run.progress else None,
        ),
        "sparse": [],
        "by_t": [],
    }
    if world == TOY:
        out["sparse"] = sparse_rows(base, selection, scoring, candidates, run.config.seed)
        out["by_t"] = step_rows(base, selection, scoring, candidates, ranks)
    return out


def _twin_rows(
    run: Run, study, pair: str, names: tuple[str, str], selection: HookTokens, scoring: HookTokens, n_atoms: int
) -> tuple[dict[str, list[dict]], dict]:
    """The pair's alignment on a planted twin of its hook, with both dictionaries retrained there."""
    seed = run.config.seed
    planted = twin.build(selection, seed + 7)
    twin_dictionaries = {}
    for name in names:
        entry = run.config.dictionary(name)
        tokens = min(entry.tokens, study.twin_tokens) if study.twin_tokens else entry.tokens
        twin_dictionaries[name] = twin.train_twin_dictionary(
            run.dictionary_spec(entry), planted, selection, tokens, entry.batch, seed + 100
        )
    rows = _world_rows(
        run,
        study,
        pair,
        TWIN,
        planted.tokens(selection, seed + 1),
        planted.tokens(scoring, seed + 2),
        twin_dictionaries,
        n_atoms,
    )
    shares = {
        "pair": pair,
        **{f"{part}_share": value for part, value in planted.proportions.shares.items()},
        "noise_std": planted.proportions.noise_std,
    }
    return rows, shares


def run_compare(run: Run) -> dict[str, pl.DataFrame]:
    from diffdict.dictionaries.metrics import evaluate

    study = run.config.studies.compare
    metric_rows: list[dict] = []
    twin_rows: list[dict] = []
    rows: dict[str, list[dict]] = {"alignment": [], "sparse": [], "by_t": []}
    toy = run.config.has_ground_truth
    for first, second in study.pairs:
        pair = f"{first} vs {second}"
        entry = run.config.dictionary(first)
        store = run.store(entry.model)
        held_out = store.tokens(
            store.select(
                entry.hook,
                branch=entry.branch,
                split="eval",
                eval_fraction=run.config.prompts.eval_fraction,
                split_seed=run.config.seed,
            )
        )
        pair_rows = []
        for method in (first, second):
            dictionary = run.dictionary(method)
            metrics = evaluate(dictionary, [held_out])
            pair_rows.append(
                {
                    "pair": pair,
                    "method": method,
                    "kind": DICTIONARY,
                    "architecture": run.config.dictionary(method).architecture,
                    "fvu": metrics["fvu"],
                    "l0": metrics["l0"],
                    "dead_fraction": metrics["dead_fraction"],
                    "n": int(dictionary.atoms.shape[0]),
                    "fit_seconds": run.fit_seconds(method),
                    **_admission(dictionary.meta),
                }
            )
        if toy:
            selection = labelled_set(run, entry.model, [entry.hook], "selection", study.selection_prompts)
            scoring = labelled_set(run, entry.model, [entry.hook], "scoring", study.prompts)
            sel_tokens, held_tokens = selection.tokens(entry.hook), scoring.tokens(entry.hook)
            n_atoms = study.random_directions or int(run.dictionary(first).atoms.shape[0])
            found = _world_rows(
                run,
                study,
                pair,
                TOY,
                sel_tokens,
                held_tokens,
                {name: run.dictionary(name) for name in (first, second)},
                n_atoms,
            )
            if study.twin:
                planted, shares = _twin_rows(run, study, pair, (first, second), sel_tokens, held_tokens, n_atoms)
                found["alignment"] += planted["alignment"]
                twin_rows.append(shares)
            for name in rows:
                rows[name] += found[name]
            toy_rows = pl.DataFrame(found["alignment"], infer_schema_length=None).filter(pl.col("world") == TOY)
            summary = summarize_alignment(toy_rows, pl.DataFrame(found["sparse"]))
            counts = {"selection_prompts": len(selection.prompts), "scoring_prompts": len(scoring.prompts)}
            for row in pair_rows:
                row.update(summary.get(row["method"], {}), **counts)
            for method, kind in (
                (RAW, RAW),
                (RANDOM, RANDOM),
                (LAYOUT, LAYOUT),
                (BASE_RATE, BASE_RATE),
                (ORACLE_METHOD, ORACLE),
                (PROBE_METHOD, PROBE),
            ):
                pair_rows.append(
                    {
                        "pair": pair,
                        "method": method,
                        "kind": kind,
                        "architecture": "baseline",
                        **summary.get(method, {}),
                        **counts,
                    }
                )
        metric_rows += pair_rows
    alignment = pl.DataFrame(rows["alignment"], infer_schema_length=None)
    return {
        "compare_metrics": pl.DataFrame(metric_rows, infer_schema_length=None),
        "compare_alignment": alignment,
        "compare_alignment_summary": summarize(alignment),
        "compare_twin": pl.DataFrame(twin_rows, infer_schema_length=None),
        "compare_sparse_probing": pl.DataFrame(rows["sparse"], infer_schema_length=None),
        "compare_alignment_by_t": pl.DataFrame(rows["by_t"], infer_schema_length=None),
    }


def plot_compare(run: Run, tables: dict[str, pl.DataFrame]) -> list[tuple[str, object]]:
    from diffdict.analysis.plots import bar_plot, line_plot, scatter_plot

    plots = []
    metrics = tables["compare_metrics"].filter(pl.col("kind") == DICTIONARY)
    if not metrics.is_empty():
        path = scatter_plot(
            metrics, "l0", "fvu", "method", run.plot_path("compare_fvu_l0"), "FVU against L0 per method"
        )
        plots.append(("SAE vs ITDA: FVU against L0 (held-out maps)", path))
    alignment = tables["compare_alignment"]
    for pair in alignment["pair"].unique(maintain_order=True).to_list() if not alignment.is_empty() else []:
        # the real hook's scene concepts over all cells: the location frames' thousands of concepts are in the
        # tables, and a bar per concept of them would be unreadable
        subset = scoped(alignment.filter((pl.col("pair") == pair) & (pl.col("world") == TOY)))
        safe = pair.replace(" ", "_")
        path = bar_plot(
            subset,
            "concept",
            "f1",
            "method",
            run.plot_path(f"compare_alignment_{safe}"),
            f"{pair}: held-out F1 per concept, all cells (feature and threshold chosen on train prompts; bars: ± 1 SE)",
        )
        plots.append((f"Concept alignment, {pair}: held-out F1, floor (random, raw) and ceiling (probe)", path))
    sparse = tables["compare_sparse_probing"]
    if not sparse.is_empty():
        mean = sparse.group_by(["pair", "method", "k"]).agg(pl.col("f1").mean()).sort("k")
        path = line_plot(
            mean,
            "k",
            "f1",
            "method",
            run.plot_path("compare_sparse_probing"),
            "k-sparse probing: mean held-out F1 over concepts",
        )
        plots.append(("k-sparse probing (features chosen on train prompts)", path))
    by_t = tables["compare_alignment_by_t"]
    if not by_t.is_empty() and by_t["step"].n_unique() > 1:
        mean = by_t.group_by(["method", "t"]).agg(pl.col("f1").mean()).sort("t")
        path = line_plot(
            mean, "t", "f1", "method", run.plot_path("compare_alignment_by_t"), "Mean held-out F1 against t (1 = noise)"
        )
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
            f"{f1(ORACLE_METHOD):.2f}, logistic probe {f1(PROBE_METHOD):.2f}."
        )
        k8 = best.get("mean_f1_sparse_k8")
        sentences.append(
            f"The best dictionary ({best['method']}) reaches {100 * best['f1_share_of_probe']:.0f}% of the "
            f"probe's F1" + (f"; with 8 features (k-sparse probing) {k8:.2f}." if k8 is not None else ".")
        )
    return " ".join(sentences)
