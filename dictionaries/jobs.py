"""Harvest jobs: the fixed numbering of generation work, and what one job's generation yields.

A job is one `generate` call: a batch of prompts with one seed. Jobs are numbered seed-major,
then in prompt chunks, so a job's number (and a shard's name) is the same whatever the number of
ranks. A store harvest writes one shard per job; a stream feeds one job's maps to the trainer.
Torch only (no polars): the stream path runs where only torch is installed.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from diffdict.dictionaries.errors import InputError


@dataclass
class MapRecord:
    """One captured map with its index fields; value (h, w, d)."""

    fields: dict[str, Any]  # model, hook, prompt_id, prompt, seed, step, timestep, t, branch
    value: torch.Tensor


@dataclass(frozen=True)
class Job:
    number: int
    prompt_ids: tuple[int, ...]
    seed: int
    seed_index: int = 0  # the seed's place in the harvest's seed list

    @property
    def shard_name(self) -> str:
        return f"job-{self.number:06d}"


def plan_jobs(n_prompts: int, seeds: Sequence[int], batch_size: int) -> list[Job]:
    """Seed-major, then prompt chunks of batch_size: a fixed order, so names are stable."""
    return plan_prompt_jobs(list(range(n_prompts)), seeds, batch_size)


def plan_prompt_jobs(prompt_ids: Sequence[int], seeds: Sequence[int], batch_size: int) -> list[Job]:
    """plan_jobs over chosen prompt ids (in the order given): seed-major, then chunks of batch_size."""
    if batch_size < 1:
        raise InputError(f"harvest batch_size must be >= 1, got {batch_size}")
    jobs = []
    for seed_index, seed in enumerate(seeds):
        for start in range(0, len(prompt_ids), batch_size):
            ids = tuple(int(i) for i in prompt_ids[start : start + batch_size])
            jobs.append(Job(len(jobs), ids, int(seed), seed_index))
    return jobs


@dataclass(frozen=True)
class Selection:
    """What a harvest keeps of each generation besides the hooks: steps, branches, positions."""

    steps: tuple[int, ...] | None = None  # step indices (None: every step)
    branches: tuple[str, ...] | None = None  # CFG branches (None: every branch the model runs)
    tokens_per_image: int | None = None  # positions per map (None: the whole map)

    def generate_kwargs(self) -> dict:
        """What `adapter.generate` is told to capture (only the steps: branches and positions are cut after)."""
        return {"capture_steps": self.steps} if self.steps is not None else {}


def job_records(
    generation, job: Job, prompts: Sequence[str], expected_d: dict[str, int], keep: Selection | None = None
) -> list[MapRecord]:
    """One MapRecord per (captured map, prompt row), in capture order; `keep` drops branches and
    subsamples positions (the records of a subsampled map are (1, m, d) with their `positions`)."""
    keep = keep or Selection()
    records = []
    for capture in generation.captures:
        if keep.branches is not None and capture.branch not in keep.branches:
            continue
        value = capture.value
        if value.dim() != 4 or value.shape[0] != len(job.prompt_ids):
            raise InputError(
                f"hook {capture.hook}: expected a (batch={len(job.prompt_ids)}, h, w, d) map, got {tuple(value.shape)}"
            )
        d = expected_d.get(capture.hook)
        if d is not None and value.shape[-1] != d:
            raise InputError(
                f"hook {capture.hook}: captured d={value.shape[-1]} but the adapter declares "
                f"d={d}; the hook table of the adapter is wrong for this model"
            )
        for row, prompt_id in enumerate(job.prompt_ids):
            where = (
                f"hook {capture.hook}, step {capture.step}, branch {capture.branch}, "
                f"prompt {prompt_id} ({prompts[prompt_id]!r}), seed {job.seed}"
            )
            if not torch.isfinite(value[row]).all():
                raise InputError(
                    f"non-finite activations (nan/inf) at {where}; run the model in fp32 (dtype) or check its weights"
                )
            fields = {
                "hook": capture.hook,
                "prompt_id": prompt_id,
                "prompt": prompts[prompt_id],
                "seed": job.seed,
                "step": int(capture.step),
                "timestep": float(capture.timestep),
                "t": float(capture.t),
                "branch": capture.branch,
            }
            map_value = value[row]
            if keep.tokens_per_image is not None:
                h, w, d = map_value.shape
                image = job.seed_index * len(prompts) + prompt_id  # the image's place in the whole harvest
                positions = stratified_positions(h * w, keep.tokens_per_image, image, capture.hook, int(capture.step))
                map_value = map_value.reshape(h * w, d)[positions].reshape(1, -1, d)
                fields["positions"] = positions.tolist()
            records.append(MapRecord(fields, map_value))
    return records


def stratified_positions(cells: int, count: int, image: int, hook: str, step: int) -> torch.Tensor:
    """`count` of a map's `cells` grid positions for the `image`-th image of a harvest, sorted.

    Each (hook, step) has its own seeded order of the cells; image i takes the next `count` cells
    of that order (wrapping around), so over cells / count consecutive images every position is
    kept exactly once: every cell is sampled, equally often, over the run.
    """
    count = min(count, cells)
    order = torch.randperm(cells, generator=torch.Generator().manual_seed(zlib.crc32(f"{hook}/{step}".encode())))
    start = (image * count) % cells
    return order[(start + torch.arange(count)) % cells].sort().values
