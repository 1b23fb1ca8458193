"""Loading real pipelines (hub id or local folder) with diffusers' unmodified pipeline classes."""

from __future__ import annotations

from pathlib import Path

import torch

from .family_spec import Family


def load_pipeline(family: Family, where: str | Path, dtype: torch.dtype, quantize: str | None, device: torch.device):
    """The family's diffusers pipeline from `where` (hub id or folder).

    With quantize="nf4" on CUDA, the family's NF4 components (Flux: the transformer and the T5
    encoder) are loaded 4-bit through diffusers'/transformers' BitsAndBytesConfig; other devices
    quantise in place afterwards.
    """
    if quantize == "nf4" and device.type == "cuda":
        components = {
            name: _load_nf4(where, name, library, cls, dtype) for name, (library, cls) in family.nf4_components.items()
        }
        return family.pipeline_type().from_pretrained(where, dtype=dtype, **components)
    return family.pipeline_type().from_pretrained(where, dtype=dtype)


def _load_nf4(where: str | Path, component: str, library: str, class_name: str, dtype: torch.dtype):
    """One pipeline component in 4-bit NormalFloat, with its library's BitsAndBytesConfig."""
    import importlib

    module = importlib.import_module(library)  # "diffusers" or "transformers": both name it BitsAndBytesConfig
    options = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return getattr(module, class_name).from_pretrained(
        where, subfolder=component, quantization_config=module.BitsAndBytesConfig(**options), dtype=dtype
    )
