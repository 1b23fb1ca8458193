"""Where a model's denoising steps fall in normalised time t (1 = pure noise), without loading the model.

`diffdict check` places every time window of a study among the steps of the models it edits before anything is
loaded: a window no step falls in would edit nothing, and its rows would read as measured. The times are those
the hooks see (each family's `Adapter._read_timestep`): the scheduler's timesteps as the family's pipeline sets
them for N steps, normalised as the adapter normalises them. tests/test_bad_inputs_names.py checks them against
the times recorded while generating.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

# The published scheduler/scheduler_config.json of each real model (only what differs from the defaults).
REAL_SCHEDULERS: dict[str, dict[str, Any]] = {
    "stabilityai/sdxl-turbo": {"_class_name": "EulerAncestralDiscreteScheduler", "beta_start": 0.00085,
                               "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1,
                               "timestep_spacing": "trailing"},
    "stabilityai/stable-diffusion-xl-base-1.0": {"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085,
                                                 "beta_end": 0.012, "beta_schedule": "scaled_linear",
                                                 "steps_offset": 1, "timestep_spacing": "leading"},
    "black-forest-labs/FLUX.1-schnell": {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0,
                                         "use_dynamic_shifting": False},
    "black-forest-labs/FLUX.1-dev": {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0,
                                     "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
                                     "base_image_seq_len": 256, "max_image_seq_len": 4096},
}


def scheduler_config(model_id: str) -> dict[str, Any]:
    """The scheduler config a model generates with: published (real), built in (tiny), or its folder's (toy, local)."""
    from .registry import REAL_MODELS, TINY_MODELS, resolve
    from .tiny import TINY_SCHEDULERS

    if model_id in TINY_MODELS:
        return dict(TINY_SCHEDULERS[model_id])
    if model_id in REAL_MODELS:
        return dict(REAL_SCHEDULERS[model_id])
    _, folder = resolve(model_id)
    return json.loads((folder / "scheduler" / "scheduler_config.json").read_text())


def step_times(adapter: Any, steps: int, height: int, width: int) -> list[float]:
    """Normalised t of each of `steps` denoising steps of `adapter`'s model at height x width px (a meta-device
    adapter will do). Computed in float32, as on the CPU; under bf16 a time can differ in its last bits."""
    import diffusers

    config = scheduler_config(adapter.model_id)
    scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    if adapter.family == "flux":
        # FluxPipeline: sigmas 1 .. 1/N, shifted by mu from the packed latent length (dynamic shifting only);
        # the transformer gets timestep / 1000, which its adapter reads as t.
        packed = (height // (adapter.vae_factor * 2)) * (width // (adapter.vae_factor * 2))
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=_flux_shift(packed, scheduler.config))
        return [min(max(float(t), 0.0), 1.0) for t in scheduler.timesteps.to(torch.float32) / 1000]
    # StableDiffusionXLPipeline: set_timesteps(N); the adapter reads timestep / (num_train_timesteps - 1).
    scheduler.set_timesteps(steps)
    last = scheduler.config.num_train_timesteps - 1
    return [min(max(float(t) / last, 0.0), 1.0) for t in scheduler.timesteps]


def _flux_shift(image_seq_len: int, config: Any) -> float:
    """diffusers' calculate_shift (FluxPipeline), on the scheduler's config."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + base_shift - slope * base_len
