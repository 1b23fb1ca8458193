"""Reuse of the denoiser's outputs on the steps of a generation that no edit has reached yet.

An edit confined to a time window leaves every step before the window exactly as the unedited
generation of the same prompt and seed computed it: same latents in, same prediction out. A
`PrefixCache` keeps those predictions row by row, keyed by what determines an unedited trajectory
(prompt, negative prompt, seed, steps, guidance, size, CFG branch, step index), and a generation
given the cache serves such steps from it instead of running the denoiser. A late-window edit on
a 25-step model then runs the denoiser on its last few steps only.

A step is served or recorded only when nothing at it reads or changes the blocks: no intervention
is active there and no hook is captured. One cache belongs to one adapter (its weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RowKey:
    """What fixes one row of one unedited denoiser call."""

    prompt: str
    negative_prompt: str | None
    seed: int
    steps: int
    guidance: float
    height: int
    width: int
    branch: str
    step: int


@dataclass(frozen=True)
class TrajectorySettings:
    """A generation's settings that every row key carries; `row_keys` adds the row's own parts."""

    prompts: tuple[str, ...]
    negative_prompts: tuple[str | None, ...]
    seeds: tuple[int, ...]
    steps: int
    guidance: float
    height: int
    width: int

    def row_keys(self, branches: Sequence[str], step: int) -> list[RowKey] | None:
        """One key per row of a denoiser call whose rows hold the prompts in order, once per branch block
        (SDXL's CFG batch: every uncond row, then every cond row); None where the rows are laid out otherwise."""
        n = len(self.prompts)
        if n == 0 or len(branches) % n:
            return None
        return [
            RowKey(
                self.prompts[i % n],
                self.negative_prompts[i % n],
                self.seeds[i % n],
                self.steps,
                self.guidance,
                self.height,
                self.width,
                branch,
                step,
            )
            for i, branch in enumerate(branches)
        ]


class PrefixCache:
    """Denoiser predictions of unedited steps, per row, held on the CPU up to `max_bytes`.

    Pass one to `Adapter.generate(prefix_cache=...)` for every generation of a set of prompts that
    are edited in different time windows; it fills itself on the steps before each edit starts.
    `hits` and `misses` count denoiser calls served from it and calls that had to run.
    """

    def __init__(self, max_bytes: int = 2**30):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._rows: dict[RowKey, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, keys: list[RowKey], device: torch.device) -> torch.Tensor | None:
        """The stacked predictions of every key on `device`, or None (counted as a miss) unless all are held."""
        rows = [self._rows.get(key) for key in keys]
        if any(row is None for row in rows):
            self.misses += 1
            return None
        self.hits += 1
        return torch.stack([row for row in rows if row is not None]).to(device)

    def store(self, keys: list[RowKey], prediction: torch.Tensor) -> None:
        """Keep each row of `prediction` (rows, ...) under its key, until the cache is full."""
        rows = prediction.detach().to("cpu")
        for key, row in zip(keys, rows, strict=True):
            if key in self._rows:
                continue
            size = row.numel() * row.element_size()
            if self.bytes + size > self.max_bytes:
                return
            self._rows[key] = row.clone()
            self.bytes += size
