"""The judge reads rendered ground truth back exactly, and survives mild noise and blur."""

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from diffdict.toyworld.judge import adherence, judge
from diffdict.toyworld.render import render
from diffdict.toyworld.scenes import sample_scene

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
    blurred = [ndimage.gaussian_filter(i.astype(float), sigma=(0.8, 0.8, 0)).round().astype(np.uint8) for i in images]
    _assert_at_least(adherence(scenes, blurred), 0.99)


def test_judge_reads_pil_images_and_other_resolutions():
    scene = sample_scene(3)
    big = Image.fromarray(render(scene).image).resize((128, 128), Image.Resampling.NEAREST)
    found = judge(big)
    assert found.background == scene.background and found.style == scene.style
    assert sorted(o.position for o in found.objects) == sorted(o.position for o in scene.objects)


def test_judge_sees_nothing_in_an_empty_image():
    empty = np.full((64, 64, 3), 255, dtype=np.uint8)
    found = judge(empty)
    assert found.background == "white" and found.objects == [] and found.style == "flat"


def _vae_round_trips(model: str, scenes) -> list[np.ndarray]:
    import torch
    from diffusers import AutoencoderKL

    from diffdict.toyworld.eval import WEIGHTS
    from diffdict.toyworld.training.diffusers_calls import decode, posterior

    vae = AutoencoderKL.from_pretrained(str(WEIGHTS / model / "vae"), dtype=torch.float32).eval()
    pixels = torch.from_numpy(np.stack([render(s).image for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        decoded = decode(vae, posterior(vae, pixels).mean)
    return list(((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("model", ["sdxl-base", "flux"])
def test_judge_reads_scenes_back_through_the_shipped_vaes(model):
    # Every generated image comes out of a VAE decoder, which blurs and rounds small shapes:
    # a round trip shows exactly what the decoder can show, and the truth is known.
    # The judge before template fitting read 88-90% of the SDXL VAE's shapes right.
    scenes = [sample_scene(seed, "train") for seed in range(20_000, 20_400)]
    _assert_at_least(adherence(scenes, _vae_round_trips(model, scenes)), 0.93)


def test_judge_sees_circles_in_blobs():
    # A blurred disc in each object's place must not be read as the shape the caption asked for.
    from diffdict.toyworld.render import pattern_mask, pattern_tone, shape_mask
    from diffdict.toyworld.scenes import BACKGROUNDS, COLOURS

    scenes = [sample_scene(seed, "train") for seed in range(100)]
    shapes, n_objects = [], sum(len(scene.objects) for scene in scenes)
    for scene in scenes:
        image = np.empty((64, 64, 3))
        image[:] = BACKGROUNDS[scene.background]
        image[pattern_mask(scene.pattern)] = pattern_tone(scene.background)  # every background has its pattern
        for obj in scene.objects:
            disc = ndimage.gaussian_filter(shape_mask("circle", obj.cx, obj.cy, obj.half, obj.half).astype(float), 1.5)
            image = image * (1 - disc[..., None]) + np.asarray(COLOURS[obj.colour]) * disc[..., None]
        shapes += [o.shape for o in judge(image.round().astype(np.uint8)).objects]
    assert len(shapes) >= 0.9 * n_objects and shapes.count("circle") / len(shapes) >= 0.95, shapes
