"""An architecture's option schema, declared on its config dataclass: each field's type, default, range, doc.

    @dataclass
    class JumpReLUConfig:
        d: int
        n: int
        k: int
        threshold: float = option(0.5, "()", 0.0, 10.0, doc="the pre-activation a latent must exceed to fire")

Types and defaults are the dataclass's own; `option` adds the range and the one-line doc as field
metadata. A study config's `[[dictionaries]] options` are checked against the schema before anything
is built (studies/validate.py reads `Dictionary.option_schema()`), and the config can enforce the same
ranges in its `__post_init__` with `check_ranges` for dictionaries made from Python. So a range lives
with its architecture: ITDA's `threshold` in (0, 1) says nothing about another learner's `threshold`.

Torch-free: it only reads dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from .errors import InputError

BRACKETS = ("[]", "()", "[)", "(]")


@dataclass(frozen=True)
class Range:
    """low..high, each end open "(" / ")" or closed "[" / "]"."""

    brackets: str
    low: float
    high: float

    def __post_init__(self) -> None:
        if self.brackets not in BRACKETS:
            raise ValueError(f"range brackets must be one of {BRACKETS}, got {self.brackets!r}")

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.brackets[0] == "(" else value >= self.low
        below = value < self.high if self.brackets[1] == ")" else value <= self.high
        return above and below

    def __str__(self) -> str:
        def end(x: float) -> str:
            return "inf" if x == math.inf else "-inf" if x == -math.inf else str(x)

        return f"{self.brackets[0]}{end(self.low)}, {end(self.high)}{self.brackets[1]}"


def option(
    default: Any = dataclasses.MISSING,
    brackets: str = "[]",
    low: float = -math.inf,
    high: float = math.inf,
    *,
    doc: str = "",
    choices: tuple | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A config field with its range (when low or high is given), its allowed values (`choices`) and its doc,
    for the option schema."""
    metadata: dict[str, Any] = {"doc": doc}
    if low != -math.inf or high != math.inf:
        metadata["range"] = Range(brackets, low, high)
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class OptionSpec:
    """One option of an architecture: its name, type (from the annotation), default, range and doc."""

    name: str
    type: Any
    default: Any  # dataclasses.MISSING when required
    range: Range | None
    doc: str
    choices: tuple | None = None  # the allowed values, where they are a fixed list

    def describe(self) -> str:
        """`threshold` (float, default 0.3, in (0.0, 1.0)): doc, for messages and docs."""
        kind = getattr(self.type, "__name__", str(self.type))
        parts = [kind]
        if self.default is not dataclasses.MISSING:
            parts.append(f"default {self.default!r}")
        if self.range is not None:
            parts.append(f"in {self.range}")
        if self.choices is not None:
            parts.append(f"one of {', '.join(map(str, self.choices))}")
        return f"`{self.name}` ({', '.join(parts)})" + (f": {self.doc}" if self.doc else "")


def option_schema(config_class: type) -> dict[str, OptionSpec]:
    """Every field of an architecture's config dataclass as an OptionSpec, in declaration order."""
    hints = typing.get_type_hints(config_class)
    schema = {}
    for f in dataclasses.fields(config_class):
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        )
        schema[f.name] = OptionSpec(
            f.name,
            hints.get(f.name, Any),
            default,
            f.metadata.get("range"),
            f.metadata.get("doc", ""),
            f.metadata.get("choices"),
        )
    return schema


def violation(spec: OptionSpec, value: Any) -> str | None:
    """What is wrong with `value` for this option's range or choices ("... is out of range; allowed: ..."), or
    None. Types are the caller's to check: a value of the wrong type is left alone here."""
    why = f" ({spec.doc})" if spec.doc else ""
    if (
        spec.range is not None
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value not in spec.range
    ):
        return f"{value} is out of range; allowed: {spec.range}{why}"
    if spec.choices is not None and value not in spec.choices:
        return f"{value!r} is not allowed; allowed: {', '.join(map(repr, spec.choices))}{why}"
    return None


def check_ranges(config: Any, architecture: str) -> None:
    """Raise InputError for the first field of `config` outside its declared range or choices."""
    for spec in option_schema(type(config)).values():
        problem = violation(spec, getattr(config, spec.name))
        if problem is not None:
            raise InputError(f"{architecture}: {spec.name}: {problem}")
