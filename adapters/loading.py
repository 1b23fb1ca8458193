"""Loading real pipelines (hub id or local folder) with diffusers' unmodified pipeline classes."""
from __future__ import annotations

from pathlib import Path

import torch


def load_pipeline(family: str, where: str | Path, dtype: torch.dtype, quantize: str | None, device: torch.device):
    """StableDiffusionXLPipeline or FluxPipeline from `where` (hub id or folder).

    With quantize="nf4" on CUDA, the Flux transformer and T5 encoder are loaded 4-bit through
    diffusers'/transformers' BitsAndBytesConfig; other devices quantise in place afterwards.
    """
    from diffusers import FluxPipeline, StableDiffusionXLPipeline

    if family == "sdxl":
        return StableDiffusionXLPipeline.from_pretrained(where, dtype=dtype)
    if quantize == "nf4" and device.type == "cuda":
        return _flux_nf4_cuda(where, dtype)
    return FluxPipeline.from_pretrained(where, dtype=dtype)


def _flux_nf4_cuda(where: str | Path, dtype: torch.dtype):
    from diffusers import BitsAndBytesConfig as DiffusersBnbConfig
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from transformers import BitsAndBytesConfig as TransformersBnbConfig
    from transformers import T5EncoderModel

    options = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    transformer = FluxTransformer2DModel.from_pretrained(
        where, subfolder="transformer", quantization_config=DiffusersBnbConfig(**options), dtype=dtype
    )
    text_encoder_2 = T5EncoderModel.from_pretrained(
        where, subfolder="text_encoder_2", quantization_config=TransformersBnbConfig(**options), dtype=dtype
    )
    return FluxPipeline.from_pretrained(where, transformer=transformer, text_encoder_2=text_encoder_2, dtype=dtype)
