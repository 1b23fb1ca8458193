"""Layout from early steps (Tinaz et al.): is the final layout predictable from the first steps?"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config_rules import check_toy_world_study
from ..registry import StudyKind


@dataclass
class LayoutStudy:
    """Tinaz et al.: is the final layout predictable from the first steps' activations?"""

    models: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)  # empty = the model's harvested hooks
    dictionaries: list[str] = field(default_factory=list)  # their best feature predicts the object mask
    prompts: int = 32  # held-out prompts scored
    selection_prompts: int = 96  # train-split prompts the probes, features and thresholds are fit on


def validate(config: Any, study: LayoutStudy, source: str) -> None:
    check_toy_world_study(config, study, source, "studies.layout")


STUDY = StudyKind(
    name="layout",
    config=LayoutStudy,
    title="Layout from early steps",
    about="At each denoising step, the final image's object mask predicted from the hook's activations (a probe on "
    "all channels; each dictionary's best feature), as IoU with the judged final image, beside what the "
    "caption alone gives and what another seed's image of the same caption gives.",
    compute="diffdict.studies.layout:run_layout",
    plot="diffdict.studies.layout:plot_layout",
    summarize="diffdict.studies.layout:summarize_layout",
    tables=("layout",),
    validate=validate,
    check="diffdict.studies.check:hooks_on_some_model",
)
