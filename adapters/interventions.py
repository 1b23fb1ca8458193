"""Interventions: small objects that edit what a hook point writes, applied through forward hooks.

Every intervention edits the block's *update* (output - input) on the hook's grid
(batch, h, w, d), and carries three rules that decide where it acts:
- mask: (h, w) weights on the hook's grid (None = everywhere), or (batch, h, w) with one
  mask per prompt; the edit's change is multiplied by it, so a 0/1 mask restricts the
  edit, fractional masks blend it, and per-prompt masks let one batch carry different edits;
- time window: `steps` (denoising step indices) and/or `t_range` (normalised t, 1 = noise);
- branch: "cond" (default), "uncond", "both", or "cond+uncond-": the change computed on
  each cond row is added there and subtracted from the matching uncond row, as SDLens
  does for SDXL Base so that the edit survives classifier-free guidance.

The dictionary-based edits accept any object with `encode(x) -> code` (code.values and
code.indices, each (N, k)), `decode(code) -> (N, d)` and `atoms` (n, d): this layer never
imports the dictionaries package.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import AdapterInputError

BRANCH_RULES = ("cond", "uncond", "both", "cond+uncond-")
EDIT_MODES = ("set", "scale", "add", "zero")


@dataclass
class Intervention:
    """Base: subclasses implement `edit(update) -> new update`, both (batch, h, w, d)."""

    hook: str
    mask: torch.Tensor | None = None
    steps: Iterable[int] | None = None
    t_range: tuple[float, float] | None = None
    branch: str = "cond"

    def __post_init__(self) -> None:
        if self.branch not in BRANCH_RULES:
            raise AdapterInputError(
                f"{type(self).__name__} on {self.hook!r}: branch {self.branch!r} is not one of {BRANCH_RULES}"
            )
        if self.t_range is not None:
            lo, hi = self.t_range
            if not (0.0 <= lo <= hi <= 1.0):
                raise AdapterInputError(
                    f"{type(self).__name__} on {self.hook!r}: t_range {self.t_range} must satisfy "
                    "0 <= low <= high <= 1 (t is normalised time, 1 = pure noise)"
                )
        if self.steps is not None:
            self.steps = frozenset(int(s) for s in self.steps)
            if any(s < 0 for s in self.steps):
                raise AdapterInputError(
                    f"{type(self).__name__} on {self.hook!r}: steps must be >= 0, got {sorted(self.steps)}"
                )
        if self.mask is not None:
            self.mask = torch.as_tensor(self.mask, dtype=torch.float32)
            if self.mask.ndim not in (2, 3):
                raise AdapterInputError(
                    f"{type(self).__name__} on {self.hook!r}: mask must be (h, w) on the hook's grid or "
                    f"(batch, h, w), got shape {tuple(self.mask.shape)}"
                )
            if not torch.isfinite(self.mask).all():
                raise AdapterInputError(
                    f"{type(self).__name__} on {self.hook!r}: the mask has non-finite values "
                    f"(nan/inf), which would blacken the image; give weights in [0, 1]"
                )

    def validate(self, grid: tuple[int, int], num_steps: int, batch: int) -> None:
        """Check the mask and window against one generation; raise ValueError naming both sides."""
        if self.mask is not None and tuple(self.mask.shape[-2:]) != tuple(grid):
            raise AdapterInputError(
                f"{type(self).__name__} on {self.hook!r}: mask shape {tuple(self.mask.shape)} does not match "
                f"the hook's grid {tuple(grid)} at this resolution; build the mask on that grid"
            )
        if self.mask is not None and self.mask.ndim == 3 and self.mask.shape[0] != batch:
            raise AdapterInputError(
                f"{type(self).__name__} on {self.hook!r}: per-prompt mask has {self.mask.shape[0]} masks for "
                f"{batch} prompts; give one (h, w) mask per prompt"
            )
        if self.steps is not None:
            outside = sorted(s for s in self.steps if s >= num_steps)
            if outside:
                raise AdapterInputError(
                    f"{type(self).__name__} on {self.hook!r}: steps {outside} are outside this generation's "
                    f"{num_steps} steps (valid: 0..{num_steps - 1})"
                )

    def active(self, step: int, t: float) -> bool:
        if self.steps is not None and step not in self.steps:
            return False
        if self.t_range is not None and not (self.t_range[0] <= t <= self.t_range[1]):
            return False
        return True

    def edit(self, update: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def change(self, update: torch.Tensor) -> torch.Tensor:
        """The masked change this intervention makes to `update` (batch, h, w, d)."""
        delta = self.edit(update) - update
        if self.mask is not None:
            mask = self.mask.to(delta.device, delta.dtype)
            delta = delta * (mask[None] if mask.ndim == 2 else mask)[..., None]
        return delta


@dataclass
class AddDirection(Intervention):
    """Add `strength * direction` to the update: steering, or a feature's decoder atom.

    direction: (d,) for every prompt, or (batch, d) with one direction per prompt (so that
    one intervention carries a whole sweep of different edits in one batch).
    """

    direction: torch.Tensor = field(default=None)  # type: ignore[assignment]
    strength: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction is None:
            raise AdapterInputError(f"AddDirection on {self.hook!r} needs a direction of shape (d,) or (batch, d)")
        self.direction = torch.as_tensor(self.direction)
        if self.direction.ndim != 2:
            self.direction = self.direction.flatten()
        if not torch.isfinite(self.direction).all():
            raise AdapterInputError(
                f"AddDirection on {self.hook!r}: the direction has non-finite values (nan/inf); "
                f"it would blacken the image. Check how it was computed (e.g. a zero-norm division)"
            )
        if not math.isfinite(float(self.strength)):
            raise AdapterInputError(
                f"AddDirection on {self.hook!r}: strength {self.strength} is not finite; give a finite number"
            )

    def validate(self, grid: tuple[int, int], num_steps: int, batch: int) -> None:
        super().validate(grid, num_steps, batch)
        if self.direction.ndim == 2 and self.direction.shape[0] != batch:
            raise AdapterInputError(
                f"AddDirection on {self.hook!r}: per-prompt direction has {self.direction.shape[0]} rows for "
                f"{batch} prompts; give one (d,) direction or one per prompt"
            )

    def edit(self, update: torch.Tensor) -> torch.Tensor:
        if self.direction.shape[-1] != update.shape[-1]:
            raise AdapterInputError(
                f"AddDirection on {self.hook!r}: direction has {self.direction.shape[-1]} channels, "
                f"hook has {update.shape[-1]}"
            )
        direction = self.direction.to(update.device, update.dtype)
        if direction.ndim == 2:  # (batch, d): one per prompt row
            direction = direction[:, None, None, :]
        return update + self.strength * direction


def _encode(dictionary: Any, flat: torch.Tensor) -> Any:
    """Encode on the dictionary's own device (it may sit on the GPU while a study reads CPU maps)."""
    device = getattr(dictionary, "device", flat.device)
    return dictionary.encode(flat.to(device))


def _feature_activations(code: Any, features: torch.Tensor) -> torch.Tensor:
    """(N, len(features)) activation of each listed feature in a sparse code (0 where inactive)."""
    hits = code.indices.unsqueeze(-1) == features.view(1, 1, -1)  # (N, k, F)
    return (code.values.unsqueeze(-1) * hits).sum(dim=1)


@dataclass
class EditFeatures(Intervention):
    """Set, scale, add to or zero dictionary features at every location of the update.

    The change is sum_f (target_f - current_f) * atoms[f], so the dictionary's
    reconstruction error stays in the stream (only the named features move).
    mode "set": target = value (also where the feature was inactive);
    "scale": target = value * current; "add": target = current + value; "zero": target = 0.
    relative_to_code_norm: multiply `value` at each location by the norm of the code there
    (Tinaz et al.'s global edits), so the edit is as strong as what the block already writes.
    """

    dictionary: Any = None
    features: Sequence[int] = ()
    mode: str = "set"
    value: float | Sequence[float] = 0.0
    relative_to_code_norm: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in EDIT_MODES:
            raise AdapterInputError(
                f"EditFeatures on {self.hook!r}: mode {self.mode!r} is not one of {', '.join(EDIT_MODES)}"
            )
        if self.dictionary is None or not len(self.features):
            raise AdapterInputError(f"EditFeatures on {self.hook!r} needs a dictionary and at least one feature")
        n = self.dictionary.atoms.shape[0]
        bad = [f for f in self.features if not 0 <= int(f) < n]
        if bad:
            raise AdapterInputError(
                f"EditFeatures on {self.hook!r}: features {bad} outside the dictionary's 0..{n - 1}"
            )
        if not torch.isfinite(torch.as_tensor(self.value, dtype=torch.float32)).all():
            raise AdapterInputError(
                f"EditFeatures on {self.hook!r}: value {self.value} is not finite; give finite numbers"
            )

    def edit(self, update: torch.Tensor) -> torch.Tensor:
        flat = update.reshape(-1, update.shape[-1])
        features = torch.as_tensor(list(self.features), dtype=torch.long, device=flat.device)
        atoms = self.dictionary.atoms.to(flat.device, flat.dtype)[features]  # (F, d)
        with torch.no_grad():
            code = _encode(self.dictionary, flat)
            current = _feature_activations(code, features.to(code.indices.device)).to(flat.device, flat.dtype)
        value = torch.as_tensor(self.value, dtype=flat.dtype, device=flat.device).expand_as(current)
        if self.relative_to_code_norm:
            value = value * code.values.to(flat.device, flat.dtype).norm(dim=-1, keepdim=True)
        if self.mode == "set":
            target = value
        elif self.mode == "scale":
            target = current * value
        elif self.mode == "add":
            target = current + value
        else:
            target = torch.zeros_like(current)
        return (flat + (target - current) @ atoms).reshape(update.shape)


@dataclass(frozen=True)
class FeatureOp:
    """One row's edit of one feature on its own cells (see RowFeatureEdits)."""

    row: int  # batch row (prompt) it acts on
    feature: int
    mode: str  # "set", "add" or "zero" (as EditFeatures)
    cells: torch.Tensor  # (h, w) weights on the hook's grid
    value: float = 0.0
    relative_to_code_norm: bool = False


@dataclass
class RowFeatureEdits(Intervention):
    """Many prompts' feature edits in one batch, from one encode of the update per step.

    Each op moves one feature of one row on its own cells, by EditFeatures' rule, and every op reads the
    same code (the block's update before any of them): one intervention and one encode carry a whole
    batch of different edits, where one EditFeatures per prompt would encode the batch once per prompt.
    The intervention's own `mask` is not used (each op carries its cells).
    """

    dictionary: Any = None
    ops: Sequence[FeatureOp] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dictionary is None:
            raise AdapterInputError(f"RowFeatureEdits on {self.hook!r} needs a dictionary")
        n = self.dictionary.atoms.shape[0]
        for op in self.ops:
            if op.mode not in ("set", "add", "zero"):
                raise AdapterInputError(f"RowFeatureEdits on {self.hook!r}: mode {op.mode!r} is not set, add or zero")
            if not 0 <= int(op.feature) < n:
                raise AdapterInputError(f"RowFeatureEdits on {self.hook!r}: feature {op.feature} outside 0..{n - 1}")

    def validate(self, grid: tuple[int, int], num_steps: int, batch: int) -> None:
        super().validate(grid, num_steps, batch)
        for op in self.ops:
            if not 0 <= op.row < batch or tuple(op.cells.shape) != tuple(grid):
                raise AdapterInputError(
                    f"RowFeatureEdits on {self.hook!r}: an op on row {op.row} with cells "
                    f"{tuple(op.cells.shape)} does not fit {batch} prompts on the grid {tuple(grid)}"
                )

    def edit(self, update: torch.Tensor) -> torch.Tensor:
        batch, h, w, d = update.shape
        with torch.no_grad():
            code = _encode(self.dictionary, update.reshape(-1, d))
        values = code.values.to(update.device, update.dtype).reshape(batch, h * w, -1)
        indices = code.indices.to(update.device).reshape(batch, h * w, -1)
        atoms = self.dictionary.atoms.to(update.device, update.dtype)
        out = update.clone().reshape(batch, h * w, d)
        for op in self.ops:
            current = (values[op.row] * (indices[op.row] == op.feature)).sum(-1)  # (h*w,)
            value = torch.full_like(current, float(op.value))
            if op.relative_to_code_norm:
                value = value * values[op.row].norm(dim=-1)
            target = value if op.mode == "set" else current + value if op.mode == "add" else torch.zeros_like(current)
            weight = op.cells.to(update.device, update.dtype).reshape(-1)
            out[op.row] += ((target - current) * weight)[:, None] * atoms[op.feature]
        return out.reshape(update.shape)


@dataclass
class Splice(Intervention):
    """Replace the update with the dictionary's reconstruction decode(encode(update))."""

    dictionary: Any = None

    def edit(self, update: torch.Tensor) -> torch.Tensor:
        flat = update.reshape(-1, update.shape[-1])
        with torch.no_grad():
            recon = self.dictionary.decode(_encode(self.dictionary, flat))
        return recon.to(update.device, update.dtype).reshape(update.shape)


@dataclass
class SkipBlock(Intervention):
    """Zero the update: the block passes its input through unchanged."""

    def edit(self, update: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(update)
