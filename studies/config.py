"""Study configs: TOML files read into dataclasses, validated with errors that name the file,
the key and what is allowed.

A config names models (by a short name the rest of the file uses), where prompts come
from, what to harvest, which dictionaries to fit, and which studies to run. See
configs/quickstart.toml for a commented example.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dictionaries.registry import architecture_names  # torch-free: the one list of architectures


class ConfigError(ValueError):
    """A config file that cannot be run as written. The message names file, key and fix."""

    user_facing = True


DTYPES = ("fp32", "fp16", "bf16")
PROMPT_SOURCES = ("toyworld", "file", "list", "dataset")
EDIT_STYLES = ("sdlens", "tinaz_spatial", "tinaz_global", "flux_add")
EDIT_ATTRIBUTES = ("colour", "shape", "position", "background", "style")


@dataclass
class ModelEntry:
    name: str
    id: str
    steps: int | None = None
    guidance: float | None = None
    quantize: str | None = None
    dtype: str | None = None
    hooks: list[str] | None = None  # overrides harvest.hooks for this model (e.g. Flux beside SDXL)
    height: int | None = None
    width: int | None = None


@dataclass
class PromptsSection:
    source: str = "toyworld"
    count: int = 64
    file: str | None = None
    list: list[str] = field(default_factory=list)
    eval_fraction: float = 0.25
    seeds: list[int] = field(default_factory=lambda: [0])
    # source = "dataset": a Hugging Face dataset id, a local dataset folder, or a local
    # .parquet / .jsonl / .csv file; `column` names the caption column (also for such a `file`).
    dataset: str | None = None
    config: str | None = None  # the dataset's configuration (subset) name, if it has several
    split: str = "train"
    column: str | None = None
    streaming: bool = True  # Hub datasets: read rows as they arrive instead of downloading all files first
    shuffle: bool = False  # take `count` rows after a seeded shuffle instead of the first `count`
    shuffle_seed: int = 0
    shuffle_buffer: int = 10_000  # streaming shuffle buffer (rows)


@dataclass
class HarvestSection:
    hooks: list[str] = field(default_factory=list)
    dtype: str = "fp16"
    batch_size: int = 8
    capture: str = "update"


@dataclass
class TrainSection:
    """How dictionaries are trained (shared by every [[dictionaries]] entry)."""

    checkpoint_every: int = 0  # steps between checkpoints; 0 = ten checkpoints per fit
    buffer_tokens: int = 262_144  # shuffle buffer of the token stream
    eval_tokens: int = 65_536  # held-out tokens evaluated at the end of a fit
    init_tokens: int = 32_768  # tokens for the geometric median / input statistics


@dataclass
class DictionaryEntry:
    """One dictionary to fit. `n` atoms and `k` active per token for every architecture
    (ITDA: n = maximum size, k = L); other keys go to the architecture's own config."""

    name: str
    architecture: str
    model: str
    hook: str
    n: int
    k: int
    tokens: int = 200_000
    batch: int = 1024
    branch: str = "cond"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TransferStudy:
    dictionaries: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    splice_prompts: int = 8
    # Edits on each target model with the transferred dictionary's features, beside that model's own
    # oracle, random direction and own dictionaries at the hook (toy world; 0 prompts = no edits).
    edit_prompts: int = 0  # held-out prompts edited per attribute
    edit_selection_prompts: int = 64  # train-split prompts for features, oracle directions and norms
    edit_attributes: list[str] = field(default_factory=lambda: ["shape", "position"])
    edit_strengths: list[float] = field(default_factory=lambda: [2.0, 4.0, 8.0])  # x the mean update norm
    edit_window: list[float] = field(default_factory=lambda: [0.6, 1.0])  # t range edited (t = 1 is noise)


@dataclass
class CompareStudy:
    pairs: list[list[str]] = field(default_factory=list)
    random_directions: int = 0  # 0 = as many as the dictionary has atoms
    prompts: int = 128  # held-out (scoring) toy prompts generated for concept alignment
    selection_prompts: int = 256  # train-split prompts on which features, thresholds and probes are chosen


@dataclass
class WindowsStudy:
    # A dictionary name per edited block, or "a+b" to edit several blocks at once (one dictionary each).
    dictionaries: list[str] = field(default_factory=list)
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


@dataclass
class EditabilityStudy:
    """Which block edits which attribute, when: oracle, random and dictionary directions, strength sweep."""

    models: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)  # empty = every image-stream hook of the model
    groups: dict[str, list[str]] = field(default_factory=dict)  # unit name -> hooks edited together
    dictionaries: list[str] = field(default_factory=list)  # their best features are tried at their hook
    attributes: list[str] = field(default_factory=lambda: list(EDIT_ATTRIBUTES))
    windows: dict[str, list[float]] = field(
        default_factory=lambda: {"early": [0.6, 1.0], "middle": [0.2, 0.6], "late": [0.0, 0.2]})
    strengths: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])  # x mean update norm at the cells
    prompts: int = 8  # held-out prompts edited per attribute
    selection_prompts: int = 64  # train-split prompts for oracle directions, features and norms


@dataclass
class LayoutStudy:
    """Tinaz et al.: is the final layout predictable from the first steps' activations?"""

    models: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)  # empty = the model's harvested hooks
    dictionaries: list[str] = field(default_factory=list)  # their best feature predicts the object mask
    prompts: int = 32  # held-out prompts scored
    selection_prompts: int = 96  # train-split prompts the probes, features and thresholds are fit on


@dataclass
class TrainingStudy:
    """Convergence of the dictionaries' training (FVU and dead fraction against tokens seen)."""

    dictionaries: list[str] = field(default_factory=list)  # empty = every dictionary


@dataclass
class AtlasStudy:
    dictionaries: list[str] = field(default_factory=list)
    top_features: int = 12
    images_per_feature: int = 6
    # Modulation strip and empty-prompt activation: multiples of each feature's mean activation.
    strengths: list[float] = field(default_factory=lambda: [-4.0, 0.0, 2.0, 4.0, 8.0])
    empty_strengths: list[float] = field(default_factory=lambda: [12.0])


@dataclass
class StudiesSection:
    transfer: TransferStudy | None = None
    compare: CompareStudy | None = None
    windows: WindowsStudy | None = None
    editability: EditabilityStudy | None = None
    layout: LayoutStudy | None = None
    training: TrainingStudy | None = None
    atlas: AtlasStudy | None = None


STUDY_NAMES = tuple(f.name for f in dataclasses.fields(StudiesSection))


@dataclass
class StudyConfig:
    name: str
    models: list[ModelEntry]
    out: str = "runs/study"
    seed: int = 0
    device: str | None = None
    # CLIP for scoring real-model images (no judge there): "NAME:PRETRAINED" from open-clip,
    # or "random" (a small random-weight model: for tests and dry runs only).
    clip_model: str = "ViT-B-32:laion2b_s34b_b79k"
    prompts: PromptsSection = field(default_factory=PromptsSection)
    harvest: HarvestSection = field(default_factory=HarvestSection)
    train: TrainSection = field(default_factory=TrainSection)
    dictionaries: list[DictionaryEntry] = field(default_factory=list)
    studies: StudiesSection = field(default_factory=StudiesSection)
    path: Path | None = None  # where it was read from; not a TOML key

    def model(self, name: str) -> ModelEntry:
        return next(m for m in self.models if m.name == name)

    def hooks_of(self, model: str) -> list[str]:
        """The hooks harvested for a model entry: its own list, else harvest.hooks."""
        own = self.model(model).hooks
        return own if own is not None else self.harvest.hooks

    def dictionary(self, name: str) -> DictionaryEntry:
        return next(d for d in self.dictionaries if d.name == name)


# ---- reading ----------------------------------------------------------------------------


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study config; raises ConfigError naming the file and key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; the shipped configs are in configs/")
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give the path of a .toml file, e.g. configs/quickstart.toml")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text file ({error.reason} at byte {error.start}); a config is UTF-8 "
                          f"TOML text, e.g. configs/quickstart.toml") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror}); check its permissions") from None
    return parse_config(table, source=str(path), path=path)


def parse_config(table: dict[str, Any], source: str = "<config>", path: Path | None = None) -> StudyConfig:
    from .validate import validate_config  # (a module of its own: names, out, numbers, options, device)

    config = _build(StudyConfig, table, source, "", skip=("path",))
    config.path = path
    validate_config(config, source, path)
    _check_semantics(config, source, path)
    return config


def _fail(source: str, key: str, message: str) -> ConfigError:
    where = f"{source}: {key}: " if key else f"{source}: "
    return ConfigError(where + message)


def _build(cls: type, table: Any, source: str, prefix: str, skip: tuple[str, ...] = ()) -> Any:
    if not isinstance(table, dict):
        raise _fail(source, prefix or "(top level)", f"expected a table, got {type(table).__name__} {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for key in table:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _fail(source, _join(prefix, key), f"unknown key{hint}; allowed keys here: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name in table:
            values[name] = _coerce(hints[name], table[name], source, key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _fail(source, key, "is required")
    return cls(**values)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(options[0], value, source, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, key)
    if origin is list:
        if not isinstance(value, list):
            raise _fail(source, key, f"expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(hint)
        if dataclasses.is_dataclass(item):
            return [_build(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return [_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(source, key, f"expected a table, got {type(value).__name__} {value!r}")
        _, item = typing.get_args(hint)
        return {k: (v if item is Any else _coerce(item, v, source, f"{key}.{k}")) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(source, key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(source, key, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(source, key, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _fail(source, key, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    return value


def _one_of(source: str, key: str, value: Any, allowed: tuple | list) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _fail(source, key, f"{value!r} is not allowed{hint} Allowed: {', '.join(map(str, allowed))}")


def _branches() -> tuple[str, ...]:
    """The CFG branches captures are tagged with: the adapters' own list (imported on use)."""
    from adapters.capture import BRANCHES

    return BRANCHES


def _positive(source: str, key: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise _fail(source, key, f"must be > 0, got {value}")


def _check_semantics(config: StudyConfig, source: str, path: Path | None) -> None:
    if not config.models:
        raise _fail(source, "models", "at least one [[models]] entry is required")
    names = [m.name for m in config.models]
    for i, model in enumerate(config.models):
        if names.count(model.name) > 1:
            raise _fail(source, f"models[{i}].name", f"{model.name!r} is used twice; give each model its own name")
        _positive(source, f"models[{i}].steps", model.steps)
        _positive(source, f"models[{i}].height", model.height)
        _positive(source, f"models[{i}].width", model.width)
        if model.guidance is not None and not model.guidance >= 0:
            raise _fail(source, f"models[{i}].guidance", f"must be >= 0, got {model.guidance}")
        if model.quantize is not None:
            _one_of(source, f"models[{i}].quantize", model.quantize, ("nf4",))
        if model.dtype is not None:
            _one_of(source, f"models[{i}].dtype", model.dtype, DTYPES)
    _check_prompts(config.prompts, source, path)
    harvest = config.harvest
    _one_of(source, "harvest.dtype", harvest.dtype, DTYPES)
    _one_of(source, "harvest.capture", harvest.capture, ("update", "output"))
    _positive(source, "harvest.batch_size", harvest.batch_size)
    for name in ("buffer_tokens", "eval_tokens", "init_tokens"):
        _positive(source, f"train.{name}", getattr(config.train, name))
    if config.train.checkpoint_every < 0:
        raise _fail(source, "train.checkpoint_every", f"must be >= 0 (0 = automatic), got {config.train.checkpoint_every}")
    dict_names = [d.name for d in config.dictionaries]
    for i, entry in enumerate(config.dictionaries):
        key = f"dictionaries[{i}]"
        if dict_names.count(entry.name) > 1:
            raise _fail(source, f"{key}.name", f"{entry.name!r} is used twice; names must be unique")
        _one_of(source, f"{key}.architecture", entry.architecture, architecture_names())
        _one_of(source, f"{key}.model", entry.model, names)
        if not config.hooks_of(entry.model):
            raise _fail(source, "harvest.hooks", "is empty, but dictionaries need harvested activations; list the hooks")
        _one_of(source, f"{key}.hook", entry.hook, config.hooks_of(entry.model))
        _one_of(source, f"{key}.branch", entry.branch, _branches())
        for name in ("n", "k", "tokens", "batch"):
            _positive(source, f"{key}.{name}", getattr(entry, name))
        if entry.k > entry.n:
            raise _fail(source, f"{key}.k", f"k={entry.k} is larger than n={entry.n}; choose k <= n")
        if entry.tokens < entry.batch:
            raise _fail(source, f"{key}.tokens", f"{entry.tokens} tokens are fewer than one batch ({entry.batch})")
    _check_studies(config, source, names, dict_names)


def _check_prompts(prompts: PromptsSection, source: str, path: Path | None) -> None:
    _one_of(source, "prompts.source", prompts.source, PROMPT_SOURCES)
    _positive(source, "prompts.count", prompts.count)
    if not 0.0 < prompts.eval_fraction < 1.0:
        raise _fail(source, "prompts.eval_fraction", f"must be strictly between 0 and 1, got {prompts.eval_fraction}")
    if not prompts.seeds:
        raise _fail(source, "prompts.seeds", "is empty; give at least one seed, e.g. [0]")
    if prompts.source == "list" and not prompts.list:
        raise _fail(source, "prompts.list", "is empty; give at least two prompts (train and eval are split by prompt)")
    if prompts.source == "file":
        if not prompts.file:
            raise _fail(source, "prompts.file", "is required when prompts.source = 'file'")
        from .validate import read_prompt_file

        file = resolve_relative(prompts.file, path)
        if file.suffix.lower() in TABLE_SUFFIXES:
            if not file.exists():
                raise _fail(source, "prompts.file", f"{file} does not exist; one prompt per line is expected")
            _check_table(file, prompts.column, source, "prompts.file")
        elif not read_prompt_file(file, source):  # names a folder, a missing or a non-UTF-8 file
            raise _fail(source, "prompts.file", f"{file} has no prompts (one prompt per line)")
    if prompts.source == "dataset":
        _check_dataset(prompts, source, path)
    _positive(source, "prompts.shuffle_buffer", prompts.shuffle_buffer)


# Local tables read with polars; anything else named by `dataset` goes through `datasets`.
TABLE_SUFFIXES = (".parquet", ".jsonl", ".csv")


def _check_dataset(prompts: PromptsSection, source: str, path: Path | None) -> None:
    """A dataset source is checked without downloading: local files by their schema, Hub ids by form."""
    if not prompts.dataset:
        raise _fail(source, "prompts.dataset", "is required when prompts.source = 'dataset' (a Hugging Face "
                    "dataset id such as 'laion/laion-coco', a local folder, or a .parquet/.jsonl/.csv file)")
    if not prompts.column:
        raise _fail(source, "prompts.column", "is required when prompts.source = 'dataset': the column that "
                    "holds the captions (e.g. 'top_caption' for LAION-COCO)")
    local = resolve_relative(prompts.dataset, path)
    if local.is_file():
        if local.suffix.lower() not in TABLE_SUFFIXES:
            raise _fail(source, "prompts.dataset", f"{local}: a local file must be .parquet, .jsonl or .csv")
        _check_table(local, prompts.column, source, "prompts.dataset")
    elif not local.exists() and (local.suffix.lower() in TABLE_SUFFIXES or not _looks_like_hub_id(prompts.dataset)):
        raise _fail(source, "prompts.dataset", f"{local} does not exist, and {prompts.dataset!r} is not a Hugging Face "
                    "dataset id ('owner/name')")


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(p and not p.startswith(".") for p in parts)


def _check_table(file: Path, column: str | None, source: str, key: str) -> None:
    """A local .parquet/.jsonl/.csv must name its caption column, and hold it (schema only, no full read)."""
    from studies.prompt_sources import table_columns

    if not column:
        raise _fail(source, "prompts.column", f"is required to read captions from {file.name} (one of its columns)")
    try:
        columns = table_columns(file)
    except Exception as error:  # polars raises its own error kinds for unreadable files
        raise _fail(source, key, f"{file} cannot be read as {file.suffix[1:]}: {error}") from None
    if column not in columns:
        close = difflib.get_close_matches(column, columns, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _fail(source, "prompts.column", f"{file.name} has no column {column!r}{hint} Columns: {', '.join(columns)}")


def _check_studies(config: StudyConfig, source: str, models: list[str], dictionaries: list[str]) -> None:
    studies = config.studies
    for study_name in ("transfer", "windows", "editability", "layout", "training", "atlas"):
        study = getattr(studies, study_name)
        if study is None:
            continue
        for i, name in enumerate(study.dictionaries):
            # windows edits several blocks at once with "a+b": one dictionary per hook
            parts = name.split("+") if study_name == "windows" else [name]
            for part in parts:
                _one_of(source, f"studies.{study_name}.dictionaries[{i}]", part, dictionaries)
            if len(parts) > 1:
                entries = [config.dictionary(p) for p in parts]
                if len({e.model for e in entries}) > 1 or len({e.hook for e in entries}) < len(entries):
                    raise _fail(source, f"studies.{study_name}.dictionaries[{i}]",
                                f"{name!r}: dictionaries edited together must share a model and sit on different hooks")
    for study_name in ("editability", "layout"):
        study = getattr(studies, study_name)
        if study is None:
            continue
        key = f"studies.{study_name}"
        if not study.models:
            raise _fail(source, f"{key}.models", "is empty; name the model entries to study")
        for i, name in enumerate(study.models):
            _one_of(source, f"{key}.models[{i}]", name, models)
        _positive(source, f"{key}.prompts", study.prompts)
        _positive(source, f"{key}.selection_prompts", study.selection_prompts)
        if config.prompts.source != "toyworld":
            raise _fail(source, key, "needs toy-world prompts (prompts.source = 'toyworld'): it is scored "
                        "against each scene's ground truth")
    if studies.editability is not None:
        e = studies.editability
        _check_windows(source, "studies.editability.windows", e.windows)
        for i, attribute in enumerate(e.attributes):
            _one_of(source, f"studies.editability.attributes[{i}]", attribute, EDIT_ATTRIBUTES)
        if not e.strengths:
            raise _fail(source, "studies.editability.strengths", "is empty; give strengths such as [1, 2, 4, 8]")
        for i, strength in enumerate(e.strengths):
            if not math.isfinite(strength) or strength <= 0:
                raise _fail(source, f"studies.editability.strengths[{i}]",
                            f"must be a finite number > 0 (a multiple of the block's mean update norm), got {strength}")
        for unit, hooks in e.groups.items():
            if not hooks:
                raise _fail(source, f"studies.editability.groups.{unit}", "is empty; list the hooks edited together")
    if studies.transfer is not None:
        transfer = studies.transfer
        for i, name in enumerate(transfer.models):
            _one_of(source, f"studies.transfer.models[{i}]", name, models)
        _positive(source, "studies.transfer.splice_prompts", transfer.splice_prompts)
        if transfer.edit_prompts < 0:
            raise _fail(source, "studies.transfer.edit_prompts", f"must be >= 0 (0 = no edits), got {transfer.edit_prompts}")
        if transfer.edit_prompts:
            if config.prompts.source != "toyworld":
                raise _fail(source, "studies.transfer.edit_prompts", "edits need toy-world prompts (prompts.source = "
                            "'toyworld'): they are judged against each scene's ground truth; set it to 0")
            _positive(source, "studies.transfer.edit_selection_prompts", transfer.edit_selection_prompts)
            for i, attribute in enumerate(transfer.edit_attributes):
                _one_of(source, f"studies.transfer.edit_attributes[{i}]", attribute, EDIT_ATTRIBUTES)
            for i, strength in enumerate(transfer.edit_strengths):
                if not math.isfinite(strength) or strength <= 0:
                    raise _fail(source, f"studies.transfer.edit_strengths[{i}]",
                                f"must be a finite number > 0 (a multiple of the block's mean update norm), got {strength}")
            _check_windows(source, "studies.transfer", {"edit_window": transfer.edit_window})
    if studies.compare is not None:
        for i, pair in enumerate(studies.compare.pairs):
            key = f"studies.compare.pairs[{i}]"
            if len(pair) != 2:
                raise _fail(source, key, f"expected two dictionary names [sae, itda], got {pair}")
            for name in pair:
                _one_of(source, key, name, dictionaries)
            first, second = (config.dictionary(n) for n in pair)
            if (first.model, first.hook) != (second.model, second.hook):
                raise _fail(source, key, f"{pair[0]!r} and {pair[1]!r} must be fit on the same model and hook")
    if studies.windows is not None:
        w = studies.windows
        _check_windows(source, "studies.windows.windows", w.windows)
        for i, style in enumerate(w.edit_styles):
            _one_of(source, f"studies.windows.edit_styles[{i}]", style, EDIT_STYLES)
        for i, edit in enumerate(w.edits):
            _one_of(source, f"studies.windows.edits[{i}]", edit, EDIT_ATTRIBUTES)
        _positive(source, "studies.windows.prompts", w.prompts)
        _one_of(source, "studies.windows.scoring", w.scoring, ("auto", "judge", "clip"))
        if config.prompts.source != "toyworld":
            raise _fail(source, "studies.windows", "needs toy-world prompts (prompts.source = 'toyworld'): edits are "
                        "planned from each scene's ground truth; real models draw the same captions")
    if studies.atlas is not None:
        _positive(source, "studies.atlas.top_features", studies.atlas.top_features)
        _positive(source, "studies.atlas.images_per_feature", studies.atlas.images_per_feature)


def _check_windows(source: str, key: str, windows: dict[str, list[float]]) -> None:
    if not windows:
        raise _fail(source, key, "is empty; give at least one window, e.g. { early = [0.6, 1.0] }")
    for name, window in windows.items():
        if len(window) != 2 or not 0.0 <= window[0] <= window[1] <= 1.0:
            raise _fail(source, f"{key}.{name}",
                        f"{window} must be [low, high] with 0 <= low <= high <= 1 (t = 1 is pure noise)")


def resolve_relative(file: str, config_path: Path | None) -> Path:
    """A path from a config: absolute, or relative to the config file's folder."""
    candidate = Path(file)
    if candidate.is_absolute() or config_path is None:
        return candidate
    return config_path.parent / candidate
