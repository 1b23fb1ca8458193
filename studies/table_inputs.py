"""What a study's tables were computed from, so that a rerun recomputes exactly the studies whose inputs changed.

A study's inputs are its own config table, the fits of the dictionaries it reads (their fit groups, which
hash every setting that shaped them), the stores it reads (their harvest settings, which hash the prompt
texts), the prompts, the study seed and the CLIP model that scores real images. A study that names its
dictionaries (`dictionaries`, `pairs`) reads those; one that does not (editability, layout, training)
is taken to read every dictionary of the config. The inputs and their hash are written beside the
tables (tables/inputs/STUDY.json); tables whose recorded hash differs from the current one are stale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

INPUTS_FOLDER = "inputs"


def dictionaries_read(config: Any, study: Any) -> list[str]:
    """The dictionary names a study's config names, or every dictionary of the config when it names none."""
    named: list[str] = []
    for f in dataclasses.fields(study):
        value = getattr(study, f.name)
        if f.name == "dictionaries" and isinstance(value, list):
            named += [part for item in value for part in str(item).split("+")]
        if f.name == "pairs" and isinstance(value, list):
            named += [str(part) for pair in value for part in pair]
    return sorted(set(named)) if named else sorted(d.name for d in config.dictionaries)


def study_inputs(run: Any, name: str) -> dict[str, Any]:
    """Everything the study `name` reads, as JSON-able data."""
    config = run.config
    study = getattr(config.studies, name)
    fits = {d: run.fit_identity(config.dictionary(d)) for d in dictionaries_read(config, study)}
    stores = {model: run.harvest_settings(model) for model in config.harvested_models()}
    prompts = hashlib.sha256("\n".join(p.text for p in run.prompts).encode()).hexdigest()[:16]
    return json.loads(
        json.dumps(
            {
                "study": dataclasses.asdict(study),
                "fits": fits,
                "stores": stores,
                "prompts_sha256": prompts,
                "study_seed": run.study_seed,
                "clip_model": config.clip_model,
            },
            sort_keys=True,
            default=str,
        )
    )


def inputs_hash(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def inputs_path(tables_folder: Path, name: str) -> Path:
    return tables_folder / INPUTS_FOLDER / f"{name}.json"


def recorded_hash(tables_folder: Path, name: str) -> str | None:
    """The inputs hash a study's tables were computed with (None: unknown, e.g. tables of an older version)."""
    path = inputs_path(tables_folder, name)
    try:
        return json.loads(path.read_text()).get("hash")
    except (OSError, ValueError, AttributeError):
        return None


def record(tables_folder: Path, name: str, inputs: dict[str, Any]) -> None:
    """Write what the study's tables were computed from (after its tables: a kill between leaves them stale)."""
    from diffdict.dictionaries.atomic import write_json_atomic

    write_json_atomic(inputs_path(tables_folder, name), {"hash": inputs_hash(inputs), "inputs": inputs})


def describe_inputs(tables_folder: Path, name: str) -> str:
    """One sentence for the report: what a study's tables were computed from ('' when unrecorded)."""
    path = inputs_path(tables_folder, name)
    try:
        document = json.loads(path.read_text())
        inputs = document["inputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    fits = ", ".join(f"{dictionary} (fit {group})" for dictionary, group in inputs.get("fits", {}).items())
    stores = ", ".join(inputs.get("stores", {})) or "none"
    return (
        f"Computed from (inputs {document.get('hash')}): dictionaries {fits or 'none'}; stores {stores}; "
        f"prompts {inputs.get('prompts_sha256')}; study seed {inputs.get('study_seed')}."
    )
