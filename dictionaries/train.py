"""Resumable training of several dictionaries on streams from one activation store.

Dictionaries that read the same hook and selection share one stream (a sweep over n and k
costs one read). Every `checkpoint_every` steps each dictionary is saved with its optimiser
state and step count; a killed run resumes from those checkpoints and, because the stream
is a deterministic function of (seed, start batch), ends bit-identical to an uninterrupted
run. Metrics go to parquet: one row per dictionary per step (train) and per evaluation.

Output folder:
  NAME/                 final dictionary (config.json + weights.safetensors)
  checkpoints/NAME/     latest checkpoint, with training_state.safetensors
  metrics/part-*.parquet, metrics.parquet   per-step and eval metrics
  features.parquet      per-atom activation frequency on held-out prompts

Under torchrun every rank reads the same (seeded) stream and keeps its contiguous slice of
each global batch, so the global batch, and the result, do not depend on the number of
ranks: SAE gradients are averaged over ranks (equal to the whole batch's gradient up to
float rounding), ITDA candidates are gathered rank-major (atoms identical to one process).
Rank 0 alone writes checkpoints, metrics, evaluations and the final dictionaries; a resume
loads the same checkpoint on every rank. A final dictionary is saved last, after its
metrics, so a folder holding it is complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from tqdm.auto import tqdm

from diffdict.dictionaries import base, distributed
from diffdict.dictionaries.atomic import remove_stale_temps, resolve_dir, write_file_atomic
from diffdict.dictionaries.errors import InputError
from diffdict.dictionaries.metrics import evaluate
from diffdict.dictionaries.store_reader import ActivationStore
from diffdict.dictionaries.train_common import (  # noqa: F401  (DictionarySpec: importable from here too)
    DictionarySpec,
    new_dictionary,
    rank_slice,
    resumable,
    steps_done,
    to_device,
)


@dataclass
class TrainSettings:
    tokens: int
    batch_size: int = 4096
    checkpoint_every: int = 200  # steps
    buffer_tokens: int = 262_144
    seed: int = 0
    eval_fraction: float = 0.1
    eval_tokens: int = 65_536
    init_tokens: int = 32_768

    def __post_init__(self) -> None:
        for name in ("tokens", "batch_size", "checkpoint_every", "buffer_tokens", "eval_tokens", "init_tokens"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.tokens < self.batch_size:
            raise InputError(f"train.tokens={self.tokens} is smaller than one batch ({self.batch_size})")

    @property
    def total_steps(self) -> int:
        return self.tokens // self.batch_size


def train(
    store: ActivationStore,
    specs: list[DictionarySpec],
    settings: TrainSettings,
    out: str | Path,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    device: str | torch.device | None = None,
) -> dict[str, base.Dictionary]:
    """Train (or resume) every spec; returns the final dictionaries by name.

    `device` ("cuda", "cpu", ...; None keeps the CPU) is where the dictionaries train: they and
    every batch are moved there. Under torchrun "cuda" is this rank's GPU (see distributed.world).
    """
    out = Path(out)
    device = torch.device(device) if device is not None else None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InputError(f"dictionary names must be unique, got {names}")
    world = distributed.world()
    if world.distributed:
        world.share(settings.batch_size)  # raises early, with the fix, if the batch does not split evenly
        for spec in specs:
            if not base.architecture_class(spec.architecture).supports_distributed:
                raise InputError(
                    f"dictionary {spec.name!r}: architecture {spec.architecture!r} cannot train on "
                    f"several processes; run `diffdict train` without torchrun"
                )
    distributed.on_main(lambda: _remove_stale_temps(out), world)
    groups: dict[tuple, list[DictionarySpec]] = {}
    for spec in specs:
        groups.setdefault(spec.stream_key(), []).append(spec)
    finished: dict[str, base.Dictionary] = {}
    for group in groups.values():
        finished.update(_train_group(store, group, settings, out, progress, on_step, world, device))
    distributed.on_main(lambda: _assemble_metrics(out), world)
    return finished


def _remove_stale_temps(out: Path) -> None:
    """Temporaries of a killed run are never read (resolve_dir skips them); delete them anyway."""
    for folder in (out, out / "checkpoints", out / "metrics"):
        remove_stale_temps(folder)


def _train_group(store, specs, settings, out, progress, on_step, world, device=None):
    d = store.d(specs[0].hook)
    selection = dict(
        specs[0].selection(), split="train", eval_fraction=settings.eval_fraction, split_seed=settings.seed
    )
    dictionaries = {}
    for spec in specs:
        checkpoint = resolve_dir(out / "checkpoints" / spec.name)
        resumed = base.load(checkpoint, training_state=True) if checkpoint is not None else None
        fresh = resumed is None or not resumable(resumed, spec)  # a checkpoint of other settings is not continued
        dictionaries[spec.name] = new_dictionary(spec, d) if fresh else resumed
        if device is not None:
            dictionaries[spec.name].to(device)
    needs_init = [dic for dic in dictionaries.values() if dic.init_from_sample and not dic.initialized]
    if needs_init:  # data-dependent init from a separate sample (another seed), as sdxl-unbox does
        sample_stream = store.stream(
            specs[0].hook,
            batch_size=min(settings.init_tokens, settings.batch_size),
            buffer_tokens=settings.buffer_tokens,
            seed=settings.seed + 1,
            epochs=None,
            **selection,
        )
        sample = []
        for batch in sample_stream:
            sample.append(batch)
            if sum(b.shape[0] for b in sample) >= settings.init_tokens:
                break
        for dic in needs_init:  # every rank reads the same sample, so every rank starts identical
            began = time.perf_counter()
            dic.initialize(to_device(torch.cat(sample), device))
            dic.meta["fit_seconds"] = dic.meta.get("fit_seconds", 0.0) + time.perf_counter() - began
    for name, dic in dictionaries.items():
        distributed.check_identical(dic.tensors(), world, f"dictionary {name!r} at the start of training")
    total = settings.total_steps
    start = min(steps_done(dic) for dic in dictionaries.values())
    provenance = any(dic.reads_provenance for dic in dictionaries.values())
    stream = store.stream(
        specs[0].hook,
        batch_size=settings.batch_size,
        buffer_tokens=settings.buffer_tokens,
        seed=settings.seed,
        epochs=None,
        start_batch=start,
        with_provenance=provenance,
        **selection,
    )
    rows: list[dict] = []
    label = f" rank 0/{world.size}" if world.distributed else ""
    bar = tqdm(
        total=total,
        initial=start,
        desc=f"train {specs[0].hook} ({', '.join(dictionaries)}){label}",
        unit="step",
        disable=not progress or not world.is_main,
    )
    step = start
    for step in range(start, total):
        batch = to_device(rank_slice(next(stream), world), device)
        for name, dic in dictionaries.items():
            if steps_done(dic) > step:  # this one was checkpointed further than its group mates
                continue
            began = time.perf_counter()
            fed = batch if dic.reads_provenance else base.batch_rows(batch)  # others get plain (N, d) rows
            stats = dic.partial_fit(fed, world=world) if world.distributed else dic.partial_fit(fed)
            # Each dictionary's own compute time (saved with its checkpoints): what "fit time"
            # means when several dictionaries share one stream.
            dic.meta["fit_seconds"] = dic.meta.get("fit_seconds", 0.0) + time.perf_counter() - began
            dic.meta["train_steps"] = step + 1
            rows.append(
                {
                    "name": name,
                    "kind": "train",
                    "step": step + 1,
                    "tokens": (step + 1) * settings.batch_size,
                    **{k: float(v) for k, v in stats.items()},
                }
            )
        bar.update(1)
        if rows:
            bar.set_postfix({k: f"{v:.3g}" for k, v in rows[-1].items() if k in ("fvu", "loss", "size")})
        if (step + 1) % settings.checkpoint_every == 0 and step + 1 < total:
            distributed.on_main(lambda: _checkpoint(out, dictionaries, rows, step + 1), world)
            rows = []
        if on_step is not None:
            on_step(step + 1)
    bar.close()
    for name, dic in dictionaries.items():
        distributed.check_identical(dic.tensors(), world, f"dictionary {name!r} at the end of training")
    distributed.on_main(lambda: _checkpoint(out, dictionaries, rows, total), world)
    distributed.on_main(lambda: _evaluate_and_save(store, specs, dictionaries, settings, out, selection), world)
    return dictionaries


def _checkpoint(out: Path, dictionaries: dict, rows: list[dict], step: int) -> None:
    if rows:  # metrics first: a duplicate after a resume is dropped at assembly, a loss is not possible
        frame = pl.DataFrame(rows)
        group = "-".join(sorted(dictionaries))[:80]
        write_file_atomic(out / "metrics" / f"part-{group}-{step:09d}.parquet", lambda tmp: frame.write_parquet(tmp))
    for name, dic in dictionaries.items():
        dic.save(out / "checkpoints" / name, training_state=True)


def _evaluate_and_save(store, specs, dictionaries, settings, out, selection) -> None:
    eval_selection = dict(selection, split="eval")
    frequency_rows = []
    for spec in specs:
        dic = dictionaries[spec.name]
        try:
            rows = store.select(spec.hook, **eval_selection)
        except ValueError:
            rows = None  # too few prompts for a held-out split; training metrics still exist
        if rows is not None:
            tokens = min(settings.eval_tokens, int((rows["h"] * rows["w"]).sum()))
            batches = store.stream(
                spec.hook,
                batch_size=min(tokens, settings.batch_size),
                buffer_tokens=settings.buffer_tokens,
                seed=settings.seed,
                epochs=1,
                **eval_selection,
            )
            limited = (b for i, b in enumerate(batches) if i * min(tokens, settings.batch_size) < tokens)
            result = evaluate(dic, limited)
            frequencies = result.pop("frequencies")
            row = {
                "name": spec.name,
                "kind": "eval",
                "step": steps_done(dic),
                "tokens": result.pop("tokens"),
                **{k: float(v) for k, v in result.items()},
            }
            write_file_atomic(
                out / "metrics" / f"eval-{spec.name}.parquet", lambda tmp: pl.DataFrame([row]).write_parquet(tmp)
            )
            frequency_rows.append(
                pl.DataFrame({"name": spec.name, "atom": range(frequencies.numel()), "frequency": frequencies.tolist()})
            )
    if frequency_rows:
        table = pl.concat(frequency_rows)
        path = out / "features.parquet"
        if path.exists():
            table = pl.concat(
                [pl.read_parquet(path).filter(~pl.col("name").is_in(table["name"].unique().to_list())), table]
            )
        write_file_atomic(path, lambda tmp: table.write_parquet(tmp))
    _assemble_metrics(out)
    # Last: a saved final dictionary is the commit point a resumed `diffdict train` skips on.
    for spec in specs:
        dictionaries[spec.name].save(out / spec.name)


def train_from_stream(
    source,
    entries: list,
    settings: TrainSettings,
    out: str | Path,
    eval_store: ActivationStore,
    progress: bool = True,
    device: str | torch.device | None = None,
    on_window: Callable[[int], None] | None = None,
) -> dict[str, base.Dictionary]:
    """Train (or resume) `entries` (stream.StreamedDictionary) from a stream.StreamSource, then evaluate each
    on the held-out prompts of `eval_store` (the split every stream excludes from training) and save it.

    settings: seed, checkpoint_every, init_tokens and the evaluation's eval_fraction / eval_tokens /
    buffer_tokens (its tokens and batch_size are unused: each entry has its own)."""
    from diffdict.dictionaries.stream import StreamSettings, train_stream, write_final_rows

    out = Path(out)
    world = distributed.world()
    distributed.on_main(lambda: _remove_stale_temps(out), world)
    dictionaries, rows = train_stream(
        source,
        entries,
        StreamSettings(
            seed=settings.seed, checkpoint_every=settings.checkpoint_every, init_tokens=settings.init_tokens
        ),
        out,
        progress=progress,
        device=device,
        on_window=on_window,
    )
    distributed.on_main(lambda: write_final_rows(out, rows), world)
    groups: dict[tuple, list] = {}
    for entry in entries:
        groups.setdefault((entry.spec.stream_key(), entry.batch_size), []).append(entry)
    for members in groups.values():
        specs = [m.spec for m in members]
        selection = dict(
            specs[0].selection(), split="train", eval_fraction=settings.eval_fraction, split_seed=settings.seed
        )
        evaluation = TrainSettings(
            tokens=members[0].tokens,
            batch_size=members[0].batch_size,
            seed=settings.seed,
            eval_fraction=settings.eval_fraction,
            eval_tokens=settings.eval_tokens,
            buffer_tokens=settings.buffer_tokens,
        )
        mine = {s.name: dictionaries[s.name] for s in specs}
        distributed.on_main(lambda: _evaluate_and_save(eval_store, specs, mine, evaluation, out, selection), world)
    return dictionaries


def forget(out: Path, name: str) -> None:
    """Remove what a group folder holds of dictionary `name` (its final folder, checkpoint, held-out
    evaluation, metric rows and feature frequencies), before it is trained again with other settings;
    the group's other dictionaries keep theirs."""
    import shutil

    for folder in (out / name, out / f"{name}.old", out / "checkpoints" / name, out / "checkpoints" / f"{name}.old"):
        if folder.is_dir():
            shutil.rmtree(folder)
    (out / "metrics" / f"eval-{name}.parquet").unlink(missing_ok=True)
    for part in _metric_parts(out):
        frame = _read_part(part)
        if "name" not in frame.columns or not (frame["name"] == name).any():
            continue
        kept = frame.filter(pl.col("name") != name)
        if part.suffix == ".parquet":
            write_file_atomic(part, lambda tmp: kept.write_parquet(tmp))
        else:
            write_file_atomic(part, lambda tmp: kept.write_ndjson(tmp))
    features = out / "features.parquet"
    if features.exists():
        kept = pl.read_parquet(features).filter(pl.col("name") != name)
        write_file_atomic(features, lambda tmp: kept.write_parquet(tmp))
    _assemble_metrics(out)


def _metric_parts(out: Path) -> list[Path]:
    """The metric parts of a group folder: parquet (store training, evaluations) and JSON lines (streams)."""
    folder = out / "metrics"
    return sorted([*folder.glob("*.parquet"), *folder.glob("*.jsonl")]) if folder.is_dir() else []


def _read_part(part: Path) -> pl.DataFrame:
    return pl.read_parquet(part) if part.suffix == ".parquet" else pl.read_ndjson(part)


def _assemble_metrics(out: Path) -> pl.DataFrame:
    parts = _metric_parts(out)
    if not parts:
        return pl.DataFrame()
    frame = pl.concat([_read_part(p) for p in parts], how="diagonal_relaxed")
    frame = frame.unique(subset=["name", "kind", "step"], keep="last", maintain_order=True).sort(
        ["name", "kind", "step"]
    )
    write_file_atomic(out / "metrics.parquet", lambda tmp: frame.write_parquet(tmp))
    return frame
