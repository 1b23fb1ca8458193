"""SDXL (U-Net) family: SDXL Base, SDXL Turbo and every pipeline with a UNet2DConditionModel.

Hook points are the U-Net's transformer blocks (`Transformer2DModel`):
`down_blocks.2.attentions.1` -> `down.2.1`, `mid_block.attentions.0` -> `mid.0`,
`up_blocks.0.attentions.1` -> `up.0.1`. Their maps are (batch, d, h, w); with classifier-free
guidance the pipeline batches [uncond rows, cond rows].
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .base import Adapter, CallState, ProtocolDefaults, model_config
from .family_spec import Family, Guidance, RealModel, TinyModel
from .hookpoints import HookPoint
from .tiny import TINY_SCHEDULERS, TINY_UNET, TINY_VAE_FACTOR, build_tiny_sdxl

_BLOCK_PATTERN = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.attentions\.(\d+)$|^mid_block\.attentions\.(\d+)$")


def unet_hook_points(unet: torch.nn.Module, vae_factor: int) -> dict[str, HookPoint]:
    """Every transformer block of a U-Net, named `down.i.j`, `mid.j`, `up.i.j`, in forward order."""
    levels = len(model_config(unet).block_out_channels)
    found: list[tuple[tuple[int, int, int], HookPoint]] = []
    for path, module in unet.named_modules():
        match = _BLOCK_PATTERN.match(path)
        if not match:
            continue
        kind, block, index, mid_index = match.groups()
        if mid_index is not None:
            name, level, order = f"mid.{mid_index}", levels - 1, (1, 0, int(mid_index))
        elif kind == "down_blocks":
            name, level, order = f"down.{block}.{index}", int(block), (0, int(block), int(index))
        else:
            name, level, order = f"up.{block}.{index}", levels - 1 - int(block), (2, int(block), int(index))
        d = int(model_config(module).in_channels)
        found.append((order, HookPoint(name=name, module_path=path, d=d, stride=vae_factor * 2**level)))
    return {hp.name: hp for _, hp in sorted(found, key=lambda item: item[0])}


class SDXLAdapter(Adapter):
    family = "sdxl"

    def _denoiser_of(self, pipe: Any) -> torch.nn.Module:
        return pipe.unet

    def _discover_hook_points(self) -> dict[str, HookPoint]:
        return unet_hook_points(self.denoiser, self.vae_factor)

    def _block_io(self, hook, args, kwargs, output):
        inp = args[0] if args else kwargs["hidden_states"]
        out = output[0] if isinstance(output, tuple) else output.sample
        return inp, out

    def _with_output(self, hook, output, new):
        if isinstance(output, tuple):
            return (new, *output[1:])
        output.sample = new
        return output

    def _to_grid(self, hook, x, grid):
        return x.permute(0, 2, 3, 1)

    def _from_grid(self, hook, x):
        return x.permute(0, 3, 1, 2).contiguous()

    def _read_timestep(self, args, kwargs):
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        timestep = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        last = self.pipe.scheduler.config.num_train_timesteps - 1
        return timestep, min(max(timestep / last, 0.0), 1.0)

    def _step_times(self, scheduler: Any, steps: int, height: int, width: int) -> list[float]:
        # StableDiffusionXLPipeline: set_timesteps(N); _read_timestep reads timestep / (num_train_timesteps - 1)
        scheduler.set_timesteps(steps)
        last = scheduler.config.num_train_timesteps - 1
        return [min(max(float(t) / last, 0.0), 1.0) for t in scheduler.timesteps]

    def _row_branches(self, rows: int, state: CallState) -> list[str]:
        if self.pipe.do_classifier_free_guidance:
            half = rows // 2
            return ["uncond"] * half + ["cond"] * (rows - half)
        return ["cond"] * rows


def _sdxl_branches(guidance: float, denoiser_config: Any) -> tuple[str, ...]:
    # diffusers' rule (do_classifier_free_guidance): CFG above 1, unless the U-Net embeds guidance itself
    embeds_guidance = denoiser_config.get("time_cond_proj_dim") is not None
    return ("uncond", "cond") if guidance > 1 and not embeds_guidance else ("cond",)


def _sdxl_guidance_kwargs(guidance: float, negative_prompt: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"guidance_scale": guidance}
    if negative_prompt is not None:
        kwargs["negative_prompt"] = negative_prompt
    return kwargs


# Classifier-free guidance in one batch: the pipeline stacks [uncond rows, cond rows] when guidance > 1.
SDXL_GUIDANCE = Guidance(branches=_sdxl_branches, pipeline_kwargs=_sdxl_guidance_kwargs)


# The published SDXL U-Net config (`unet/config.json`, shared by Base and Turbo).
SDXL_UNET: dict[str, Any] = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
)

# The published scheduler/scheduler_config.json of the real models (what differs from the defaults).
_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}

SDXL = Family(
    name="sdxl",
    title="SDXL",
    adapter=SDXLAdapter,
    pipeline_class="StableDiffusionXLPipeline",
    denoiser_class="UNet2DConditionModel",
    denoiser_subfolder="unet",
    meta_config=SDXL_UNET,
    vae_factor=8,  # VAE block_out_channels [128, 256, 512, 512]
    cuda_dtype=torch.float16,
    real_models=(
        RealModel(
            "stabilityai/sdxl-turbo",
            "SDXL Turbo, 1 step, no CFG",
            ProtocolDefaults(1, 0.0, 512, 512),
            scheduler={"_class_name": "EulerAncestralDiscreteScheduler", **_SCHEDULER, "timestep_spacing": "trailing"},
        ),
        RealModel(
            "stabilityai/stable-diffusion-xl-base-1.0",
            "SDXL Base, 25 steps, CFG 8",
            ProtocolDefaults(25, 8.0, 1024, 1024),
            scheduler={"_class_name": "EulerDiscreteScheduler", **_SCHEDULER, "timestep_spacing": "leading"},
        ),
    ),
    reference_model=lambda denoiser_config: "stabilityai/stable-diffusion-xl-base-1.0",
    tiny=TinyModel(
        "tiny/sdxl",
        "random tiny SDXL-style pipeline (tests)",
        build=build_tiny_sdxl,
        denoiser_config=TINY_UNET,
        vae_factor=TINY_VAE_FACTOR,
        defaults=ProtocolDefaults(4, 5.0, 64, 64),
        scheduler=TINY_SCHEDULERS["tiny/sdxl"],
    ),
    guidance=SDXL_GUIDANCE,
    companion_parameters={"text_encoder": 123_060_480, "text_encoder_2": 694_659_840, "vae": 83_653_863},
)
