"""What store and stream training share: building a dictionary from its spec, and moving batches.

Torch only (no polars), so the stream path runs where only torch is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from diffdict.dictionaries import base, distributed
from diffdict.dictionaries.errors import InputError


@dataclass
class DictionarySpec:
    name: str
    architecture: str
    hook: str
    params: dict[str, Any] = field(default_factory=dict)  # n, k, ... (d is taken from the store)
    branch: str | None = None
    steps: list[int] | None = None
    t_range: tuple[float, float] | None = None
    settings_hash: str | None = None  # of its settings, kept in its meta: a checkpoint of other settings is not resumed

    def selection(self) -> dict[str, Any]:
        return {"branch": self.branch, "steps": self.steps, "t_range": self.t_range}

    def stream_key(self) -> tuple:
        return (self.hook, self.branch, tuple(self.steps or ()), tuple(self.t_range or ()))


def new_dictionary(spec: DictionarySpec, d: int) -> base.Dictionary:
    params = dict(spec.params)
    if "d" in params and params["d"] != d:
        raise InputError(f"dictionary {spec.name!r}: d={params['d']} but hook {spec.hook!r} has d={d} in the store")
    params["d"] = d
    cls = base.architecture_class(spec.architecture)
    dictionary = cls.from_config(base.config_from_dict(cls.config_class, params, where=f"dictionary {spec.name!r}"))
    dictionary.meta.update(
        {"name": spec.name, "hook": spec.hook, **{k: v for k, v in spec.selection().items() if v is not None}}
    )
    if spec.settings_hash is not None:
        dictionary.meta["settings_hash"] = spec.settings_hash
    return dictionary


def steps_done(dictionary: base.Dictionary) -> int:
    return int(dictionary.meta.get("train_steps", 0))


def rank_slice(batch, world: distributed.World):
    """This rank's contiguous rows of a global batch (a tensor or a TokenBatch)."""
    if not world.distributed:
        return batch
    rows = world.share(getattr(batch, "x", batch).shape[0])
    if hasattr(batch, "provenance"):
        return type(batch)(batch.x[rows], {k: v[rows] for k, v in batch.provenance.items()})
    return batch[rows]


def to_device(batch, device: torch.device | None):
    """A batch (tensor or TokenBatch) on `device`. To a GPU the rows go through pinned memory so
    the copy is asynchronous; the caching host allocator keeps the pinned block alive until done."""
    if device is None:
        return batch

    def move(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device == device:
            return tensor
        if device.type == "cuda" and tensor.device.type == "cpu":
            return tensor.pin_memory().to(device, non_blocking=True)
        return tensor.to(device)

    if hasattr(batch, "provenance"):
        return type(batch)(move(batch.x), {k: move(v) for k, v in batch.provenance.items()})
    return move(batch)


def resumable(checkpointed: base.Dictionary, spec: DictionarySpec) -> bool:
    """A checkpoint continues `spec` only if it was made with the same settings (or neither records them)."""
    return checkpointed.meta.get("settings_hash") == spec.settings_hash
