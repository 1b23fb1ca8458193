"""Reconstruction and sparsity metrics, accumulated over a stream of held-out batches.

fvu                  pooled: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2
explained_variance   sdxl-unbox's number: mean over dims of 1 - Var(x - x_hat) / Var(x)
l0                   mean number of distinct atoms with a nonzero (summed) coefficient per token
dead_fraction        atoms never active on the evaluated tokens
frequencies          (n,) fraction of tokens on which each atom is active
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from diffdict.dictionaries.base import Dictionary, TokenBatch, batch_rows


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Pooled fraction of variance unexplained for one batch (N, d)."""
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-30))


class MetricsAccumulator:
    def __init__(self, d: int, n: int, device: str | torch.device | None = None) -> None:
        self.tokens = 0
        sums: dict[str, Any] = dict(dtype=torch.float64, device=device)  # on the batches' device: no per-batch copies
        self.x_sum = torch.zeros(d, **sums)
        self.x_sq = torch.zeros(d, **sums)
        self.r_sum = torch.zeros(d, **sums)
        self.r_sq = torch.zeros(d, **sums)
        self.nonzero = 0
        self.counts = torch.zeros(n, **sums)

    def add(self, x: torch.Tensor, x_hat: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> None:
        x, residual = x.double(), (x - x_hat).double()
        self.tokens += x.shape[0]
        self.x_sum += x.sum(0)
        self.x_sq += x.pow(2).sum(0)
        self.r_sum += residual.sum(0)
        self.r_sq += residual.pow(2).sum(0)
        n = self.counts.numel()
        # An atom picked twice in one row (matching pursuit without refit) is one active atom for
        # that token, with the sum of its coefficients.
        rows = torch.arange(x.shape[0], device=indices.device)[:, None].expand_as(indices)
        keys, slot = torch.unique(rows * n + indices, return_inverse=True)
        summed = torch.zeros(keys.numel(), dtype=torch.float64, device=keys.device)
        summed.index_add_(0, slot.reshape(-1), values.reshape(-1).double())
        keys = keys[summed != 0]
        self.nonzero += keys.numel()
        self.counts += torch.bincount(keys % n, minlength=n).double()

    def result(self) -> dict[str, Any]:
        count = max(self.tokens, 1)
        x_var = self.x_sq / count - (self.x_sum / count).pow(2)
        r_var = self.r_sq / count - (self.r_sum / count).pow(2)
        frequencies = self.counts / count
        return {
            "tokens": self.tokens,
            "fvu": float(self.r_sq.sum() / (x_var.sum() * count).clamp_min(1e-30)),
            "explained_variance": float((1 - r_var / (x_var + 1e-8)).mean()),
            "l0": self.nonzero / count,
            "dead_fraction": float((frequencies == 0).double().mean()) if frequencies.numel() else 0.0,
            "frequencies": frequencies.float(),
        }


@torch.no_grad()
def evaluate(dictionary: Dictionary, batches: Iterable[torch.Tensor | TokenBatch]) -> dict[str, Any]:
    """Metrics of `dictionary` over held-out batches (tensors or TokenBatch), on the dictionary's device."""
    device = dictionary.device
    acc = MetricsAccumulator(dictionary.d, dictionary.n, device)
    for batch in batches:
        x = batch_rows(batch).to(device, non_blocking=True).float()
        code = dictionary.encode(x)
        acc.add(x, dictionary.decode(code), code.values, code.indices)
    return acc.result()
