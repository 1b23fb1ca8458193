"""Layout from early steps (Tinaz et al.): is the final image's layout readable before it is drawn?

At every denoising step, the hook's activations predict the final image's layout per grid
cell: object or background (foreground IoU), and which of the caption's objects
(object IoU, the mean over the caption's objects). Predictors, fit on selection (train-split)
prompts per step and scored on held-out prompts:
  probe       a logistic regression on all channels (binary for the foreground, multinomial
              background / first object / second object for the objects)
  dictionary  each listed dictionary's single best feature for the foreground, with its
              selection threshold (foreground only)
The truth is the judge's reading of the final image (its objects' pixel masks, matched to
the caption's objects). Baselines, the same for every step:
  caption alone  the caption's objects drawn at their anchor positions: what the text says
  other seed     the judged layout of the same caption generated from another seed

Table layout: model, hook, method, kind, step, t, iou_foreground, iou_objects, prompts, se_vs_baseline (the
standard error of the per-prompt difference from the stronger baseline, on the same prompts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import polars as pl

from .alignment import best_f1_threshold, logistic_scores
from .concepts import auroc_matrix, dense_codes
from .labelled import HookTokens, labelled_set
from .run import Run

PROBE, CAPTION, OTHER_SEED = "probe", "caption alone", "other seed"


def cell_layout(masks: Sequence[np.ndarray | None], grid: tuple[int, int]) -> np.ndarray:
    """(h*w,) int: 0 = background, i + 1 = the i-th object, for cells at least half covered by it.

    masks: one (H, W) bool pixel mask per caption object (None when the object is missing).
    """
    h, w = grid
    layout = np.zeros(h * w, dtype=np.int64)
    best = np.zeros(h * w)
    for i, mask in enumerate(masks):
        if mask is None:
            continue
        size = mask.shape[0]
        share = mask.reshape(h, size // h, w, size // w).mean(axis=(1, 3)).reshape(-1)
        wins = (share >= 0.5) & (share > best)
        layout[wins], best[wins] = i + 1, share[wins]
    return layout


def judged_masks(scene, image) -> list[np.ndarray | None]:
    """The judge's pixel mask of each caption object in an image (None where it found none)."""
    from diffdict.toyworld.judge import judge, match_objects

    return [o.mask if o is not None else None for o in match_objects(scene, judge(image).objects)]


def caption_masks(scene) -> list[np.ndarray]:
    """Each caption object drawn at its anchor: the layout the text alone gives."""
    from diffdict.toyworld.render import object_mask
    from diffdict.toyworld.scenes import ANCHORS

    return [
        object_mask(dataclasses.replace(o, cx=ANCHORS[o.position][0], cy=ANCHORS[o.position][1])).astype(bool)
        for o in scene.objects
    ]


def iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two boolean cell masks; two empty masks agree fully."""
    union = (predicted | truth).sum()
    return float((predicted & truth).sum() / union) if union else 1.0


def layout_ious(predicted: np.ndarray, truth: np.ndarray, objects: int) -> tuple[float, float]:
    """(foreground IoU, mean object IoU) of one prompt's cell layouts (h*w,) int."""
    foreground = iou(predicted > 0, truth > 0)
    per_object = [iou(predicted == i + 1, truth == i + 1) for i in range(objects)]
    return foreground, float(np.mean(per_object)) if per_object else float("nan")


def prompt_ious(predicted: np.ndarray, truth: np.ndarray, prompts: list) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt (foreground, object) IoU, each (prompts,); predicted and truth (prompts, h*w) int."""
    pairs = [layout_ious(predicted[i], truth[i], len(p.scene.objects)) for i, p in enumerate(prompts)]
    return np.array([a for a, _ in pairs], dtype=float), np.array([b for _, b in pairs], dtype=float)


def paired_se(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of the mean per-prompt difference a - b."""
    return float(np.std(a - b, ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("inf")


def _step_rows(tokens: HookTokens, step: int) -> HookTokens:
    return tokens.rows(tokens.step == step)


def probe_layout(selection: HookTokens, sel_truth: np.ndarray, scoring: HookTokens, seed: int) -> np.ndarray:
    """(prompts, h*w) predicted layout of the scoring tokens of one step, from probes fit on selection."""
    from sklearn.linear_model import LogisticRegression

    xs, xh = selection.x.numpy(), scoring.x.numpy()
    labels = sel_truth[selection.prompt_index, selection.location]
    foreground_train, foreground_test = logistic_scores(xs, labels > 0, xh, seed)
    threshold, _ = best_f1_threshold(foreground_train, labels > 0)
    predicted = np.zeros(len(xh), dtype=np.int64)
    is_object = foreground_test > threshold
    if len(np.unique(labels[labels > 0])) > 1:
        mean, scale = xs.mean(0), xs.std(0) + 1e-6
        which = LogisticRegression(max_iter=300).fit((xs[labels > 0] - mean) / scale, labels[labels > 0])
        predicted[is_object] = which.predict((xh[is_object] - mean) / scale)
    else:
        predicted[is_object] = 1
    return predicted.reshape(-1, scoring.grid[0] * scoring.grid[1])


def feature_layout(sel_codes: np.ndarray, sel_foreground: np.ndarray, held_codes: np.ndarray, cells: int) -> np.ndarray:
    """(prompts, h*w) foreground predicted by the single best feature (chosen and thresholded on selection)."""
    auc = np.nan_to_num(auroc_matrix(sel_codes, sel_foreground[:, None])[:, 0], nan=-np.inf)
    feature = int(np.argmax(auc))
    threshold, _ = best_f1_threshold(sel_codes[:, feature], sel_foreground)
    return (held_codes[:, feature] > threshold).astype(np.int64).reshape(-1, cells)


def run_layout(run: Run) -> dict[str, pl.DataFrame]:
    study = run.config.studies.layout
    rows = []
    seed = run.study_seed
    for model in study.models:
        hooks = study.hooks or run.config.hooks_of(model)
        selection = labelled_set(run, model, hooks, "selection", study.selection_prompts)
        scoring = labelled_set(run, model, hooks, "scoring", study.prompts)
        other = run.generate(model, [p.text for p in scoring.prompts], [seed + 1] * len(scoring.prompts)).images
        sel_masks = [judged_masks(p.scene, image) for p, image in zip(selection.prompts, selection.images)]
        held_masks = [judged_masks(p.scene, image) for p, image in zip(scoring.prompts, scoring.images)]
        other_masks = [judged_masks(p.scene, image) for p, image in zip(scoring.prompts, other)]
        dictionaries = [n for n in study.dictionaries if run.config.dictionary(n).model == model]
        for hook in hooks:
            sel_tokens, held_tokens = selection.tokens(hook), scoring.tokens(hook)
            grid = held_tokens.grid
            sel_truth = np.stack([cell_layout(m, grid) for m in sel_masks])
            truth = np.stack([cell_layout(m, grid) for m in held_masks])
            base = {"model": model, "hook": hook, "prompts": len(scoring.prompts)}
            baselines = {}
            for method, masks in (
                (CAPTION, [caption_masks(p.scene) for p in scoring.prompts]),
                (OTHER_SEED, other_masks),
            ):
                predicted = np.stack([cell_layout(m, grid) for m in masks])
                fg, obj = prompt_ious(predicted, truth, scoring.prompts)
                baselines[method] = fg
                rows.append(
                    {
                        **base,
                        "method": method,
                        "kind": "baseline",
                        "step": None,
                        "t": None,
                        "iou_foreground": float(fg.mean()),
                        "iou_objects": float(np.nanmean(obj)),
                    }
                )
            reference = max(baselines.values(), key=np.mean)  # the stronger baseline, per prompt
            codes = {
                n: (dense_codes(run.dictionary(n), sel_tokens.x), dense_codes(run.dictionary(n), held_tokens.x))
                for n in dictionaries
                if run.config.dictionary(n).hook == hook
            }
            for step in np.unique(held_tokens.step):
                at_sel, at_held = sel_tokens.step == step, held_tokens.step == step
                sel_step, held_step = sel_tokens.rows(at_sel), held_tokens.rows(at_held)
                t = float(held_step.t[0])
                fg, obj = prompt_ious(
                    probe_layout(sel_step, sel_truth, held_step, run.config.seed), truth, scoring.prompts
                )
                rows.append(
                    {
                        **base,
                        "method": PROBE,
                        "kind": "probe",
                        "step": int(step),
                        "t": t,
                        "iou_foreground": float(fg.mean()),
                        "iou_objects": float(np.nanmean(obj)),
                        "se_vs_baseline": paired_se(fg, reference),
                    }
                )
                sel_foreground = sel_truth[sel_step.prompt_index, sel_step.location] > 0
                for name, (sel_codes, held_codes) in codes.items():
                    predicted = feature_layout(
                        sel_codes[at_sel], sel_foreground, held_codes[at_held], grid[0] * grid[1]
                    )
                    fg, _ = prompt_ious(predicted, truth, scoring.prompts)
                    rows.append(
                        {
                            **base,
                            "method": name,
                            "kind": "dictionary",
                            "step": int(step),
                            "t": t,
                            "iou_foreground": float(fg.mean()),
                            "iou_objects": None,
                            "se_vs_baseline": paired_se(fg, reference),
                        }
                    )
    return {"layout": pl.DataFrame(rows, infer_schema_length=None)}


def plot_layout(run: Run, tables: dict[str, pl.DataFrame]) -> list[tuple[str, object]]:
    from diffdict.analysis.plots import lines_with_references

    table = tables["layout"]
    plots = []
    for (model, hook), group in table.group_by(["model", "hook"], maintain_order=True):
        curves = group.filter(pl.col("step").is_not_null()).sort("t")
        references = {
            row["method"]: row["iou_foreground"] for row in group.filter(pl.col("step").is_null()).iter_rows(named=True)
        }
        path = lines_with_references(
            curves,
            "t",
            "iou_foreground",
            "method",
            references,
            run.plot_path(f"layout_{model}_{hook}".replace("/", "_")),
            f"{model} {hook}: final layout predicted at each step",
            xlabel="t of the step (1 = pure noise)",
            ylabel="foreground IoU with the final image",
            invert_x=True,
        )
        plots.append((f"Layout from early steps, {model} {hook}: IoU against t, baselines as lines", path))
    return plots


def summarize_layout(run: Run, tables: dict[str, pl.DataFrame]) -> str:
    """Step-0 and best-step probe IoU per hook beside the caption and other-seed baselines."""
    table = tables["layout"]
    sentences = []
    for (model, hook), group in table.group_by(["model", "hook"], maintain_order=True):
        probe = group.filter(pl.col("method") == PROBE).sort("step")
        if probe.is_empty():
            continue
        first, best = probe.row(0, named=True), probe.sort("iou_foreground", descending=True).row(0, named=True)
        base = {
            r["method"]: r["iou_foreground"] for r in group.filter(pl.col("kind") == "baseline").iter_rows(named=True)
        }
        sentences.append(
            f"{model} {hook}: a probe predicts the final foreground at step 0 (t = {first['t']:.2f}) with IoU "
            f"{first['iou_foreground']:.2f}, at best {best['iou_foreground']:.2f} (step {best['step']}); the caption "
            f"alone gives {base.get(CAPTION, float('nan')):.2f}, another seed {base.get(OTHER_SEED, float('nan')):.2f} "
            f"({first['prompts']} held-out prompts)."
        )
    return " ".join(sentences)
