"""`tiny/sdxl` and `tiny/flux`: small random models with the real block structure, built in-process.

They exist so that tests and smoke runs exercise the real diffusers pipelines on a CPU in
seconds. Weights are random but seeded: the same seed gives the same model everywhere.
Images are 64 px; the VAEs have two levels (scale factor 2), so the SDXL-style U-Net sees a
32x32 latent and its down.2 / mid / up.0 blocks an 8x8 grid, and Flux a 16x16 token grid.
"""

from __future__ import annotations

from typing import Any

import torch

TINY_VOCAB = (
    "a an the of and on in at with to is small large big tiny red green blue yellow purple orange "
    "white black gray pink brown circle square triangle star cross ring cat dog house tree car "
    "left right top bottom centre center middle striped dotted flat grainy background photo painting"
).split()
TEXT_DIM = 32
SEED = 0


def _text_encoders(tokenizer, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .tokenizers import special_token_ids

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=TEXT_DIM,
        hidden_act="gelu",
        **special_token_ids(tokenizer),
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _vae(latent_channels: int, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        **extra,
    ).eval()


TINY_UNET: dict[str, Any] = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(16, 32, 32),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1, 1),
    attention_head_dim=(2, 4, 4),
    norm_num_groups=8,
    cross_attention_dim=2 * TEXT_DIM,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + TEXT_DIM,
)
TINY_FLUX_TRANSFORMER: dict[str, Any] = dict(
    patch_size=1,
    in_channels=16,
    num_layers=2,
    num_single_layers=2,
    attention_head_dim=8,
    num_attention_heads=4,
    joint_attention_dim=TEXT_DIM,
    pooled_projection_dim=TEXT_DIM,
    guidance_embeds=False,
    axes_dims_rope=(2, 2, 4),
)
TINY_VAE_FACTOR = 2  # two VAE levels


# The tiny pipelines' schedulers (also declared in each family's TinyModel, from which adapters/schedules.py places
# steps without a pipeline).
TINY_SCHEDULERS = {
    "tiny/sdxl": {
        "_class_name": "EulerDiscreteScheduler",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "timestep_spacing": "trailing",
        "steps_offset": 1,
    },
    "tiny/flux": {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.0},
}


def _scheduler_arguments(model_id: str) -> dict:
    return {key: value for key, value in TINY_SCHEDULERS[model_id].items() if key != "_class_name"}


def build_tiny_sdxl(seed: int = SEED):
    """A StableDiffusionXLPipeline with a 3-level U-Net (attention at down.1, down.2, mid, up.0, up.1)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from .tokenizers import word_tokenizer

    torch.manual_seed(seed)
    tokenizer = word_tokenizer(TINY_VOCAB, max_length=40)
    unet = UNet2DConditionModel(**TINY_UNET).eval()
    scheduler = EulerDiscreteScheduler(**_scheduler_arguments("tiny/sdxl"))
    return StableDiffusionXLPipeline(
        vae=_vae(4, scaling_factor=0.13025),
        text_encoder=_text_encoders(tokenizer, False),
        text_encoder_2=_text_encoders(tokenizer, True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )


def build_tiny_flux(seed: int = SEED):
    """A FluxPipeline with 2 double and 2 single blocks, CLIP pooled + T5 text encoders."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from .tokenizers import special_token_ids, word_tokenizer

    torch.manual_seed(seed)
    clip_tokenizer = word_tokenizer(TINY_VOCAB, max_length=40)
    t5_tokenizer = word_tokenizer(TINY_VOCAB, max_length=40)
    t5_ids = special_token_ids(t5_tokenizer)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            pad_token_id=t5_ids["pad_token_id"],
            eos_token_id=t5_ids["eos_token_id"],
            decoder_start_token_id=0,
        )
    ).eval()
    transformer = FluxTransformer2DModel(**TINY_FLUX_TRANSFORMER).eval()
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**_scheduler_arguments("tiny/flux")),
        vae=_vae(4, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=_text_encoders(clip_tokenizer, False),
        tokenizer=clip_tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
