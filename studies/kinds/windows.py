"""Timestep-window interventions: one concept edited inside one time window at a time."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import EDIT_ATTRIBUTES, EDIT_STYLES
from ..config_rules import check_windows, one_of, positive, require_toy_world
from ..registry import StudyKind

KEY = "studies.windows"


@dataclass
class WindowsStudy:
    # A dictionary name per edited block, or "a+b" to edit several blocks at once (one dictionary each).
    dictionaries: list[str] = field(default_factory=list, metadata={"together": True})
    windows: dict[str, list[float]] = field(
        default_factory=lambda: {"early": [0.6, 1.0], "middle": [0.2, 0.6], "late": [0.0, 0.2]})
    edit_styles: list[str] = field(default_factory=lambda: list(EDIT_STYLES))
    edits: list[str] = field(default_factory=lambda: list(EDIT_ATTRIBUTES))
    prompts: int = 8  # held-out prompts edited
    selection_prompts: int = 64  # train-split prompts on which features, mean activations and oracles are chosen
    strength: float = 4.0  # sdlens / tinaz_spatial, and the oracle and random rows: x the feature's mean activation
    norm_strength: float = 0.5  # tinaz_global: multiples of the local code norm
    token_norm_strength: float = 1.0  # flux_add: multiples of the mean token norm
    # "judge" reads toy-world images exactly; "clip" (real models) scores the edited image
    # against the edited and the original caption; "auto" = judge for toy/tiny models.
    scoring: str = "auto"


def validate(config: Any, study: WindowsStudy, source: str) -> None:
    check_windows(source, f"{KEY}.windows", study.windows)
    for i, style in enumerate(study.edit_styles):
        one_of(source, f"{KEY}.edit_styles[{i}]", style, EDIT_STYLES)
    for i, edit in enumerate(study.edits):
        one_of(source, f"{KEY}.edits[{i}]", edit, EDIT_ATTRIBUTES)
    positive(source, f"{KEY}.prompts", study.prompts)
    one_of(source, f"{KEY}.scoring", study.scoring, ("auto", "judge", "clip"))
    require_toy_world(config, source, KEY, "edits are planned from each scene's ground truth; real models draw "
                      "the same captions")


STUDY = StudyKind(
    name="windows",
    config=WindowsStudy,
    title="Timestep-window interventions",
    about="Edits of one concept made with dictionary features inside one time window at a time, in the edit "
          "styles of the papers, beside the oracle (diff-in-means) and random directions of the same norm in the "
          "same window. Success is strict (position: the object left its place; background: the objects kept "
          "their colour); clean success also keeps every attribute that was right before the edit.",
    compute="diffdict.studies.windows:run_windows",
    plot="diffdict.studies.windows:plot_windows",
    summarize="diffdict.studies.summaries:summarize_windows",
    tables=("windows",),
    validate=validate,
)
