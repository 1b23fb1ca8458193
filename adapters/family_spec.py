"""`Family`: what one model family declares (see families.py for the registry).

Everything a family brings is here, in its one declaration: its diffusers classes, its published
denoiser config, its real models (hub ids, protocol defaults, schedulers), its tiny test model and how its
pipeline runs a call's guidance setting (`Guidance`: the CFG branches a generation has, the pipeline arguments).
adapters/registry.py derives the model tables (`REAL_MODELS`, `TINY_MODELS`) from the families, so
a family's models are known the moment it is registered and nowhere else lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .base import ProtocolDefaults


@dataclass(frozen=True)
class ModelSpec:
    """What `load` needs of one model id (hashable: meta-device adapters are cached by it)."""

    family: str  # a key of adapters.families.FAMILIES
    defaults: ProtocolDefaults
    about: str = ""
    denoiser_overrides: tuple[tuple[str, object], ...] = ()  # on the family's published denoiser config


@dataclass(frozen=True, eq=False)
class RealModel:
    """A published model of the family, loaded by its Hub id."""

    id: str  # the Hub id, e.g. "stabilityai/sdxl-turbo"
    about: str  # one line, as `diffdict hooks` and the unknown-model error list it
    defaults: ProtocolDefaults  # the protocol it is run with unless a call says otherwise
    # its published scheduler/scheduler_config.json (what differs from the defaults): `check` places the
    # steps of a time window with it, before anything is downloaded
    scheduler: dict[str, Any]
    denoiser_overrides: dict[str, Any] = field(default_factory=dict)  # on the family's published denoiser config

    def spec(self, family: str) -> ModelSpec:
        return ModelSpec(family, self.defaults, self.about, tuple(self.denoiser_overrides.items()))


@dataclass(frozen=True, eq=False)
class TinyModel:
    """The family's random test model: built in-process (no download, seeded), with the real block structure."""

    id: str  # e.g. "tiny/sdxl"
    about: str
    build: Callable[[], Any]  # -> a diffusers pipeline
    denoiser_config: dict[str, Any]  # its denoiser's config (hook points on the meta device)
    vae_factor: int  # pixels per latent cell of its VAE
    defaults: ProtocolDefaults
    scheduler: dict[str, Any]  # the config of the scheduler `build` gives the pipeline ("_class_name" included)

    def spec(self, family: str) -> ModelSpec:
        return ModelSpec(family, self.defaults, self.about)


@dataclass(frozen=True)
class Guidance:
    """How a family's pipeline runs a call's guidance setting (`guidance` of `Adapter.generate`, of a config's
    model): adapters pass the setting here, so the family's declaration is the one place that says it.

    branches(guidance, denoiser_config): the CFG branches a generation at `guidance` without a negative prompt
      has, in the order the pipeline batches their rows ("uncond" first): what a harvest stores per step.
      `denoiser_config` is the denoiser's config, a mapping (as `reference_model` gets it).
    pipeline_kwargs(guidance, negative_prompt): the pipeline arguments that carry the setting, and the
      negative prompt where one is given (None otherwise).
    """

    branches: Callable[[float, Any], tuple[str, ...]]
    pipeline_kwargs: Callable[[float, Any], dict[str, Any]]


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
    real_models: tuple[RealModel, ...]  # the published models `load` accepts by Hub id
    # the real model whose protocol defaults a local folder without diffdict.json gets, from its denoiser config
    reference_model: Callable[[dict[str, Any]], str]
    tiny: TinyModel  # the random tiny model for tests, built in-process
    guidance: Guidance  # how a call's guidance setting becomes CFG branches and pipeline arguments
    # quantize="nf4": component -> (library, class) loaded 4-bit; empty when the family has none
    nf4_components: dict[str, tuple[str, str]] = field(default_factory=dict)
    # parameters of the real models' other components (text encoders, VAE), by published size: with the
    # denoiser's exact count (from its config) they give `check` the weights a harvest holds in memory
    companion_parameters: dict[str, int] = field(default_factory=dict)

    def branches(self, guidance: float, denoiser_config: Any) -> tuple[str, ...]:
        """The CFG branches a generation at `guidance` (without a negative prompt) has: see `Guidance`."""
        return tuple(self.guidance.branches(guidance, denoiser_config))

    def guidance_kwargs(self, guidance: float, negative_prompt: Any = None) -> dict[str, Any]:
        """The pipeline arguments that carry a call's guidance (and negative prompt): see `Guidance`."""
        return dict(self.guidance.pipeline_kwargs(guidance, negative_prompt))

    def model_ids(self) -> tuple[str, ...]:
        """Every id the family declares: its real models', then its tiny model's."""
        return (*(model.id for model in self.real_models), self.tiny.id)

    def denoiser_type(self) -> type:
        import diffusers

        return getattr(diffusers, self.denoiser_class)

    def pipeline_type(self) -> type:
        import diffusers

        return getattr(diffusers, self.pipeline_class)
