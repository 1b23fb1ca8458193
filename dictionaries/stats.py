"""Per-hook statistics of a store (token count, mean, std, mean norm), computed once.

Stored next to the index: stats.parquet (one row per model/hook with scalar summaries) and
stats.safetensors (the (d,) mean and std vectors, keyed "<model>|<hook>.mean/std").
Accumulated in float64, one map at a time, so memory does not grow with the store.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from safetensors.torch import load_file, save_file

from dictionaries.atomic import write_file_atomic
from dictionaries.errors import MissingFileError

STATS_TABLE = "stats.parquet"
STATS_TENSORS = "stats.safetensors"
MAPS_PER_READ = 64


@dataclass
class HookStats:
    model: str
    hook: str
    tokens: int
    mean: torch.Tensor  # (d,)
    std: torch.Tensor  # (d,)
    mean_norm: float  # average L2 norm of a token


class _Accumulator:
    def __init__(self, d: int) -> None:
        self.count = 0
        self.total = torch.zeros(d, dtype=torch.float64)
        self.squares = torch.zeros(d, dtype=torch.float64)
        self.norms = 0.0

    def add(self, x: torch.Tensor) -> None:
        x = x.double()
        self.count += x.shape[0]
        self.total += x.sum(0)
        self.squares += x.pow(2).sum(0)
        self.norms += float(x.norm(dim=1).sum())


def compute_stats(store) -> list[HookStats]:
    """One pass over every map of an ActivationStore; writes and returns the stats."""
    accumulators: dict[tuple[str, str], _Accumulator] = {}
    for (model, hook), rows in store.index.group_by(["model", "hook"], maintain_order=True):
        acc = accumulators.setdefault((model, hook), _Accumulator(int(rows["d"][0])))
        for start in range(0, rows.height, MAPS_PER_READ):
            for value in store.read_maps(rows[start:start + MAPS_PER_READ]):
                acc.add(value)
    stats = []
    for (model, hook), acc in accumulators.items():
        mean = acc.total / max(acc.count, 1)
        variance = (acc.squares / max(acc.count, 1) - mean.pow(2)).clamp_min(0)
        stats.append(HookStats(model, hook, acc.count, mean.float(), variance.sqrt().float(),
                               acc.norms / max(acc.count, 1)))
    write_stats(Path(store.root), stats)
    return stats


def write_stats(root: Path, stats: list[HookStats]) -> None:
    table = pl.DataFrame({
        "model": [s.model for s in stats], "hook": [s.hook for s in stats],
        "tokens": [s.tokens for s in stats], "d": [int(s.mean.numel()) for s in stats],
        "mean_norm": [s.mean_norm for s in stats], "mean_std": [float(s.std.mean()) for s in stats],
    })
    tensors = {}
    for s in stats:
        tensors[f"{s.model}|{s.hook}.mean"] = s.mean
        tensors[f"{s.model}|{s.hook}.std"] = s.std
    write_file_atomic(root / STATS_TENSORS, lambda tmp: save_file(tensors, str(tmp)))
    write_file_atomic(root / STATS_TABLE, lambda tmp: table.write_parquet(tmp))


def load_stats(root: str | Path) -> dict[str, HookStats]:
    """Stats keyed by hook name (a store holds one model). Raises if they were never computed."""
    root = Path(root)
    if not (root / STATS_TABLE).is_file():
        raise MissingFileError(f"{root} has no {STATS_TABLE}; they are written at the end of `diffdict harvest`")
    table = pl.read_parquet(root / STATS_TABLE)
    tensors = load_file(str(root / STATS_TENSORS))
    out = {}
    for row in table.iter_rows(named=True):
        key = f"{row['model']}|{row['hook']}"
        out[row["hook"]] = HookStats(row["model"], row["hook"], row["tokens"], tensors[key + ".mean"],
                                     tensors[key + ".std"], row["mean_norm"])
    return out
