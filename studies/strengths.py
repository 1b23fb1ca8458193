"""Strength fields of study configs: each says what a strength of 1 is (its unit) and what the study does with it.

One word scales every edit, but its unit differs between studies: a multiple of a feature's mean activation
(windows, atlas), of the block's mean update norm at the edited cells (editability, transfer), of the local code
norm (windows' tinaz_global) or of the mean token norm (windows' flux_add). So a config field whose name contains
`strength` is declared with `strength_field(..., unit=...)`: studies/validate.py names the unit in every error
about the field, docs/configs.md lists every one (tests/test_strength_units.py holds the page to the registry),
and `studies.registry.register` refuses a study with a strength field that has no unit.

Torch-free: study declarations (studies/kinds/) import it at config parsing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StrengthUnit:
    """What one strength field means: `unit` (what 1.0 is), `use` (what the study does with it), `signed`."""

    name: str
    unit: str
    use: str
    signed: bool


def strength_field(
    default: Any = dataclasses.MISSING,
    *,
    unit: str,
    use: str = "",
    signed: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A study config field that scales an edit. unit: what a strength of 1 is ("x the feature's mean
    activation"); use: what the study does with the value; signed: negative values are meaningful (else > 0)."""
    metadata = {"unit": unit, "use": use, "signed": signed}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def is_strength(field: dataclasses.Field) -> bool:
    return "strength" in field.name


def strength_units(config_class: type) -> list[StrengthUnit]:
    """Every strength field of a study's config dataclass, with its unit ("" where none is declared)."""
    return [
        StrengthUnit(
            f.name, f.metadata.get("unit", ""), f.metadata.get("use", ""), bool(f.metadata.get("signed", False))
        )
        for f in dataclasses.fields(config_class)
        if is_strength(f)
    ]


def missing_units(config_class: type) -> list[str]:
    """The strength fields of a config dataclass that do not say their unit."""
    return [s.name for s in strength_units(config_class) if not s.unit]
