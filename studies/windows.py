"""Timestep-window interventions: does composition form early and style later, and in which block?

For each held-out toy scene and each edited attribute (colour, shape, position, background,
style) the study picks a target value, the dictionary features best aligned with the source
and target concepts, and edits the hook with each paper's edit style, inside one time window
at a time (early t in [0.6, 1], middle [0.2, 0.6], late [0, 0.2] by default):

  sdlens         add the target atom x strength x its mean activation on the target region,
                 switch the source feature off there (Surkov et al.)
  tinaz_spatial  set the target feature to strength x its mean activation inside the region and
                 zero it outside; switch the source off (Tinaz et al., spatial)
  tinaz_global   add the target feature everywhere at norm_strength x the local code norm;
                 switch the source off (Tinaz et al., global)
  flux_add       add the unit target atom scaled to token_norm_strength x the mean token norm
                 on the region (Shabalin et al.)

Success: the judge sees the target value on the edited object (or scene). Preservation:
of the other attributes the judge read correctly without the edit, the share still correct.
Real models (no judge) draw the same toy-world captions and are scored with CLIP: success
when the edited image is closer to the edited caption than to the original one,
preservation = CLIP image similarity to the unedited image.
Every prompt of a batch carries its own masks and features (per-prompt masks).

Table windows: model, hook, dictionary, edit, style, window, t_low, t_high, steps_in_window,
prompt_id, success, preservation.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from .compare import alignment_data, best_alignment
from .concepts import dense_codes
from .run import Run


@dataclass
class EditPlan:
    """One prompt's edit of one attribute: what to switch off where, what to switch on where."""

    prompt_index: int
    attribute: str
    expected_scene: object  # the scene as it should look after the edit
    source_feature: int
    target_feature: int
    source_region: np.ndarray  # (h, w) float
    target_region: np.ndarray  # (h, w) float


def _next_value(values: list[str], current: str, avoid: set[str]) -> str | None:
    start = values.index(current)
    for step in range(1, len(values)):
        candidate = values[(start + step) % len(values)]
        if candidate not in avoid:
            return candidate
    return None


def _cells(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) pixel mask -> (h, w) share of each cell's pixels inside it, thresholded at 0.5."""
    h, w = grid
    size = mask.shape[0]
    share = mask.reshape(h, size // h, w, size // w).mean(axis=(1, 3))
    return (share >= 0.5).astype(np.float32)


def plan_edit(scene, attribute: str, grid: tuple[int, int], feature_of: dict[str, int], prompt_index: int) -> EditPlan | None:
    """The edit of `attribute` for one scene, or None when no target or feature exists."""
    from toyworld import scenes as world
    from toyworld.render import object_mask, render

    rendered = render(scene)
    objects = scene.objects
    target_obj = objects[0]
    object_cells = _cells(rendered.masks[0], grid)
    all_objects = _cells(rendered.masks.any(axis=0), grid)
    if attribute == "colour":
        new = _next_value(list(world.COLOURS), target_obj.colour, {scene.background})
        expected = _replace_object(scene, 0, colour=new) if new else None
        source, target, src_region, dst_region = target_obj.colour, new, object_cells, object_cells
    elif attribute == "shape":
        new = _next_value(list(world.SHAPES), target_obj.shape, set())
        expected = _replace_object(scene, 0, shape=new) if new else None
        box = np.zeros(rendered.masks.shape[1:], dtype=bool)
        x0, y0, x1, y1 = target_obj.box
        box[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = True
        source, target, src_region, dst_region = target_obj.shape, new, object_cells, _cells(box, grid)
    elif attribute == "position":
        taken = {o.position for o in objects}
        new = _next_value(list(world.POSITIONS), target_obj.position, taken)
        expected, dst_region = None, None
        if new:
            ax, ay = world.ANCHORS[new]
            moved = dataclasses.replace(target_obj, position=new, cx=int(ax), cy=int(ay))
            expected = dataclasses.replace(scene, objects=(moved, *objects[1:]))
            dst_region = _cells(object_mask(moved), grid)
        source, target, src_region = target_obj.position, new, object_cells
    elif attribute == "background":
        new = _next_value(list(world.BACKGROUNDS), scene.background, {o.colour for o in objects})
        expected = dataclasses.replace(scene, background=new) if new else None
        background = 1.0 - all_objects
        source, target, src_region, dst_region = scene.background, new, background, background
    elif attribute == "style":
        new = _next_value(list(world.STYLES), scene.style, set())
        expected = dataclasses.replace(scene, style=new) if new else None
        source, target, src_region, dst_region = scene.style, new, all_objects, all_objects
    else:
        raise ValueError(f"unknown edit attribute {attribute!r}")
    source_key, target_key = f"{attribute}:{source}", f"{attribute}:{target}"
    if expected is None or source_key not in feature_of or target_key not in feature_of:
        return None
    return EditPlan(prompt_index, attribute, expected, feature_of[source_key], feature_of[target_key],
                    src_region, dst_region)


def _replace_object(scene, index: int, **changes):
    objects = list(scene.objects)
    objects[index] = dataclasses.replace(objects[index], **changes)
    return dataclasses.replace(scene, objects=tuple(objects))


@dataclass
class EditStrengths:
    mean_activation: np.ndarray  # (n,) mean value of each feature where it is active
    token_norm: float  # mean norm of the hook's tokens
    strength: float
    norm_strength: float
    token_norm_strength: float


def interventions_for(style: str, plans: list[EditPlan], batch: int, hook: str, dictionary, strengths: EditStrengths,
                      t_range: tuple[float, float]) -> list:
    """All prompts' interventions for one edit style, each confined to its own prompt by its mask."""
    import adapters

    grid = plans[0].source_region.shape
    out = []
    common = dict(t_range=t_range, branch="cond+uncond-")
    atoms = dictionary.atoms.detach().float()
    for plan in plans:
        def only_this(region: np.ndarray) -> torch.Tensor:
            mask = torch.zeros(batch, *grid)
            mask[plan.prompt_index] = torch.as_tensor(region)
            return mask

        source_off = adapters.EditFeatures(hook, mask=only_this(plan.source_region), dictionary=dictionary,
                                           features=[plan.source_feature], mode="zero", **common)
        on_value = float(strengths.strength * strengths.mean_activation[plan.target_feature])
        if style == "sdlens":
            out += [source_off, adapters.AddDirection(hook, mask=only_this(plan.target_region),
                                                      direction=atoms[plan.target_feature], strength=on_value, **common)]
        elif style == "tinaz_spatial":
            out += [source_off,
                    adapters.EditFeatures(hook, mask=only_this(plan.target_region), dictionary=dictionary,
                                          features=[plan.target_feature], mode="set", value=on_value, **common),
                    adapters.EditFeatures(hook, mask=only_this(1.0 - plan.target_region), dictionary=dictionary,
                                          features=[plan.target_feature], mode="zero", **common)]
        elif style == "tinaz_global":
            everywhere = np.ones(grid, dtype=np.float32)
            out += [adapters.EditFeatures(hook, mask=only_this(everywhere), dictionary=dictionary,
                                          features=[plan.source_feature], mode="zero", **common),
                    adapters.EditFeatures(hook, mask=only_this(everywhere), dictionary=dictionary,
                                          features=[plan.target_feature], mode="add", value=strengths.norm_strength,
                                          relative_to_code_norm=True, **common)]
        elif style == "flux_add":
            direction = torch.nn.functional.normalize(atoms[plan.target_feature], dim=0)
            out += [source_off, adapters.AddDirection(hook, mask=only_this(plan.target_region), direction=direction,
                                                      strength=strengths.token_norm_strength * strengths.token_norm,
                                                      **common)]
        else:
            raise ValueError(f"unknown edit style {style!r}")
    return out


def clip_score_edits(run: Run, plans: list[EditPlan], prompts: list, originals: list, edited: list) -> list[tuple[bool, float]]:
    """(success, preservation) per plan for real models: CLIP says whether the edited image matches
    the edited caption better than the original caption; preservation is CLIP image similarity."""
    images = [edited[p.prompt_index] for p in plans]
    target = run.clip.image_text(images, [p.expected_scene.caption for p in plans])
    source = run.clip.image_text(images, [prompts[p.prompt_index].text for p in plans])
    kept = run.clip.image_image(images, [originals[p.prompt_index] for p in plans])
    return [(bool(t > s), float(k)) for t, s, k in zip(target, source, kept)]


def score_edit(plan: EditPlan, original_scene, original_image, edited_image) -> tuple[bool, float]:
    """(success, preservation) of one edited image, read by the judge."""
    from toyworld.judge import judge, score

    before = score(original_scene, judge(original_image))
    after = score(plan.expected_scene, judge(edited_image))
    edited_key = (plan.attribute, 0)
    success = bool(after[plan.attribute][0]) if after[plan.attribute] else False
    kept = total = 0
    for attribute, values in before.items():
        for index, was_right in enumerate(values):
            if (attribute, index) == edited_key or not was_right:
                continue
            total += 1
            kept += bool(after[attribute][index]) if index < len(after[attribute]) else 0
    return success, (kept / total if total else float("nan"))


def run_windows(run: Run) -> dict[str, pl.DataFrame]:
    study = run.config.studies.windows
    rows = []
    for name in study.dictionaries:
        entry = run.config.dictionary(name)
        dictionary = run.dictionary(name)
        model_id = run.config.model(entry.model).id
        use_clip = study.scoring == "clip" or (study.scoring == "auto" and not model_id.startswith(("toy/", "tiny/")))
        data = alignment_data(run, entry.model, entry.hook, max(study.prompts, run.config.studies.compare.prompts
                                                                 if run.config.studies.compare else 0))
        codes = dense_codes(dictionary, data.x)
        best, feature = best_alignment(codes, data)
        feature_of = {c: int(f) for c, f, b in zip(data.concepts, feature, best) if not np.isnan(b)}
        active = codes != 0
        mean_activation = np.where(active.any(0), (codes * active).sum(0) / np.maximum(active.sum(0), 1), 0.0)
        strengths = EditStrengths(mean_activation, float(data.x.norm(dim=-1).mean()), study.strength,
                                  study.norm_strength, study.token_norm_strength)
        prompts = data.prompts[: study.prompts]
        images = data.images[: study.prompts]
        step_ts = sorted({round(float(t), 6) for t in _step_ts(run, entry.model)}, reverse=True)
        jobs = [(edit, style, window) for edit in study.edits for style in study.edit_styles for window in study.windows]
        for edit, style, window in tqdm(jobs, desc=f"windows {name}", disable=not run.progress):
            low, high = study.windows[window]
            plans = [p for p in (plan_edit(prompt.scene, edit, data.grid, feature_of, i)
                                 for i, prompt in enumerate(prompts)) if p is not None]
            in_window = sum(low <= t <= high for t in step_ts)
            if not plans:
                continue
            interventions = interventions_for(style, plans, len(prompts), entry.hook, dictionary, strengths, (low, high))
            edited = run.generate(entry.model, [p.text for p in prompts], [run.config.prompts.seeds[0]] * len(prompts),
                                  interventions=interventions).images
            if use_clip:
                scores = clip_score_edits(run, plans, prompts, images, edited)
            else:
                scores = [score_edit(plan, prompts[plan.prompt_index].scene, images[plan.prompt_index],
                                     edited[plan.prompt_index]) for plan in plans]
            for plan, (success, preservation) in zip(plans, scores):
                rows.append({"scoring": "clip" if use_clip else "judge", "model": entry.model, "hook": entry.hook, "dictionary": name, "edit": edit,
                             "style": style, "window": window, "t_low": low, "t_high": high,
                             "steps_in_window": in_window, "prompt_id": prompts[plan.prompt_index].id,
                             "success": float(success), "preservation": preservation})
    return {"windows": pl.DataFrame(rows)}


def _step_ts(run: Run, model: str) -> list[float]:
    store = run.store(model)
    return store.index["t"].unique().to_list()


def plot_windows(run: Run, tables: dict[str, pl.DataFrame]) -> list[tuple[str, object]]:
    from analysis.plots import heatmap

    table = tables["windows"]
    plots = []
    if table.is_empty():
        return plots
    order = list(run.config.studies.windows.windows)
    for (model, hook), group in table.group_by(["model", "hook"], maintain_order=True):
        for rows, label in (("style", "edit style"), ("edit", "edited attribute")):
            path = heatmap(group, rows, "window", "success",
                           run.plot_path(f"windows_{rows}_{model}_{hook}".replace("/", "_")),
                           f"{model} {hook}: success by {label} and window", column_order=order)
            plots.append((f"{model}, {hook}: edit success, {label} x time window", path))
    return plots
