"""Labelled activations: toy prompts generated with capture, every hook location labelled.

One service for every study that needs ground truth per location (alignment, editability,
windows, layout, atlas labels). It keeps the prompt sets apart:
  selection  train-split prompts, from the front: features, thresholds, probes and oracle directions
             are chosen here
  tuning     train-split prompts, from the back (disjoint from selection while the train split holds
             both): strengths are swept and chosen here
  scoring    held-out prompts: every reported number is measured here, at the choices made elsewhere
Every prompt is generated with the study seed (`Run.study_seed`: `prompts.seeds[0]`), so a study's unedited
image of a prompt is the same image whichever study asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .concepts import location_concepts
from .errors import UserError
from .run import Run

SPLITS = ("selection", "tuning", "scoring")
GENERATE_CHUNK = 32  # prompts per generate call: bounds the captured maps held at once


def concept_names() -> list[str]:
    """Every concept the toy world can label a location with, in a fixed order."""
    from diffdict.toyworld import scenes

    values = {
        "background": scenes.BACKGROUNDS,
        "colour": scenes.COLOURS,
        "pattern": scenes.PATTERNS,
        "position": scenes.POSITIONS,
        "shape": scenes.SHAPES,
        "size": scenes.SIZES,
        "style": scenes.STYLES,
    }
    return [f"{attribute}:{value}" for attribute in sorted(values) for value in values[attribute]]


@dataclass
class HookTokens:
    """One hook's tokens of one prompt set, every step of the cond branch, with their labels.

    Rows are ordered (step, prompt, cell) with cells row-major on the hook's grid.
    """

    x: torch.Tensor  # (N, d) float32
    targets: np.ndarray  # (N, C) bool, columns in `concepts` order
    concepts: list[str]
    prompt_index: np.ndarray  # (N,) index into the set's prompts
    location: np.ndarray  # (N,) cell index
    step: np.ndarray  # (N,)
    t: np.ndarray  # (N,) normalised time of the row's step
    grid: tuple[int, int]

    def rows(self, mask: np.ndarray) -> HookTokens:
        """The subset of rows where mask (N,) is true."""
        index = np.flatnonzero(mask)
        return HookTokens(
            self.x[torch.as_tensor(index)],
            self.targets[index],
            self.concepts,
            self.prompt_index[index],
            self.location[index],
            self.step[index],
            self.t[index],
            self.grid,
        )

    def concept(self, name: str) -> np.ndarray:
        return self.targets[:, self.concepts.index(name)]


@dataclass
class LabelledSet:
    """Prompts of one split, their unedited images and captured maps per hook."""

    prompts: list  # studies.prompts.Prompt, with scenes
    images: list
    maps: dict[str, torch.Tensor]  # hook -> (steps, batch, h, w, d), cond branch
    step_t: list[float]  # normalised t of each step
    _tokens: dict[str, HookTokens] = field(default_factory=dict)

    def tokens(self, hook: str) -> HookTokens:
        if hook not in self._tokens:
            self._tokens[hook] = _label(self.maps[hook], self.prompts, self.step_t)
        return self._tokens[hook]


def _label(maps: torch.Tensor, prompts: list, step_t: list[float]) -> HookTokens:
    steps, batch, h, w, d = maps.shape
    concepts = concept_names()
    column = {name: i for i, name in enumerate(concepts)}
    per_prompt = np.zeros((batch, h * w, len(concepts)), dtype=bool)
    for b, prompt in enumerate(prompts):
        if prompt.scene is None:
            continue  # plain text (real-model prompts): no ground truth, every concept False
        for cell, labels in enumerate(location_concepts(prompt.scene, (h, w))):
            per_prompt[b, cell, [column[c] for c in labels]] = True
    cells = h * w
    return HookTokens(
        x=maps.reshape(-1, d).float(),
        targets=np.tile(per_prompt.reshape(batch * cells, -1), (steps, 1)),
        concepts=concepts,
        prompt_index=np.tile(np.repeat(np.arange(batch), cells), steps),
        location=np.tile(np.arange(cells), steps * batch),
        step=np.repeat(np.arange(steps), batch * cells),
        t=np.repeat(np.asarray(step_t, dtype=np.float64), batch * cells),
        grid=(h, w),
    )


def prompt_ids(run: Run, model: str, split: str) -> list[int]:
    """Train-split ids (selection from the front, tuning from the back) or held-out ids (scoring), as the
    store splits them."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    held_out = set(run.eval_prompt_ids(model))
    ids = sorted(held_out) if split == "scoring" else [p.id for p in run.prompts if p.id not in held_out]
    if run.seed_override is not None:  # another study seed draws other prompts from the same split
        ids = [ids[i] for i in np.random.default_rng(run.seed_override).permutation(len(ids))]
    if split == "tuning":  # train prompts from the back: apart from the selection prompts, taken from the front
        ids = ids[::-1]
    return ids


def labelled_set(run: Run, model: str, hooks: list[str], split: str, count: int) -> LabelledSet:
    """Up to `count` prompts of a split generated on `model`, capturing `hooks` (cached per run).

    Toy-world prompts come labelled; plain-text prompts get no concept (an all-False target matrix)."""
    hooks = sorted(set(hooks))
    key = ("labelled", model, split, count)
    cached = run.cache.get(key)
    if cached is not None and all(h in cached.maps for h in hooks):
        return cached
    prompts = [run.prompts[i] for i in prompt_ids(run, model, split)[:count]]
    if not prompts:
        raise UserError(f"no {split} prompts for {model!r}: raise prompts.count or adjust prompts.eval_fraction")
    wanted = sorted(set(hooks) | set(cached.maps if cached else ()))
    seed = run.study_seed
    images, chunks, step_t = [], {h: [] for h in wanted}, []
    for start in range(0, len(prompts), GENERATE_CHUNK):
        part = prompts[start : start + GENERATE_CHUNK]
        gen = run.generate(model, [p.text for p in part], [seed] * len(part), hooks=wanted)
        images += gen.images
        for hook in wanted:
            chunks[hook].append(gen.stacked(hook, "cond"))
        step_t = [m.t for m in gen.maps(hook=wanted[0], branch="cond")] if wanted else []
    result = LabelledSet(prompts, images, {h: torch.cat(c, dim=1) for h, c in chunks.items()}, step_t)
    run.cache[key] = result
    return result
