"""Training from a stream: generation feeds a shuffle buffer per hook, and every dictionary of a
model trains from it in the same pass. Nothing but checkpoints and metrics reaches the disk.

The stream is a sequence of windows. Window w is stream positions w*J .. w*J + J - 1 (J =
`window_jobs`); position j generates a job of the plan, each pass over the plan in a seeded order
of its own, so a token budget larger than one pass repeats the prompts, as a store's epochs do.
The last window holds only the jobs the unfinished dictionaries still need (from what a whole
window yielded). Per stream key (hook, branch, steps, t range) a window's tokens are put in job
order, shuffled with a permutation seeded by (seed, w, key) and cut into each consumer's batches;
the tokens left over (fewer than one batch) carry into the next window. The stream is therefore a
function of (seed, window), and a checkpoint taken between windows holds all of its state: the
cursor, the carries, each dictionary with its optimiser state, and the metrics. A resumed run ends
identical to an uninterrupted one.

Under torchrun rank r generates the jobs of each window whose number is r modulo the world size;
the tokens are gathered and put back in job order, so every rank holds the same window and keeps
its contiguous slice of every global batch, exactly as store training does: the global batch, and
so the result, is the same for any number of ranks (the SAE up to float rounding).

Memory: one window per key on the host, about buffer_tokens x d x 4 bytes, twice while shuffled.
Torch only (no polars), so this path runs where only torch is installed.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from diffdict.dictionaries import base, distributed
from diffdict.dictionaries.atomic import resolve_dir, write_dir_atomic, write_file_atomic
from diffdict.dictionaries.errors import InputError
from diffdict.dictionaries.guarded_read import damaged, read_json
from diffdict.dictionaries.jobs import Job, MapRecord
from diffdict.dictionaries.train_common import DictionarySpec, new_dictionary, rank_slice, steps_done, to_device

STATE_FOLDER = "stream"  # under OUT/checkpoints/
PROVENANCE = ("map_row", "prompt_id", "seed", "step", "position")


@dataclass
class StreamSource:
    """Where the tokens come from: the job plan of one pass over the training prompts, and a
    function that generates one job and returns its maps (see jobs.job_records)."""

    jobs: Sequence[Job]
    generate: Callable[[Job], list[MapRecord]]
    hook_d: dict[str, int]  # channels of every hook the dictionaries read
    window_jobs: int  # jobs per window: about buffer_tokens tokens of the largest key


@dataclass
class StreamedDictionary:
    """A dictionary to train from the stream, with its own token budget and batch size."""

    spec: DictionarySpec
    tokens: int
    batch_size: int

    @property
    def total_steps(self) -> int:
        return self.tokens // self.batch_size


@dataclass
class StreamSettings:
    seed: int = 0
    checkpoint_every: int = 200  # steps (of the dictionary with the most steps); taken at the next window end
    init_tokens: int = 32_768  # tokens for data-dependent initialisation (geometric median, input statistics)


def window_jobs_for(buffer_tokens: int, tokens_per_image: int, images_per_job: int) -> int:
    """Jobs per window so that a window holds about `buffer_tokens` tokens of the largest key."""
    images = max(1, buffer_tokens // max(1, tokens_per_image))
    return max(1, math.ceil(images / max(1, images_per_job)))


class _Consumer:
    """The dictionaries of one stream key that take batches of one size; holds the carry."""

    def __init__(self, key: tuple, batch_size: int, names: list[str]):
        self.key, self.batch_size, self.names = key, batch_size, names
        self.carry: base.TokenBatch | None = None

    @property
    def label(self) -> str:
        return f"{_key_label(self.key)}/b{self.batch_size}"


def _key_label(key: tuple) -> str:
    hook, branch, steps, t_range = key
    return "|".join([hook, str(branch), ",".join(map(str, steps)), ",".join(map(str, t_range))])


def _matches(fields: dict, key: tuple) -> bool:
    hook, branch, steps, t_range = key
    return (
        fields["hook"] == hook
        and (branch is None or fields["branch"] == branch)
        and (not steps or fields["step"] in steps)
        and (not t_range or t_range[0] <= fields["t"] <= t_range[1])
    )


def _seed_of(*parts) -> int:
    return zlib.crc32(json.dumps([str(p) for p in parts]).encode())


def train_stream(
    source: StreamSource,
    entries: list[StreamedDictionary],
    settings: StreamSettings,
    out: str | Path,
    progress: bool = True,
    device: str | torch.device | None = None,
    on_window: Callable[[int], None] | None = None,
) -> tuple[dict[str, base.Dictionary], list[dict]]:
    """Train (or resume) every entry from the stream; returns (dictionaries by name, metric rows
    not yet written: those since the last checkpoint). Checkpoints go to OUT/checkpoints/stream/,
    their metric rows to OUT/metrics/part-stream-*.jsonl. `on_window(w)` runs after window w."""
    out = Path(out)
    device = torch.device(device) if device is not None else None
    world = distributed.world()
    if not source.jobs:
        raise InputError("the stream has no jobs: no training prompts (every prompt is held out?)")
    names = [e.spec.name for e in entries]
    if len(set(names)) != len(names):
        raise InputError(f"dictionary names must be unique, got {names}")
    for entry in entries:
        if world.distributed:
            world.share(entry.batch_size)  # raises, with the fix, when the batch does not split evenly
            if not base.architecture_class(entry.spec.architecture).supports_distributed:
                raise InputError(
                    f"dictionary {entry.spec.name!r}: architecture {entry.spec.architecture!r} cannot "
                    f"train on several processes; run `diffdict train` without torchrun"
                )
        if entry.total_steps < 1:
            raise InputError(f"dictionary {entry.spec.name!r}: {entry.tokens} tokens are fewer than one batch")
    consumers: dict[tuple, _Consumer] = {}
    for entry in entries:
        key = (entry.spec.stream_key(), entry.batch_size)
        consumer = consumers.setdefault(key, _Consumer(entry.spec.stream_key(), entry.batch_size, []))
        consumer.names.append(entry.spec.name)
    by_name = {e.spec.name: e for e in entries}
    window, dictionaries, yield_per_job = _resume(out, entries, source, consumers, device)
    keys = list(dict.fromkeys(c.key for c in consumers.values()))
    most = max(e.total_steps for e in entries)
    bar = tqdm(
        total=most,
        initial=max(steps_done(d) for d in dictionaries.values()),
        unit="step",
        desc=f"stream-train {', '.join(names)}"[:80],
        disable=not progress or not world.is_main,
    )
    rows: list[dict] = []
    since_checkpoint = 0

    def unfinished() -> bool:
        return any(steps_done(dictionaries[n]) < by_name[n].total_steps for n in names)

    while unfinished():
        jobs = _jobs_needed(source.window_jobs, consumers, dictionaries, by_name, yield_per_job)
        tokens = _window_tokens(source, keys, window, settings.seed, world, jobs)
        for consumer in consumers.values():
            if tokens[consumer.key].x.shape[0] == 0 and any(
                steps_done(dictionaries[n]) < by_name[n].total_steps for n in consumer.names
            ):
                hook, branch = consumer.key[0], consumer.key[1]
                raise InputError(
                    f"the stream yields no tokens for {', '.join(consumer.names)} (hook {hook!r}, branch "
                    f"{branch!r}): the model does not produce that branch at this guidance (uncond "
                    f"needs classifier-free guidance) or no step matches; change the dictionary's branch"
                )
        if jobs == source.window_jobs and not yield_per_job:  # measured once, on a whole window
            yield_per_job.update({_key_label(k): (int(t.x.shape[0]), jobs) for k, t in tokens.items()})
        _initialize(dictionaries, entries, tokens, settings, device)
        before = max(steps_done(d) for d in dictionaries.values())
        for consumer in consumers.values():
            rows += _consume(consumer, tokens[consumer.key], dictionaries, by_name, world, device)
        window += 1
        after = max(steps_done(d) for d in dictionaries.values())
        bar.update(after - before)
        if rows:
            bar.set_postfix({k: f"{v:.3g}" for k, v in rows[-1].items() if k in ("fvu", "size")})
        since_checkpoint += after - before
        if since_checkpoint >= settings.checkpoint_every and unfinished():
            distributed.on_main(lambda: _checkpoint(out, window, consumers, dictionaries, rows, yield_per_job), world)
            rows, since_checkpoint = [], 0
        if on_window is not None:
            on_window(window - 1)
    bar.close()
    for name, dic in dictionaries.items():
        distributed.check_identical(dic.tensors(), world, f"dictionary {name!r} at the end of stream training")
    return dictionaries, rows


def _resume(
    out: Path, entries: list[StreamedDictionary], source: StreamSource, consumers: dict, device: torch.device | None
) -> tuple[int, dict[str, base.Dictionary], dict[str, tuple[int, int]]]:
    """(next window, dictionaries, tokens a window of jobs yielded per key) from the last checkpoint, or
    (0, new dictionaries, {})."""
    found = resolve_dir(out / "checkpoints" / STATE_FOLDER)
    dictionaries: dict[str, base.Dictionary] = {}
    window = 0
    yield_per_job: dict[str, tuple[int, int]] = {}
    state: dict = {}
    if found is not None:
        fix = (
            f"delete {found} to train these dictionaries again from the start (the stream is regenerated; "
            f"nothing else is lost)"
        )
        state = read_json(found / "state.json", "a stream checkpoint's state", fix)
        if not _same_dictionaries(state, entries):
            found = None  # a checkpoint of another set of dictionaries (or settings): this stream starts afresh
    if found is not None:
        if not isinstance(state.get("window"), int):
            raise damaged(found / "state.json", "a stream checkpoint's state", "it names no window", fix)
        window = state["window"]
        yield_per_job = {k: (int(v[0]), int(v[1])) for k, v in state.get("yield_per_job", {}).items()}
        carry_file = found / "carry.safetensors"
        try:
            carries = load_file(str(carry_file)) if carry_file.exists() else {}
        except Exception as error:  # safetensors raises its own error types for truncation
            raise damaged(carry_file, "a stream checkpoint's carried tokens", str(error), fix) from None
        for consumer in consumers.values():
            label = consumer.label
            if f"{label}.x" in carries:
                consumer.carry = base.TokenBatch(
                    carries[f"{label}.x"], {p: carries[f"{label}.{p}"] for p in PROVENANCE}
                )
    for entry in entries:
        name = entry.spec.name
        if found is not None and (found / name).is_dir():
            dictionaries[name] = base.load(found / name, training_state=True)
        else:
            if entry.spec.hook not in source.hook_d:
                raise InputError(
                    f"dictionary {name!r}: hook {entry.spec.hook!r} is not generated by the stream "
                    f"(hooks: {sorted(source.hook_d)})"
                )
            dictionaries[name] = new_dictionary(entry.spec, source.hook_d[entry.spec.hook])
        if device is not None:
            dictionaries[name].to(device)
    return window, dictionaries, yield_per_job


def _same_dictionaries(state: dict, entries: list[StreamedDictionary]) -> bool:
    """The checkpoint (its state.json) was taken by a stream of exactly these dictionaries, with these settings."""
    recorded = state.get("settings", {})
    wanted = {e.spec.name: e.spec.settings_hash for e in entries}
    return set(state.get("steps", {})) == set(wanted) and all(recorded.get(n) == h for n, h in wanted.items())


def _jobs_needed(
    window_jobs: int, consumers: dict, dictionaries: dict, by_name: dict, yield_per_job: dict[str, tuple[int, int]]
) -> int:
    """Jobs of the next window: a whole window, or, near the end, only as many as the unfinished
    dictionaries still need (from what a whole window yielded), so the last window generates no images
    that nothing trains on. A function of the checkpointed state alone: resumes and ranks agree."""
    if not yield_per_job:
        return window_jobs
    jobs = 1
    for consumer in consumers.values():
        steps_left = max(by_name[n].total_steps - steps_done(dictionaries[n]) for n in consumer.names)
        carried = consumer.carry.x.shape[0] if consumer.carry is not None else 0
        need = steps_left * consumer.batch_size - carried
        tokens, per_jobs = yield_per_job.get(_key_label(consumer.key), (0, 0))
        if need > 0 and tokens > 0:
            jobs = max(jobs, -(-need * per_jobs // tokens))  # ceil(need / (tokens / per_jobs))
        elif need > 0:
            return window_jobs
    return min(window_jobs, jobs)


def _job(jobs: Sequence[Job], number: int, seed: int) -> Job:
    """The job that stream position `number` generates: pass number // len(jobs) over the plan, in an
    order seeded by (seed, pass), so that repeated passes do not repeat the same windows."""
    epoch, place = divmod(number, len(jobs))
    order = torch.randperm(len(jobs), generator=torch.Generator().manual_seed(_seed_of(seed, "pass", epoch)))
    return jobs[int(order[place])]


def _window_tokens(
    source: StreamSource, keys: list[tuple], window: int, seed: int, world: distributed.World, jobs: int
) -> dict[tuple, base.TokenBatch]:
    """Every key's tokens of one window (its first `jobs` jobs), in job order then shuffled: (T, d) plus
    provenance."""
    numbers = [window * source.window_jobs + i for i in range(jobs)]
    mine = [n for n in numbers if n % world.size == world.rank]
    parts: dict[tuple, list[tuple[torch.Tensor, dict[str, torch.Tensor]]]] = {key: [] for key in keys}
    for number in mine:
        job = _job(source.jobs, number, seed)
        for record in source.generate(job):
            value = record.value
            flat = value.reshape(-1, value.shape[-1]).float()
            count = flat.shape[0]
            positions = record.fields.get("positions")
            provenance = {
                "map_row": torch.full((count,), -1, dtype=torch.long),  # no store row: the map was never stored
                "prompt_id": torch.full((count,), int(record.fields["prompt_id"]), dtype=torch.long),
                "seed": torch.full((count,), int(record.fields["seed"]), dtype=torch.long),
                "step": torch.full((count,), int(record.fields["step"]), dtype=torch.long),
                "position": torch.tensor(positions, dtype=torch.long) if positions is not None else torch.arange(count),
                "job": torch.full((count,), number, dtype=torch.long),
            }
            for key in keys:
                if _matches(record.fields, key):
                    parts[key].append((flat, provenance))
    windows = {}
    for key in keys:
        d = source.hook_d[key[0]]
        x = torch.cat([p[0] for p in parts[key]]) if parts[key] else torch.zeros(0, d)
        empty = torch.zeros(0, dtype=torch.long)
        provenance = {
            name: torch.cat([p[1][name] for p in parts[key]]) if parts[key] else empty for name in (*PROVENANCE, "job")
        }
        if world.distributed:  # every rank gets the whole window, back in job order (stable sort keeps map order)
            x = distributed.gather_rows(x, world)
            provenance = {name: distributed.gather_rows(v, world) for name, v in provenance.items()}
            order = torch.sort(provenance["job"], stable=True).indices
            x, provenance = x[order], {name: v[order] for name, v in provenance.items()}
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(_seed_of(seed, window, key)))
        windows[key] = base.TokenBatch(x[perm], {name: provenance[name][perm] for name in PROVENANCE})
    return windows


def _initialize(
    dictionaries: dict,
    entries: list[StreamedDictionary],
    tokens: dict,
    settings: StreamSettings,
    device: torch.device | None,
) -> None:
    """Data-dependent initialisation (while `initialized` is False) from the first window's tokens of
    the dictionary's key, taken in another order than training reads them. Every rank holds the same
    window, so every rank starts identical."""
    for entry in entries:
        dic = dictionaries[entry.spec.name]
        if not dic.init_from_sample or dic.initialized:
            continue
        x = tokens[entry.spec.stream_key()].x
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(_seed_of(settings.seed, "init")))
        began = time.perf_counter()
        dic.initialize(to_device(x[order[: settings.init_tokens]], device))
        dic.meta["fit_seconds"] = dic.meta.get("fit_seconds", 0.0) + time.perf_counter() - began


def _consume(
    consumer: _Consumer,
    tokens: base.TokenBatch,
    dictionaries: dict,
    by_name: dict,
    world: distributed.World,
    device: torch.device | None,
) -> list[dict]:
    """Feed one window's tokens (after the carry) to the consumer's dictionaries, batch by batch."""
    x, provenance = tokens.x, tokens.provenance
    if consumer.carry is not None:
        x = torch.cat([consumer.carry.x, x])
        provenance = {k: torch.cat([consumer.carry.provenance[k], v]) for k, v in provenance.items()}
    size = consumer.batch_size
    full = (x.shape[0] // size) * size
    rows = []
    for start in range(0, full, size):
        batch = base.TokenBatch(x[start : start + size], {k: v[start : start + size] for k, v in provenance.items()})
        local = to_device(rank_slice(batch, world), device)
        for name in consumer.names:
            dic, entry = dictionaries[name], by_name[name]
            step = steps_done(dic)
            if step >= entry.total_steps:
                continue
            began = time.perf_counter()
            fed = local if dic.reads_provenance else base.batch_rows(local)
            stats = dic.partial_fit(fed, world=world) if world.distributed else dic.partial_fit(fed)
            dic.meta["fit_seconds"] = dic.meta.get("fit_seconds", 0.0) + time.perf_counter() - began
            dic.meta["train_steps"] = step + 1
            rows.append(
                {
                    "name": name,
                    "kind": "train",
                    "step": step + 1,
                    "tokens": (step + 1) * size,
                    **{k: float(v) for k, v in stats.items()},
                }
            )
    consumer.carry = base.TokenBatch(x[full:].clone(), {k: v[full:].clone() for k, v in provenance.items()})
    return rows


def _checkpoint(
    out: Path,
    window: int,
    consumers: dict,
    dictionaries: dict,
    rows: list[dict],
    yield_per_job: dict[str, tuple[int, int]],
) -> None:
    """Metrics first (a duplicate after a resume is dropped when they are assembled), then one folder
    holding the cursor, the carries and every dictionary, swapped in atomically."""
    _write_rows(out, f"part-stream-{window:09d}", rows)

    def write(tmp: Path) -> None:
        carries = {}
        for consumer in consumers.values():
            if consumer.carry is not None and consumer.carry.x.shape[0]:
                carries[f"{consumer.label}.x"] = consumer.carry.x.contiguous()
                carries.update({f"{consumer.label}.{k}": v.contiguous() for k, v in consumer.carry.provenance.items()})
        if carries:
            save_file(carries, str(tmp / "carry.safetensors"))
        (tmp / "state.json").write_text(
            json.dumps(
                {
                    "window": window,
                    "format_version": 1,
                    "steps": {n: steps_done(d) for n, d in dictionaries.items()},
                    "yield_per_job": yield_per_job,
                    "settings": {n: d.meta.get("settings_hash") for n, d in dictionaries.items()},
                }
            )
        )
        for name, dic in dictionaries.items():
            dic.save(tmp / name, training_state=True)

    write_dir_atomic(out / "checkpoints" / STATE_FOLDER, write)


def write_final_rows(out: Path, rows: list[dict]) -> None:
    """The metric rows of the last stretch (after the last checkpoint)."""
    _write_rows(out, "part-stream-final", rows)


def _write_rows(out: Path, part: str, rows: list[dict]) -> None:
    """Metric rows as one JSON-lines part of OUT/metrics/ (no polars on the stream path)."""
    if rows:
        text = "".join(json.dumps(row) + "\n" for row in rows)
        write_file_atomic(out / "metrics" / f"{part}.jsonl", lambda tmp: tmp.write_text(text))
