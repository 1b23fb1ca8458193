"""Cross-model transfer: a dictionary fit on one model evaluated (and edited with) on the others."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import EDIT_ATTRIBUTES
from ..config_rules import check_windows, fail, one_of, positive
from ..registry import StudyKind
from ..strengths import strength_field
from .editability import UPDATE_NORM

KEY = "studies.transfer"


@dataclass
class TransferStudy:
    dictionaries: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    splice_prompts: int = 8
    # Edits on each target model with the transferred dictionary's features, beside that model's own
    # oracle, random direction and own dictionaries at the hook (toy world; 0 prompts = no edits).
    edit_prompts: int = 0  # held-out prompts edited per attribute
    edit_selection_prompts: int = 64  # train-split prompts for features, oracle directions and norms
    edit_tuning_prompts: int = 16  # train-split prompts the edit strength sweep runs on (it chooses the strength)
    edit_attributes: list[str] = field(default_factory=lambda: ["shape", "position"])
    edit_strengths: list[float] = strength_field(
        default_factory=lambda: [2.0, 4.0, 8.0],
        unit=UPDATE_NORM,
        use="the transferred features, the target's own dictionaries, oracle and random directions are added at "
        "each of these norms",
    )
    edit_window: list[float] = field(default_factory=lambda: [0.6, 1.0])  # t range edited (t = 1 is noise)


def validate(config: Any, study: TransferStudy, source: str) -> None:
    positive(source, f"{KEY}.splice_prompts", study.splice_prompts)
    if study.edit_prompts < 0:
        raise fail(source, f"{KEY}.edit_prompts", f"must be >= 0 (0 = no edits), got {study.edit_prompts}")
    if not study.edit_prompts:
        return
    if not config.has_ground_truth:
        raise fail(
            source,
            f"{KEY}.edit_prompts",
            "edits need toy-world prompts (prompts.source = 'toyworld'): they "
            "are judged against each scene's ground truth; set it to 0",
        )
    positive(source, f"{KEY}.edit_selection_prompts", study.edit_selection_prompts)
    positive(source, f"{KEY}.edit_tuning_prompts", study.edit_tuning_prompts)
    for i, attribute in enumerate(study.edit_attributes):
        one_of(source, f"{KEY}.edit_attributes[{i}]", attribute, EDIT_ATTRIBUTES)
    check_windows(source, KEY, {"edit_window": study.edit_window})


STUDY = StudyKind(
    name="transfer",
    config=TransferStudy,
    title="Cross-model transfer",
    about="A dictionary fit on one model and hook, evaluated on the same hook of the other models and step "
    "counts, per step and CFG branch, on held-out prompts. Spliced fidelity: the image generated with the "
    "block's update replaced by its reconstruction, compared with the original (judge agreement on the "
    "toy world; pixel and CLIP similarity on real models). With edit_prompts, each target model is also "
    "edited at the hook with the transferred dictionary's features, beside its own dictionaries there and "
    "its own oracle and random directions (success at each method's best strength).",
    compute="diffdict.studies.transfer:run_transfer",
    plot="diffdict.studies.transfer:plot_transfer",
    summarize="diffdict.studies.summaries:summarize_transfer",
    tables=("transfer_metrics", "transfer_splice", "transfer_edits"),
    validate=validate,
    models_read=lambda study: study.models,  # its target models are harvested beside the dictionaries' own
)
