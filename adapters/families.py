"""Model families as data: what loading, the meta-device builder and `diffdict check` need to know.

A family module (sdxl.py, flux.py) holds the adapter (hook plan, block inputs and outputs, CFG
layout, where its steps fall in time) and declares one `Family` (family_spec.py) with the rest: the
diffusers pipeline and denoiser classes, the published denoiser config (hook points without weights),
default dtype, NF4 components, its real models, its tiny test model and its guidance rule (which CFG
branches a call's guidance gives, which pipeline arguments carry it). The built-in families are
listed once, below; a family of your own (SD3, PixArt, SANA) is one module that declares its `Family`
and calls `register(family)`: every model table (adapters.registry) is derived from this registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .family_spec import Family
from .flux import FLUX
from .sdxl import SDXL

BUILTIN: tuple[Family, ...] = (SDXL, FLUX)  # in the order they are listed to users
FAMILIES: dict[str, Family] = {family.name: family for family in BUILTIN}


def register(family: Family) -> Family:
    """Make a family known: its models load by id, its pipeline class is recognised in local folders."""
    if not isinstance(family, Family):
        raise TypeError(f"register() takes a Family, got {type(family).__name__}")
    if getattr(family.adapter, "family", None) != family.name:
        raise ValueError(
            f"family {family.name!r}: its adapter {family.adapter.__name__} says family = "
            f"{getattr(family.adapter, 'family', None)!r}; set the class attribute to {family.name!r}"
        )
    if family.name in FAMILIES:
        raise ValueError(
            f"a family named {family.name!r} is already registered; unregister({family.name!r}) "
            f"first or choose another name"
        )
    taken = {model_id: other.name for other in FAMILIES.values() for model_id in other.model_ids()}
    for model_id in family.model_ids():
        if model_id in taken:
            raise ValueError(
                f"family {family.name!r}: model id {model_id!r} is already declared by family "
                f"{taken[model_id]!r}; give the model another id"
            )
    other = family_of_pipeline(family.pipeline_class)
    if other is not None:
        raise ValueError(
            f"family {family.name!r}: pipeline class {family.pipeline_class!r} is already family "
            f"{other.name!r}'s, so a local folder could not say which family it is"
        )
    FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    """Forget a family registered at run time (built-ins stay)."""
    if any(family.name == name for family in BUILTIN):
        raise ValueError(f"{name!r} is a built-in family; it cannot be unregistered")
    FAMILIES.pop(name, None)


def family_of_pipeline(pipeline_class: str) -> Family | None:
    """The family whose pipeline class a model_index.json names, or None."""
    return next((f for f in FAMILIES.values() if f.pipeline_class == pipeline_class), None)


def nf4_families() -> list[Family]:
    """Families whose models load with quantize="nf4"."""
    return [f for f in FAMILIES.values() if f.nf4_components]


def nf4_titles() -> str:
    """ "Flux" (or "Flux, SD3"): for messages."""
    return ", ".join(f.title for f in nf4_families())


class LiveTable(Mapping):
    """A read-only table recomputed from FAMILIES on every use, so a family registered after the table was
    imported is in it (modules import REAL_MODELS by name, once)."""

    def __init__(self, build: Callable[[], dict[str, Any]]) -> None:
        self._build = build

    def __getitem__(self, key: Any) -> Any:
        return self._build()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())

    def __repr__(self) -> str:
        return repr(self._build())
