"""Validation of a parsed study config that runs before anything is loaded or written.

Called by `config.parse_config` right after the TOML is read into dataclasses. The checks are
generic where they can be, so that new studies inherit them: every float anywhere in the config
is finite, every `windows` / `t_range` is a non-empty interval, every `*strength*` is > 0, every
name that becomes a path is a safe file name and none the framework keeps beside it, every seed
leaves room for the offsets stages add to it. Each error is a ConfigError naming the file, the
key, what is wrong and the fix (docs/errors.md lists them).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

from diffdict.dictionaries.atomic import OLD_SUFFIX, TMP_MARK
from diffdict.dictionaries.options import OptionSpec, violation

from .config import ConfigError, PromptsSection, StudiesSection, StudyConfig, resolve_relative
from .config_rules import did_you_mean
from .config_rules import fail as _fail

# A name that becomes a folder or file name: no separators, no "..", no leading dot or dash.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# What a fit group's folder (RUN/fits/GROUP/, where each dictionary is the folder NAME/) holds besides the
# dictionaries: written by dictionaries/train.py (checkpoints/, metrics/, metrics.parquet, features.parquet)
# and studies/run.py (settings.json). A dictionary of one of these names would replace it. Lower case.
FIT_GROUP_ENTRIES = ("checkpoints", "metrics", "settings.json", "metrics.parquet", "features.parquet")
MAX_SEED = 2**63 - 1  # the store's index keeps seeds as Int64
MAX_STEPS = 1000  # the schedulers of every supported model have 1000 training timesteps
MAX_SIDE = 8192  # px; beyond this no supported model has been trained, and memory runs out first
DEVICE_TYPES = ("cpu", "cuda", "mps")


def validate_config(config: StudyConfig, source: str, path: Path | None) -> None:
    """Every check that needs no model: names, out, numbers, windows, strengths, options, prompts, device."""
    _check_names(config, source)
    check_out(config.out, source)
    _check_finite(config, source, "", config)
    for name, study in config.studies.items():
        _check_intervals_and_strengths(study, source, f"studies.{name}")
    _check_models(config, source)
    _check_seeds(config, source)
    _check_options(config, source)
    _check_prompt_counts(config.prompts, source, path)
    if config.device is not None:
        parse_device(config.device, f"{source}: device")


# ---- names and out ------------------------------------------------------------------------------
def check_name(name: str, source: str, key: str) -> None:
    if not SAFE_NAME.fullmatch(name) or ".." in name:
        raise _fail(
            source,
            key,
            f"{name!r} is not a safe name: it becomes a folder name in the run, so use 1-64 "
            f"letters, digits, '_', '-' or '.', starting with a letter or digit "
            f"(no '/', no '..'), e.g. {_suggest(name)!r}",
        )


def _suggest(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).replace("..", "").strip("-._")
    return cleaned[:64] or "model-1"


def check_not_reserved(name: str, source: str, key: str, folder: str, reserved: tuple[str, ...] = ()) -> None:
    """A name that becomes a folder beside the framework's own entries must not be one of them.

    Atomic writes keep NAME.old (a folder swap's backup, deleted after the swap) and NAME.tmp-* (temporaries,
    deleted by the stale-temp sweep) beside every folder they write, so a user's entry named like that is
    deleted with them; `reserved` lists the files and folders the framework keeps in the same folder, which an
    entry of that name would replace. Compared without case: on macOS and Windows 'Checkpoints' is
    'checkpoints'."""
    lowered = name.lower()
    if lowered in reserved or lowered.endswith(OLD_SUFFIX) or TMP_MARK in lowered:
        listed = ", ".join([*reserved, f"names ending in '{OLD_SUFFIX}'", f"names containing '{TMP_MARK}'"])
        raise _fail(
            source,
            key,
            f"{name!r} is reserved: in {folder} the run keeps its own files under these names "
            f"({listed}), so an entry named like them would replace them or be deleted with "
            f"them; choose another name, e.g. {_unreserved(name, reserved)!r}",
        )


def _unreserved(name: str, reserved: tuple[str, ...]) -> str:
    """A suggestion: the dots that make a suffix become dashes ('sae.old' -> 'sae-old'); a reserved word gets '-1'."""
    suggestion = name.replace(".", "-")
    return f"{suggestion}-1" if suggestion.lower() in reserved else suggestion


def _check_names(config: StudyConfig, source: str) -> None:
    check_name(config.name, source, "name")
    for i, model in enumerate(config.models):
        check_name(model.name, source, f"models[{i}].name")
        # RUN/stores/MODEL/ holds only stores, but atomic writes and their sweeps work on any folder's entries.
        check_not_reserved(model.name, source, f"models[{i}].name", "RUN/stores/")
    for i, entry in enumerate(config.dictionaries):
        check_name(entry.name, source, f"dictionaries[{i}].name")
        check_not_reserved(entry.name, source, f"dictionaries[{i}].name", "RUN/fits/GROUP/", FIT_GROUP_ENTRIES)
    for name, study in config.studies.items():
        windows = getattr(study, "windows", None)
        if isinstance(windows, dict):
            for window in windows:
                check_name(window, source, f"studies.{name}.windows.{window}")


def check_out(out: str, source: str, key: str = "out") -> None:
    """`out` (or --out) is a non-empty path of a folder that is, or can be, created."""

    def fail(message: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {message}" if key else f"{source}: {message}")

    if not out.strip():
        raise fail('is empty; give the folder that receives the run, e.g. out = "runs/my-study"')
    if "\0" in out:
        raise fail("contains a NUL character; give a plain folder path")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise fail(f"{path} is a file, not a folder; choose another `out` or move that file")
    for parent in path.parents:  # a file where a parent folder belongs: mkdir would fail later
        if parent.exists():
            if not parent.is_dir():
                raise fail(f"{parent} is a file, so {path} cannot be created; choose another `out`")
            break


# ---- numbers ---------------------------------------------------------------------------------------
def _check_finite(config: StudyConfig, source: str, key: str, value: Any) -> None:
    """Every float anywhere in the config (NaN and inf are valid TOML) must be finite."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            if f.name != "path":
                _check_finite(config, source, f"{key}.{f.name}" if key else f.name, getattr(value, f.name))
    elif isinstance(value, StudiesSection):
        for name, study in value.items():
            _check_finite(config, source, f"{key}.{name}", study)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_finite(config, source, f"{key}.{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(config, source, f"{key}[{i}]", v)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _fail(source, key, f"is {value}, but every number must be finite; give a finite value")


def _check_intervals_and_strengths(value: Any, source: str, key: str) -> None:
    """Any `windows` (name -> [low, high]) or `t_range` is non-empty; any `*strength*` is > 0 unless its
    field says `signed=True` (studies.strengths.strength_field; e.g. the atlas's strip, which steers away too and
    scores nothing). The error names the field's unit: the same word is a multiple of different norms."""
    if not dataclasses.is_dataclass(value):
        return
    for f in dataclasses.fields(value):
        item, where = getattr(value, f.name), f"{key}.{f.name}"
        if item is None:
            continue
        if dataclasses.is_dataclass(item):
            _check_intervals_and_strengths(item, source, where)
        elif f.name == "windows" and isinstance(item, dict):
            if not item:
                raise _fail(source, where, "is empty; give at least one window, e.g. { early = [0.6, 1.0] }")
            for name, window in item.items():
                _check_interval(window, source, f"{where}.{name}")
        elif f.name == "t_range":
            _check_interval(item, source, where)
        elif "strength" in f.name and not f.metadata.get("signed", False):
            for i, strength in enumerate(item if isinstance(item, list) else [item]):
                if isinstance(strength, (int, float)) and not strength > 0:
                    at = f"{where}[{i}]" if isinstance(item, list) else where
                    unit = f.metadata.get("unit") or "multiples of a typical activation or norm"
                    raise _fail(
                        source,
                        at,
                        f"must be > 0, got {strength}: it counts {unit}, added to steer towards "
                        f"the target; 0 does nothing and a negative value steers away, which the "
                        f"study does not score",
                    )


def _check_interval(window: Any, source: str, key: str) -> None:
    if not isinstance(window, (list, tuple)) or len(window) != 2:
        raise _fail(source, key, f"{window} must be [low, high] with 0 <= low < high <= 1 (t = 1 is pure noise)")
    low, high = window
    if not (0.0 <= low <= high <= 1.0):
        raise _fail(source, key, f"{window} must be [low, high] with 0 <= low <= high <= 1 (t = 1 is pure noise)")
    if low == high:
        example = [round(max(0.0, high - 0.2), 3), high] if high > 0 else [0.0, 0.2]
        raise _fail(
            source,
            key,
            f"{list(window)} is an empty time window (low == high): no step falls inside it; "
            f"give low < high, e.g. {example}",
        )


def _check_models(config: StudyConfig, source: str) -> None:
    for i, model in enumerate(config.models):
        if model.steps is not None and model.steps > MAX_STEPS:
            raise _fail(
                source,
                f"models[{i}].steps",
                f"{model.steps} steps is more than the scheduler's {MAX_STEPS} timesteps; use at most {MAX_STEPS}",
            )
        for side in ("height", "width"):
            value = getattr(model, side)
            if value is not None and value > MAX_SIDE:
                raise _fail(
                    source,
                    f"models[{i}].{side}",
                    f"{value} px is larger than {MAX_SIDE} px; use the model's native size (e.g. 512 or 1024)",
                )
        if model.guidance is not None and model.guidance > 100:
            raise _fail(
                source,
                f"models[{i}].guidance",
                f"{model.guidance} is far outside any useful guidance scale "
                f"(0 = off, SDXL Base uses 5-8, Flux dev 3.5); use at most 100",
            )


def _check_seeds(config: StudyConfig, source: str) -> None:
    """Every seed, plus the largest offset a stage adds to it, stays a valid seed (0 .. 2**63 - 1): an overflow
    would otherwise surface only after the models load, in the middle of a stage."""
    for key, seed, offset, why in _seed_uses(config):
        if not 0 <= seed <= MAX_SEED:
            raise _fail(source, key, f"{seed} is out of range; seeds are integers from 0 to 2**63 - 1")
        if seed + offset > MAX_SEED:
            raise _fail(
                source,
                key,
                f"{seed} is too large: {why} seed + {offset}, which must stay below 2**63; "
                f"use a seed from 0 to 2**63 - {1 + offset}, e.g. 0",
            )
    if len(set(config.prompts.seeds)) != len(config.prompts.seeds):
        raise _fail(
            source,
            "prompts.seeds",
            f"{config.prompts.seeds} repeats a seed, which would store the same images twice; list each seed once",
        )


def _seed_uses(config: StudyConfig) -> list[tuple[str, int, int, str]]:
    """(key, seed, largest offset added to it, by what) for every seed of the config."""
    uses = [
        ("seed", config.seed, 1, "training draws its token stream with"),
        ("prompts.shuffle_seed", config.prompts.shuffle_seed, 0, ""),
    ]
    for i, seed in enumerate(config.prompts.seeds):
        # The first seed is the studies' seed: layout draws its "another seed" baseline with seed + 1.
        why = "the layout study draws its other-seed baseline with"
        uses.append((f"prompts.seeds[{i}]", seed, 1 if i == 0 else 0, why))
    return uses


# ---- dictionary options ------------------------------------------------------------------------------
def _check_options(config: StudyConfig, source: str) -> None:
    """Each entry's `options` against its architecture's own option schema (`Dictionary.option_schema()`: the
    config dataclass's fields, with their types, ranges and docs), before anything is built."""
    from diffdict.dictionaries.registry import SIZE_KEYS, architecture_class

    for i, entry in enumerate(config.dictionaries):
        if entry.architecture not in SIZE_KEYS:
            continue  # reported by the architecture check, with the allowed names
        schema = architecture_class(entry.architecture).option_schema()
        n_key, k_key = SIZE_KEYS[entry.architecture]
        reserved = {"d": "d is taken from the hook", n_key: "set `n` on the entry", k_key: "set `k` on the entry"}
        for name, value in entry.options.items():
            key = f"dictionaries[{i}].options.{name}"
            if name in reserved:
                raise _fail(source, key, f"is not an option here: {reserved[name]}, not in options")
            if name not in schema:
                allowed = [f for f in schema if f not in reserved]
                raise _fail(
                    source,
                    key,
                    f"unknown option for {entry.architecture}{did_you_mean(name, schema)} "
                    f"Allowed: {', '.join(allowed)}",
                )
            _check_option_value(schema[name], value, source, key)


def _check_option_value(spec: OptionSpec, value: Any, source: str, key: str) -> None:
    hint = spec.type
    expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint)
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint, True)
    if not ok:
        raise _fail(source, key, f"expected {expected}, got {type(value).__name__} {value!r}")
    problem = violation(spec, value)
    if problem is not None:
        raise _fail(source, key, problem)


def memory_estimate(architecture: str, n: int, d: int, batch: int) -> tuple[int, str]:
    """Bytes a dictionary needs while training, and how that was counted (the architecture's own
    `training_memory`)."""
    from diffdict.dictionaries.registry import architecture_class

    return architecture_class(architecture).training_memory(n, d, batch)


def available_memory(device: Any = None) -> tuple[int, str]:
    """Total memory of the device a dictionary trains on (bytes) and its name."""
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device.index or 0).total_memory, f"GPU {device}"
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"
    except (ValueError, OSError, AttributeError):
        return 2**62, "memory"


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1000
    return f"{count:.1f} PB"


# ---- prompts -------------------------------------------------------------------------------------------
def read_prompt_file(file: Path, source: str) -> list[str]:
    """The prompts of a prompts.file, one per line; every problem named with the file."""
    if file.is_dir():
        raise _fail(source, "prompts.file", f"{file} is a folder; give a text file with one prompt per line")
    if not file.exists():
        raise _fail(source, "prompts.file", f"{file} does not exist; one prompt per line is expected")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise _fail(
            source,
            "prompts.file",
            f"{file} is not UTF-8 text ({error.reason} at byte {error.start}); "
            f"save it as UTF-8 with one prompt per line",
        ) from None
    except OSError as error:
        raise _fail(
            source, "prompts.file", f"{file} cannot be read ({error.strerror}); check its permissions"
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _check_prompt_counts(prompts: PromptsSection, source: str, path: Path | None) -> None:
    """Train and eval are split by prompt text: at least two different prompts must be used."""
    if prompts.source == "list":
        texts, key = prompts.list[: max(prompts.count, 0)], "prompts.list"
    elif (
        prompts.source == "file" and prompts.file and not prompts.file.lower().endswith((".parquet", ".jsonl", ".csv"))
    ):
        texts, key = read_prompt_file(resolve_relative(prompts.file, path), source), "prompts.file"
        texts = texts[: max(prompts.count, 0)]
    else:
        if prompts.source == "toyworld" and prompts.count == 1:
            raise _fail(
                source,
                "prompts.count",
                "is 1, but train and eval are split by prompt, so at least 2 "
                "prompts are needed (one for each); raise prompts.count",
            )
        return
    if texts and len(set(texts)) < 2:
        raise _fail(
            source,
            key,
            f"has {len(set(texts))} distinct prompt{'s' if len(set(texts)) != 1 else ''} (of "
            f"{len(texts)} used), but train and eval are split by prompt text, so at least 2 "
            f"different prompts are needed; add prompts",
        )


# ---- device --------------------------------------------------------------------------------------------
def parse_device(name: str, where: str) -> None:
    """A device name torch understands, of a kind diffdict runs on (availability: check_device)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ConfigError(f"{where}: {name!r} is not a device diffdict runs on; use cpu, cuda, cuda:N or mps")


def check_device(name: str | None, where: str) -> None:
    """The device exists and is available on this machine (called before any model is loaded)."""
    if name is None:
        return
    import torch

    parse_device(name, where)
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{where}: {name!r} asks for a CUDA GPU, but none is available on this machine "
                f"(torch.cuda.is_available() is False); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{where}: {name!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                f"cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{where}: 'mps' is not available on this machine; use --device cpu")
