"""Prompt adherence of a toy model, judged per attribute on the held-out captions.

Caption i of `eval_scenes()` is generated with seed i, using the protocol defaults in the
model folder's diffdict.json (steps, guidance, size) unless overridden.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffdict.toyworld.errors import error_breakdown
from diffdict.toyworld.judge import ATTRIBUTES, judge, judged_adherence
from diffdict.toyworld.scenes import eval_scenes

WEIGHTS = Path(__file__).parent / "weights"
TOY_MODELS = ("sdxl-base", "sdxl-turbo", "flux")


def model_folder(model: str) -> Path:
    """'toy/sdxl-base', 'sdxl-base' or a folder path -> the pipeline folder."""
    name = model.removeprefix("toy/")
    if name in TOY_MODELS:
        folder = WEIGHTS / name
    else:
        folder = Path(model)
    if not (folder / "model_index.json").exists():
        raise ValueError(
            f"no toy model at {folder}: use one of {', '.join('toy/' + m for m in TOY_MODELS)} "
            "or a folder written by `diffdict toy train`"
        )
    return folder


def load_pipeline(model: str, device: str = "cpu"):
    """(the diffusers pipeline in float32, protocol defaults from its diffdict.json) for a toy
    model, loaded through `adapters.load` like every other model."""
    from diffdict import adapters

    folder = model_folder(model)
    pipe = adapters.load(str(folder), device=device, dtype=torch.float32).pipe
    defaults = json.loads((folder / "diffdict.json").read_text())
    return pipe, defaults


def pipeline_device(pipe) -> torch.device:
    """Where a pipeline's denoiser runs (the device its seeded generators must live on)."""
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    return next(denoiser.parameters()).device


def generate(
    pipe, captions: list[str], seeds: list[int], defaults: dict, steps: int | None = None, guidance: float | None = None
) -> np.ndarray:
    """(len(captions), H, W, 3) uint8 images, one seed per caption."""
    kwargs = {
        "num_inference_steps": steps or defaults["steps"],
        "guidance_scale": defaults["guidance"] if guidance is None else guidance,
        "height": defaults["height"],
        "width": defaults["width"],
    }
    if "max_sequence_length" in defaults:
        kwargs["max_sequence_length"] = defaults["max_sequence_length"]
    device = pipeline_device(pipe)
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    with torch.no_grad():
        images = pipe(captions, generator=generators, output_type="np", **kwargs).images
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def evaluate(
    model: str,
    n: int = 256,
    batch: int = 64,
    steps: int | None = None,
    guidance: float | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """{'adherence': {attribute: share}, 'errors': `errors.error_breakdown`, 'seconds_per_batch':
    float, 'images': array}."""
    pipe, defaults = load_pipeline(model, device)
    scenes = list(eval_scenes(n))
    images, times = [], []
    for start in tqdm(range(0, n, batch), desc=f"eval {model}", disable=not progress):
        chunk = scenes[start : start + batch]
        began = time.perf_counter()
        images.append(generate(pipe, [s.caption for s in chunk], [s.seed for s in chunk], defaults, steps, guidance))
        times.append(time.perf_counter() - began)
    images = np.concatenate(images)
    judgements = [judge(image) for image in images]
    return {
        "adherence": judged_adherence(scenes, judgements),
        "errors": error_breakdown(scenes, judgements),
        "seconds_per_batch": float(np.median(times)),
        "images": images,
    }


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per model, one column per attribute (percent)."""
    header = "| model | " + " | ".join(ATTRIBUTES) + " |"
    lines = [header, "|" + "---|" * (len(ATTRIBUTES) + 1)]
    for model, table in rows.items():
        lines.append(f"| {model} | " + " | ".join(f"{100 * table[a]:.1f}" for a in ATTRIBUTES) + " |")
    return "\n".join(lines)
