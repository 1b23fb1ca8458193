"""`Family`: what one model family declares (see families.py for the registry)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True, eq=False)  # identity hash: the fields hold dicts
class Family:
    name: str  # the key configs and model specs use
    title: str  # as messages name it
    adapter: type  # the Adapter subclass
    pipeline_class: str  # diffusers pipeline class, as model_index.json names it
    denoiser_class: str  # diffusers denoiser class
    denoiser_subfolder: str  # where a pipeline folder keeps the denoiser's config.json
    meta_config: dict[str, Any]  # the published denoiser config (shared by the family's real models)
    vae_factor: int  # pixels per latent cell of the real models' VAE
    cuda_dtype: torch.dtype  # default dtype on CUDA (float32 elsewhere)
    # the real model whose protocol defaults a local folder without diffdict.json gets, from its denoiser config
    reference_model: Callable[[dict[str, Any]], str]
    tiny_id: str  # the random tiny model for tests, built in-process
    build_tiny: Callable[[], Any]  # -> a diffusers pipeline
    tiny_config: dict[str, Any]  # its denoiser config
    tiny_vae_factor: int
    # quantize="nf4": component -> (library, class) loaded 4-bit; empty when the family has none
    nf4_components: dict[str, tuple[str, str]] = field(default_factory=dict)
    # parameters of the real models' other components (text encoders, VAE), by published size: with the
    # denoiser's exact count (from its config) they give `check` the weights a harvest holds in memory
    companion_parameters: dict[str, int] = field(default_factory=dict)

    def denoiser_type(self) -> type:
        import diffusers

        return getattr(diffusers, self.denoiser_class)

    def pipeline_type(self) -> type:
        import diffusers

        return getattr(diffusers, self.pipeline_class)
