"""Harvest: run an adapter over prompts x seeds with capture and write an activation store.

The adapter is duck-typed (anything with `model_id`, `hook_points` and `generate(...)`
returning a Generation with `captures`), so this layer never imports adapters/diffusers.
Work is cut into jobs (one `generate` call = one batch of prompts with one seed) and each job
is one shard: a killed harvest resumes at the first missing shard and never duplicates or
loses a map.

Under torchrun, job j belongs to rank j % WORLD_SIZE; each rank writes its own shards (the
names are global, so 1 rank and N ranks produce the same files), and rank 0 builds the index
once every rank has passed a barrier.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from diffdict.dictionaries import distributed
from diffdict.dictionaries.store import MapRecord, StoreWriter
from diffdict.dictionaries.store_reader import ActivationStore
from diffdict.dictionaries.errors import InputError


@dataclass(frozen=True)
class Job:
    number: int
    prompt_ids: tuple[int, ...]
    seed: int

    @property
    def shard_name(self) -> str:
        return f"job-{self.number:06d}"


def plan_jobs(n_prompts: int, seeds: Sequence[int], batch_size: int) -> list[Job]:
    """Seed-major, then prompt chunks of batch_size: a fixed order, so names are stable."""
    if batch_size < 1:
        raise InputError(f"harvest batch_size must be >= 1, got {batch_size}")
    jobs = []
    for seed in seeds:
        for start in range(0, n_prompts, batch_size):
            ids = tuple(range(start, min(start + batch_size, n_prompts)))
            jobs.append(Job(len(jobs), ids, int(seed)))
    return jobs


def _records(generation, job: Job, prompts: Sequence[str], expected_d: dict[str, int]) -> list[MapRecord]:
    records = []
    for capture in generation.captures:
        value = capture.value
        if value.dim() != 4 or value.shape[0] != len(job.prompt_ids):
            raise InputError(f"hook {capture.hook}: expected a (batch={len(job.prompt_ids)}, h, w, d) map, "
                             f"got {tuple(value.shape)}")
        d = expected_d.get(capture.hook)
        if d is not None and value.shape[-1] != d:
            raise InputError(f"hook {capture.hook}: captured d={value.shape[-1]} but the adapter declares "
                             f"d={d}; the hook table of the adapter is wrong for this model")
        for row, prompt_id in enumerate(job.prompt_ids):
            where = (f"hook {capture.hook}, step {capture.step}, branch {capture.branch}, "
                     f"prompt {prompt_id} ({prompts[prompt_id]!r}), seed {job.seed}")
            if not torch.isfinite(value[row]).all():
                raise InputError(f"non-finite activations (nan/inf) at {where}; run the model in fp32 "
                                 f"(dtype) or check its weights")
            records.append(MapRecord(
                {"hook": capture.hook, "prompt_id": prompt_id, "prompt": prompts[prompt_id], "seed": job.seed,
                 "step": int(capture.step), "timestep": float(capture.timestep), "t": float(capture.t),
                 "branch": capture.branch}, value[row]))
    return records


def harvest_settings(prompts: Sequence[str], seeds: Sequence[int], hooks: Sequence[str], batch_size: int,
                     capture: str, steps: int | None, guidance: float | None, height: int | None,
                     width: int | None) -> dict:
    """What store.json records about the harvest that made a store (with the model id and dtype)."""
    return {"hooks": list(hooks), "seeds": [int(s) for s in seeds], "n_prompts": len(prompts),
            "batch_size": batch_size, "capture": capture, "steps": steps, "guidance": guidance,
            "height": height, "width": width,
            # the prompt texts themselves: a changed prompt list is another store, also at the same count
            "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]}


def harvest(adapter, prompts: Sequence[str], seeds: Sequence[int], hooks: Sequence[str], out: str | Path,
            dtype: str = "fp16", batch_size: int = 4, capture: str = "update", steps: int | None = None,
            guidance: float | None = None, height: int | None = None, width: int | None = None,
            progress: bool = True, replace: bool = False) -> ActivationStore:
    """Fill (or resume) the store at `out`; returns it opened for reading.

    replace: a store at `out` harvested with other settings is deleted and harvested again
    (without it such a store is refused, unless it holds no shard yet)."""
    if not prompts:
        raise InputError("harvest needs at least one prompt")
    known = getattr(adapter, "hook_points", {})
    unknown = [h for h in hooks if known and h not in known]
    if unknown:
        raise InputError(f"unknown hook(s) {unknown} for {adapter.model_id}; available: {sorted(known)}")
    settings = harvest_settings(prompts, seeds, hooks, batch_size, capture, steps, guidance, height, width)
    world = distributed.world()
    # Rank 0 alone cleans temporaries and writes store.json, before any rank starts a shard.
    def make_writer(primary: bool) -> StoreWriter:
        return StoreWriter(out, model=adapter.model_id, dtype=dtype, settings=settings, primary=primary,
                           replace=replace)

    writer = distributed.on_main(lambda: make_writer(True), world)
    if writer is None:  # the other ranks, once rank 0 has prepared the folder
        writer = make_writer(False)
    expected_d = {h: known[h].d for h in hooks if h in known}
    mine = [job for job in plan_jobs(len(prompts), seeds, batch_size) if job.number % world.size == world.rank]
    todo = [job for job in mine if not writer.has_shard(job.shard_name)]
    label = f" (rank {world.rank}/{world.size})" if world.distributed else ""
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"harvest {adapter.model_id}{label}",
               unit="batch", disable=not progress or not world.is_main)
    for job in todo:
        generation = adapter.generate([prompts[i] for i in job.prompt_ids], seeds=[job.seed] * len(job.prompt_ids),
                                      hooks=list(hooks), capture=capture, steps=steps, guidance=guidance,
                                      height=height, width=width)
        writer.write_shard(job.shard_name, _records(generation, job, prompts, expected_d))
        bar.update(1)
    bar.close()

    distributed.barrier(world)  # every rank's shards are on disk before the index is built
    distributed.on_main(writer.finalize, world)
    return ActivationStore(out)
