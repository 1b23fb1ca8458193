"""Feature atlas: one card per top feature of each dictionary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config_rules import positive
from ..registry import StudyKind
from ..strengths import strength_field

FEATURE_MEAN = "multiples of the feature's mean activation where it is active, on the held-out prompts"


@dataclass
class AtlasStudy:
    dictionaries: list[str] = field(default_factory=list)
    top_features: int = 12
    images_per_feature: int = 6
    # The strip's sign is meaningful: it shows a feature from negative (steered away) through 0 (the unedited
    # image) to strong; nothing scores it.
    strengths: list[float] = strength_field(
        default_factory=lambda: [-4.0, 0.0, 2.0, 4.0, 8.0],
        unit=FEATURE_MEAN,
        signed=True,
        use="the modulation strip: the feature's decoder direction added to its top prompt with each coefficient",
    )
    empty_strengths: list[float] = strength_field(
        default_factory=lambda: [12.0],
        unit=FEATURE_MEAN,
        use="what the feature draws by itself: its decoder direction added everywhere to the empty prompt",
    )


def validate(config: Any, study: AtlasStudy, source: str) -> None:
    positive(source, "studies.atlas.top_features", study.top_features)
    positive(source, "studies.atlas.images_per_feature", study.images_per_feature)


STUDY = StudyKind(
    name="atlas",
    config=AtlasStudy,
    title="Feature atlas",
    about="One card per top feature of each dictionary: its label (the best-aligned ground-truth concept on the "
    "toy world, with that AUROC; for ITDA also where the atom came from), how often it fires, its "
    "top-activating held-out images (red marks where it fires), what it draws by itself (the empty "
    "prompt with its decoder direction added everywhere) and a modulation strip (its top prompt with the "
    "direction added at strengths from negative to strong). Strengths are multiples of the feature's "
    "mean activation.",
    compute="diffdict.studies.atlas:run_atlas",
    summarize="diffdict.studies.atlas:summarize_atlas",
    tables=("atlas", "atlas_tiles"),
    validate=validate,
    cards="diffdict.studies.atlas:atlas_cards",
    unlisted=("atlas_tiles",),  # shown as the cards' images, not as a table
)
