"""Timestep-window interventions: one concept edited inside one time window at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import EDIT_ATTRIBUTES, EDIT_STYLES
from ..config_rules import check_windows, fail, one_of, positive, require_toy_world
from ..registry import StudyKind
from ..strengths import strength_field

KEY = "studies.windows"
FEATURE_MEAN = "multiples of the target feature's mean activation where it is active, on the selection prompts"


@dataclass
class WindowsStudy:
    # A dictionary name per edited block, or "a+b" to edit several blocks at once (one dictionary each).
    dictionaries: list[str] = field(default_factory=list, metadata={"together": True})
    windows: dict[str, list[float]] = field(
        default_factory=lambda: {"early": [0.6, 1.0], "middle": [0.2, 0.6], "late": [0.0, 0.2]}
    )
    edit_styles: list[str] = field(default_factory=lambda: list(EDIT_STYLES))
    edits: list[str] = field(default_factory=lambda: list(EDIT_ATTRIBUTES))
    prompts: int = 8  # held-out prompts edited
    # held-out prompts the dictionary edit styles run on (the first of `prompts`); 0 = all of them. The oracle and
    # random rows, which the claims read, always use every prompt; the styles cost as much again per style.
    style_prompts: int = 0
    selection_prompts: int = 64  # train-split prompts on which features, mean activations and oracles are chosen
    tuning_prompts: int = 16  # train-split prompts the oracle also edits (toy world), where claims choose the hook
    # One unit, three uses: each puts the target concept in at about the same size (atoms are unit-norm), so the
    # oracle and random rows compare with the sdlens edit at an equal norm.
    strength: float = strength_field(
        4.0,
        unit=FEATURE_MEAN,
        use="sdlens adds the target atom with this coefficient; tinaz_spatial sets the target feature to this "
        "value inside the region; the oracle and random rows add a direction of this norm",
    )
    norm_strength: float = strength_field(
        0.5,
        unit="multiples of the local code norm: the norm of the dictionary's code at each cell and step",
        use="tinaz_global adds the target feature with this value everywhere",
    )
    token_norm_strength: float = strength_field(
        1.0,
        unit="multiples of the hook's mean token norm on the selection prompts",
        use="flux_add adds the unit target atom scaled to this norm on the region",
    )
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
    if study.style_prompts < 0:
        raise fail(source, f"{KEY}.style_prompts", f"must be >= 0 (0 = all of prompts), got {study.style_prompts}")
    positive(source, f"{KEY}.tuning_prompts", study.tuning_prompts)
    one_of(source, f"{KEY}.scoring", study.scoring, ("auto", "judge", "clip"))
    require_toy_world(
        config, source, KEY, "edits are planned from each scene's ground truth; real models draw the same captions"
    )


def _edited_models(config: Any, study: WindowsStudy) -> dict[str, tuple]:
    """Model entry name -> (steps, height, width) as configured (None: the model's) of every model edited."""
    entries = {entry.name: entry for entry in config.dictionaries}
    models = {entries[name].model for names in study.dictionaries for name in names.split("+") if name in entries}
    return {m.name: (m.steps, m.height, m.width) for m in config.models if m.name in models}


def check(config: Any, study: WindowsStudy, adapters: dict[str, Any], where: str) -> None:
    """Every window holds a denoising step of some model the study edits. A window no step falls in would edit
    nothing, yet its rows would read as measured (success 0, preservation 1). Where it holds steps of one model
    but not another (late, on Base's 25 steps and Flux's 4), the study leaves that model's window out instead."""
    from diffdict.adapters.schedules import step_times

    from ..errors import UserError

    times = {}
    for model, (steps, height, width) in _edited_models(config, study).items():
        adapter = adapters[model]
        times[model] = step_times(
            adapter, steps or adapter.defaults.steps, height or adapter.defaults.height, width or adapter.defaults.width
        )
    for name, (low, high) in study.windows.items():
        if times and not any(low <= t <= high for model_times in times.values() for t in model_times):
            every = [t for model_times in times.values() for t in model_times]
            steps = "; ".join(f"model {model!r}: {_steps_text(model_times)}" for model, model_times in times.items())
            raise UserError(
                f"{where}.windows.{name}: [{low}, {high}] holds no denoising step ({steps}), so its "
                f"edits would change nothing; remove the window, widen it to hold a step (e.g. "
                f"{_widened(low, high, every)}), or edit a model with more steps"
            )


def _steps_text(times: list[float]) -> str:
    if len(times) <= 8:
        return f"{len(times)} step{'s' if len(times) != 1 else ''} at t = {', '.join(f'{t:.3f}' for t in times)}"
    return f"{len(times)} steps, t from {min(times):.3f} to {max(times):.3f}"


def _widened(low: float, high: float, times: list[float]) -> list[float]:
    """[low, high] stretched to the nearest step time, rounded outwards to 3 decimals so that it holds it."""
    import math

    nearest = min(times, key=lambda t: min(abs(t - low), abs(t - high)))
    return [min(low, math.floor(nearest * 1000) / 1000), max(high, math.ceil(nearest * 1000) / 1000)]


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
    check=check,
)
