"""Where a model's denoising steps fall in normalised time t (1 = pure noise), without loading the model.

`diffdict check` places every time window of a study among the steps of the models it edits before anything is
loaded: a window no step falls in would edit nothing, and its rows would read as measured. The times are those
the hooks see: the scheduler each model declares (its family's `RealModel` / `TinyModel`, or a folder's own), set
up and normalised by the family's adapter (`Adapter._step_times`, beside `_read_timestep`).
tests/test_bad_inputs_names.py checks them against the times recorded while generating.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .families import FAMILIES, LiveTable

# Hub id -> the published scheduler/scheduler_config.json of every family's real models (declared by the families).
REAL_SCHEDULERS = LiveTable(lambda: {m.id: m.scheduler for f in FAMILIES.values() for m in f.real_models})


def _declared(model_id: str) -> dict[str, Any] | None:
    """The scheduler config a family declares for one of its real or tiny models, or None."""
    for family in FAMILIES.values():
        for model in (*family.real_models, family.tiny):
            if model.id == model_id:
                return model.scheduler
    return None


def scheduler_config(model_id: str) -> dict[str, Any]:
    """The scheduler config a model generates with: published (real), built in (tiny), or its folder's (toy, local)."""
    from .registry import resolve

    declared = _declared(model_id)
    if declared is not None:
        return dict(declared)
    _, folder = resolve(model_id)
    assert isinstance(folder, Path)  # real and tiny models declare their scheduler; toy and local ones are folders
    return json.loads((folder / "scheduler" / "scheduler_config.json").read_text())


def step_times(adapter: Any, steps: int, height: int, width: int) -> list[float]:
    """Normalised t of each of `steps` denoising steps of `adapter`'s model at height x width px (a meta-device
    adapter will do). Computed in float32, as on the CPU; under bf16 a time can differ in its last bits."""
    import diffusers

    config = scheduler_config(adapter.model_id)
    scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    return adapter._step_times(scheduler, steps, height, width)
