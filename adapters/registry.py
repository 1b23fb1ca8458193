"""`load`: a model id (real hub id, local diffusers folder, `tiny/*` or `toy/*`) -> Adapter."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .base import Adapter, ProtocolDefaults
from .errors import AdapterInputError, MissingFileError

TOY_WEIGHTS = Path(__file__).resolve().parents[1] / "toyworld" / "weights"


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "sdxl" | "flux"
    defaults: ProtocolDefaults
    guidance_embeds: bool = False  # Flux dev embeds its (distilled) guidance
    about: str = ""


REAL_MODELS = {
    "stabilityai/sdxl-turbo": ModelSpec("sdxl", ProtocolDefaults(1, 0.0, 512, 512), about="SDXL Turbo, 1 step, no CFG"),
    "stabilityai/stable-diffusion-xl-base-1.0": ModelSpec("sdxl", ProtocolDefaults(25, 8.0, 1024, 1024), about="SDXL Base, 25 steps, CFG 8"),
    "black-forest-labs/FLUX.1-schnell": ModelSpec("flux", ProtocolDefaults(4, 0.0, 1024, 1024, max_sequence_length=256), about="Flux schnell, 4 steps"),
    "black-forest-labs/FLUX.1-dev": ModelSpec("flux", ProtocolDefaults(28, 3.5, 1024, 1024, max_sequence_length=512), guidance_embeds=True, about="Flux dev, 28 steps, guidance 3.5"),
}
TINY_MODELS = {
    "tiny/sdxl": ModelSpec("sdxl", ProtocolDefaults(4, 5.0, 64, 64), about="random tiny SDXL-style pipeline (tests)"),
    "tiny/flux": ModelSpec("flux", ProtocolDefaults(4, 0.0, 64, 64, max_sequence_length=16), about="random tiny Flux-style pipeline (tests)"),
}
TOY_MODELS = {"toy/sdxl-base": "sdxl", "toy/sdxl-turbo": "sdxl", "toy/flux": "flux"}
PIPELINE_FAMILIES = {"StableDiffusionXLPipeline": "sdxl", "FluxPipeline": "flux"}


def known_models() -> dict[str, str]:
    """Every id `load` accepts by name, with a one-line description."""
    models = {k: v.about for k, v in {**REAL_MODELS, **TINY_MODELS}.items()}
    for name in TOY_MODELS:
        shipped = (TOY_WEIGHTS / name.split("/", 1)[1] / "model_index.json").exists()
        models[name] = "toy-world model trained by the project" + ("" if shipped else " (weights not shipped yet)")
    return models


def _adapter_class(family: str) -> type[Adapter]:
    from .flux import FluxAdapter
    from .sdxl import SDXLAdapter

    return {"sdxl": SDXLAdapter, "flux": FluxAdapter}[family]


def default_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a torch.device; None means CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _default_dtype(family: str, device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if family == "flux" else torch.float16
    return torch.float32


def _unknown_model(model_id: str) -> AdapterInputError:
    listing = "\n".join(f"  {k:45s} {v}" for k, v in known_models().items())
    return AdapterInputError(
        f"unknown model {model_id!r}: not a known id and not a local diffusers folder (with model_index.json). "
        f"Known models:\n{listing}"
    )


def resolve(model_id: str) -> tuple[ModelSpec, str | Path | None]:
    """(spec, where the weights are) for any accepted id; where is None for tiny models."""
    if model_id in TINY_MODELS:
        return TINY_MODELS[model_id], None
    if model_id in REAL_MODELS:
        return REAL_MODELS[model_id], model_id
    if model_id in TOY_MODELS:
        folder = TOY_WEIGHTS / model_id.split("/", 1)[1]
        if not (folder / "model_index.json").exists():
            raise MissingFileError(
                f"toy model {model_id!r} has no weights at {folder}; train them with `diffdict toy train`"
            )
        return _folder_spec(folder), folder
    folder = Path(model_id)
    if (folder / "model_index.json").exists():
        return _folder_spec(folder), folder
    raise _unknown_model(model_id)


def _folder_spec(folder: Path) -> ModelSpec:
    index = json.loads((folder / "model_index.json").read_text())
    family = PIPELINE_FAMILIES.get(index.get("_class_name", ""))
    if family is None:
        raise AdapterInputError(
            f"{folder}/model_index.json names pipeline {index.get('_class_name')!r}; "
            f"supported pipelines: {', '.join(PIPELINE_FAMILIES)}"
        )
    guidance_embeds = False
    if family == "flux" and (folder / "transformer" / "config.json").exists():
        guidance_embeds = bool(json.loads((folder / "transformer" / "config.json").read_text()).get("guidance_embeds"))
    card = folder / "diffdict.json"
    if card.exists():
        defaults = ProtocolDefaults(**json.loads(card.read_text()))
    elif family == "flux":
        defaults = REAL_MODELS["black-forest-labs/FLUX.1-dev" if guidance_embeds else "black-forest-labs/FLUX.1-schnell"].defaults
    else:
        defaults = REAL_MODELS["stabilityai/stable-diffusion-xl-base-1.0"].defaults
    return ModelSpec(family, defaults, guidance_embeds=guidance_embeds, about=str(folder))


def load(model_id: str, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
         quantize: str | None = None) -> Adapter:
    """An Adapter for a real hub id, a local diffusers folder, `tiny/sdxl`, `tiny/flux` or `toy/*`.

    device: "cpu", "cuda", ... (default: cuda if available); "meta" builds only the denoiser's
    config (no download, no weights): enough to list hook points of the real models.
    dtype: default float16 (SDXL) / bfloat16 (Flux) on CUDA, float32 elsewhere.
    quantize: None or "nf4" (Flux transformer and T5 encoder in 4-bit NormalFloat).
    """
    spec, where = resolve(model_id)
    if quantize not in (None, "nf4"):
        raise AdapterInputError(f"quantize must be None or 'nf4', got {quantize!r}")
    if quantize and spec.family != "flux":
        raise AdapterInputError(
            f"quantize={quantize!r} is supported for Flux models only (the 12B transformer and T5-XXL); "
            f"{model_id!r} is an SDXL model: load it without quantize"
        )
    device = default_device(device)
    cls = _adapter_class(spec.family)
    if device.type == "meta":
        return _meta_adapter(model_id, spec, cls)
    dtype = _default_dtype(spec.family, device, dtype)
    if where is None:
        pipe = _tiny_pipeline(model_id)
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
    else:
        from .loading import load_pipeline

        pipe = load_pipeline(spec.family, where, dtype, quantize=quantize, device=device)
    # diffusers' bitsandbytes path needs CUDA; elsewhere (and for in-process models) swap the
    # Linear layers for NF4 ones in place, before the move so that weights travel quantised.
    if quantize == "nf4" and (where is None or device.type != "cuda"):
        from .quantize import quantize_linear_nf4

        quantize_linear_nf4(pipe.transformer, compute_dtype=dtype)
        quantize_linear_nf4(pipe.text_encoder_2, compute_dtype=dtype)
    pipe.to(device=device)
    pipe.set_progress_bar_config(disable=True)
    return cls(model_id, pipe, spec.defaults)


def _tiny_pipeline(model_id: str):
    from .tiny import build_tiny_flux, build_tiny_sdxl

    return build_tiny_sdxl() if model_id == "tiny/sdxl" else build_tiny_flux()


@lru_cache(maxsize=8)
def _meta_adapter(model_id: str, spec: ModelSpec, cls: type[Adapter]) -> Adapter:
    """A config-only adapter: the denoiser on the meta device, no weights read or downloaded."""
    from .real_configs import FLUX_VAE_FACTOR, SDXL_VAE_FACTOR, meta_denoiser, meta_denoiser_from_folder

    if model_id in TINY_MODELS:  # only the denoiser: no text encoders to import or build
        from .tiny import TINY_FLUX_TRANSFORMER, TINY_UNET, TINY_VAE_FACTOR

        config = TINY_UNET if spec.family == "sdxl" else TINY_FLUX_TRANSFORMER
        return cls(model_id, None, spec.defaults, denoiser=meta_denoiser(spec.family, config=config),
                   vae_factor=TINY_VAE_FACTOR)
    if model_id in REAL_MODELS:
        denoiser = meta_denoiser(spec.family, guidance_embeds=spec.guidance_embeds)
        factor = SDXL_VAE_FACTOR if spec.family == "sdxl" else FLUX_VAE_FACTOR
    else:
        _, folder = resolve(model_id)
        denoiser, factor = meta_denoiser_from_folder(spec.family, Path(folder))
    return cls(model_id, None, spec.defaults, denoiser=denoiser, vae_factor=factor)
