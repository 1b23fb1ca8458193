"""The shipped toy models: real architectures, small, loadable through the adapters, and judged
adherence above floors. Speed is measured by benchmarks/toy_speed.py, not by a timed test."""

import json

import pytest
import torch

from diffdict.toyworld.eval import TOY_MODELS, WEIGHTS, generate, load_pipeline
from diffdict.toyworld.judge import adherence
from diffdict.toyworld.scenes import eval_scenes

# What the shipped weights reach on 64 held-out captions (toyworld/README.md has the full
# 256-caption table). These floors catch a broken export or loader, not the targets.
FLOORS = {
    "sdxl-base": {
        "count": 0.95,
        "colour": 0.93,
        "shape": 0.92,
        "size": 0.95,
        "position": 0.95,
        "background": 0.95,
        "pattern": 0.93,
        "style": 0.88,
    },
    "sdxl-turbo": {
        "count": 0.91,
        "colour": 0.89,
        "shape": 0.86,
        "size": 0.93,
        "position": 0.93,
        "background": 0.95,
        "pattern": 0.9,
        "style": 0.88,
    },
    "flux": {
        "count": 0.93,
        "colour": 0.94,
        "shape": 0.87,
        "size": 0.94,
        "position": 0.94,
        "background": 0.95,
        "pattern": 0.95,
        "style": 0.95,
    },
}


@pytest.fixture(scope="module")
def pipelines():
    return {name: load_pipeline(f"toy/{name}") for name in TOY_MODELS}


def test_weights_are_small_fp16_safetensors():
    files = [f for f in WEIGHTS.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 60 * 10**6
    assert not any(f.suffix in (".bin", ".pt", ".pth", ".ckpt") for f in files)
    for name in TOY_MODELS:
        defaults = json.loads((WEIGHTS / name / "diffdict.json").read_text())
        assert {"steps", "guidance", "height", "width"} <= set(defaults)


def test_architectures_match_the_real_pipelines(pipelines):
    from diffusers import FluxPipeline, StableDiffusionXLPipeline

    for name in ("sdxl-base", "sdxl-turbo"):
        pipe, _ = pipelines[name]
        assert isinstance(pipe, StableDiffusionXLPipeline)
        assert pipe.unet.config.addition_embed_type == "text_time"
        assert pipe.unet.dtype == torch.float32 and pipe.vae_scale_factor == 2
        assert len(pipe.unet.down_blocks[2].attentions) == 2  # down.2.1 exists
    assert pipelines["sdxl-turbo"][0].scheduler.config.timestep_spacing == "trailing"
    flux, _ = pipelines["flux"]
    assert isinstance(flux, FluxPipeline)
    assert len(flux.transformer.transformer_blocks) >= 2 and len(flux.transformer.single_transformer_blocks) >= 2


def test_hook_grids_are_at_least_8x8(pipelines):
    pipe, _ = pipelines["sdxl-turbo"]
    seen = {}

    def recorder(name):
        def hook(module, inputs, output):
            seen.setdefault(name, tuple(output[0].shape))  # returns None: output unchanged

        return hook

    hooks = [
        pipe.unet.down_blocks[2].attentions[1].register_forward_hook(recorder("down.2.1")),
        pipe.unet.mid_block.attentions[0].register_forward_hook(recorder("mid.0")),
        pipe.unet.up_blocks[0].attentions[0].register_forward_hook(recorder("up.0.0")),
    ]
    try:
        generate(
            pipe, ["a large red circle in the centre, flat, on a black background"], [0], pipelines["sdxl-turbo"][1]
        )
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 3 and all(shape[-2:] == (8, 8) for shape in seen.values()), seen


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_shipped_models_follow_prompts(pipelines, name):
    pipe, defaults = pipelines[name]
    scenes = list(eval_scenes(64))
    images = generate(pipe, [s.caption for s in scenes], [s.seed for s in scenes], defaults)
    table = adherence(scenes, list(images))
    low = {a: v for a, v in table.items() if a in FLOORS[name] and v < FLOORS[name][a]}
    assert not low, f"{name} below its floor: {low} (all: {table})"


def test_flux_image_tokens_are_an_8x8_grid(pipelines):
    pipe, defaults = pipelines["flux"]
    seen = []

    def hook(module, args, kwargs, output):
        seen.append(tuple(kwargs["hidden_states"].shape))

    handle = pipe.transformer.transformer_blocks[0].register_forward_hook(hook, with_kwargs=True)
    try:
        generate(pipe, ["a small blue square at the top, dotted, on a white background"], [0], defaults, steps=1)
    finally:
        handle.remove()
    assert seen and seen[0][1] == 8 * 8


def test_toy_models_load_through_the_adapters():
    from diffdict import adapters

    for name in TOY_MODELS:
        adapter = adapters.load(f"toy/{name}", device="cpu")
        defaults = json.loads((WEIGHTS / name / "diffdict.json").read_text())
        assert adapter.defaults.steps == defaults["steps"] and adapter.defaults.height == 64
        hook = "down.2.1" if adapter.family == "sdxl" else "double.1"
        gen = adapter.generate(["a large red circle in the centre, flat, on a black background"], hooks=[hook], steps=1)
        assert gen.captures[0].value.shape[1:3] == (8, 8)  # both families: the minimum grid
