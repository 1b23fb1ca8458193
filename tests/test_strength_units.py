"""Every strength says what a strength of 1 is: each `*strength*` field of every study declares its unit, errors
name it, docs/configs.md lists it, and a study without one is refused at registration. Likewise each built-in
architecture's options are listed in docs/configs.md as its own schema declares them."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from diffdict.dictionaries.registry import BUILTIN as BUILTIN_ARCHITECTURES
from diffdict.dictionaries.registry import SIZE_KEYS, architecture_class
from diffdict.studies.config import ConfigError, parse_config
from diffdict.studies.registry import BUILTIN, StudyKind, register, study_kinds
from diffdict.studies.strengths import strength_field, strength_units

DOCS = (Path(__file__).resolve().parents[1] / "docs" / "configs.md").read_text()


def test_every_strength_field_of_every_study_has_a_unit_listed_in_the_docs():
    for name, kind in study_kinds().items():
        for strength in strength_units(kind.config):
            assert strength.unit.startswith("multiples of "), (name, strength.name)
            if name in BUILTIN:
                row = f"| `studies.{name}.{strength.name}` | {strength.unit} | {strength.use}"
                assert row in DOCS, f"docs/configs.md lacks (or misstates) {row}"


def test_an_error_about_a_strength_names_its_unit(tmp_path):
    table = tomllib.loads(f"""
name = "units"
out = "{tmp_path / "run"}"
[prompts]
source = "toyworld"
count = 8
[[models]]
name = "toy"
id = "tiny/sdxl"
[studies.editability]
models = ["toy"]
strengths = [1, -2]
""")
    with pytest.raises(
        ConfigError,
        match=r"studies\.editability\.strengths\[1\]: must be > 0, got -2.0: it counts "
        r"multiples of the block's mean update norm at the edited cells",
    ):
        parse_config(table)


def test_a_study_whose_strength_has_no_unit_is_refused():
    @dataclass
    class Nudge:
        strength: float = 1.0

    @dataclass
    class NudgeWithUnit:
        strength: float = strength_field(1.0, unit="multiples of the mean token norm")

    kind = StudyKind(name="nudge", config=Nudge, title="Nudge", about="", compute=lambda run: {}, tables=("nudge",))
    with pytest.raises(ValueError, match="field 'strength' is a strength but does not say its unit"):
        register(kind)
    assert "nudge" not in study_kinds()
    assert [s.unit for s in strength_units(NudgeWithUnit)] == ["multiples of the mean token norm"]


def test_the_docs_list_each_built_in_architecture_s_options_from_its_schema():
    for architecture in BUILTIN_ARCHITECTURES:
        for name, spec in architecture_class(architecture).option_schema().items():
            if name not in ("d", *SIZE_KEYS[architecture]):
                assert f"  - {architecture}: {spec.describe()}" in DOCS, (architecture, name)
