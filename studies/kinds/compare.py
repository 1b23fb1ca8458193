"""SAE vs ITDA: two dictionaries of the same hook, size and sparsity, side by side."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config_rules import fail, one_of, positive
from ..registry import StudyKind

KEY = "studies.compare"


@dataclass
class CompareStudy:
    pairs: list[list[str]] = field(default_factory=list)
    random_directions: int = 0  # 0 = as many as the dictionary has atoms
    prompts: int = 128  # held-out (scoring) toy prompts generated for concept alignment
    selection_prompts: int = 256  # train-split prompts on which features, thresholds and probes are chosen
    random_draws: int = 5  # seeded draws of the random directions; the floor is their mean, with its spread
    location_concepts: bool = True  # also score concepts at one cell, row or column (within group)
    twin: bool = True  # run the same alignment on the hook's planted twin (the positive control)
    twin_tokens: int = 0  # tokens each twin dictionary trains on; 0 = the real dictionary's own count


def validate(config: Any, study: CompareStudy, source: str) -> None:
    positive(source, f"{KEY}.random_draws", study.random_draws)
    if study.twin_tokens < 0:
        raise fail(
            source,
            f"{KEY}.twin_tokens",
            f"must be >= 0 (0 = each dictionary's own token count), got {study.twin_tokens}",
        )
    dictionaries = [d.name for d in config.dictionaries]
    for i, pair in enumerate(study.pairs):
        key = f"{KEY}.pairs[{i}]"
        if len(pair) != 2:
            raise fail(source, key, f"expected two dictionary names [sae, itda], got {pair}")
        for name in pair:
            one_of(source, key, name, dictionaries)
        first, second = (config.dictionary(n) for n in pair)
        if (first.model, first.hook) != (second.model, second.hook):
            raise fail(source, key, f"{pair[0]!r} and {pair[1]!r} must be fit on the same model and hook")


STUDY = StudyKind(
    name="compare",
    config=CompareStudy,
    title="SAE vs ITDA",
    about="Same hook, same size and sparsity. Reconstruction on held-out maps, and (toy world) concept alignment "
    "per ground-truth concept: each method's feature and threshold are chosen on train prompts and scored on "
    "held-out prompts (AUROC, F1, precision, recall; k-sparse probing with k = 1, 2, 4, 8), beside the floor "
    "(the block's raw channels, random directions) and the ceiling (the concept's diff-in-means direction, "
    "a logistic probe on all channels); also within group (object concepts on object cells), at one cell, row "
    "or column, beside the label-only fg/bg floor and the base rate, and on the hook's planted twin.",
    compute="diffdict.studies.compare:run_compare",
    plot="diffdict.studies.compare:plot_compare",
    summarize="diffdict.studies.compare:summarize_compare",
    tables=(
        "compare_metrics",
        "compare_alignment",
        "compare_alignment_summary",
        "compare_twin",
        "compare_sparse_probing",
        "compare_alignment_by_t",
    ),
    validate=validate,
)
