"""Concept edits on toy scenes: what to change where, how to add it, and strict judging.

An edit of one attribute of one scene is a plan: the scene as it should look afterwards and
one or two regions, each moved from one concept to another (`colour:red` -> `colour:cyan`
on the object's pixels; position: `position:left` -> the background on the object's old
place and the background -> `position:top` on its new place).

A method turns a region's (from, to) pair into one direction at a hook:
  oracle      unit(mean(to) - mean(from)): the concepts' diff-in-means on selection tokens
  dictionary  unit(atom(to) - atom(from)): each concept's best feature chosen on selection
              tokens, no two values of one attribute sharing a feature
  random      a seeded random unit direction: the floor
and every method adds its direction with the same norm (strength x a reference norm), so
only the direction differs between rows.

Judging is strict. Success: the judge reads the target value on the edited object (or
scene); position also needs the object gone from its old place, background also needs
every object's colour kept. Clean success: success, and every attribute that was right
before the edit is still right.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .config import EDIT_ATTRIBUTES

if TYPE_CHECKING:
    from diffdict.toyworld.scenes import Scene

ORACLE, RANDOM, DICTIONARY = "oracle", "random", "dictionary"


@dataclass(frozen=True)
class Region:
    """Pixels of the 64 px canvas moved from one concept to another."""

    pixels: np.ndarray  # (H, W) bool
    source: str  # concept name, e.g. "colour:red"
    target: str

    def cells(self, grid: tuple[int, int]) -> np.ndarray:
        """(h, w) float mask: cells with at least half of their pixels in the region."""
        h, w = grid
        size = self.pixels.shape[0]
        share = self.pixels.reshape(h, size // h, w, size // w).mean(axis=(1, 3))
        return (share >= 0.5).astype(np.float32)


@dataclass(frozen=True)
class EditPlan:
    prompt_index: int  # index into the edited prompt set
    attribute: str
    source_value: str
    target_value: str
    expected_scene: Scene  # toyworld Scene as it should look after the edit
    regions: tuple[Region, ...]

    @property
    def source(self) -> Region:
        """Where the source concept is switched off (the first region)."""
        return self.regions[0]

    @property
    def target(self) -> Region:
        """Where the target concept is switched on (the last region)."""
        return self.regions[-1]


def _next_value(values: Sequence[str], current: str, avoid: set[str]) -> str | None:
    start = list(values).index(current)
    for step in range(1, len(values)):
        candidate = values[(start + step) % len(values)]
        if candidate not in avoid:
            return candidate
    return None


def _replace_object(scene, index: int, **changes):
    objects = list(scene.objects)
    objects[index] = dataclasses.replace(objects[index], **changes)
    return dataclasses.replace(scene, objects=tuple(objects))


def plan_edit(scene, attribute: str, prompt_index: int) -> EditPlan | None:
    """The edit of `attribute` of the scene's first object (or the scene); None when no target exists."""
    from diffdict.toyworld import scenes as world
    from diffdict.toyworld.render import object_mask, render

    rendered = render(scene)
    first = scene.objects[0]
    own = rendered.masks[0].astype(bool)
    objects = np.asarray(rendered.masks.any(axis=0))  # (H, W) bool (numpy types any(axis=0) as bool | array)
    background = f"background:{scene.background}"
    if attribute == "colour":
        new = _next_value(list(world.COLOURS), first.colour, {scene.background})
        if new is None:
            return None
        return EditPlan(
            prompt_index,
            attribute,
            first.colour,
            new,
            _replace_object(scene, 0, colour=new),
            (Region(own, f"colour:{first.colour}", f"colour:{new}"),),
        )
    if attribute == "shape":
        new = _next_value(list(world.SHAPES), first.shape, set())
        if new is None:
            return None
        box = np.zeros_like(own)
        x0, y0, x1, y1 = first.box
        box[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
        return EditPlan(
            prompt_index,
            attribute,
            first.shape,
            new,
            _replace_object(scene, 0, shape=new),
            (Region(box, f"shape:{first.shape}", f"shape:{new}"),),
        )
    if attribute == "position":
        new = _next_value(list(world.POSITIONS), first.position, {o.position for o in scene.objects})
        if new is None:
            return None
        ax, ay = world.ANCHORS[new]
        moved = dataclasses.replace(first, position=new, cx=int(ax), cy=int(ay))
        expected = dataclasses.replace(scene, objects=(moved, *scene.objects[1:]))
        destination = object_mask(moved).astype(bool)
        return EditPlan(
            prompt_index,
            attribute,
            first.position,
            new,
            expected,
            (
                Region(own & ~destination, f"position:{first.position}", background),
                Region(destination, background, f"position:{new}"),
            ),
        )
    if attribute == "background":
        new = _next_value(list(world.BACKGROUNDS), scene.background, {o.colour for o in scene.objects})
        if new is None:
            return None
        return EditPlan(
            prompt_index,
            attribute,
            scene.background,
            new,
            dataclasses.replace(scene, background=new),
            (Region(~objects, background, f"background:{new}"),),
        )
    if attribute == "pattern":
        new = _next_value(list(world.PATTERNS), scene.pattern, set())
        if new is None:
            return None
        return EditPlan(
            prompt_index,
            attribute,
            scene.pattern,
            new,
            dataclasses.replace(scene, pattern=new),
            (Region(~objects, f"pattern:{scene.pattern}", f"pattern:{new}"),),
        )
    if attribute == "style":
        new = _next_value(list(world.STYLES), scene.style, set())
        if new is None:
            return None
        return EditPlan(
            prompt_index,
            attribute,
            scene.style,
            new,
            dataclasses.replace(scene, style=new),
            (Region(objects, f"style:{scene.style}", f"style:{new}"),),
        )
    raise ValueError(f"unknown edit attribute {attribute!r}; allowed: {', '.join(EDIT_ATTRIBUTES)}")


def plans_for(prompts: list, attribute: str) -> list[EditPlan]:
    return [p for p in (plan_edit(prompt.scene, attribute, i) for i, prompt in enumerate(prompts)) if p is not None]


# ---- judging ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EditJudgement:
    """How one edited image reads against its plan (every field from the toy judge)."""

    success: bool  # the target value is read (position: the object left; background: objects kept colour)
    clean_success: bool  # success, and the edit was an edit: see judge_edit
    preservation: float  # of the attributes right before the edit (the edited one aside), the share still right
    source_shown: bool  # the unedited image read the source value
    target_before: bool  # the unedited image already read as the target: success with no edit at all


def _reads_target(plan: EditPlan, judged, after: dict[str, list[bool]]) -> bool:
    """Whether `judged` reads as the plan's target; `after` is its score against the expected scene."""
    from diffdict.toyworld.judge import match_objects

    success = bool(after[plan.attribute][0]) if after[plan.attribute] else False
    if plan.attribute == "position":
        # The object must have left: no judged object may still sit at its old anchor.
        success = success and all(o.position != plan.source_value for o in judged.objects)
    if plan.attribute in ("background", "pattern"):
        # A background edit that recolours the objects is not a background edit.
        found = match_objects(plan.expected_scene, judged.objects)
        success = success and all(
            o is not None and o.colour == t.colour for o, t in zip(found, plan.expected_scene.objects)
        )
    return success


def judge_edit(plan: EditPlan, original_scene, original_judgement, edited_image) -> EditJudgement:
    """One edited image, read strictly by the judge.

    Clean success needs four things: the unedited image showed the source value (an image that already
    read as the target, or never showed the source, is not edited into anything), the target is read
    afterwards, the scene kept its object count (an object that vanished or split is not an edit), and
    every other attribute that was right before is still right.
    """
    from diffdict.toyworld.judge import judge, score

    edited = judge(edited_image)
    before = score(original_scene, original_judgement)
    after = score(plan.expected_scene, edited)
    success = _reads_target(plan, edited, after)
    source_shown = bool(before[plan.attribute][0]) if before[plan.attribute] else False
    edited_key = (plan.attribute, 0)
    kept = [
        index < len(after[attribute]) and after[attribute][index]
        for attribute, values in before.items()
        for index, was_right in enumerate(values)
        if was_right and (attribute, index) != edited_key
    ]
    preservation = sum(kept) / len(kept) if kept else float("nan")
    count_kept = len(edited.objects) == len(plan.expected_scene.objects)
    clean = success and source_shown and count_kept and all(kept)
    target_before = _reads_target(plan, original_judgement, score(plan.expected_scene, original_judgement))
    return EditJudgement(success, clean, preservation, source_shown, target_before)


# ---- directions ---------------------------------------------------------------------------------
def unit(vector: torch.Tensor) -> torch.Tensor:
    return vector / vector.norm().clamp_min(1e-12)


def random_unit(d: int, seed: int) -> torch.Tensor:
    return unit(torch.randn(d, generator=torch.Generator().manual_seed(seed)))


def region_seed(hook: str, plan: EditPlan, region: int) -> int:
    """A stable seed per hook, edit and region: the random floor is the same direction at every strength."""
    return zlib.crc32(f"{hook}/{plan.attribute}/{plan.prompt_index}/{region}".encode())


def concept_means(x: torch.Tensor, targets: np.ndarray, concepts: list[str]) -> dict[str, torch.Tensor]:
    """concept -> mean token (d,) over the rows labelled with it (concepts with rows only)."""
    out = {}
    for c, name in enumerate(concepts):
        rows = np.flatnonzero(targets[:, c])
        if rows.size:
            out[name] = x[torch.as_tensor(rows)].mean(0)
    return out


def concept_norms(x: torch.Tensor, targets: np.ndarray, concepts: list[str]) -> dict[str, float]:
    """concept -> mean token norm over its rows: the reference norm for edits from that concept."""
    norms = x.norm(dim=-1)
    return {
        name: float(norms[torch.as_tensor(np.flatnonzero(targets[:, c]))].mean())
        for c, name in enumerate(concepts)
        if targets[:, c].any()
    }


def region_direction(
    method: str,
    region: Region,
    *,
    means: dict[str, torch.Tensor] | None = None,
    atoms: dict[str, torch.Tensor] | None = None,
    d: int = 0,
    seed: int = 0,
) -> torch.Tensor | None:
    """The unit direction a method adds on a region, or None when it has no vector for a concept."""
    if method == ORACLE:
        assert means is not None, "the oracle method needs the concepts' means"
        if region.source not in means or region.target not in means:
            return None
        return unit(means[region.target] - means[region.source])
    if method == RANDOM:
        return random_unit(d, seed)
    assert atoms is not None, "the dictionary method needs the concepts' atoms"
    if region.source not in atoms or region.target not in atoms:
        return None
    return unit(atoms[region.target] - atoms[region.source])


# ---- batched edits ------------------------------------------------------------------------------
@dataclass
class Variant:
    """One edited image: a plan, the method and strength it is edited with, and per hook the vectors
    (already scaled) it adds on each of the plan's regions."""

    plan: EditPlan
    method: str
    strength: float
    vectors: dict[str, list[torch.Tensor]]  # hook -> one (d,) vector per region
    feature_rank: int | None = None


def interventions_for(variants: list[Variant], grids: dict[str, tuple[int, int]], t_range: tuple[float, float]) -> list:
    """One AddDirection per hook and region slot, carrying every variant's own direction and mask."""
    from diffdict import adapters

    out = []
    slots = max(len(v.plan.regions) for v in variants)
    for hook, grid in grids.items():
        d = next(len(v.vectors[hook][0]) for v in variants)
        for slot in range(slots):
            direction = torch.zeros(len(variants), d)
            mask = torch.zeros(len(variants), *grid)
            for row, variant in enumerate(variants):
                if slot < len(variant.plan.regions):
                    direction[row] = variant.vectors[hook][slot]
                    mask[row] = torch.as_tensor(variant.plan.regions[slot].cells(grid))
            if mask.any():
                out.append(
                    adapters.AddDirection(
                        hook, direction=direction, strength=1.0, mask=mask, t_range=t_range, branch="cond+uncond-"
                    )
                )
    return out
