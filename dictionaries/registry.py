"""The one list of dictionary architectures: name -> the module that defines (and registers) it.

Torch-free, so that config validation and `diffdict --help` can name the architectures without
importing a learner. A learner is a `dictionaries.base.Dictionary` subclass decorated with
`@register`; it declares its own protocol (size keys, initialisation, provenance, distributed
support) as class attributes, so nothing else in the code base lists architectures. Adding one:

    dictionaries/batch_topk.py   @register class BatchTopK(Dictionary): architecture = "batch_topk" ...
    BUILTIN below                "batch_topk": "diffdict.dictionaries.batch_topk",

A class registered at run time (`@register` in a user's own module or a test) is known from
then on, the same way.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from diffdict.dictionaries.errors import InputError

# Built-in architectures, in the order they are listed to users: name -> defining module.
BUILTIN: dict[str, str] = {
    "topk_sae": "diffdict.dictionaries.topk_sae",
    "itda": "diffdict.dictionaries.itda",
}

REGISTRY: dict[str, type] = {}  # name -> Dictionary subclass, filled by `register` as modules import


Registered = TypeVar("Registered", bound=type)


def register(cls: Registered) -> Registered:
    """Class decorator: make a Dictionary subclass loadable by its `architecture` string."""
    name = getattr(cls, "architecture", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f'{cls.__name__}: set a class attribute `architecture = "name"` before registering it')
    REGISTRY[name] = cls
    return cls


def architecture_names() -> tuple[str, ...]:
    """Every known architecture: the built-in ones, then those registered at run time."""
    return tuple(dict.fromkeys([*BUILTIN, *REGISTRY]))


def architecture_class(name: str) -> type:
    """The Dictionary subclass registered as `name` (importing its module on first use)."""
    if name not in REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in REGISTRY:
        known = architecture_names()
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown dictionary architecture {name!r}{hint}; known architectures: {sorted(known)}")
    return REGISTRY[name]


def size_keys(name: str) -> tuple[str, str]:
    """The config's uniform (n, k) in the architecture's own words, e.g. ("max_size", "L") for ITDA."""
    return tuple(architecture_class(name).size_keys)


class _SizeKeys(Mapping):
    """architecture -> size_keys, read from the registered classes (a live view, not a copy)."""

    def __getitem__(self, name: Any) -> tuple[str, str]:
        if name not in architecture_names():
            raise KeyError(name)
        return size_keys(name)

    def __iter__(self) -> Iterator[str]:
        return iter(architecture_names())

    def __len__(self) -> int:
        return len(architecture_names())


SIZE_KEYS: Mapping = _SizeKeys()
