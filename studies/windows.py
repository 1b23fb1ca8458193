"""Timestep-window interventions: does composition form early and style later, and in which block?

For each held-out toy scene and each edited attribute (colour, shape, position, background,
style) the study plans the edit (studies/edits.py), picks each dictionary's features for the
source and target concepts on selection (train-split) prompts (distinct: two values of one
attribute never share a feature; the next best is taken and its rank recorded), and edits
the hook(s) with each paper's edit style inside one time window at a time (early t in
[0.6, 1], middle [0.2, 0.6], late [0, 0.2] by default):

  sdlens         add the target atom x strength x its mean activation on the target region,
                 switch the source feature off there (Surkov et al.)
  tinaz_spatial  set the target feature to strength x its mean activation inside the region and
                 zero it outside; switch the source off (Tinaz et al., spatial)
  tinaz_global   add the target feature everywhere at norm_strength x the local code norm;
                 switch the source off (Tinaz et al., global)
  flux_add       add the unit target atom scaled to token_norm_strength x the mean token norm
                 on the region (Shabalin et al.)

Beside them, in the same window and hook and with the sdlens edit's norm: the concepts'
diff-in-means direction (oracle, the ceiling) and a random direction (the floor).
A "a+b" entry edits both dictionaries' hooks at once.

Toy models are judged strictly (studies/edits.py: success, clean success, preservation).
Real models (no judge) draw the same captions and are scored with CLIP: success when the
edited image is closer to the edited caption than to the original one, preservation = CLIP
image similarity to the unedited image; they get no oracle or random rows (no ground truth
at their cells).

Table windows: scoring, model, hook, dictionary, edit, style, kind, window, t_low, t_high,
steps_in_window, split, prompt_id, success, clean_success, preservation, target_before, feature_rank.
Split "score" rows are the held-out prompts; split "tune" rows are the oracle's edits of train-split
tuning prompts, on which claims choose the hook per attribute. A window that holds
no step of a model (late, for Flux's 4 steps) has no rows for it; one that holds no step of any
edited model is refused at check (studies/kinds/windows.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from .alignment import distinct_features
from .concepts import dense_codes
from .config import EDIT_STYLES
from .edits import (
    ORACLE,
    RANDOM,
    EditPlan,
    Variant,
    concept_means,
    judge_edit,
    plans_for,
    region_direction,
    region_seed,
)
from .edits import (
    interventions_for as direction_interventions,
)
from .labelled import labelled_set
from .run import Run

if TYPE_CHECKING:
    from diffdict.dictionaries.base import Dictionary

GENERATE_LIMIT = 96  # edited images per generate call of the oracle and random rows


@dataclass
class HookEdits:
    """One edited hook: its dictionary, the features chosen for each concept, their mean activations."""

    hook: str
    name: str  # dictionary name
    dictionary: Dictionary
    feature_of: dict[str, tuple[int, int]]  # concept -> (feature, rank)
    mean_activation: np.ndarray  # (n,) mean value of each feature where it is active (selection)
    token_norm: float  # mean norm of the hook's tokens (selection)


def hook_edits(run: Run, name: str, tokens) -> HookEdits:
    from .editability import attribute_groups

    dictionary = run.dictionary(name)
    codes = dense_codes(dictionary, tokens.x)
    chosen = distinct_features(codes, tokens.targets, attribute_groups(tokens.concepts))
    active = codes != 0
    mean_activation = np.where(active.any(0), (codes * active).sum(0) / np.maximum(active.sum(0), 1), 0.0)
    return HookEdits(
        run.config.dictionary(name).hook,
        name,
        dictionary,
        {tokens.concepts[c]: pair for c, pair in chosen.items()},
        mean_activation,
        float(tokens.x.norm(dim=-1).mean()),
    )


def _has_features(plan: EditPlan, edits: list[HookEdits]) -> bool:
    return all(plan.source.source in e.feature_of and plan.target.target in e.feature_of for e in edits)


def style_interventions(
    style: str,
    plans: list[EditPlan],
    batch: int,
    edits: HookEdits,
    grid: tuple[int, int],
    settings,
    t_range: tuple[float, float],
) -> list:
    """Every prompt's paper-style edit on one hook, packed: one RowFeatureEdits (one encode per step) for
    the feature moves and one AddDirection (a direction and mask per row) for the additions, each op
    confined to its prompt's row and cells."""
    from diffdict import adapters

    if style not in EDIT_STYLES:
        raise ValueError(f"unknown edit style {style!r}; allowed: {', '.join(EDIT_STYLES)}")
    atoms = edits.dictionary.atoms.detach().float()
    ops: list = []
    directions, masks = torch.zeros(batch, atoms.shape[1]), torch.zeros(batch, *grid)
    everywhere = torch.ones(grid)
    for plan in plans:
        row = plan.prompt_index
        source_feature = edits.feature_of[plan.source.source][0]
        target_feature = edits.feature_of[plan.target.target][0]
        source_cells = torch.as_tensor(plan.source.cells(grid))
        target_cells = torch.as_tensor(plan.target.cells(grid))
        on_value = float(settings.strength * edits.mean_activation[target_feature])
        if style == "tinaz_global":
            ops += [
                adapters.FeatureOp(row, source_feature, "zero", everywhere),
                adapters.FeatureOp(row, target_feature, "add", everywhere, settings.norm_strength, True),
            ]
            continue
        ops.append(adapters.FeatureOp(row, source_feature, "zero", source_cells))
        if style == "tinaz_spatial":
            ops += [
                adapters.FeatureOp(row, target_feature, "set", target_cells, on_value),
                adapters.FeatureOp(row, target_feature, "zero", 1.0 - target_cells),
            ]
        elif style == "sdlens":
            directions[row], masks[row] = atoms[target_feature] * on_value, target_cells
        else:  # flux_add
            unit_atom = torch.nn.functional.normalize(atoms[target_feature], dim=0)
            directions[row], masks[row] = unit_atom * settings.token_norm_strength * edits.token_norm, target_cells
    common: dict[str, Any] = {"t_range": t_range, "branch": "cond+uncond-"}
    out = []
    if ops:
        out.append(adapters.RowFeatureEdits(edits.hook, dictionary=edits.dictionary, ops=ops, **common))
    if masks.any():
        out.append(adapters.AddDirection(edits.hook, direction=directions, strength=1.0, mask=masks, **common))
    return out


def calibration_variants(
    plans: list[EditPlan],
    edits: list[HookEdits],
    selection,
    t_range: tuple[float, float],
    strength: float,
    methods: tuple[str, ...] = (ORACLE, RANDOM),
) -> list[Variant]:
    """Edits of every plan by each of `methods` (oracle, random), each region with the sdlens edit's norm."""
    low, high = t_range
    means = {}
    for e in edits:
        tokens = selection.tokens(e.hook)
        window = tokens.rows((tokens.t >= low) & (tokens.t <= high))
        means[e.hook] = concept_means(window.x, window.targets, window.concepts)
    variants = []
    for method in methods:
        for plan in plans:
            vectors = {}
            for e in edits:
                norm = strength * float(e.mean_activation[e.feature_of[plan.target.target][0]])
                hook_vectors = []
                for r, region in enumerate(plan.regions):
                    direction = region_direction(
                        method,
                        region,
                        means=means[e.hook],
                        d=e.dictionary.atoms.shape[1],
                        seed=region_seed(e.hook, plan, r),
                    )
                    if direction is None:
                        break
                    hook_vectors.append(direction * norm)
                if len(hook_vectors) == len(plan.regions):
                    vectors[e.hook] = hook_vectors
            if len(vectors) == len(edits):
                variants.append(Variant(plan, method, strength, vectors))
    return variants


def clip_score_edits(
    run: Run, plans: list[EditPlan], prompts: list, originals: list, edited: list
) -> list[tuple[bool, float]]:
    """(success, preservation) per plan for real models: CLIP says whether the edited image matches
    the edited caption better than the original caption; preservation is CLIP image similarity."""
    images = [edited[p.prompt_index] for p in plans]
    target = run.clip.image_text(images, [p.expected_scene.caption for p in plans])
    source = run.clip.image_text(images, [prompts[p.prompt_index].text for p in plans])
    kept = run.clip.image_image(images, [originals[p.prompt_index] for p in plans])
    return [(bool(t > s), float(k)) for t, s, k in zip(target, source, kept)]


def run_windows(run: Run) -> dict[str, pl.DataFrame]:
    from diffdict.adapters import PrefixCache
    from diffdict.adapters.registry import draws_toy_scenes
    from diffdict.toyworld.judge import judge

    study = run.config.studies.windows
    rows = []
    seed = run.study_seed
    for entry_name in study.dictionaries:
        names = entry_name.split("+")
        entries = [run.config.dictionary(n) for n in names]
        model = entries[0].model
        hooks = [e.hook for e in entries]
        model_id = run.config.model(model).id
        use_clip = study.scoring == "clip" or (study.scoring == "auto" and not draws_toy_scenes(model_id))
        selection = labelled_set(run, model, hooks, "selection", study.selection_prompts)
        edits = [hook_edits(run, n, selection.tokens(h)) for n, h in zip(names, hooks)]
        grids = {h: selection.tokens(h).grid for h in hooks}
        step_ts = sorted({round(float(t), 6) for t in selection.step_t}, reverse=True)
        base = {
            "scoring": "clip" if use_clip else "judge",
            "model": model,
            "hook": "+".join(hooks),
            "dictionary": entry_name,
        }
        sets = {"score": labelled_set(run, model, [], "scoring", study.prompts)}
        if not use_clip:  # the oracle rows on train prompts, where claims choose the hook (no CLIP: no oracle)
            sets["tune"] = labelled_set(run, model, [], "tuning", study.tuning_prompts)
        originals = {split: None if use_clip else [judge(image) for image in s.images] for split, s in sets.items()}
        prefix_cache = PrefixCache()  # a middle or late window's edits replay the unedited steps before it from here

        def record(split: str, plan: EditPlan, style: str, kind: str, window: str, image, edited_all, rank) -> None:
            low, high = study.windows[window]
            prompts, images = sets[split].prompts, sets[split].images
            if use_clip:
                (success, preservation), clean, before = (
                    clip_score_edits(run, [plan], prompts, images, edited_all)[0],
                    None,
                    None,
                )
            else:
                judged_originals = originals[split]
                assert judged_originals is not None  # judged whenever CLIP does not score
                judged = judge_edit(plan, prompts[plan.prompt_index].scene, judged_originals[plan.prompt_index], image)
                success, clean, preservation, before = (
                    judged.success,
                    judged.clean_success,
                    judged.preservation,
                    judged.target_before,
                )
            rows.append(
                {
                    **base,
                    "edit": plan.attribute,
                    "style": style,
                    "kind": kind,
                    "window": window,
                    "t_low": low,
                    "t_high": high,
                    "steps_in_window": sum(low <= t <= high for t in step_ts),
                    "split": split,
                    "prompt_id": prompts[plan.prompt_index].id,
                    "success": float(success),
                    "clean_success": None if clean is None else float(clean),
                    "preservation": preservation,
                    "target_before": None if before is None else float(before),
                    "feature_rank": rank,
                }
            )

        jobs = [(edit, window) for edit in study.edits for window in study.windows]
        for edit, window in tqdm(jobs, desc=f"windows {entry_name}", disable=not run.progress):
            t_range = tuple(study.windows[window])
            if not any(t_range[0] <= t <= t_range[1] for t in step_ts):
                continue  # no step of this model in the window (late, for Flux's 4): nothing edited, nothing to score
            for split, prompt_set in sets.items():
                prompts = prompt_set.prompts
                plans = [p for p in plans_for(prompts, edit) if _has_features(p, edits)]
                if not plans:
                    continue
                # the dictionary styles edit the first style_prompts of the held-out prompts (rows = prompt indices)
                styled = len(prompts) if study.style_prompts == 0 else min(study.style_prompts, len(prompts))
                style_plans = [p for p in plans if p.prompt_index < styled]
                for style in study.edit_styles if split == "score" and style_plans else ():
                    interventions = [
                        iv
                        for e in edits
                        for iv in style_interventions(style, style_plans, styled, e, grids[e.hook], study, t_range)
                    ]
                    edited = run.generate(
                        model,
                        [p.text for p in prompts[:styled]],
                        [seed] * styled,
                        interventions=interventions,
                        prefix_cache=prefix_cache,
                    ).images
                    for plan in style_plans:
                        rank = max(e.feature_of[c][1] for e in edits for c in (plan.source.source, plan.target.target))
                        record(split, plan, style, "dictionary", window, edited[plan.prompt_index], edited, rank)
                if use_clip:
                    continue
                # Tuning prompts only choose the hook by the oracle: no random edits are built for them.
                methods = (ORACLE,) if split == "tune" else (ORACLE, RANDOM)
                variants = calibration_variants(plans, edits, selection, t_range, study.strength, methods)
                for start in range(0, len(variants), GENERATE_LIMIT):
                    chunk = variants[start : start + GENERATE_LIMIT]
                    edited = run.generate(
                        model,
                        [prompts[v.plan.prompt_index].text for v in chunk],
                        [seed] * len(chunk),
                        interventions=direction_interventions(chunk, grids, t_range),
                        prefix_cache=prefix_cache,
                    ).images
                    for variant, image in zip(chunk, edited):
                        record(split, variant.plan, variant.method, variant.method, window, image, None, None)
    return {"windows": pl.DataFrame(rows, infer_schema_length=None)}


def plot_windows(run: Run, tables: dict[str, pl.DataFrame]) -> list[tuple[str, object]]:
    from diffdict.analysis.plots import heatmap

    table = tables["windows"]
    plots = []
    if table.is_empty():
        return plots
    order = list(run.config.studies.windows.windows)
    for (model, hook), group in table.group_by(["model", "hook"], maintain_order=True):
        for rows, label in (("style", "edit style (oracle and random: calibration)"), ("edit", "edited attribute")):
            subset = group if rows == "style" else group.filter(pl.col("kind") == "dictionary")
            path = heatmap(
                subset,
                rows,
                "window",
                "success",
                run.plot_path(f"windows_{rows}_{model}_{hook}".replace("/", "_")),
                f"{model} {hook}: success by {label} and window",
                column_order=order,
            )
            plots.append((f"{model}, {hook}: edit success, {label} x time window", path))
    return plots
