"""Model families as data: what loading, the meta-device builder and `diffdict check` need to know.

A family module (sdxl.py, flux.py) holds the adapter (hook plan, block inputs and outputs, CFG
layout) and declares one `Family` (family_spec.py) with the rest: the diffusers pipeline and
denoiser classes, the published denoiser config (hook points without weights), default dtype, NF4
components and the tiny test model. Adding a family (SD3, PixArt, SANA) is one such module plus
its line here.
"""
from __future__ import annotations

from .family_spec import Family
from .flux import FLUX
from .sdxl import SDXL

FAMILIES: dict[str, Family] = {family.name: family for family in (SDXL, FLUX)}


def family_of_pipeline(pipeline_class: str) -> Family | None:
    """The family whose pipeline class a model_index.json names, or None."""
    return next((f for f in FAMILIES.values() if f.pipeline_class == pipeline_class), None)


def nf4_families() -> list[Family]:
    """Families whose models load with quantize="nf4"."""
    return [f for f in FAMILIES.values() if f.nf4_components]


def nf4_titles() -> str:
    """"Flux" (or "Flux, SD3"): for messages."""
    return ", ".join(f.title for f in nf4_families())
