"""`load`: a model id (real hub id, local diffusers folder, `tiny/*` or `toy/*`) -> Adapter."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from .base import Adapter, ProtocolDefaults
from .errors import AdapterInputError, MissingFileError
from .families import FAMILIES, LiveTable, family_of_pipeline, nf4_titles
from .family_spec import ModelSpec

TOY_WEIGHTS = Path(__file__).resolve().parents[1] / "toyworld" / "weights"

# Every id `load` accepts by name, derived from the families' own declarations (family_spec.RealModel and
# TinyModel): live tables, so a family registered later (families.register) is in them.
REAL_MODELS = LiveTable(lambda: {m.id: m.spec(f.name) for f in FAMILIES.values() for m in f.real_models})
TINY_MODELS = LiveTable(lambda: {f.tiny.id: f.tiny.spec(f.name) for f in FAMILIES.values()})
TOY_MODELS = ("toy/sdxl-base", "toy/sdxl-turbo", "toy/flux")  # their folders say their family


def draws_toy_scenes(model_id: str) -> bool:
    """Whether the model draws in the toy world's 64x64 scene format (toy/*, and tiny/* test models,
    which draw noise at that size), so the toy judge, not CLIP, reads its images."""
    return model_id in TOY_MODELS or model_id in TINY_MODELS


def known_models() -> dict[str, str]:
    """Every id `load` accepts by name, with a one-line description."""
    models = {k: v.about for k, v in {**REAL_MODELS, **TINY_MODELS}.items()}
    for name in TOY_MODELS:
        shipped = (TOY_WEIGHTS / name.split("/", 1)[1] / "model_index.json").exists()
        models[name] = "toy-world model trained by the project" + ("" if shipped else " (weights not shipped yet)")
    return models


def default_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a torch.device; None means CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _default_dtype(family: str, device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    return FAMILIES[family].cuda_dtype if device.type == "cuda" else torch.float32


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
    family = family_of_pipeline(index.get("_class_name", ""))
    if family is None:
        raise AdapterInputError(
            f"{folder}/model_index.json names pipeline {index.get('_class_name')!r}; "
            f"supported pipelines: {', '.join(f.pipeline_class for f in FAMILIES.values())}"
        )
    card = folder / "diffdict.json"
    if card.exists():
        defaults = ProtocolDefaults(**json.loads(card.read_text()))
    else:
        config_path = folder / family.denoiser_subfolder / "config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        defaults = REAL_MODELS[family.reference_model(config)].defaults
    return ModelSpec(family.name, defaults, about=str(folder))


def load(
    model_id: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    quantize: str | None = None,
) -> Adapter:
    """An Adapter for a real hub id, a local diffusers folder, `tiny/sdxl`, `tiny/flux` or `toy/*`.

    device: "cpu", "cuda", ... (default: cuda if available); "meta" builds only the denoiser's
    config (no download, no weights): enough to list hook points of the real models.
    dtype: default float16 (SDXL) / bfloat16 (Flux) on CUDA, float32 elsewhere.
    quantize: None or "nf4" (the family's large components in 4-bit NormalFloat: Flux's
    transformer and T5 encoder).
    """
    spec, where = resolve(model_id)
    family = FAMILIES[spec.family]
    if quantize not in (None, "nf4"):
        raise AdapterInputError(f"quantize must be None or 'nf4', got {quantize!r}")
    if quantize and not family.nf4_components:
        raise AdapterInputError(
            f"quantize={quantize!r} is supported for {nf4_titles()} models only; "
            f"{model_id!r} is a model of the {family.title} family: load it without quantize"
        )
    device = default_device(device)
    cls = family.adapter
    if device.type == "meta":
        return _meta_adapter(model_id, spec, cls)
    dtype = _default_dtype(spec.family, device, dtype)
    if where is None:
        pipe = family.tiny.build()
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
    else:
        from .loading import load_pipeline

        pipe = load_pipeline(family, where, dtype, quantize=quantize, device=device)
    # diffusers' bitsandbytes path needs CUDA; elsewhere (and for in-process models) swap the
    # Linear layers for NF4 ones in place, before the move so that weights travel quantised.
    if quantize == "nf4" and (where is None or device.type != "cuda"):
        from .quantize import quantize_linear_nf4

        for component in family.nf4_components:
            quantize_linear_nf4(getattr(pipe, component), compute_dtype=dtype)
    pipe.to(device=device)
    pipe.set_progress_bar_config(disable=True)
    return cls(model_id, pipe, spec.defaults)


@lru_cache(maxsize=8)
def _meta_adapter(model_id: str, spec: ModelSpec, cls: type[Adapter]) -> Adapter:
    """A config-only adapter: the denoiser on the meta device, no weights read or downloaded."""
    from .real_configs import meta_denoiser, meta_denoiser_from_folder

    family = FAMILIES[spec.family]
    if model_id in TINY_MODELS:  # only the denoiser: no text encoders to import or build
        return cls(
            model_id,
            None,
            spec.defaults,
            denoiser=meta_denoiser(family, config=family.tiny.denoiser_config),
            vae_factor=family.tiny.vae_factor,
        )
    if model_id in REAL_MODELS:
        denoiser, factor = meta_denoiser(family, overrides=dict(spec.denoiser_overrides)), family.vae_factor
    else:
        _, folder = resolve(model_id)
        assert folder is not None  # only tiny ids have no folder, and they returned above
        denoiser, factor = meta_denoiser_from_folder(family, Path(folder))
    return cls(model_id, None, spec.defaults, denoiser=denoiser, vae_factor=factor)
