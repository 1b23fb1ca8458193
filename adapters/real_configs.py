"""Configs of the real denoisers, so hook points can be listed without downloading weights.

Values are those of the published model configs (SDXL `unet/config.json`, shared by Base
and Turbo; Flux `transformer/config.json`). `meta_denoiser` builds the module on the meta
device: every shape is real, no memory is used.
"""
from __future__ import annotations

from pathlib import Path

import torch
from .errors import MissingFileError

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
SDXL_VAE_FACTOR = 8  # VAE block_out_channels [128, 256, 512, 512]

FLUX_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
    axes_dims_rope=(16, 56, 56),
)
FLUX_VAE_FACTOR = 8  # VAE block_out_channels [128, 256, 512, 512], 16 latent channels


def meta_denoiser(family: str, guidance_embeds: bool = False, config: dict | None = None) -> torch.nn.Module:
    """The real SDXL U-Net or Flux transformer (or one built from `config`) with meta tensors."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        if family == "sdxl":
            from diffusers import UNet2DConditionModel

            return UNet2DConditionModel(**(config or SDXL_UNET))
        from diffusers import FluxTransformer2DModel

        return FluxTransformer2DModel(**(config or dict(FLUX_TRANSFORMER, guidance_embeds=guidance_embeds)))


def meta_denoiser_from_folder(family: str, folder: Path) -> tuple[torch.nn.Module, int]:
    """(denoiser on the meta device, VAE scale factor) from a diffusers folder's configs."""
    import json

    from accelerate import init_empty_weights

    subfolder = "unet" if family == "sdxl" else "transformer"
    config_path = folder / subfolder / "config.json"
    if not config_path.exists():
        raise MissingFileError(f"{config_path} is missing: a {family} pipeline folder needs {subfolder}/config.json")
    config = json.loads(config_path.read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    with init_empty_weights():
        if family == "sdxl":
            from diffusers import UNet2DConditionModel as cls
        else:
            from diffusers import FluxTransformer2DModel as cls
        denoiser = cls.from_config(config)
    return denoiser, 2 ** (len(vae_config["block_out_channels"]) - 1)
