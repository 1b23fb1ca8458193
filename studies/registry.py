"""The one list of studies: name -> the StudyKind that declares it.

Torch-free, so that config parsing, `diffdict check` and `diffdict --help` can name the studies and
read their config tables without importing a study's computation. A study declares itself once, as
`STUDY = StudyKind(...)` in a small module of its own (the built-ins: studies/kinds/NAME.py), with its
config dataclass, its validation, and *references* to its compute / plot / summary functions: a
callable, or a "package.module:function" string imported on first use (the built-in studies import
torch at the top of their modules; the strings keep that out of config parsing). Adding one:

    studies/kinds/NAME.py    its config dataclass, its checks, STUDY = StudyKind(name="NAME", ...)
    studies/NAME.py          run_NAME(run) -> {table: DataFrame}, plot and summary (any module will do)
    BUILTIN below            "NAME": "diffdict.studies.kinds.NAME",

Nothing else lists studies: the config's [studies.NAME] tables, `diffdict check`, `diffdict study
--only`, the pipeline and the report read this registry. A study registered at run time
(`register(kind)`, from a user's own module or a test) is known from then on, after the built-ins;
`unregister(name)` forgets it.

Conventions every study's config inherits (checked generically, studies/validate.py and config.py):
a field named `models` lists model entries and one named `dictionaries` lists dictionaries (with
`metadata={"together": True}`, "a+b" names dictionaries edited together); `windows` (name ->
[low, high]) and `t_range` are time windows; every float is finite; a field whose name contains
`strength` says its unit (declared with studies.strengths.strength_field: what a strength of 1 is, shown in
errors and docs/configs.md) and is > 0 unless declared `signed=True`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import keyword
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .strengths import missing_units

# A callable, or "package.module:function" imported when first called.
Ref = Callable[..., Any] | str

# Built-in studies, in the order they run and appear in the report: name -> declaring module.
BUILTIN: dict[str, str] = {
    "transfer": "diffdict.studies.kinds.transfer",
    "compare": "diffdict.studies.kinds.compare",
    "windows": "diffdict.studies.kinds.windows",
    "editability": "diffdict.studies.kinds.editability",
    "layout": "diffdict.studies.kinds.layout",
    "training": "diffdict.studies.kinds.training",
    "atlas": "diffdict.studies.kinds.atlas",
}

# Attribute names of the config's studies section (config.StudiesSection) that no study may take.
RESERVED = ("items",)


@dataclass(frozen=True)
class StudyKind:
    """A study: its [studies.NAME] config table, how to compute its tables, plot them and say what they show.

    compute(run) -> {table name: polars DataFrame}, exactly the names in `tables` (written to
      RUN/tables/NAME.parquet; a study whose tables all exist is not recomputed without --force).
    plot(run, tables) -> [(caption, png path)] for the report (None: no plots).
    summarize(run, tables) -> two or three sentences with the headline numbers, written from the
      tables; they open the report. A study without one gets no sentence there.
    validate(config, study, source) -> None, raising studies.errors.ConfigError (studies.config_rules
      has the helpers) for what the generic checks cannot know; runs at config parsing, so it must not
      load models or import torch.
    check(config, study, adapters, where) -> None, raising UserError: `diffdict check`'s checks that
      need the models built on the meta device (adapters: model entry name -> adapter).
    models_read(study) -> model entry names whose activations the study reads beyond its dictionaries'
      models (they are harvested too).
    cards(tables) -> report feature cards; `unlisted` tables are left out of the report's table list.
    """

    name: str
    config: type  # a dataclass: the fields of its [studies.NAME] table, with their defaults
    title: str
    about: str
    compute: Ref
    tables: tuple[str, ...]
    plot: Ref | None = None
    summarize: Ref | None = None
    validate: Ref | None = None
    check: Ref | None = None
    models_read: Ref | None = None
    cards: Ref | None = None
    unlisted: tuple[str, ...] = ()

    def function(self, role: str) -> Callable[..., Any] | None:
        """The callable declared for `role` ("compute", "plot", ...), imported if given as a string."""
        ref = getattr(self, role)
        return resolve(ref) if ref is not None else None


def resolve(ref: Ref) -> Callable[..., Any]:
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


REGISTRY: dict[str, StudyKind] = {}  # name -> kind: the built-ins (loaded on first use), then the rest


_builtins_loaded = False


def _load_builtins() -> None:
    """Import the built-in declarations once, in BUILTIN's order, before any study registered at run time."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    builtins = {}
    for name, module in BUILTIN.items():
        kind = importlib.import_module(module).STUDY
        if kind.name != name:
            raise TypeError(f"{module}.STUDY is named {kind.name!r}, but BUILTIN lists it as {name!r}")
        _check_strength_units(kind)
        builtins[name] = kind
    registered = dict(REGISTRY)
    REGISTRY.clear()
    REGISTRY.update(builtins)
    REGISTRY.update(registered)
    _builtins_loaded = True


def register(kind: StudyKind) -> StudyKind:
    """Make a study known by its name: configs may then hold a [studies.NAME] table."""
    _load_builtins()
    if not isinstance(kind, StudyKind):
        raise TypeError(f"register() takes a StudyKind, got {type(kind).__name__}")
    name = kind.name
    if not (
        isinstance(name, str)
        and name.isidentifier()
        and not keyword.iskeyword(name)
        and not name.startswith("_")
        and name not in RESERVED
    ):
        raise ValueError(
            f"study name {name!r}: use a Python identifier (letters, digits, '_'; not starting with "
            f"'_' or a digit, not {', '.join(RESERVED)}): it is a TOML key and `config.studies.NAME`"
        )
    if name in REGISTRY:
        raise ValueError(
            f"a study named {name!r} is already registered; unregister({name!r}) first or choose another name"
        )
    if not dataclasses.is_dataclass(kind.config) or not isinstance(kind.config, type):
        raise TypeError(f"study {name!r}: config must be a dataclass (the fields of its [studies.{name}] table)")
    if not kind.tables:
        raise ValueError(f"study {name!r}: name at least one table in `tables`")
    _check_strength_units(kind)
    taken = {table: other.name for other in REGISTRY.values() for table in other.tables}
    clashes = [table for table in kind.tables if table in taken]
    if clashes:
        raise ValueError(
            f"study {name!r}: table {clashes[0]!r} is already written by study {taken[clashes[0]]!r}; "
            f"table names are file names in RUN/tables/, so choose another"
        )
    REGISTRY[name] = kind
    return kind


def _check_strength_units(kind: StudyKind) -> None:
    """A strength field must say what a strength of 1 is: the same word is a multiple of different norms."""
    missing = missing_units(kind.config)
    if missing:
        raise ValueError(
            f"study {kind.name!r}: field {missing[0]!r} is a strength but does not say its unit; "
            f'declare it with studies.strengths.strength_field(default, unit="multiples of ...")'
        )


def unregister(name: str) -> None:
    """Forget a study registered at run time (built-ins stay)."""
    _load_builtins()
    if name in BUILTIN:
        raise ValueError(f"{name!r} is a built-in study; it cannot be unregistered")
    REGISTRY.pop(name, None)


def study_kinds() -> dict[str, StudyKind]:
    """Every known study in order (built-ins, then those registered at run time): name -> kind."""
    _load_builtins()
    return dict(REGISTRY)


def study_names() -> tuple[str, ...]:
    return tuple(study_kinds())


def study_kind(name: str) -> StudyKind:
    kinds = study_kinds()
    if name not in kinds:
        close = difflib.get_close_matches(str(name), list(kinds), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown study {name!r}{hint}; studies: {', '.join(kinds)}")
    return kinds[name]
