"""One API for every dictionary learner: SparseCode, the Dictionary base class, the registry.

A dictionary maps activations x (N, d) to a sparse code (values, indices), each (N, k), and
back. Codes stay sparse: decoding is an `embedding_bag` over the atoms, never a dense
(N, n) matrix. Saved as `config.json` (with an "architecture" key) plus safetensors.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from diffdict.dictionaries import registry
from diffdict.dictionaries.atomic import resolve_dir, write_dir_atomic
from diffdict.dictionaries.errors import InputError, MissingFileError
from diffdict.dictionaries.guarded_read import read_json
from diffdict.dictionaries.options import OptionSpec, option_schema
from diffdict.dictionaries.registry import architecture_class, architecture_names

# The registry lives in dictionaries.registry (torch-free); these names stay importable from here.
REGISTRY, register = registry.REGISTRY, registry.register

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
TRAINING_FILE = "training_state.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class SparseCode:
    """A batch of sparse codes: values (N, k) float, indices (N, k) int64 into the atoms."""

    values: torch.Tensor
    indices: torch.Tensor

    def __post_init__(self) -> None:
        if self.values.shape != self.indices.shape or self.values.dim() != 2:
            raise InputError(
                f"SparseCode needs values and indices of the same (N, k) shape; "
                f"got {tuple(self.values.shape)} and {tuple(self.indices.shape)}"
            )

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def dense(self, n: int) -> torch.Tensor:
        """(N, n) dense code, for small analyses only (never in a hot path)."""
        out = torch.zeros(len(self), n, dtype=self.values.dtype, device=self.values.device)
        return out.scatter_add_(1, self.indices, self.values)


@dataclass
class TokenBatch:
    """x (N, d) float32 plus per-token provenance tensors (N,): map_row, prompt_id, seed, step, position."""

    x: torch.Tensor
    provenance: dict[str, torch.Tensor]


def batch_rows(batch: Any) -> torch.Tensor:
    """The (N, d) activations of a batch: a tensor, or a store TokenBatch carrying them as `.x`."""
    return getattr(batch, "x", batch)


def sparse_decode(code: SparseCode, atoms: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """sum_j values[:, j] * atoms[indices[:, j]] (+ bias) as (N, d), without a dense code."""
    out = F.embedding_bag(code.indices, atoms, per_sample_weights=code.values.to(atoms.dtype), mode="sum")
    return out + bias if bias is not None else out


def check_activations(
    x: torch.Tensor, d: int, where: str = "input", device: torch.device | None = None
) -> torch.Tensor:
    """Validate a batch (N, d): right width, finite, on `device` (when given). Errors say what is bad and why."""
    if device is not None and x.device != device:
        raise InputError(
            f"{where}: activations are on {x.device} but the dictionary is on {device}; "
            f"move them first (x.to(dictionary.device)) or the dictionary (dictionary.to({str(x.device)!r}))"
        )
    if x.dim() != 2:
        raise InputError(f"{where}: expected activations of shape (N, d={d}), got {tuple(x.shape)}")
    if x.shape[1] != d:
        raise InputError(
            f"{where}: activations have d={x.shape[1]} but this dictionary was built for "
            f"d={d}; use a dictionary made for this hook (or set d={x.shape[1]})"
        )
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()
        raise InputError(
            f"{where}: non-finite activations (nan/inf) in {bad.numel()} of {x.shape[0]} rows, "
            f"first rows {bad[:5].tolist()}; fix the source (e.g. harvest in fp32 instead of fp16)"
        )
    return x


class Dictionary(ABC):
    """The protocol every learner implements, and all the trainer and the studies know of one.

    A subclass sets `architecture` and `config_class` (a dataclass with at least `d`; its fields
    are the architecture's options, declared with `dictionaries.options.option` to give each a
    range and a doc), implements the abstract methods, overrides the class attributes below
    where its defaults do not fit, and is registered with `@register` (dictionaries.registry
    lists built-ins).

    size_keys: the names of its config's (number of atoms, atoms per code), which a study
        config's uniform `n` and `k` fill: ("n", "k") for an SAE, ("max_size", "L") for ITDA.
    resume_state: attributes (JSON scalars) that `save` writes and `load` restores, so that a
        fit resumed from a checkpoint continues where it stopped. `initialized` is always among
        them: a learner that forgets it is not initialised a second time on resume.
    init_from_sample: the trainer calls `initialize(sample)` on a sample drawn apart from the
        training stream (another seed) before the first step, while `initialized` is False.
    reads_provenance: `partial_fit` wants batches carrying per-token provenance (a store
        TokenBatch with `.x` and `.provenance`), not plain (N, d) tensors.
    supports_distributed: `partial_fit(batch, world=World)` trains on this rank's slice of
        each global batch and keeps every rank identical (see dictionaries.distributed).
    provenance: per-atom labels {field: (n,) int64} where an atom came from (ITDA), or None.
    """

    architecture: ClassVar[str]
    config_class: ClassVar[type]
    size_keys: ClassVar[tuple[str, str]] = ("n", "k")
    resume_state: ClassVar[tuple[str, ...]] = ("initialized",)
    init_from_sample: ClassVar[bool] = False
    reads_provenance: ClassVar[bool] = False
    supports_distributed: ClassVar[bool] = False
    provenance: dict[str, torch.Tensor] | None = None

    def __init__(self, config: Any) -> None:
        self.config = config
        self.meta: dict[str, Any] = {}  # free-form provenance: model, hook, store path, ...
        self.initialized = True  # False while a data-dependent initialisation is still due

    @property
    def d(self) -> int:
        return self.config.d

    @property
    @abstractmethod
    def n(self) -> int:
        """Number of atoms."""

    @property
    @abstractmethod
    def atoms(self) -> torch.Tensor:
        """(n, d) decoder directions in activation space."""

    @abstractmethod
    def encode(self, x: torch.Tensor) -> SparseCode:
        """x (N, d) -> SparseCode with (N, k) values and indices."""

    @abstractmethod
    def decode(self, code: SparseCode) -> torch.Tensor:
        """SparseCode -> reconstruction (N, d)."""

    @abstractmethod
    def partial_fit(self, batch: Any) -> dict[str, float]:
        """Learn from one batch: (N, d), or a TokenBatch with `.x` (see `batch_rows`). Returns
        scalar training metrics (the trainer logs them; "fvu", "loss", "size" show in its bar).
        With supports_distributed the trainer also passes `world=` under torchrun."""

    def initialize(self, sample: torch.Tensor) -> None:
        """Data-dependent initialisation from a sample (N, d), for init_from_sample learners."""
        self.initialized = True

    @classmethod
    def option_schema(cls) -> dict[str, OptionSpec]:
        """Every config field with its type, default, range and doc: what study configs check `options`
        against. The default reads `config_class`'s fields (dictionaries/options.py); override it only for
        options the dataclass cannot declare."""
        return option_schema(cls.config_class)

    @classmethod
    def training_memory(cls, n: int, d: int, batch: int) -> tuple[int, str]:
        """Bytes this architecture needs to train n atoms of width d on batches of `batch`
        tokens, and how that was counted (for `diffdict check`). A rough default; override it."""
        return 2 * n * d * 4 + batch * n * 4, "n x d x 4 bytes x 2 + batch x n x 4"

    def fit(self, batches: Iterable[torch.Tensor]) -> Dictionary:
        """Learn from a stream of (N, d) batches (or TokenBatch objects carrying `.x`)."""
        for batch in batches:
            self.partial_fit(batch)
        return self

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # --- device ---
    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the dictionary's tensors live; inputs to encode/partial_fit must be there too."""

    @abstractmethod
    def to(self, device: str | torch.device) -> Dictionary:
        """Move every tensor held (weights, normaliser, optimiser and bookkeeping state) in place; returns self."""

    # --- persistence: config.json + safetensors, never pickle ---
    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything needed to encode/decode exactly."""

    @abstractmethod
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...

    def training_tensors(self) -> dict[str, torch.Tensor]:
        """Optimiser and bookkeeping state needed to resume training exactly (may be empty)."""
        return {}

    def load_training_tensors(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: B027 (optional hook)
        """Restore what `training_tensors` saved; nothing by default."""

    def extra_config(self) -> dict[str, Any]:
        """JSON-able state that is not a tensor and not a `resume_state` attribute (e.g. provenance tables)."""
        return {}

    def load_extra_config(self, extra: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Restore what `extra_config` saved; nothing by default."""

    def save(self, directory: str | Path, training_state: bool = False) -> Path:
        """Write config.json + weights.safetensors (+ training_state.safetensors) atomically."""

        def write(tmp: Path) -> None:
            document = {
                "architecture": self.architecture,
                "format_version": FORMAT_VERSION,
                "config": dataclasses.asdict(self.config),
                "meta": self.meta,
                "resume": {name: getattr(self, name) for name in self._resume_names()},
                "extra": self.extra_config(),
            }
            (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=2, sort_keys=True))
            # Files always hold CPU tensors, whatever device the dictionary trains on.
            save_file(_cpu(self.tensors()), str(tmp / WEIGHTS_FILE))
            if training_state:
                state = self.training_tensors()
                if state:
                    save_file(_cpu(state), str(tmp / TRAINING_FILE))

        return write_dir_atomic(directory, write)

    @classmethod
    def from_config(cls, config: Any) -> Dictionary:
        return cls(config)

    @classmethod
    def _resume_names(cls) -> tuple[str, ...]:
        return tuple(dict.fromkeys(("initialized", *cls.resume_state)))

    def load_resume_state(self, document: dict[str, Any]) -> None:
        """Restore the `resume_state` attributes of a saved config.json. Files written before the base class
        saved them kept them under "extra"; a file without `initialized` anywhere holds a trained dictionary."""
        saved, extra = document.get("resume", {}), document.get("extra", {})
        for name in self._resume_names():
            if name in saved or name in extra:
                setattr(self, name, saved.get(name, extra.get(name)))
            elif name == "initialized":
                self.initialized = True


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def config_from_dict(config_class: type, values: dict[str, Any], where: str = "config") -> Any:
    """Build a config dataclass, naming unknown keys (with the closest valid one)."""
    names = [f.name for f in dataclasses.fields(config_class)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"{where}: unknown key {key!r}{hint}; allowed keys: {names}")
    return config_class(**values)


def create(architecture: str, **config: Any) -> Dictionary:
    """A fresh dictionary: create("topk_sae", d=1280, n=5120, k=10)."""
    cls = architecture_class(architecture)
    return cls.from_config(config_from_dict(cls.config_class, config, where=f"{architecture} config"))


def load(directory: str | Path, training_state: bool = False, device: str | torch.device | None = None) -> Dictionary:
    """Load any saved dictionary; the "architecture" key in config.json picks the class.

    Tensors are read on the CPU and, with `device`, moved there (optimiser state included).

    Every problem is named with the file and a fix: a missing or unreadable config, an
    unknown architecture, missing weights, a pickle where safetensors belong (never
    unpickled: it could run code), tensors whose shapes disagree with the config.
    """
    found = resolve_dir(directory)
    if found is None or not (found / CONFIG_FILE).is_file():
        raise MissingFileError(
            f"no saved dictionary at {directory} (expected {CONFIG_FILE} and {WEIGHTS_FILE}); "
            f"train it first (`diffdict train CONFIG`)"
        )
    document = read_json(
        found / CONFIG_FILE,
        "a dictionary's config.json",
        f"to retrain the dictionary delete {found} and run `diffdict train CONFIG`",
    )
    if "architecture" not in document:
        raise InputError(
            f"{found / CONFIG_FILE}: missing the 'architecture' key; known: {sorted(architecture_names())}"
        )
    try:
        cls = architecture_class(document["architecture"])
    except ValueError as error:
        raise InputError(f"{found / CONFIG_FILE}: {error}") from None
    dictionary = cls.from_config(config_from_dict(cls.config_class, document["config"], where=str(found / CONFIG_FILE)))
    dictionary.meta = document.get("meta", {})
    dictionary.load_resume_state(document)
    dictionary.load_extra_config(document.get("extra", {}))
    tensors = read_safetensors(found / WEIGHTS_FILE)
    _check_shapes(dictionary, tensors, found / WEIGHTS_FILE)
    dictionary.load_tensors(tensors)
    if training_state and (found / TRAINING_FILE).is_file():
        dictionary.load_training_tensors(read_safetensors(found / TRAINING_FILE))
    if device is not None:
        dictionary.to(device)
    return dictionary


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, refusing anything else (pickles are never loaded)."""
    if not path.is_file():
        raise MissingFileError(
            f"{path} is missing: the dictionary's weights are gone; retrain it "
            f"(`diffdict train CONFIG` resumes from its last checkpoint)"
        )
    head = path.read_bytes()[:8]
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:2] == b"PK":
        raise InputError(
            f"{path} is a pickle / torch.save file, not safetensors; diffdict never unpickles "
            f"(it can run arbitrary code). Convert it: safetensors.torch.save_file(torch.load(f, "
            f"weights_only=True), '{path.name}')"
        )
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise InputError(
            f"{path} is not a readable safetensors file ({error}); to retrain the dictionary delete "
            f"{path.parent} and run `diffdict train CONFIG`"
        ) from None


def _check_shapes(dictionary: Dictionary, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = dictionary.tensors()
    for name, tensor in tensors.items():
        want = expected.get(name)
        # Growing dictionaries (ITDA) start empty: only their trailing dimensions are fixed.
        if want is not None and want.numel() and tuple(want.shape) != tuple(tensor.shape):
            raise InputError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)} but the config says "
                f"{tuple(want.shape)} (d={dictionary.d}); the weights do not belong to this config"
            )
        if (
            want is not None
            and want.dim() == tensor.dim()
            and want.dim() > 1
            and tuple(want.shape[1:]) != tuple(tensor.shape[1:])
        ):
            raise InputError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, expected (*, "
                f"{', '.join(map(str, want.shape[1:]))}) for d={dictionary.d}"
            )
