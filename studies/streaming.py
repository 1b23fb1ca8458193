"""train.source = "stream": a run's dictionaries trained from generation instead of from a store.

The stream generates the training prompts: every prompt whose text is not held out by the store's
split (the store keeps the first harvest.prompts prompts; eval_fraction of them are held out for the
studies and the held-out evaluation, and no prompt with one of those texts is ever trained on).
Jobs are numbered as in harvest (seed-major, then chunks of harvest.batch_size prompts); one
generation feeds every dictionary of the model (see dictionaries/stream.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from diffdict.dictionaries.jobs import Job, Selection, job_records, plan_prompt_jobs
from diffdict.dictionaries.store_reader import held_out_prompts

from .config import DictionaryEntry


def training_prompt_ids(texts: list[str], stored: int, eval_fraction: float, split_seed: int) -> list[int]:
    """Ids of the prompts a stream trains on: all but those sharing a text with a held-out stored prompt."""
    held_out = held_out_prompts(texts[:stored], None, eval_fraction, split_seed)
    held_texts = {texts[i] for i in held_out}
    return [i for i, text in enumerate(texts) if text not in held_texts]


def stream_plan(run) -> list[Job]:
    """The jobs of one pass over the training prompts (the same for every model of the run)."""
    texts = [p.text for p in run.prompts]
    ids = training_prompt_ids(texts, len(run.stored_texts), run.config.prompts.eval_fraction, run.config.seed)
    return plan_prompt_jobs(ids, run.config.prompts.seeds, run.config.harvest.batch_size)


def tokens_per_image(run, model: str, hook: str) -> int:
    """Tokens one image gives a dictionary of `hook`: grid cells x denoising steps (one branch)."""
    entry, adapter = run.config.model(model), run.adapter(model)
    height, width = entry.height or adapter.defaults.height, entry.width or adapter.defaults.width
    h, w = adapter.hook_point(hook).grid(height, width)
    return h * w * (entry.steps or adapter.defaults.steps)


def stream_source(run, model: str, entries: list[DictionaryEntry]):
    """The StreamSource of one model: its training jobs, one generate call per job, the window size."""
    from diffdict.dictionaries.stream import StreamSource, window_jobs_for

    hooks = list(dict.fromkeys(e.hook for e in entries))
    texts = [p.text for p in run.prompts]
    adapter = run.adapter(model)
    keep = Selection(branches=tuple(sorted({e.branch for e in entries})))
    hook_d = {hook: adapter.hook_point(hook).d for hook in hooks}

    def generate(job: Job):
        generation = run.generate(
            model,
            [texts[i] for i in job.prompt_ids],
            seeds=[job.seed] * len(job.prompt_ids),
            hooks=hooks,
            capture=run.config.harvest.capture,
        )
        return job_records(generation, job, texts, hook_d, keep)

    largest = max(tokens_per_image(run, model, hook) for hook in hooks)
    window = window_jobs_for(run.config.train.buffer_tokens, largest, run.config.harvest.batch_size)
    return StreamSource(jobs=stream_plan(run), generate=generate, hook_d=hook_d, window_jobs=window)


def train_from_stream(
    run, entries: list[DictionaryEntry], out: Path, on_window: Callable[[int], None] | None = None
) -> None:
    """Train every dictionary of one model from its stream into `out` (fits/GROUP), evaluated on the store's
    held-out prompts."""
    from diffdict.dictionaries.stream import StreamedDictionary
    from diffdict.dictionaries.train import TrainSettings
    from diffdict.dictionaries.train import train_from_stream as train_dictionaries

    model = entries[0].model
    streamed = [StreamedDictionary(run.dictionary_spec(entry), entry.tokens, entry.batch) for entry in entries]
    options = run.config.train
    most_steps = max(e.total_steps for e in streamed)
    settings = TrainSettings(
        tokens=max(e.tokens for e in entries),
        batch_size=min(e.batch for e in entries),
        seed=run.config.seed,
        eval_fraction=run.config.prompts.eval_fraction,
        checkpoint_every=options.checkpoint_every or max(1, most_steps // 10),
        buffer_tokens=options.buffer_tokens,
        eval_tokens=options.eval_tokens,
        init_tokens=options.init_tokens,
    )
    train_dictionaries(
        stream_source(run, model, entries),
        streamed,
        settings,
        out,
        eval_store=run.store(model),
        progress=run.progress,
        device=run.adapter_device(),
        on_window=on_window,
    )
