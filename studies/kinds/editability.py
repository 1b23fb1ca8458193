"""Editability map: which block edits which attribute, when."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import EDIT_ATTRIBUTES
from ..config_rules import check_toy_world_study, check_windows, fail, one_of, positive
from ..registry import StudyKind
from ..strengths import strength_field

KEY = "studies.editability"
UPDATE_NORM = "multiples of the block's mean update norm at the edited cells, on the selection prompts"


@dataclass
class EditabilityStudy:
    """Which block edits which attribute, when: oracle, random and dictionary directions, strength sweep."""

    models: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)  # empty = every image-stream hook of the model
    groups: dict[str, list[str]] = field(default_factory=dict)  # unit name -> hooks edited together
    dictionaries: list[str] = field(default_factory=list)  # their best features are tried at their hook
    attributes: list[str] = field(default_factory=lambda: list(EDIT_ATTRIBUTES))
    windows: dict[str, list[float]] = field(
        default_factory=lambda: {"early": [0.6, 1.0], "middle": [0.2, 0.6], "late": [0.0, 0.2]}
    )
    strengths: list[float] = strength_field(
        default_factory=lambda: [1.0, 2.0, 4.0, 8.0],
        unit=UPDATE_NORM,
        use="every method's direction (oracle, random, dictionary features) is added at each of these norms",
    )
    prompts: int = 8  # held-out prompts edited per attribute, at each method's chosen strength
    tuning_prompts: int = 16  # train-split prompts the strength sweep runs on (it chooses each method's strength)
    selection_prompts: int = 64  # train-split prompts for oracle directions, features and norms


def validate(config: Any, study: EditabilityStudy, source: str) -> None:
    check_toy_world_study(config, study, source, KEY)
    positive(source, f"{KEY}.tuning_prompts", study.tuning_prompts)
    check_windows(source, f"{KEY}.windows", study.windows)
    for i, attribute in enumerate(study.attributes):
        one_of(source, f"{KEY}.attributes[{i}]", attribute, EDIT_ATTRIBUTES)
    if not study.strengths:
        raise fail(source, f"{KEY}.strengths", "is empty; give strengths such as [1, 2, 4, 8]")
    for unit, hooks in study.groups.items():
        if not hooks:
            raise fail(source, f"{KEY}.groups.{unit}", "is empty; list the hooks edited together")


STUDY = StudyKind(
    name="editability",
    config=EditabilityStudy,
    title="Editability map",
    about="Which block edits which attribute, and when: per attribute, hook (or group of hooks), time window and "
    "strength (x the block's mean update norm at the edited cells), the success and clean success of the "
    "diff-in-means oracle direction, a random direction of the same norm, and each dictionary's best "
    "features, on held-out prompts.",
    compute="diffdict.studies.editability:run_editability",
    plot="diffdict.studies.editability:plot_editability",
    summarize="diffdict.studies.editability:summarize_editability",
    tables=("editability", "editability_best"),
    validate=validate,
    check="diffdict.studies.check:hooks_on_some_model",
)
