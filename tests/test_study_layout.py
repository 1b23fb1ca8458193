"""Layout IoU, its baselines and its probes; the training-convergence summary."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from diffdict.studies.labelled import HookTokens, concept_names
from diffdict.studies.layout import caption_masks, cell_layout, iou, layout_ious, probe_layout
from diffdict.studies.training import _summary
from diffdict.toyworld.render import render
from diffdict.toyworld.scenes import Scene, SceneObject

LEFT = SceneObject(shape="square", colour="red", size="large", position="left", cx=16, cy=32, half=12)
RIGHT = SceneObject(shape="circle", colour="blue", size="small", position="right", cx=50, cy=32, half=7)
SCENE = Scene(objects=(LEFT, RIGHT), background="black", style="flat", seed=0)


def test_cell_layout_and_iou_on_rendered_masks():
    masks = list(render(SCENE).masks.astype(bool))
    layout = cell_layout(masks, (8, 8)).reshape(8, 8)
    assert layout[4, 1] == 1 and layout[4, 6] == 2 and layout[0, 0] == 0
    assert layout_ious(layout.reshape(-1), layout.reshape(-1), 2) == (1.0, 1.0)
    swapped = np.where(layout == 1, 2, np.where(layout == 2, 1, 0)).reshape(-1)
    foreground, objects = layout_ious(swapped, layout.reshape(-1), 2)
    assert foreground == 1.0 and objects == 0.0  # the right cells, the wrong objects
    assert iou(np.zeros(4, bool), np.zeros(4, bool)) == 1.0


def test_caption_baseline_draws_objects_at_their_anchors():
    shifted = Scene(
        objects=(LEFT.__class__(**{**LEFT.__dict__, "cx": 18, "cy": 30}),), background="black", style="flat", seed=0
    )
    (anchored,) = caption_masks(shifted)
    ys, xs = np.nonzero(anchored)
    assert abs(xs.mean() - 14) < 1 and abs(ys.mean() - 32) < 1  # left anchor (14, 32), not the jittered (18, 30)


def _tokens(layouts: np.ndarray, d: int = 6, seed: int = 0) -> HookTokens:
    """Tokens whose channels 0 and 1 encode 'first object' and 'second object' plus noise."""
    rng = np.random.default_rng(seed)
    prompts, cells = layouts.shape
    x = rng.normal(0, 0.3, size=(prompts * cells, d))
    flat = layouts.reshape(-1)
    x[flat == 1, 0] += 3.0
    x[flat == 2, 1] += 3.0
    concepts = concept_names()
    return HookTokens(
        torch.as_tensor(x, dtype=torch.float32),
        np.zeros((len(flat), len(concepts)), bool),
        concepts,
        np.repeat(np.arange(prompts), cells),
        np.tile(np.arange(cells), prompts),
        np.zeros(len(flat), int),
        np.ones(len(flat)),
        (8, 8),
    )


def test_probe_reads_a_linearly_encoded_layout_back():
    rng = np.random.default_rng(0)
    layouts = np.zeros((40, 64), dtype=np.int64)
    for row in layouts:
        row[rng.choice(64, 10, replace=False)] = 1
        row[rng.choice(np.flatnonzero(row == 0), 6, replace=False)] = 2
    selection, scoring = _tokens(layouts[:30]), _tokens(layouts[30:], seed=1)
    predicted = probe_layout(selection, layouts[:30], scoring, seed=0)
    for p, t in zip(predicted, layouts[30:]):
        assert layout_ious(p, t, 2) == (1.0, 1.0)


def test_training_summary_tells_a_plateau_from_a_falling_curve():
    steps = np.arange(1, 201)
    flat = pl.DataFrame({"step": steps, "tokens": steps * 512, "fvu": 0.3 + 0.5 * np.exp(-steps / 10)})
    falling = pl.DataFrame({"step": steps, "tokens": steps * 512, "fvu": 1.0 - steps / 250})
    assert _summary(flat)["plateaued"] and abs(_summary(flat)["relative_change"]) < 0.01
    summary = _summary(falling)
    assert not summary["plateaued"] and summary["relative_change"] == pytest.approx((0.238 - 0.318) / 0.318, rel=0.01)
