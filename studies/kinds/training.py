"""Dictionary training: convergence of the fits (FVU and dead fraction against tokens seen)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..registry import StudyKind


@dataclass
class TrainingStudy:
    """Convergence of the dictionaries' training (FVU and dead fraction against tokens seen)."""

    dictionaries: list[str] = field(default_factory=list)  # empty = every dictionary


STUDY = StudyKind(
    name="training",
    config=TrainingStudy,
    title="Dictionary training",
    about="FVU (training batches) and dead fraction against tokens seen; a fit has plateaued when its FVU moved "
    "less than 5% over its last tenth.",
    compute="diffdict.studies.training:run_training",
    plot="diffdict.studies.training:plot_training",
    summarize="diffdict.studies.training:summarize_training",
    tables=("training_curves", "training_summary"),
)
