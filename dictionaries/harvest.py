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
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from diffdict.dictionaries import distributed
from diffdict.dictionaries.errors import InputError
from diffdict.dictionaries.jobs import Job, Selection, job_records, plan_jobs, plan_prompt_jobs  # noqa: F401
from diffdict.dictionaries.store import StoreWriter
from diffdict.dictionaries.store_reader import ActivationStore


def harvest_settings(
    prompts: Sequence[str],
    seeds: Sequence[int],
    hooks: Sequence[str],
    batch_size: int,
    capture: str,
    steps: int | None,
    guidance: float | None,
    height: int | None,
    width: int | None,
    keep: Selection | None = None,
) -> dict:
    """What store.json records about the harvest that made a store (with the model id and dtype)."""
    keep = keep or Selection()
    return {
        "hooks": list(hooks),
        "seeds": [int(s) for s in seeds],
        "n_prompts": len(prompts),
        "batch_size": batch_size,
        "capture": capture,
        "steps": steps,
        "guidance": guidance,
        "height": height,
        "width": width,
        # the prompt texts themselves: a changed prompt list is another store, also at the same count
        "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16],
        # what is kept of each generation (None: everything; a store of an older version records none)
        "keep_steps": list(keep.steps) if keep.steps is not None else None,
        "keep_branches": list(keep.branches) if keep.branches is not None else None,
        "tokens_per_image": keep.tokens_per_image,
    }


def harvest(
    adapter,
    prompts: Sequence[str],
    seeds: Sequence[int],
    hooks: Sequence[str],
    out: str | Path,
    dtype: str = "fp16",
    batch_size: int = 4,
    capture: str = "update",
    steps: int | None = None,
    guidance: float | None = None,
    height: int | None = None,
    width: int | None = None,
    progress: bool = True,
    replace: bool = False,
    keep: Selection | None = None,
) -> ActivationStore:
    """Fill (or resume) the store at `out`; returns it opened for reading.

    keep: which steps, branches and positions of each generation are stored (default: all).
    replace: a store at `out` harvested with other settings is deleted and harvested again
    (without it such a store is refused, unless it holds no shard yet)."""
    if not prompts:
        raise InputError("harvest needs at least one prompt")
    known = getattr(adapter, "hook_points", {})
    unknown = [h for h in hooks if known and h not in known]
    if unknown:
        raise InputError(f"unknown hook(s) {unknown} for {adapter.model_id}; available: {sorted(known)}")
    keep = keep or Selection()
    settings = harvest_settings(prompts, seeds, hooks, batch_size, capture, steps, guidance, height, width, keep)
    world = distributed.world()

    # Rank 0 alone cleans temporaries and writes store.json, before any rank starts a shard.
    def make_writer(primary: bool) -> StoreWriter:
        return StoreWriter(
            out, model=adapter.model_id, dtype=dtype, settings=settings, primary=primary, replace=replace
        )

    writer = distributed.on_main(lambda: make_writer(True), world)
    if writer is None:  # the other ranks, once rank 0 has prepared the folder
        writer = make_writer(False)
    expected_d = {h: known[h].d for h in hooks if h in known}
    mine = [job for job in plan_jobs(len(prompts), seeds, batch_size) if job.number % world.size == world.rank]
    todo = [job for job in mine if not writer.has_shard(job.shard_name)]
    label = f" (rank {world.rank}/{world.size})" if world.distributed else ""
    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        desc=f"harvest {adapter.model_id}{label}",
        unit="batch",
        disable=not progress or not world.is_main,
    )
    for job in todo:
        generation = adapter.generate(
            [prompts[i] for i in job.prompt_ids],
            seeds=[job.seed] * len(job.prompt_ids),
            hooks=list(hooks),
            capture=capture,
            steps=steps,
            guidance=guidance,
            height=height,
            width=width,
            **keep.generate_kwargs(),
        )
        writer.write_shard(job.shard_name, job_records(generation, job, prompts, expected_d, keep))
        bar.update(1)
    bar.close()

    distributed.barrier(world)  # every rank's shards are on disk before the index is built
    distributed.on_main(writer.finalize, world)
    return ActivationStore(out)
