"""The judge reads rendered ground truth back exactly, and survives mild noise and blur."""
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from toyworld.judge import adherence, judge
from toyworld.render import render
from toyworld.scenes import sample_scene

N_SCENES = 400


@pytest.fixture(scope="module")
def truth():
    scenes = [sample_scene(seed, "train") for seed in range(N_SCENES)]
    return scenes, [render(scene).image for scene in scenes]


def _assert_at_least(table: dict[str, float], minimum: float):
    failing = {k: v for k, v in table.items() if v < minimum}
    assert not failing, f"attributes below {minimum:.0%}: {failing}"


def test_judge_is_exact_on_ground_truth(truth):
    scenes, images = truth
    _assert_at_least(adherence(scenes, images), 0.99)


def test_judge_is_robust_to_mild_noise(truth):
    scenes, images = truth
    rng = np.random.default_rng(0)
    noisy = [np.clip(i + rng.normal(0, 10, i.shape), 0, 255).astype(np.uint8) for i in images]
    _assert_at_least(adherence(scenes, noisy), 0.99)


def test_judge_is_robust_to_mild_blur(truth):
    scenes, images = truth
    blurred = [ndimage.gaussian_filter(i.astype(float), sigma=(0.8, 0.8, 0)).round().astype(np.uint8)
               for i in images]
    _assert_at_least(adherence(scenes, blurred), 0.99)


def test_judge_reads_pil_images_and_other_resolutions():
    scene = sample_scene(3)
    big = Image.fromarray(render(scene).image).resize((128, 128), Image.NEAREST)
    found = judge(big)
    assert found.background == scene.background and found.style == scene.style
    assert sorted(o.position for o in found.objects) == sorted(o.position for o in scene.objects)


def test_judge_sees_nothing_in_an_empty_image():
    empty = np.full((64, 64, 3), 255, dtype=np.uint8)
    found = judge(empty)
    assert found.background == "white" and found.objects == [] and found.style == "flat"
