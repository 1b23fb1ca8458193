"""One run of a study config: where its files live, and the harvest and fit stages.

Layout of a run folder (config `out`):
  stores/MODEL/            activation store per model entry (sharded safetensors + index)
  fits/GROUP/NAME/         trained dictionaries (GROUP = model, tokens and batch, or model-stream, and a
                           hash of what the group shares: store, prompts, training options; a changed
                           store trains a new GROUP). Each dictionary saves a hash of its own settings:
                           a changed n, k or option retrains that dictionary alone, never reuses the fit
  fits/GROUP/metrics.parquet  training and held-out metrics of that group
  tables/*.parquet         one tidy table per study; tables/inputs/STUDY.json what it was computed from
  plots/*.png              seaborn plots
  report.html              every table and plot, self-contained
  config.toml, run.json    a copy of the config the run was made with, and where it was read
                           from (so `diffdict atlas RUN_DIR` finds the config from the folder)

Every stage skips what is already complete, so rerunning a killed `diffdict run` resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from diffdict.dictionaries import registry

from .config import DictionaryEntry, StudyConfig
from .errors import MissingFileError, UserError
from .prompts import Prompt, study_prompts

DTYPE_NAMES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# The config's uniform `n` / `k` in each architecture's own words: each class's `size_keys`.
SIZE_KEYS = registry.SIZE_KEYS


class Run:
    def __init__(
        self,
        config: StudyConfig,
        device: str | None = None,
        progress: bool = True,
        force: bool = False,
        study_seed: int | None = None,
    ):
        self.config = config
        # Another prompt seed for the studies (the same stores and dictionaries): other selection and
        # scoring prompts, drawn from the same splits, and other noise. Tables go to seeds/SEED/.
        self.seed_override = study_seed
        self.device = device or config.device
        self.progress = progress
        self.force = force  # re-harvest stores harvested with other settings
        self.root = Path(config.out)
        self._adapters: dict[str, Any] = {}
        self._dictionaries: dict[str, Any] = {}
        self._stores: dict[str, Any] = {}  # opened once: every study reads the same index
        self.cache: dict[tuple, Any] = {}  # results studies share within a run (e.g. alignment data)

    # ---- paths -----------------------------------------------------------------------------
    def _inside(self, path: Path) -> Path:
        """Every path a run writes is inside its folder (names are validated; this is the backstop). Checked on
        the path as written, not resolved: a store or fits folder may be a symbolic link to another disk."""
        if not Path(os.path.normpath(path)).is_relative_to(Path(os.path.normpath(self.root))):
            raise UserError(f"{path} is outside the run folder {self.root}; names in the config must be plain names")
        return path

    def store_dir(self, model: str) -> Path:
        return self._inside(self.root / "stores" / model)

    def fit_settings(self, entry: DictionaryEntry) -> dict[str, Any]:
        """Every setting that shapes the fits of `entry`'s group (recorded as fits/GROUP/settings.json)."""
        model = self.config.model(entry.model)
        # What the group's dictionaries share; each dictionary's own settings are hashed apart
        # (dictionary_hash), so changing one retrains that one only.
        settings = {
            "source": self.config.train.source,
            "tokens": entry.tokens if not self.config.streams else None,
            "batch": entry.batch if not self.config.streams else None,
            "train": dataclasses.asdict(self.config.train),
            "seed": self.config.seed,
            "eval_fraction": self.config.prompts.eval_fraction,
            "model": dataclasses.asdict(model),
            "harvest": dataclasses.asdict(self.config.harvest),
            "hooks": self.config.hooks_of(entry.model),
            "prompts": dataclasses.asdict(self.config.prompts),
            "store": self.harvest_settings(entry.model),
        }  # with a hash of the prompt texts
        return json.loads(json.dumps(settings, sort_keys=True, default=str))

    def dictionary_hash(self, entry: DictionaryEntry) -> str:
        """A hash of one dictionary's own settings (architecture, hook, n, k, tokens, batch, branch, options),
        saved with its fit and its checkpoints: a fit or checkpoint of other settings is never read."""
        own = json.dumps(dataclasses.asdict(entry), sort_keys=True, default=str)
        return hashlib.sha256(own.encode()).hexdigest()[:8]

    def dictionary_spec(self, entry: DictionaryEntry):
        """The trainer's DictionarySpec of a config entry: its size keys filled from the uniform n and k."""
        from diffdict.dictionaries.train_common import DictionarySpec

        n_key, k_key = SIZE_KEYS[entry.architecture]
        return DictionarySpec(
            entry.name,
            entry.architecture,
            entry.hook,
            {n_key: entry.n, k_key: entry.k, **entry.options},
            branch=entry.branch,
            settings_hash=self.dictionary_hash(entry),
        )

    def fit_identity(self, entry: DictionaryEntry) -> str:
        """GROUP/NAME@HASH: everything that shaped a dictionary's fit (what studies' tables are keyed by)."""
        return f"{self.fit_group(entry)}/{entry.name}@{self.dictionary_hash(entry)}"

    def is_trained(self, entry: DictionaryEntry) -> bool:
        """Its final folder holds weights trained with its current settings."""
        folder = self.dictionary_dir(entry.name)
        if not ((folder / "config.json").exists() and (folder / "weights.safetensors").exists()):
            return False
        from diffdict.dictionaries.guarded_read import read_json

        saved = read_json(folder / "config.json", "a trained dictionary's config", f"delete {folder} to train it again")
        return (saved.get("meta") or {}).get("settings_hash") == self.dictionary_hash(entry)

    def fit_group(self, entry: DictionaryEntry) -> str:
        """model-tokens-batch-HASH (model-stream-HASH); HASH covers what the group shares (store, training
        options, seed, prompts), so a changed prompt list, harvest or training option trains a new group."""
        settings = self.fit_settings(entry)
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        if self.config.streams:
            return f"{entry.model}-stream-{digest}"
        return f"{entry.model}-{entry.tokens}-{entry.batch}-{digest}"

    def dictionary_dir(self, name: str) -> Path:
        entry = self.config.dictionary(name)
        return self._inside(self.root / "fits" / self.fit_group(entry) / name)

    @property
    def study_seed(self) -> int:
        """The seed every study generates with: `prompts.seeds[0]`, or the --seed given to `diffdict study`."""
        return self.seed_override if self.seed_override is not None else self.config.prompts.seeds[0]

    @property
    def results_root(self) -> Path:
        """Where tables and plots go: the run folder, or seeds/SEED/ inside it for another study seed."""
        return self.root if self.seed_override is None else self.root / "seeds" / str(self.seed_override)

    def table_path(self, name: str) -> Path:
        return self._inside(self.results_root / "tables" / f"{name}.parquet")

    def plot_path(self, name: str) -> Path:
        return self._inside(self.results_root / "plots" / f"{name}.png")

    def save_config_copy(self) -> None:
        """Keep the config beside the results: config.toml (its text) and run.json (its path), each written
        atomically (a run killed mid-write leaves the old copy, never half a config for `atlas` to read)."""
        from diffdict.dictionaries.atomic import write_file_atomic

        path = self.config.path
        if path is None or not Path(path).exists():
            return
        text = Path(path).read_text()
        record = json.dumps({"config": str(Path(path).resolve())}, indent=2) + "\n"
        write_file_atomic(self.root / "config.toml", lambda tmp: tmp.write_text(text))
        write_file_atomic(self.root / "run.json", lambda tmp: tmp.write_text(record))

    # ---- shared objects ----------------------------------------------------------------------
    @cached_property
    def prompts(self) -> list[Prompt]:
        return study_prompts(self.config.prompts, self.config.path, cache=self.root)

    def adapter(self, model: str):
        """The loaded adapter of a model entry (loaded once per run)."""
        if model not in self._adapters:
            from diffdict import adapters

            entry = self.config.model(model)
            dtype = DTYPE_NAMES[entry.dtype] if entry.dtype else None
            self._adapters[model] = adapters.load(entry.id, device=self.device, dtype=dtype, quantize=entry.quantize)
        return self._adapters[model]

    def generate(self, model: str, prompts: list[str], seeds: list[int], **kwargs):
        """Generate with the model entry's steps, guidance and size."""
        entry = self.config.model(model)
        return self.adapter(model).generate(
            prompts,
            seeds=seeds,
            steps=entry.steps,
            guidance=entry.guidance,
            height=entry.height,
            width=entry.width,
            **kwargs,
        )

    @cached_property
    def clip(self):
        from diffdict.analysis.clip_score import ClipScorer

        if self.config.clip_model == "random":
            return ClipScorer.random()
        name, _, pretrained = self.config.clip_model.partition(":")
        return ClipScorer.pretrained(name, pretrained or None, device=str(self.device or "cpu"))

    @property
    def stored_texts(self) -> list[str]:
        """The prompts the stores keep: the first harvest.prompts of the prompt list (ids 0, 1, ...)."""
        texts = [p.text for p in self.prompts]
        return texts[: self.config.stored_prompt_count(len(texts))]

    def harvest_keep(self):
        """What a store keeps of each generation (harvest.steps, branches, tokens_per_image)."""
        from diffdict.dictionaries.jobs import Selection

        section = self.config.harvest
        return Selection(
            steps=tuple(section.steps) if section.steps is not None else None,
            branches=tuple(section.branches) if section.branches is not None else None,
            tokens_per_image=section.tokens_per_image,
        )

    def harvest_settings(self, model: str) -> dict:
        """The settings a harvest of this model entry records in its store (see dictionaries.harvest)."""
        from diffdict.dictionaries.harvest import harvest_settings

        entry, section = self.config.model(model), self.config.harvest
        return harvest_settings(
            self.stored_texts,
            self.config.prompts.seeds,
            self.config.hooks_of(model),
            section.batch_size,
            section.capture,
            entry.steps,
            entry.guidance,
            entry.height,
            entry.width,
            self.harvest_keep(),
        )

    def store(self, model: str):
        if model not in self._stores:
            from diffdict.dictionaries.store import changed_settings
            from diffdict.dictionaries.store_reader import ActivationStore

            store = ActivationStore(self.store_dir(model))
            recorded = store.meta.get("settings") or {}
            wanted = {
                "model": self.config.model(model).id,
                "dtype": self.config.harvest.dtype,
                "settings": {k: v for k, v in self.harvest_settings(model).items() if k in recorded},
            }
            # Only a store `diffdict harvest` made is compared (an imported or synthetic one has no harvest
            # settings), and only on the settings it recorded (an older store has no prompt hash).
            changed = changed_settings(store.meta, wanted) if "hooks" in recorded else ""
            if changed:  # studies never read maps of other settings than the config's
                raise UserError(
                    f"{store.root} was harvested with other settings than the config's ({changed}); "
                    f"run `diffdict harvest {self.config.path} --force` to harvest it again "
                    f"(or `diffdict run ... --force`)"
                )
            self._stores[model] = store
        return self._stores[model]

    def dictionary(self, name: str):
        if name not in self._dictionaries:
            from diffdict.dictionaries.base import load

            folder = self.dictionary_dir(name)
            if not (folder / "config.json").exists():
                raise MissingFileError(f"dictionary {name!r} is not trained yet ({folder}); run `diffdict train` first")
            if (folder / "weights.safetensors").exists() and not self.is_trained(self.config.dictionary(name)):
                raise MissingFileError(
                    f"dictionary {name!r} at {folder} was trained with other settings than the "
                    f"config's (n, k, options, tokens, ...); it is not trained yet with these: run "
                    f"`diffdict train` first (it retrains this dictionary only)"
                )
            # On the device the run generates on, so interventions encode next to the model.
            self._dictionaries[name] = load(folder, device=self.adapter_device())
        return self._dictionaries[name]

    def model_dtypes(self) -> dict[str, str]:
        """Each model entry's dtype: as loaded in this run, else as configured ("default": the adapter's
        default for the device, fp16 / bf16 on CUDA, fp32 elsewhere)."""
        dtypes = {}
        for entry in self.config.models:
            pipe = getattr(self._adapters.get(entry.name), "pipe", None)
            loaded = getattr(pipe, "dtype", None)
            dtypes[entry.name] = str(loaded).removeprefix("torch.") if loaded is not None else entry.dtype or "default"
        return dtypes

    def adapter_device(self) -> torch.device:
        """The device models run on in this run: the configured one, else CUDA when available."""
        from diffdict.adapters import default_device

        return default_device(self.device)

    def eval_prompt_ids(self, model: str) -> list[int]:
        store = self.store(model)
        return sorted(store.eval_prompts(self.config.prompts.eval_fraction, split_seed=self.config.seed))

    # ---- stages --------------------------------------------------------------------------------
    def models_to_harvest(self) -> list[str]:
        return self.config.harvested_models()

    def harvest(self) -> dict[str, Any]:
        """Fill (or resume) the store of every model the studies read; returns the stores."""
        from diffdict.dictionaries import distributed
        from diffdict.dictionaries.harvest import harvest

        distributed.world()  # under torchrun: join the group and pin this rank's GPU before a model loads
        section = self.config.harvest
        texts = self.stored_texts
        stores = {}
        for model in self.models_to_harvest():
            entry = self.config.model(model)
            stores[model] = harvest(
                self.adapter(model),
                texts,
                self.config.prompts.seeds,
                self.config.hooks_of(model),
                self.store_dir(model),
                dtype=section.dtype,
                batch_size=section.batch_size,
                capture=section.capture,
                steps=entry.steps,
                guidance=entry.guidance,
                height=entry.height,
                width=entry.width,
                progress=self.progress,
                replace=self.force,
                keep=self.harvest_keep(),
            )
        self._stores.update(stores)
        return stores

    def train(self) -> None:
        """Train every dictionary not trained yet; those sharing model, tokens and batch share a stream."""
        from diffdict.dictionaries.atomic import write_json_atomic
        from diffdict.dictionaries.train import TrainSettings, forget, train

        groups: dict[str, list[DictionaryEntry]] = {}
        for entry in self.config.dictionaries:
            folder = self.dictionary_dir(entry.name)
            # Trained = both files there, made with its current settings; a folder that lost its weights is
            # trained again (from the last checkpoint), so the advice "retrain it" in the load errors works.
            if not self.is_trained(entry):
                if (folder / "config.json").exists():  # trained with other settings: its outputs go first
                    forget(folder.parent, entry.name)
                groups.setdefault(self.fit_group(entry), []).append(entry)
            else:
                _reassemble_metrics(folder.parent)
        if self.config.streams:
            from .streaming import train_from_stream

            for group, entries in groups.items():
                write_json_atomic(self.root / "fits" / group / "settings.json", self.fit_settings(entries[0]))
                train_from_stream(self, entries, self.root / "fits" / group)
            return
        for group, entries in groups.items():
            first = entries[0]
            specs = [self.dictionary_spec(entry) for entry in entries]
            write_json_atomic(self.root / "fits" / group / "settings.json", self.fit_settings(first))
            options = self.config.train
            settings = TrainSettings(
                tokens=first.tokens,
                batch_size=first.batch,
                seed=self.config.seed,
                eval_fraction=self.config.prompts.eval_fraction,
                checkpoint_every=options.checkpoint_every or max(1, first.tokens // first.batch // 10),
                buffer_tokens=options.buffer_tokens,
                eval_tokens=options.eval_tokens,
                init_tokens=options.init_tokens,
            )
            train(
                self.store(first.model),
                specs,
                settings,
                self.root / "fits" / group,
                progress=self.progress,
                device=self.adapter_device(),
            )

    def fit_metrics(self, name: str):
        """The metrics table of `name`'s fit group (fits/GROUP/metrics.parquet), or None before training ends."""
        from diffdict.dictionaries.guarded_read import metrics_fix, read_parquet

        path = self.dictionary_dir(name).parent / "metrics.parquet"
        if not path.exists():
            return None
        return read_parquet(path, "a fit's metrics table", metrics_fix(path), columns=("name", "kind", "step"))

    def held_out_metrics(self, name: str) -> dict[str, float] | None:
        """The held-out evaluation written at the end of a dictionary's training."""
        import polars as pl

        metrics = self.fit_metrics(name)
        if metrics is None:
            return None
        rows = metrics.filter((pl.col("kind") == "eval") & (pl.col("name") == name))
        return rows.row(-1, named=True) if rows.height else None

    def fit_seconds(self, name: str) -> float:
        """Compute time the training spent on this dictionary (its own steps, not its group's)."""
        return float(self.dictionary(name).meta.get("fit_seconds", float("nan")))


def _reassemble_metrics(group: Path) -> None:
    """A trained group whose metrics.parquet was deleted (the fix for a damaged one) gets it back from the
    parts under metrics/, which training keeps; nothing is trained again."""
    if (group / "metrics.parquet").exists() or not (group / "metrics").is_dir():
        return
    from diffdict.dictionaries.train import _assemble_metrics

    _assemble_metrics(group)
    print(f"note: rebuilt {group / 'metrics.parquet'} from {group / 'metrics'}")


def load_run_dir(
    run_dir: str | Path, config: str | Path | None = None, device: str | None = None, progress: bool = True
) -> Run:
    """The Run behind a run folder: `config` when given, else the copy the run stored
    (RUN_DIR/config.toml, relative paths in it resolved against the original config's folder
    recorded in RUN_DIR/run.json). Outputs stay in RUN_DIR even if the config names another `out`."""
    from diffdict.dictionaries.guarded_read import read_toml

    from .config import ConfigError, load_config, parse_config

    run_dir = Path(run_dir)
    if config is not None:
        study = load_config(config)
    else:
        copy = run_dir / "config.toml"
        if not copy.exists():
            raise ConfigError(
                f"{run_dir} holds no config.toml (runs store one since `diffdict run` writes it); "
                "pass the run's config with --config"
            )
        original = _original_config(run_dir)
        table = read_toml(
            copy,
            "the run's copy of its config (TOML)",
            f"pass the run's config with --config CONFIG ({original} made this run"
            f"{'' if original.exists() else ', but it no longer exists'}); "
            f"the next `diffdict study` or `report` of that config writes the copy again",
        )
        study = parse_config(table, source=str(copy), path=original)
    study.out = str(run_dir)
    return Run(study, device=device, progress=progress)


def _original_config(run_dir: Path) -> Path:
    """The config a run was made with, as RUN/run.json records it (the copy itself for runs without one)."""
    from diffdict.dictionaries.guarded_read import read_json

    record, copy = run_dir / "run.json", run_dir / "config.toml"
    if not record.exists():
        return copy
    fix = (
        f"delete {record} (relative paths in {copy} are then read from {run_dir}) or pass the run's config "
        f"with --config CONFIG; the next `diffdict study` or `report` writes it again"
    )
    recorded = read_json(record, "the run's record of its config (run.json)", fix).get("config")
    if not isinstance(recorded, str):
        from diffdict.dictionaries.guarded_read import damaged

        raise damaged(record, "the run's record of its config (run.json)", "no 'config' path in it", fix)
    return Path(recorded)
