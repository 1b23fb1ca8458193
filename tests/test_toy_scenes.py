"""The toy world's scenes: deterministic, held out, captions and masks that agree."""

import numpy as np
import pytest

from diffdict.toyworld.render import pattern_mask, pattern_tone, render
from diffdict.toyworld.scenes import (
    BACKGROUNDS,
    COLOURS,
    PATTERN_TILE,
    PATTERNS,
    POSITIONS,
    SHAPES,
    STYLES,
    eval_scenes,
    pattern_codes,
    sample_scene,
    train_scene,
    vocabulary,
)


def test_scenes_are_deterministic_from_seed():
    for seed in range(20):
        a, b = sample_scene(seed), sample_scene(seed)
        assert a == b
        assert np.array_equal(render(a).image, render(b).image)
    assert sample_scene(1).caption != sample_scene(2).caption or sample_scene(1) != sample_scene(2)


def test_grammar_covers_the_issue_minimums():
    assert {"circle", "square", "triangle"} <= set(SHAPES) and len(SHAPES) >= 4
    assert len(COLOURS) >= 6 and len(BACKGROUNDS) >= 3 and len(STYLES) >= 2
    assert {"left", "right", "top", "bottom", "centre"} <= set(POSITIONS)


def test_training_scenes_never_use_held_out_captions():
    held_out = {scene.caption for scene in eval_scenes(256)}
    assert len(held_out) == 256
    assert all(train_scene(seed).caption not in held_out for seed in range(2000))


def test_caption_reads_as_english_and_uses_only_the_vocabulary():
    scene = next(s for s in (sample_scene(i) for i in range(100)) if len(s.objects) == 2)
    caption = scene.caption
    assert caption.startswith("a ") and " and a " in caption
    assert caption.endswith(f" background with pattern {scene.pattern}")
    words = set(vocabulary())
    for i in range(300):
        tokens = sample_scene(i).caption.replace(",", " , ").split()
        assert set(tokens) <= words


@pytest.mark.parametrize("seed", range(50))
def test_masks_are_exact_and_disjoint(seed):
    rendered = render(sample_scene(seed))
    image, masks = rendered.image, rendered.masks
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert masks.shape == (len(rendered.scene.objects), 64, 64)
    assert masks.sum(axis=0).max() <= 1  # objects never overlap
    scene = rendered.scene
    background = np.where(
        pattern_mask(scene.pattern)[..., None],
        pattern_tone(scene.background),
        np.asarray(BACKGROUNDS[scene.background]),
    )
    assert (image[~masks.any(axis=0)] == background[~masks.any(axis=0)]).all()
    for obj, mask in zip(rendered.scene.objects, masks):
        assert mask.sum() > 40
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = obj.box
        assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1
    assert rendered.instance_map.max() == len(rendered.scene.objects)


def test_patterns_outnumber_a_hooks_channels_and_tile_every_background_cell_alike():
    assert len(PATTERNS) >= 128  # twice the toy hooks' 64 channels: they can only be held in superposition
    codes = np.stack([c.reshape(-1) for c in pattern_codes().values()])
    distances = (codes[:, None] != codes[None]).sum(-1)
    assert distances[~np.eye(len(codes), dtype=bool)].min() >= 4  # a tile read with a few blocks wrong is still right
    mask = pattern_mask(PATTERNS[5])
    cells = mask.reshape(8, PATTERN_TILE, 8, PATTERN_TILE).transpose(0, 2, 1, 3).reshape(64, -1)
    assert (cells == cells[0]).all()  # every 8x8 cell (a hook cell at 8x8) shows the same tile
    drawn = {sample_scene(seed).pattern for seed in range(3000)}
    assert len(drawn) == len(PATTERNS)
