"""Study configs: TOML files read into dataclasses, validated with errors that name the file,
the key and what is allowed.

A config names models (by a short name the rest of the file uses), where prompts come
from, what to harvest, which dictionaries to fit, and which studies to run. See
configs/quickstart.toml for a commented example.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffdict.dictionaries.registry import architecture_names  # torch-free: the one list of architectures

from .config_rules import did_you_mean
from .config_rules import fail as _fail
from .config_rules import one_of as _one_of
from .config_rules import positive as _positive
from .errors import ConfigError  # raised (and caught by callers) as studies.config.ConfigError
from .registry import study_kind, study_kinds, study_names

DTYPES = ("fp32", "fp16", "bf16")
PROMPT_SOURCES = ("toyworld", "file", "list", "dataset")
EDIT_STYLES = ("sdlens", "tinaz_spatial", "tinaz_global", "flux_add")
EDIT_ATTRIBUTES = ("colour", "shape", "position", "background", "pattern", "style")


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
    # How many prompts the stores keep: the first N of the prompt list (None: every prompt, or
    # STREAM_STORED_PROMPTS with train.source = "stream", where the stores only serve the studies
    # and the held-out evaluation).
    prompts: int | None = None
    steps: list[int] | None = None  # denoising step indices to keep, 0-based (None: every step)
    branches: list[str] | None = None  # CFG branches to keep, "cond" / "uncond" (None: what the model runs)
    # Per image, step and branch, keep this many grid positions (a seeded subset, stratified so that
    # every position is kept equally often over the run); None keeps whole maps. Training-only stores.
    tokens_per_image: int | None = None


# Prompts a stream-trained run stores for its studies and held-out evaluation when harvest.prompts is unset.
STREAM_STORED_PROMPTS = 1024
TRAIN_SOURCES = ("store", "stream")


@dataclass
class TrainSection:
    """How dictionaries are trained (shared by every [[dictionaries]] entry)."""

    # "store": from the harvested activation stores. "stream": from generation, every dictionary of a
    # model in one pass through a shuffle buffer of buffer_tokens per hook; only checkpoints, metrics
    # and the small stores of harvest.prompts prompts (studies, held-out evaluation) reach the disk.
    source: str = "store"
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


class StudiesSection:
    """The config's [studies.NAME] tables: each registered study's config dataclass (studies/registry.py).

    `config.studies.windows` is that study's config, or None when the config does not run it; `items()`
    lists the configured studies in the registry's order (the order they run and appear in the report).
    """

    def __init__(self, tables: dict[str, Any] | None = None):
        self._tables = dict(tables or {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy, pickle and friends probe dunders before __init__ has run
            raise AttributeError(name)
        if name in self._tables:
            return self._tables[name]
        if name in study_names():
            return None
        raise AttributeError(f"no study {name!r} is registered; studies: {', '.join(study_names())}")

    def items(self) -> list[tuple[str, Any]]:
        """(name, config) of every configured study, in the registry's order."""
        return [(name, self._tables[name]) for name in study_names() if name in self._tables]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StudiesSection) and self._tables == other._tables

    def __repr__(self) -> str:
        return f"StudiesSection({', '.join(f'{name}={study!r}' for name, study in self.items())})"


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
    # modules (or .py files relative to the config) that register a study, architecture or family: studies/plugins.py
    plugins: list[str] = field(default_factory=list)
    path: Path | None = None  # where it was read from; not a TOML key

    def model(self, name: str) -> ModelEntry:
        return next(m for m in self.models if m.name == name)

    @property
    def has_ground_truth(self) -> bool:
        """The prompts are toy-world captions, so each one's scene (and per-pixel labels) is known."""
        return self.prompts.source == "toyworld"

    @property
    def streams(self) -> bool:
        """Dictionaries train from generation (train.source = "stream"), not from the stores."""
        return self.train.source == "stream"

    def stored_prompt_count(self, available: int) -> int:
        """How many of the `available` prompts (the first ones) the stores keep."""
        wanted = self.harvest.prompts
        if wanted is None:
            wanted = STREAM_STORED_PROMPTS if self.streams else available
        return min(wanted, available)

    def hooks_of(self, model: str) -> list[str]:
        """The hooks harvested for a model entry: its own list, else harvest.hooks."""
        own = self.model(model).hooks
        return own if own is not None else self.harvest.hooks

    def dictionary(self, name: str) -> DictionaryEntry:
        return next(d for d in self.dictionaries if d.name == name)

    def harvested_models(self) -> list[str]:
        """Model entries whose activations are harvested, in config order: the dictionaries' models and
        those the studies read besides (each study's `models_read`, e.g. transfer's target models)."""
        names = {d.model for d in self.dictionaries}
        for name, study in self.studies.items():
            models_read = study_kind(name).function("models_read")
            if models_read is not None:
                names |= set(models_read(study))
        return [m.name for m in self.models if m.name in names]


# ---- reading ----------------------------------------------------------------------------


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study config; raises ConfigError naming the file and key."""
    path = Path(path)
    if not path.exists():
        path = _shipped_config(path)
    if path.is_dir():
        raise ConfigError(
            f"config file {path} is a folder; give the path of a .toml file, e.g. configs/quickstart.toml"
        )
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not a text file ({error.reason} at byte {error.start}); a config is UTF-8 "
            f"TOML text, e.g. configs/quickstart.toml"
        ) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror}); check its permissions") from None
    return parse_config(table, source=str(path), path=path)


def shipped_configs() -> dict[str, Path]:
    """The configs that ship with diffdict: name (file stem) -> path. In a checkout they are its
    configs/ folder; in an installed wheel, diffdict/configs/ (the same place relative to this file)."""
    folder = Path(__file__).resolve().parents[1] / "configs"
    return {file.stem: file for file in sorted(folder.glob("*.toml"))}


def _shipped_config(path: Path) -> Path:
    """`quickstart`, `quickstart.toml` or `configs/quickstart.toml` name a shipped config when no such
    file exists here (e.g. after `pip install diffdict`, outside a checkout)."""
    shipped = shipped_configs()
    name = path.stem if path.suffix == ".toml" else path.name
    if str(path.parent) in (".", "configs") and name in shipped:
        return shipped[name]
    raise ConfigError(
        f"config file {path} does not exist; give a .toml file or one of the shipped configs by "
        f"name: {', '.join(shipped) or 'none found'} (e.g. `diffdict run quickstart`)"
    )


def parse_config(table: dict[str, Any], source: str = "<config>", path: Path | None = None) -> StudyConfig:
    from .plugins import load_entry_points, load_plugins
    from .validate import validate_config  # (a module of its own: names, out, numbers, options, device)

    # Before anything is resolved: a plug-in's study, architecture or family must be registered first.
    load_entry_points()
    load_plugins(table.get("plugins") if isinstance(table, dict) else None, path, source)
    config = _build(StudyConfig, table, source, "", skip=("path",))
    config.path = path
    validate_config(config, source, path)
    _check_semantics(config, source, path)
    return config


def _build(cls: type, table: Any, source: str, prefix: str, skip: tuple[str, ...] = ()) -> Any:
    if not isinstance(table, dict):
        raise _fail(source, prefix or "(top level)", f"expected a table, got {type(table).__name__} {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for key in table:
        if key not in fields:
            raise _fail(
                source,
                _join(prefix, key),
                f"unknown key{did_you_mean(key, fields)}; allowed keys here: {', '.join(fields)}",
            )
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


def _build_studies(table: Any, source: str, prefix: str) -> StudiesSection:
    """[studies.NAME] tables, each read into its registered study's config dataclass."""
    if not isinstance(table, dict):
        raise _fail(source, prefix, f"expected a table, got {type(table).__name__} {table!r}")
    kinds = study_kinds()
    for name in table:
        if name not in kinds:
            raise _fail(
                source,
                _join(prefix, name),
                f"unknown study{did_you_mean(name, kinds)}; the registered studies are: "
                f"{', '.join(kinds)} (each one a [{prefix}.NAME] table)",
            )
    return StudiesSection(
        {name: _build(kinds[name].config, table[name], source, _join(prefix, name)) for name in kinds if name in table}
    )


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    if hint is StudiesSection:
        return _build_studies(value, source, key)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(options[0], value, source, key)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, source, key)
    if origin is list:
        if not isinstance(value, list):
            raise _fail(source, key, f"expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(hint)
        if isinstance(item, type) and dataclasses.is_dataclass(item):
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


def _branches() -> tuple[str, ...]:
    """The CFG branches captures are tagged with: the adapters' own list (imported on use)."""
    from diffdict.adapters.capture import BRANCHES

    return BRANCHES


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
    _check_harvest_selection(config, source)
    for name in ("buffer_tokens", "eval_tokens", "init_tokens"):
        _positive(source, f"train.{name}", getattr(config.train, name))
    if config.train.checkpoint_every < 0:
        raise _fail(
            source, "train.checkpoint_every", f"must be >= 0 (0 = automatic), got {config.train.checkpoint_every}"
        )
    dict_names = [d.name for d in config.dictionaries]
    for i, entry in enumerate(config.dictionaries):
        key = f"dictionaries[{i}]"
        if dict_names.count(entry.name) > 1:
            raise _fail(source, f"{key}.name", f"{entry.name!r} is used twice; names must be unique")
        _one_of(source, f"{key}.architecture", entry.architecture, architecture_names())
        _one_of(source, f"{key}.model", entry.model, names)
        if not config.hooks_of(entry.model):
            raise _fail(
                source, "harvest.hooks", "is empty, but dictionaries need harvested activations; list the hooks"
            )
        harvested = config.hooks_of(entry.model)
        if entry.hook not in harvested:  # a real hook of the model, most likely, that is not captured
            where = (
                "harvest.hooks" if config.model(entry.model).hooks is None else f"the hooks of model {entry.model!r}"
            )
            raise _fail(
                source,
                f"{key}.hook",
                f"{entry.hook!r} is not harvested for model {entry.model!r}: add it to "
                f"{where} (harvested: {', '.join(harvested)}){did_you_mean(entry.hook, harvested)}",
            )
        _one_of(source, f"{key}.branch", entry.branch, _branches())
        for name in ("n", "k", "tokens", "batch"):
            _positive(source, f"{key}.{name}", getattr(entry, name))
        if entry.k > entry.n:
            raise _fail(source, f"{key}.k", f"k={entry.k} is larger than n={entry.n}; choose k <= n")
        if entry.tokens < entry.batch:
            raise _fail(source, f"{key}.tokens", f"{entry.tokens} tokens are fewer than one batch ({entry.batch})")
    _check_studies(config, source, names, dict_names)


def _check_harvest_selection(config: StudyConfig, source: str) -> None:
    """harvest.prompts / steps / branches / tokens_per_image and train.source: what is kept, and where from."""
    harvest = config.harvest
    _one_of(source, "train.source", config.train.source, TRAIN_SOURCES)
    _positive(source, "harvest.prompts", harvest.prompts)
    _positive(source, "harvest.tokens_per_image", harvest.tokens_per_image)
    for i, step in enumerate(harvest.steps or []):
        if step < 0:
            raise _fail(source, f"harvest.steps[{i}]", f"step indices are 0-based and >= 0, got {step}")
    if harvest.steps is not None and not harvest.steps:
        raise _fail(
            source, "harvest.steps", "is empty; list the step indices to keep, or leave it out to keep every step"
        )
    for i, branch in enumerate(harvest.branches or []):
        _one_of(source, f"harvest.branches[{i}]", branch, _branches())
    if harvest.branches is not None and not harvest.branches:
        raise _fail(source, "harvest.branches", "is empty; list 'cond' and/or 'uncond', or leave it out to keep both")
    if harvest.tokens_per_image is not None:
        if config.streams:
            raise _fail(
                source,
                "harvest.tokens_per_image",
                "applies to stores that dictionaries train from; with "
                "train.source = 'stream' the stores keep whole maps for the studies: remove it",
            )
        if config.studies.items():
            raise _fail(
                source,
                "harvest.tokens_per_image",
                "keeps only some positions of each map, but the studies "
                f"({', '.join(n for n, _ in config.studies.items())}) read whole maps: remove it, or set "
                "train.source = 'stream' (the stores then keep whole maps of harvest.prompts prompts)",
            )
    for i, entry in enumerate(config.dictionaries):
        if harvest.branches is not None and not config.streams and entry.branch not in harvest.branches:
            raise _fail(
                source,
                f"dictionaries[{i}].branch",
                f"{entry.branch!r} is not kept by harvest.branches "
                f"{harvest.branches}; add it there or train on another branch",
            )


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
            _check_table(file, prompts, source, "prompts.file")
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
        raise _fail(
            source,
            "prompts.dataset",
            "is required when prompts.source = 'dataset' (a Hugging Face "
            "dataset id such as 'laion/laion-coco', a local folder, or a .parquet/.jsonl/.csv file)",
        )
    if not prompts.column:
        raise _fail(
            source,
            "prompts.column",
            "is required when prompts.source = 'dataset': the column that "
            "holds the captions (e.g. 'top_caption' for LAION-COCO)",
        )
    local = resolve_relative(prompts.dataset, path)
    if local.is_file():
        if local.suffix.lower() not in TABLE_SUFFIXES:
            raise _fail(source, "prompts.dataset", f"{local}: a local file must be .parquet, .jsonl or .csv")
        _check_table(local, prompts, source, "prompts.dataset")
    elif local.is_dir():  # data files present (not only a loading script), captions in them where polars reads them
        from diffdict.studies.prompt_sources import SourceError, check_dataset_folder

        try:
            check_dataset_folder(local, prompts.column)
        except SourceError as error:
            key = "prompts.column" if error.about == "column" else "prompts.dataset"
            raise _fail(source, key, str(error)) from None
    elif not local.exists() and (local.suffix.lower() in TABLE_SUFFIXES or not _looks_like_hub_id(prompts.dataset)):
        raise _fail(
            source,
            "prompts.dataset",
            f"{local} does not exist, and {prompts.dataset!r} is not a Hugging Face dataset id ('owner/name')",
        )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(p and not p.startswith(".") for p in parts)


def _check_table(file: Path, prompts: PromptsSection, source: str, key: str) -> None:
    """A local .parquet/.jsonl/.csv must name its caption column and hold it as text, and its captions must be
    readable and usable (every row parsed once, lazily: encoding, ragged rows, rows, non-blank and distinct
    captions), so that no stage loads a model for a table that gives no prompts."""
    from diffdict.studies.prompt_sources import SourceError, check_caption_column, summarize_table, table_columns

    column = prompts.column
    if not column:
        raise _fail(source, "prompts.column", f"is required to read captions from {file.name} (one of its columns)")
    try:
        columns = table_columns(file)
    except Exception as error:  # polars raises its own error kinds for unreadable files
        from diffdict.studies.prompt_sources import unreadable_message

        raise _fail(source, key, unreadable_message(file, error)) from None
    if column not in columns:
        raise _fail(
            source,
            "prompts.column",
            f"{file.name} has no column {column!r}{did_you_mean(column, columns)} Columns: {', '.join(columns)}",
        )
    check_caption_column(file, column, f"{source}: prompts.column")
    try:
        summarize_table(file, column, prompts.count, prompts.shuffle)
    except SourceError as error:
        raise _fail(source, "prompts.column" if error.about == "column" else key, str(error)) from None


def _check_studies(config: StudyConfig, source: str, models: list[str], dictionaries: list[str]) -> None:
    """What every study's config shares (a `models` field names model entries, a `dictionaries` field
    dictionaries), then each study's own checks (its `validate`, beside its declaration)."""
    for study_name, study in config.studies.items():
        key = f"studies.{study_name}"
        for f in dataclasses.fields(study):
            value = getattr(study, f.name)
            if f.name == "models" and isinstance(value, list):
                for i, name in enumerate(value):
                    _one_of(source, f"{key}.models[{i}]", name, models)
            if f.name == "dictionaries" and isinstance(value, list):
                for i, name in enumerate(value):
                    _check_dictionary_names(
                        config,
                        source,
                        f"{key}.dictionaries[{i}]",
                        name,
                        dictionaries,
                        together=f.metadata.get("together", False),
                    )
    for study_name, study in config.studies.items():
        validate = study_kind(study_name).function("validate")
        if validate is not None:
            validate(config, study, source)


def _check_dictionary_names(
    config: StudyConfig, source: str, key: str, name: Any, dictionaries: list[str], together: bool
) -> None:
    """One dictionary, or with `together` "a+b": several edited at once (one per hook of one model)."""
    parts = name.split("+") if together and isinstance(name, str) else [name]
    for part in parts:
        _one_of(source, key, part, dictionaries)
    if len(parts) > 1:
        entries = [config.dictionary(p) for p in parts]
        if len({e.model for e in entries}) > 1 or len({e.hook for e in entries}) < len(entries):
            raise _fail(
                source, key, f"{name!r}: dictionaries edited together must share a model and sit on different hooks"
            )


def resolve_relative(file: str, config_path: Path | None) -> Path:
    """A path from a config: absolute, or relative to the config file's folder."""
    candidate = Path(file)
    if candidate.is_absolute() or config_path is None:
        return candidate
    return config_path.parent / candidate
