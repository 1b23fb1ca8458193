"""What a run will cost, before it starts: generations, tokens, bytes on disk, memory.

Everything is computed from the resolved config and the models' shapes (built on the meta device):
  - store bytes are exact for the tensors (maps x tokens x d x dtype bytes, with harvest.prompts,
    steps, branches and tokens_per_image applied) plus an estimate of the shard headers' index rows;
  - a stream's generations are the images its hungriest dictionary needs (tokens / tokens per image);
  - memory is estimated from shapes: model weights (the denoiser's exact parameter count, the text
    encoders' and VAE's published sizes; NF4 at 4.5 bits a parameter), one job's captured maps in
    float32, the stream's shuffle windows, and each architecture's own training estimate. The models'
    activations while generating are not counted.
`check` prints it; `check` and `run` refuse a run whose writes exceed the free space of the file
system that holds the run folder.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import StudyConfig
from .errors import UserError
from .validate import human_bytes

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
INDEX_BYTES_PER_MAP = 400  # a shard header's JSON row (fields and prompt) plus its index.parquet row, about
NF4_BYTES_PER_PARAMETER = 0.5625  # 4 bits plus a scale per block of 64 (bitsandbytes' NF4)
PROVENANCE_BYTES = 5 * 8  # per streamed token: map_row, prompt_id, seed, step, position (int64)


@dataclass
class StoreCost:
    hook: str
    d: int
    maps: int  # maps stored: images x steps kept x branches kept
    tokens_per_map: int
    tensor_bytes: int  # exact: maps x tokens x d x dtype bytes
    bytes: int  # tensors + index rows (estimated)


@dataclass
class ModelCost:
    name: str
    prompts: int  # in the prompt list
    stored_prompts: int
    seeds: int
    harvest_generations: int
    steps_kept: int
    branches_kept: list[str]
    stores: list[StoreCost]
    store_bytes: int
    store_bytes_present: int  # already on disk (a resumed harvest writes only the rest)
    weights_bytes: int
    job_capture_bytes: int  # one generate call's captured maps, float32
    stream_generations: int = 0
    stream_window_bytes: int = 0
    full_store_bytes: int = 0  # what a store of every prompt would take (what streaming does not write)


@dataclass
class DictionaryCost:
    name: str
    model: str
    hook: str
    tokens: int
    passes: float  # tokens / tokens available to it (training prompts x seeds x maps x tokens per map)
    train_memory: int
    train_memory_how: str
    checkpoint_bytes: int


@dataclass
class RunCost:
    source: str
    models: list[ModelCost] = field(default_factory=list)
    dictionaries: list[DictionaryCost] = field(default_factory=list)
    disk_needed: int = 0
    disk_free: int = 0
    disk_path: str = ""

    def as_json(self) -> dict:
        return asdict(self)


def free_bytes(path: Path) -> tuple[int, Path]:
    """Free bytes of the file system that holds `path` (its nearest existing folder), and that folder."""
    folder = Path(path).resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free, folder


def prompt_count(config: StudyConfig) -> int:
    """How many prompts the run will use (list sources by their length, others by prompts.count)."""
    prompts = config.prompts
    if prompts.source == "list":
        return min(prompts.count, len(prompts.list))
    return prompts.count


def estimate(config: StudyConfig, resolved: dict, device: str | None = None) -> RunCost:
    """The cost of `config`; `resolved` maps model names to adapters on the meta device."""
    from .validate import memory_estimate

    cost = RunCost(source=config.train.source)
    total = prompt_count(config)
    stored = config.stored_prompt_count(total)
    seeds = len(config.prompts.seeds)
    train_prompts = (
        max(0, total - round(config.prompts.eval_fraction * stored))
        if config.streams
        else stored - round(config.prompts.eval_fraction * stored)
    )
    for name in config.harvested_models():
        cost.models.append(_model_cost(config, name, resolved[name], total, stored, seeds))
    by_model = {m.name: m for m in cost.models}
    windows: set[tuple] = set()
    for entry in config.dictionaries:
        adapter = resolved[entry.model]
        model = by_model.get(entry.model)
        hook = adapter.hook_point(entry.hook)
        cells = _cells(config, entry.model, adapter, entry.hook)
        steps = config.model(entry.model).steps or adapter.defaults.steps
        per_image = cells * (steps if config.streams else (model.steps_kept if model else steps))
        available = max(1, train_prompts * seeds * per_image)
        need, how = memory_estimate(entry.architecture, entry.n, hook.d, entry.batch)
        cost.dictionaries.append(
            DictionaryCost(
                entry.name,
                entry.model,
                entry.hook,
                entry.tokens,
                entry.tokens / available,
                need,
                how,
                checkpoint_bytes=2 * _saved_bytes(entry.architecture, entry.n, hook.d),
            )
        )
        if config.streams and model is not None:
            model.stream_generations = max(model.stream_generations, math.ceil(entry.tokens / per_image))
            key = (entry.model, entry.hook, entry.branch)
            if key not in windows:  # dictionaries of one hook and branch share a window
                windows.add(key)
                model.stream_window_bytes += 2 * config.train.buffer_tokens * (hook.d * 4 + PROVENANCE_BYTES)
    written = sum(m.store_bytes - m.store_bytes_present for m in cost.models)
    written += sum(d.checkpoint_bytes for d in cost.dictionaries)  # a checkpoint and, while it is swapped, the last
    cost.disk_free, folder = free_bytes(Path(config.out))
    cost.disk_needed, cost.disk_path = written, str(folder)
    return cost


def _cells(config: StudyConfig, model: str, adapter, hook: str) -> int:
    entry = config.model(model)
    h, w = adapter.hook_point(hook).grid(entry.height or adapter.defaults.height, entry.width or adapter.defaults.width)
    return h * w


def _model_cost(config: StudyConfig, name: str, adapter, total: int, stored: int, seeds: int) -> ModelCost:
    entry, harvest = config.model(name), config.harvest
    steps = entry.steps or adapter.defaults.steps
    kept_steps = [s for s in range(steps) if harvest.steps is None or s in harvest.steps]
    produced = adapter.branches(entry.guidance)
    branches = [b for b in produced if harvest.branches is None or b in harvest.branches]
    item = DTYPE_BYTES[harvest.dtype]
    stores, full = [], 0
    for hook_name in config.hooks_of(name):
        hook = adapter.hook_point(hook_name)
        cells = _cells(config, name, adapter, hook_name)
        tokens = min(harvest.tokens_per_image or cells, cells)
        per_image_maps = len(kept_steps) * len(branches)
        maps = stored * seeds * per_image_maps
        tensors = maps * tokens * hook.d * item
        stores.append(StoreCost(hook_name, hook.d, maps, tokens, tensors, tensors + maps * INDEX_BYTES_PER_MAP))
        full += total * seeds * per_image_maps * (tokens * hook.d * item + INDEX_BYTES_PER_MAP)
    weights = _weights_bytes(config, name, adapter)
    job = harvest.batch_size * sum(
        len(kept_steps) * len(produced) * _cells(config, name, adapter, h) * adapter.hook_point(h).d * 4
        for h in config.hooks_of(name)
    )
    return ModelCost(
        name,
        total,
        stored,
        seeds,
        stored * seeds,
        len(kept_steps),
        branches,
        stores,
        sum(s.bytes for s in stores),
        _present_bytes(Path(config.out) / "stores" / name),
        weights,
        job,
        full_store_bytes=full,
    )


def _weights_bytes(config: StudyConfig, name: str, adapter) -> int:
    """The pipeline's weights in memory: the denoiser counted from its config, the other components by
    their published sizes (real models only; toy and tiny models' are small)."""
    from diffdict.adapters.families import FAMILIES
    from diffdict.adapters.registry import REAL_MODELS

    entry = config.model(name)
    denoiser = sum(p.numel() for p in adapter.denoiser.parameters())
    family = FAMILIES[adapter.family]
    companions = family.companion_parameters if entry.id in REAL_MODELS else {}
    item = (
        DTYPE_BYTES[entry.dtype]
        if entry.dtype
        else (4 if (config.device or "cpu") == "cpu" else family.cuda_dtype.itemsize)
    )
    total = 0
    for component, count in {"denoiser": denoiser, **companions}.items():
        four_bit = entry.quantize == "nf4" and (component == "denoiser" or component in family.nf4_components)
        total += int(count * (NF4_BYTES_PER_PARAMETER if four_bit else item))
    return total


def _present_bytes(store: Path) -> int:
    shards = store / "shards"
    return sum(f.stat().st_size for f in shards.glob("*.safetensors")) if shards.is_dir() else 0


def _saved_bytes(architecture: str, n: int, d: int) -> int:
    """A dictionary's checkpoint: its tensors and optimiser state (the architecture's training estimate
    without the batch terms)."""
    from diffdict.dictionaries.registry import architecture_class

    return architecture_class(architecture).training_memory(n, d, 0)[0]


def describe(cost: RunCost) -> list[str]:
    """The cost as `check` prints it."""
    lines = ["cost (from the models' shapes; store tensors exact, memory estimated, model activations not counted):"]
    for m in cost.models:
        lines.append(
            f"  {m.name}: {m.prompts:,} prompts x {m.seeds} seed(s); stores keep {m.stored_prompts:,} prompts "
            f"-> {m.harvest_generations:,} generations to harvest; {m.steps_kept} step(s) x "
            f"{'+'.join(m.branches_kept)} per image"
        )
        for s in m.stores:
            lines.append(
                f"    store {s.hook:12s} {s.maps:,} maps x {s.tokens_per_map} tokens x d={s.d}: {human_bytes(s.bytes)}"
            )
        present = f" ({human_bytes(m.store_bytes_present)} already on disk)" if m.store_bytes_present else ""
        lines.append(
            f"    stores {human_bytes(m.store_bytes)}{present}; memory while harvesting: weights "
            f"{human_bytes(m.weights_bytes)} + one job's captured maps {human_bytes(m.job_capture_bytes)}"
        )
        if cost.source == "stream" and m.stream_generations:
            lines.append(
                f"    stream: {m.stream_generations:,} generations to train; shuffle windows "
                f"{human_bytes(m.stream_window_bytes)} of host memory; not written: "
                f"{human_bytes(max(0, m.full_store_bytes - m.store_bytes))} (a store of every prompt)"
            )
    for d in cost.dictionaries:
        lines.append(
            f"  {d.name}: {d.tokens:,} tokens = {d.passes:.3g} pass(es) over its training maps; training "
            f"memory {human_bytes(d.train_memory)} ({d.train_memory_how}); checkpoints "
            f"{human_bytes(d.checkpoint_bytes)}"
        )
    verdict = "fits" if cost.disk_needed <= cost.disk_free else "DOES NOT FIT"
    lines.append(
        f"  disk: writes {human_bytes(cost.disk_needed)} under {cost.disk_path} "
        f"({human_bytes(cost.disk_free)} free): {verdict}"
    )
    return lines


def refuse_if_no_room(cost: RunCost, source: str) -> None:
    """UserError, with the numbers and the fixes, when the run's writes exceed the free space."""
    if cost.disk_needed <= cost.disk_free:
        return
    biggest = max(cost.models, key=lambda m: m.store_bytes, default=None)
    where = f"; the largest is {biggest.name}'s stores ({human_bytes(biggest.store_bytes)})" if biggest else ""
    raise UserError(
        f"{source}: the run would write {human_bytes(cost.disk_needed)} but the file system of {cost.disk_path} has "
        f"{human_bytes(cost.disk_free)} free{where}. Free space, choose another `out`, or store less: "
        f'train.source = "stream" (dictionaries train from generation; stores keep only harvest.prompts prompts), '
        f"a smaller harvest.prompts, harvest.tokens_per_image, harvest.steps or harvest.branches"
    )
