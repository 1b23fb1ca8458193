"""The [harvest], [train] and [[dictionaries]] sections of a TOML config, validated.

Every error names the file, the key and what is allowed (with the closest key for a typo),
because a config typo found after an hour of harvesting is an hour lost. A later study
config can embed these sections unchanged.
"""
from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dictionaries.store import DTYPES
from dictionaries.train import DictionarySpec, TrainSettings

CAPTURES = ("update", "output")


@dataclass
class HarvestSection:
    model: str
    hooks: list[str]
    out: str
    prompts: list[str] = field(default_factory=list)
    prompts_file: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    dtype: str = "fp16"
    batch_size: int = 4
    capture: str = "update"
    steps: int | None = None
    guidance: float | None = None
    height: int | None = None
    width: int | None = None


@dataclass
class TrainSection:
    out: str
    tokens: int
    store: str = ""  # default: [harvest].out
    batch_size: int = 4096
    checkpoint_every: int = 200
    buffer_tokens: int = 262_144
    seed: int = 0
    eval_fraction: float = 0.1
    eval_tokens: int = 65_536
    init_tokens: int = 32_768

    def settings(self) -> TrainSettings:
        names = {f.name for f in dataclasses.fields(TrainSettings)}
        return TrainSettings(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})


@dataclass
class DictionarySection:
    name: str
    architecture: str
    hook: str
    branch: str | None = None
    steps: list[int] | None = None
    t_min: float | None = None
    t_max: float | None = None


@dataclass
class DictConfig:
    path: Path
    harvest: HarvestSection | None
    train: TrainSection | None
    dictionaries: list[DictionarySpec]

    def resolve(self, value: str) -> Path:
        """Paths in a config are relative to the config file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.path.parent / path).resolve()

    def prompts(self) -> list[str]:
        section = self.harvest
        prompts = list(section.prompts)
        if section.prompts_file:
            file = self.resolve(section.prompts_file)
            if not file.is_file():
                raise FileNotFoundError(f"{self.path}: [harvest] prompts_file {file} does not exist")
            prompts += [line.strip() for line in file.read_text().splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"{self.path}: [harvest] needs `prompts = [...]` or `prompts_file = \"...\"`")
        return prompts


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (inner,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def parse_section(cls: type, data: Any, where: str, allow_extra: bool = False) -> tuple[Any, dict]:
    """Build dataclass `cls` from a TOML table; returns (instance, unknown keys if allowed)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    known, extra = {}, {}
    for key, value in data.items():
        if key not in fields:
            if allow_extra:
                extra[key] = value
                continue
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown key {key!r}{hint}; allowed keys: {sorted(fields)}")
        if not _type_ok(value, hints[key]):
            raise ValueError(f"{where}.{key} = {value!r} has the wrong type; expected {hints[key]}")
        known[key] = value
    required = [name for name, f in fields.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING and name not in known]
    if required:
        raise ValueError(f"{where}: missing required key(s) {required}")
    return cls(**known), extra


def _choice(where: str, value: Any, allowed) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), list(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{where} = {value!r} is not allowed{hint}; allowed values: {sorted(allowed)}")


def load_config(path: str | Path) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error})") from error
    sections = ("harvest", "train", "dictionaries")
    for key in data:
        if key not in sections:
            close = difflib.get_close_matches(key, sections, n=1)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            raise ValueError(f"{path}: unknown section [{key}]{hint}; this command reads {list(sections)}")
    harvest = train = None
    if "harvest" in data:
        harvest, _ = parse_section(HarvestSection, data["harvest"], f"{path}: [harvest]")
        _choice(f"{path}: [harvest].dtype", harvest.dtype, DTYPES)
        _choice(f"{path}: [harvest].capture", harvest.capture, CAPTURES)
    if "train" in data:
        train, _ = parse_section(TrainSection, data["train"], f"{path}: [train]")
        try:
            train.settings()
        except ValueError as error:
            raise ValueError(f"{path}: [train]: {error}") from error
    specs = []
    tables = data.get("dictionaries", [])
    if not isinstance(tables, list):
        raise ValueError(f"{path}: dictionaries must be an array of tables: write [[dictionaries]]")
    from dictionaries.base import architecture_class

    for number, table in enumerate(tables):
        where = f"{path}: [[dictionaries]] #{number + 1}"
        section, params = parse_section(DictionarySection, table, where, allow_extra=True)
        try:
            cls = architecture_class(section.architecture)
        except ValueError as error:
            raise ValueError(f"{where}.architecture: {error}") from error
        allowed = {f.name for f in dataclasses.fields(cls.config_class)} - {"d"}
        for key in params:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed) + [f.name for f in dataclasses.fields(DictionarySection)], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{where}: unknown key {key!r} for architecture {section.architecture!r}{hint}; "
                                 f"allowed: {sorted(allowed)}")
        try:
            cls.config_class(d=1, **params)  # catches k > n, bad choices etc. before any work
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where}: {error}") from error
        t_range = None
        if section.t_min is not None or section.t_max is not None:
            t_range = (section.t_min if section.t_min is not None else 0.0,
                       section.t_max if section.t_max is not None else 1.0)
        specs.append(DictionarySpec(section.name, section.architecture, section.hook, params,
                                    section.branch, section.steps, t_range))
    return DictConfig(path, harvest, train, specs)
