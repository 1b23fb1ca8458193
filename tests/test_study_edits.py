"""Edit plans, strict judging and batched per-prompt directions, on rendered toy scenes."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from diffdict.studies.edits import EditPlan, Variant, interventions_for, judge_edit, plan_edit
from diffdict.toyworld.judge import judge
from diffdict.toyworld.render import render
from diffdict.toyworld.scenes import ANCHORS, Scene, SceneObject

CIRCLE = SceneObject(shape="circle", colour="red", size="large", position="left", cx=14, cy=32, half=12)
SCENE = Scene(objects=(CIRCLE,), background="black", style="flat", seed=0)


def _plan(scene: Scene, attribute: str, prompt_index: int = 0) -> EditPlan:
    """The plan of an edit these scenes always have a target for."""
    plan = plan_edit(scene, attribute, prompt_index)
    assert plan is not None, f"no {attribute} edit planned"
    return plan


def _image(scene: Scene) -> np.ndarray:
    return render(scene).image


def _judged(plan, image):
    return judge_edit(plan, SCENE, judge(_image(SCENE)), image)


def test_colour_edit_succeeds_cleanly_only_when_the_colour_changed():
    plan = _plan(SCENE, "colour")
    assert (plan.source_value, plan.target_value) == ("red", "yellow")
    good = _judged(plan, _image(plan.expected_scene))
    assert (good.success, good.clean_success, good.source_shown, good.target_before) == (True, True, True, False)
    unchanged = _judged(plan, _image(SCENE))
    assert (unchanged.success, unchanged.clean_success) == (False, False)
    # Right colour but the shape broke: success, not clean success.
    broken = dataclasses.replace(
        plan.expected_scene, objects=(dataclasses.replace(plan.expected_scene.objects[0], shape="square"),)
    )
    judged = _judged(plan, _image(broken))
    assert judged.success and not judged.clean_success and judged.preservation < 1.0


def test_an_image_that_already_read_as_the_target_is_no_clean_success():
    plan = _plan(SCENE, "colour")
    # the unedited image was drawn yellow already (the model missed the caption's red): reading yellow
    # afterwards is a success by the old rule, not an edit
    drawn = plan.expected_scene
    judged = judge_edit(plan, SCENE, judge(_image(drawn)), _image(drawn))
    assert judged.success and judged.target_before and not judged.source_shown and not judged.clean_success


def test_an_edit_that_erases_the_object_is_no_clean_success():
    dotted = dataclasses.replace(SCENE, style="dotted")
    plan = _plan(dotted, "style")
    assert plan.target_value == "flat"
    erased = _image(plan.expected_scene).copy()
    erased[render(dotted).masks[0].astype(bool)] = erased[0, 0]  # the object painted over with the background
    judged = judge_edit(plan, dotted, judge(_image(dotted)), erased)
    # no object left reads as "flat": a success by the old rule, but the scene did not survive
    assert judged.success and judged.source_shown and not judged.clean_success
    kept = judge_edit(plan, dotted, judge(_image(dotted)), _image(plan.expected_scene))
    assert kept.success and kept.clean_success


def test_position_success_needs_the_object_gone_from_its_old_place():
    plan = _plan(SCENE, "position")
    assert plan.target_value == "right" and len(plan.regions) == 2
    assert plan.source.target == "background:black" and plan.target.source == "background:black"
    assert _judged(plan, _image(plan.expected_scene)).success
    # A second blob at the target while the object stays: the old "success" that a random direction met.
    moved = plan.expected_scene.objects[0]
    both = dataclasses.replace(SCENE, objects=(CIRCLE, moved))
    assert not _judged(plan, _image(both)).success


def test_background_success_needs_the_objects_to_keep_their_colour():
    plan = _plan(SCENE, "background")
    assert plan.target_value == "gray"
    assert _judged(plan, _image(plan.expected_scene)).success
    recoloured = dataclasses.replace(plan.expected_scene, objects=(dataclasses.replace(CIRCLE, colour="blue"),))
    assert not _judged(plan, _image(recoloured)).success


def test_regions_cover_the_right_cells():
    plan = _plan(SCENE, "position")
    old, new = plan.source.cells((8, 8)), plan.target.cells((8, 8))
    assert old[4, 1] == 1 and new[4, 6] == 1 and (old * new).sum() == 0
    ax, ay = ANCHORS["right"]
    assert plan.expected_scene.objects[0].cx == ax and plan.expected_scene.objects[0].cy == ay


def test_one_intervention_carries_every_variant_direction_on_its_own_row_and_cells():
    plans = [_plan(SCENE, "colour"), _plan(SCENE, "position", 1)]
    vectors = [{"h": [torch.full((4,), 1.0)]}, {"h": [torch.full((4,), 2.0), torch.full((4,), -3.0)]}]
    variants = [Variant(p, "oracle", 1.0, v) for p, v in zip(plans, vectors)]
    interventions = interventions_for(variants, {"h": (8, 8)}, (0.0, 1.0))
    assert len(interventions) == 2  # two region slots; the colour plan has only the first
    update = torch.zeros(2, 8, 8, 4)
    total = sum((iv.change(update) for iv in interventions), torch.zeros_like(update))
    colour_cells = torch.as_tensor(plans[0].source.cells((8, 8))).bool()
    assert torch.all(total[0][colour_cells] == 1.0) and torch.all(total[0][~colour_cells] == 0.0)
    new_cells = torch.as_tensor(plans[1].target.cells((8, 8))).bool()
    assert torch.all(total[1][new_cells] == -3.0)
