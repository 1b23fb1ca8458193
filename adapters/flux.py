"""Flux (DiT) family: FluxPipeline with a FluxTransformer2DModel.

Hook points are the double-stream blocks `transformer_blocks.N` (`double.N`) and the
single-stream blocks `single_transformer_blocks.N` (`single.N`), image tokens by default and
the text stream with `.txt`. Both block kinds take `hidden_states` (image tokens) and
`encoder_hidden_states` (text tokens) as keyword arguments and return
`(encoder_hidden_states, hidden_states)` (diffusers >= 0.35). Image tokens are the latent
packed 2x2 in row-major order, so (batch, L, d) reshapes to (batch, H/s, W/s, d).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import Adapter, CallState, ProtocolDefaults, model_config
from .family_spec import Family, Guidance, RealModel, TinyModel
from .hookpoints import HookPoint
from .tiny import TINY_FLUX_TRANSFORMER, TINY_SCHEDULERS, TINY_VAE_FACTOR, build_tiny_flux

_STREAMS = {"image": ("hidden_states", 1), "text": ("encoder_hidden_states", 0)}  # kwarg name, output index


def flux_hook_points(transformer: torch.nn.Module, vae_factor: int, text_tokens: int) -> dict[str, HookPoint]:
    """`double.N`, `double.N.txt`, `single.N`, `single.N.txt` for every block, in forward order."""
    config = model_config(transformer)
    d = int(config.num_attention_heads * config.attention_head_dim)
    stride = vae_factor * 2 * int(config.patch_size)  # 2x2 latent packing
    points: dict[str, HookPoint] = {}
    for kind, attribute in (("double", "transformer_blocks"), ("single", "single_transformer_blocks")):
        for index in range(len(getattr(transformer, attribute))):
            path = f"{attribute}.{index}"
            points[f"{kind}.{index}"] = HookPoint(f"{kind}.{index}", path, d, stride=stride)
            points[f"{kind}.{index}.txt"] = HookPoint(f"{kind}.{index}.txt", path, d, text_tokens=text_tokens)
    return points


class FluxAdapter(Adapter):
    family = "flux"

    def _denoiser_of(self, pipe: Any) -> torch.nn.Module:
        return pipe.transformer

    def _discover_hook_points(self) -> dict[str, HookPoint]:
        return flux_hook_points(self.denoiser, self.vae_factor, self.defaults.max_sequence_length or 512)

    def _block_io(self, hook, args, kwargs, output):
        name, index = _STREAMS[hook.stream]
        inp = kwargs[name] if name in kwargs else args[0 if hook.stream == "image" else 1]
        return inp, output[index]

    def _with_output(self, hook, output, new):
        index = _STREAMS[hook.stream][1]
        items = list(output)
        items[index] = new
        return tuple(items)

    def _to_grid(self, hook, x, grid):
        return x.reshape(x.shape[0], grid[0], grid[1], x.shape[-1])

    def _from_grid(self, hook, x):
        return x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3])

    def _read_timestep(self, args, kwargs):
        # The pipeline passes timestep / 1000, which is the flow-matching sigma: 1 = pure noise.
        sigma = kwargs["timestep"] if "timestep" in kwargs else args[2]
        sigma = float(sigma.flatten()[0]) if torch.is_tensor(sigma) else float(sigma)
        return sigma * 1000.0, min(max(sigma, 0.0), 1.0)

    def _step_times(self, scheduler: Any, steps: int, height: int, width: int) -> list[float]:
        # FluxPipeline: sigmas 1 .. 1/N, shifted by mu from the packed latent length (dynamic shifting only);
        # the transformer gets timestep / 1000, which _read_timestep reads as t.
        packed = (height // (self.vae_factor * 2)) * (width // (self.vae_factor * 2))
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=_flux_shift(packed, scheduler.config))
        return [min(max(float(t), 0.0), 1.0) for t in scheduler.timesteps.to(torch.float32) / 1000]

    def _row_branches(self, rows: int, state: CallState) -> list[str]:
        return [state.call_branch or "cond"] * rows

    def _call_branch(self, repeated: bool) -> str | None:
        # true CFG: the pipeline calls the transformer again at the same timestep for the uncond pass
        return "uncond" if repeated else "cond"

    def _pipeline_kwargs(self, steps, guidance, height, width, negative_prompt):
        kwargs = super()._pipeline_kwargs(steps, guidance, height, width, negative_prompt)
        if self.defaults.max_sequence_length:
            kwargs["max_sequence_length"] = self.defaults.max_sequence_length
        return kwargs


def _flux_branches(guidance: float, denoiser_config: Any) -> tuple[str, ...]:
    # Guidance-distilled: dev embeds the guidance in the transformer, schnell ignores it; there is no
    # unconditional pass unless a negative prompt asks for true CFG.
    return ("cond",)


def _flux_guidance_kwargs(guidance: float, negative_prompt: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"guidance_scale": guidance}
    if negative_prompt is not None:  # true CFG: a separate uncond call per step
        kwargs["negative_prompt"] = negative_prompt
        kwargs["true_cfg_scale"] = max(guidance, 1.0 + 1e-6)
    return kwargs


FLUX_GUIDANCE = Guidance(branches=_flux_branches, pipeline_kwargs=_flux_guidance_kwargs)


def _flux_shift(image_seq_len: int, config: Any) -> float:
    """diffusers' calculate_shift (FluxPipeline), on the scheduler's config."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + base_shift - slope * base_len


# The published FLUX.1 transformer config (`transformer/config.json`; dev adds guidance_embeds).
FLUX_TRANSFORMER: dict[str, Any] = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    axes_dims_rope=(16, 56, 56),
)

FLUX = Family(
    name="flux",
    title="Flux",
    adapter=FluxAdapter,
    pipeline_class="FluxPipeline",
    denoiser_class="FluxTransformer2DModel",
    denoiser_subfolder="transformer",
    meta_config=FLUX_TRANSFORMER,
    vae_factor=8,  # VAE block_out_channels [128, 256, 512, 512], 16 latent channels
    cuda_dtype=torch.bfloat16,
    real_models=(
        RealModel(
            "black-forest-labs/FLUX.1-schnell",
            "Flux schnell, 4 steps",
            ProtocolDefaults(4, 0.0, 1024, 1024, max_sequence_length=256),
            scheduler={"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0, "use_dynamic_shifting": False},
        ),
        RealModel(
            "black-forest-labs/FLUX.1-dev",
            "Flux dev, 28 steps, guidance 3.5",
            ProtocolDefaults(28, 3.5, 1024, 1024, max_sequence_length=512),
            scheduler={
                "_class_name": "FlowMatchEulerDiscreteScheduler",
                "shift": 3.0,
                "use_dynamic_shifting": True,
                "base_shift": 0.5,
                "max_shift": 1.15,
                "base_image_seq_len": 256,
                "max_image_seq_len": 4096,
            },
            denoiser_overrides={"guidance_embeds": True},
        ),
    ),
    # a transformer that embeds its (distilled) guidance is dev's; one that does not, schnell's
    reference_model=lambda denoiser_config: (
        "black-forest-labs/FLUX.1-dev" if denoiser_config.get("guidance_embeds") else "black-forest-labs/FLUX.1-schnell"
    ),
    tiny=TinyModel(
        "tiny/flux",
        "random tiny Flux-style pipeline (tests)",
        build=build_tiny_flux,
        denoiser_config=TINY_FLUX_TRANSFORMER,
        vae_factor=TINY_VAE_FACTOR,
        defaults=ProtocolDefaults(4, 0.0, 64, 64, max_sequence_length=16),
        scheduler=TINY_SCHEDULERS["tiny/flux"],
    ),
    guidance=FLUX_GUIDANCE,
    # the 12B transformer and the T5-XXL encoder: what makes Flux need 4 bits on a 24 GB card
    nf4_components={
        "transformer": ("diffusers", "FluxTransformer2DModel"),
        "text_encoder_2": ("transformers", "T5EncoderModel"),
    },
    companion_parameters={"text_encoder": 123_060_480, "text_encoder_2": 4_762_310_656, "vae": 83_819_683},
)
