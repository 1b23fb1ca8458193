"""Toy models of the real architectures, built as standard diffusers pipelines.

Sizes are chosen for speed on a 2-core CPU while keeping the real layouts and the hook
grids the studies need at 64 px: the SDXL VAE halves the side once (latents 32x32) and the
SDXL-style U-Net has three levels so that down.2 / mid / up.0 run at 8x8; the Flux VAE
halves it twice (latents 16x16x16, as real Flux has 16 latent channels) and Flux packs 2x2
latent patches into an 8x8 grid of image tokens, the issue's minimum. That grid keeps the
transformer's attention cheap enough for a width of 256, which is what lets it draw shapes
(toyworld/README.md, "What mattered": width, not the token grid, moved shape).

The text encoders are used the way the pipelines use them, which training must copy
exactly (`encode_sdxl`, `encode_flux`): SDXL takes the penultimate hidden states of both
CLIP encoders (concatenated) and the projected pooled output of the second; Flux takes
CLIP's pooled output and T5's last hidden states; no attention masks anywhere.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
)

from diffdict.adapters.tokenizers import special_token_ids, word_tokenizer
from diffdict.toyworld.scenes import IMAGE_SIZE, vocabulary

MAX_TOKENS = 32  # the longest caption is 26 tokens with <bos>/<eos>
TEXT_WIDTH = 64  # hidden size of every toy text encoder
TIME_IDS = (IMAGE_SIZE, IMAGE_SIZE, 0, 0, IMAGE_SIZE, IMAGE_SIZE)  # SDXL micro-conditioning
ADDITION_TIME_EMBED_DIM = 16
SDXL_SCHEDULER: dict[str, Any] = {  # SDXL Base's noise schedule
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}


def tokenizer() -> PreTrainedTokenizerFast:
    return word_tokenizer(vocabulary(), MAX_TOKENS)


def clip_config(tok: PreTrainedTokenizerFast, layers: int = 3) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_WIDTH,
        **special_token_ids(tok),
    )


def vae(
    latent_channels: int,
    quant_convs: bool,
    shift_factor: float | None = None,
    block_channels: tuple[int, ...] = (16, 32),
) -> AutoencoderKL:
    """len(block_channels) levels (vae_scale_factor 2 ** (levels - 1)): with two, 64x64x3
    images <-> 32x32xC latents; with three, 16x16xC.

    scaling_factor (and Flux's shift_factor) are measured on the data after training.
    """
    levels = len(block_channels)
    return AutoencoderKL(
        scaling_factor=1.0,
        shift_factor=shift_factor,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=block_channels,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
        use_quant_conv=quant_convs,
        use_post_quant_conv=quant_convs,
    )


def unet() -> UNet2DConditionModel:
    """SDXL's U-Net layout (text_time conditioning, 3 levels, 2 layers per block), small."""
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32, 64),
        layers_per_block=2,
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(1, 2, 4),  # diffusers' name for the number of heads: 16 channels each
        norm_num_groups=16,
        cross_attention_dim=2 * TEXT_WIDTH,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=len(TIME_IDS) * ADDITION_TIME_EMBED_DIM + TEXT_WIDTH,
    )


def sdxl_pipeline(turbo: bool = False) -> StableDiffusionXLPipeline:
    """A randomly initialised toy SDXL pipeline (base: Euler 'leading'; turbo: Euler a 'trailing')."""
    if turbo:
        scheduler = EulerAncestralDiscreteScheduler(**SDXL_SCHEDULER, timestep_spacing="trailing")
    else:
        scheduler = EulerDiscreteScheduler(**SDXL_SCHEDULER, timestep_spacing="leading", steps_offset=1)
    return StableDiffusionXLPipeline(
        vae=family_vae("sdxl"),
        **text_encoders("sdxl"),
        tokenizer=tokenizer(),
        tokenizer_2=tokenizer(),
        unet=unet(),
        scheduler=scheduler,
    )


FLUX_LATENT_CHANNELS = 16
FLUX_VAE_CHANNELS = (16, 32, 64)
FLUX_VAE_FACTOR = 2 ** (len(FLUX_VAE_CHANNELS) - 1)  # 4: each level but the last halves the side
FLUX_LATENT_SIZE = IMAGE_SIZE // FLUX_VAE_FACTOR  # 16
FLUX_TOKEN_GRID = FLUX_LATENT_SIZE // 2  # image tokens per side: 2x2 latent patches are packed into one


def family_vae(family: str) -> AutoencoderKL:
    """The VAE of a family: sdxl 4 latent channels at 32x32 with quant convs (as SDXL's);
    flux 16 channels at 16x16 with a shift factor and no quant convs (as Flux's)."""
    if family == "sdxl":
        return vae(latent_channels=4, quant_convs=True)
    if family == "flux":
        return vae(FLUX_LATENT_CHANNELS, quant_convs=False, shift_factor=0.0, block_channels=FLUX_VAE_CHANNELS)
    raise ValueError(f"unknown model family {family!r}: use 'sdxl' or 'flux'")


def flux_transformer() -> FluxTransformer2DModel:
    """2 double + 2 single blocks, 4 heads x 64 (width 256, 7.1 M parameters), RoPE over
    (text, y, x) axes of 16 / 24 / 24 dimensions."""
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * FLUX_LATENT_CHANNELS,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=64,
        num_attention_heads=4,
        joint_attention_dim=TEXT_WIDTH,
        pooled_projection_dim=TEXT_WIDTH,
        guidance_embeds=False,
        axes_dims_rope=(16, 24, 24),
    )


def t5_config(tok: PreTrainedTokenizerFast) -> T5Config:
    return T5Config(
        vocab_size=len(tok),
        d_model=TEXT_WIDTH,
        d_kv=16,
        d_ff=2 * TEXT_WIDTH,
        num_layers=3,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
        is_encoder_decoder=False,
        use_cache=False,
    )


def text_encoders(family: str) -> dict[str, torch.nn.Module]:
    """Randomly initialised text encoders of a family, named as in its pipeline:
    sdxl: CLIP + CLIP with projection; flux: CLIP (pooled) + T5."""
    tok = tokenizer()
    if family == "sdxl":
        return {
            "text_encoder": CLIPTextModel(clip_config(tok)),
            "text_encoder_2": CLIPTextModelWithProjection(clip_config(tok)),
        }
    if family == "flux":
        return {"text_encoder": CLIPTextModel(clip_config(tok)), "text_encoder_2": T5EncoderModel(t5_config(tok))}
    raise ValueError(f"unknown model family {family!r}: use 'sdxl' or 'flux'")


def flux_pipeline() -> FluxPipeline:
    """A randomly initialised toy Flux pipeline (schnell-like: no guidance embedding)."""
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
        vae=family_vae("flux"),
        **text_encoders("flux"),
        tokenizer=tokenizer(),
        tokenizer_2=tokenizer(),
        transformer=flux_transformer(),
    )


def token_ids(tok: PreTrainedTokenizerFast, captions: list[str]) -> torch.Tensor:
    """(batch, MAX_TOKENS) ids padded to max length, as both pipelines tokenize."""
    return tok(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids


def encode_sdxl(
    text_encoder: torch.nn.Module, text_encoder_2: torch.nn.Module, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (batch, T) -> prompt_embeds (batch, T, 2 * TEXT_WIDTH), pooled (batch, TEXT_WIDTH).

    text_encoder: a CLIPTextModel, text_encoder_2: a CLIPTextModelWithProjection (as text_encoders("sdxl")
    builds them; typed as modules, as the parts dicts that carry them are)."""
    first = text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    second = text_encoder_2(ids, output_hidden_states=True)
    return torch.cat([first, second.hidden_states[-2]], dim=-1), second.text_embeds


def sdxl_conditioning(
    text_encoder, text_encoder_2, ids: torch.Tensor, drop: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict]:
    """The U-Net's text conditioning as the SDXL pipeline builds it: prompt embeds (B, T, 2W)
    and added_cond_kwargs (pooled text_embeds, micro-conditioning time_ids); rows in `drop`
    get the all-zero unconditional branch."""
    embeds, pooled = encode_sdxl(text_encoder, text_encoder_2, ids)
    if drop is not None:
        # The pipeline's unconditional branch is all zeros (force_zeros_for_empty_prompt).
        keep = (~drop).float()
        embeds, pooled = embeds * keep[:, None, None], pooled * keep[:, None]
    time_ids = torch.tensor([TIME_IDS], dtype=embeds.dtype, device=embeds.device).expand(len(ids), -1)
    return embeds, {"text_embeds": pooled, "time_ids": time_ids}


def encode_flux(
    text_encoder: torch.nn.Module, text_encoder_2: torch.nn.Module, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (batch, T) -> prompt_embeds (batch, T, TEXT_WIDTH) from T5, pooled (batch, TEXT_WIDTH) from CLIP.

    text_encoder: a CLIPTextModel, text_encoder_2: a T5EncoderModel (as text_encoders("flux") builds them)."""
    pooled = text_encoder(ids).pooler_output
    return text_encoder_2(ids).last_hidden_state, pooled


# Flux packs 2x2 patches of latent cells into one image token, row-major over the token grid.
# Our own functions, the same arithmetic as FluxPipeline's (private) helpers, so that training
# does not depend on diffusers' private names.
def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) latents -> (B, (h / 2) * (w / 2), 4 * C) tokens, as FluxPipeline packs them."""
    b, c, h, w = latents.shape
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, (height / 2) * (width / 2), 4 * C) tokens -> (B, C, height, width) latents; inverts pack_latents."""
    b, _, channels = tokens.shape
    patches = tokens.view(b, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(b, channels // 4, height, width)


def latent_image_ids(
    grid_h: int, grid_w: int, device: torch.device | str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(grid_h * grid_w, 3) RoPE position ids of the image tokens: (0, row, column), row-major."""
    ids = torch.zeros(grid_h, grid_w, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(grid_h)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(grid_w)[None, :]
    return ids.reshape(grid_h * grid_w, 3).to(device=device, dtype=dtype)
