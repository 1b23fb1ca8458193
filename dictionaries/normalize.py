"""Optional input standardisation / whitening, kept linear so it folds back into activation space.

The Flux residual stream is very anisotropic: without this, >99% of top-k features die.
Dictionaries learn on x' = (x - shift) @ A and report atoms as (atom' @ A^-1), so a user
always sees directions in the original activation space.
"""

from __future__ import annotations

import torch

from diffdict.dictionaries.errors import InputError

KINDS = ("none", "standardize", "whiten")


class InputNorm:
    """x' = (x - shift) * scale (standardize, diagonal) or (x - shift) @ matrix (whiten, ZCA).

    shift, scale: (d,); matrix, inverse: (d, d). kind "none" is the identity.
    """

    def __init__(self, kind: str, d: int) -> None:
        if kind not in KINDS:
            raise InputError(f"input_norm must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.d = d
        self.shift = torch.zeros(d)
        self.scale = torch.ones(d)
        self.matrix: torch.Tensor | None = None
        self.inverse: torch.Tensor | None = None

    @property
    def identity(self) -> bool:
        return self.kind == "none"

    def fit(self, sample: torch.Tensor, eps: float = 1e-6) -> InputNorm:
        """Estimate shift and scale (or the whitening matrix) from a sample (N, d)."""
        if self.identity:
            return self
        sample = sample.double()
        mean = sample.mean(0)
        self.shift = mean.float()
        if self.kind == "standardize":
            std = sample.std(0).clamp_min(eps * float(sample.std(0).max()) + 1e-12)
            self.scale = (1.0 / std).float()
        else:
            centred = sample - mean
            cov = centred.T @ centred / max(1, sample.shape[0] - 1)
            evals, evecs = torch.linalg.eigh(cov)
            evals = evals.clamp_min(eps * float(evals.max()) + 1e-12)
            matrix = (evecs * evals.rsqrt()) @ evecs.T
            self.inverse = ((evecs * evals.sqrt()) @ evecs.T).float()
            self.matrix = matrix.float()
        return self

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Activation space (N, d) -> normalised space (N, d)."""
        if self.identity:
            return x
        if self.kind == "standardize":
            return (x - self.shift) * self.scale
        assert self.matrix is not None, "whiten: set by fit or load_tensors"
        return (x - self.shift) @ self.matrix

    def invert(self, x_norm: torch.Tensor) -> torch.Tensor:
        """Normalised space -> activation space, for points (adds the shift back)."""
        return self.invert_directions(x_norm) + self.shift if not self.identity else x_norm

    def invert_directions(self, v: torch.Tensor) -> torch.Tensor:
        """Normalised space -> activation space, for directions (no shift)."""
        if self.identity:
            return v
        if self.kind == "standardize":
            return v / self.scale
        assert self.inverse is not None, "whiten: set by fit or load_tensors"
        return v @ self.inverse

    def to(self, device: str | torch.device) -> InputNorm:
        self.shift, self.scale = self.shift.to(device), self.scale.to(device)
        if self.matrix is not None:
            assert self.inverse is not None, "set together with the matrix"
            self.matrix, self.inverse = self.matrix.to(device), self.inverse.to(device)
        return self

    def tensors(self, prefix: str = "norm.") -> dict[str, torch.Tensor]:
        out = {prefix + "shift": self.shift, prefix + "scale": self.scale}
        if self.matrix is not None:
            assert self.inverse is not None, "set together with the matrix"
            out[prefix + "matrix"] = self.matrix
            out[prefix + "inverse"] = self.inverse
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor], prefix: str = "norm.") -> None:
        self.shift = tensors[prefix + "shift"]
        self.scale = tensors[prefix + "scale"]
        self.matrix = tensors.get(prefix + "matrix")
        self.inverse = tensors.get(prefix + "inverse")
