"""Reading the activation store: selection, the train/eval split by prompt, token streams.

A stream is a deterministic, resumable sequence of token batches (N, d). Maps are shuffled
per epoch, grouped into windows of about `buffer_tokens` tokens, and each window's tokens are
shuffled (the bounded shuffle buffer). Batches are consecutive chunks of that global token
sequence, so `start_batch=b` resumes exactly, and only one window is ever in memory: peak
memory depends on buffer_tokens and batch_size, never on the size of the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl
import torch
from safetensors import safe_open

from diffdict.dictionaries.base import TokenBatch  # noqa: F401  (importable from here too)
from diffdict.dictionaries.errors import InputError, MissingFileError
from diffdict.dictionaries.guarded_read import read_json, read_parquet, rebuild_index_fix, store_settings_fix
from diffdict.dictionaries.store import INDEX_FILE, META_FILE, SHARD_DIR, corrupt, tensor_crc32

SPLITS = ("train", "eval", "all")


def _rng(*parts: int) -> torch.Generator:
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + int(part) + 7919) % (2**62)
    return torch.Generator().manual_seed(seed)


def held_out_prompts(
    texts: Sequence[str], prompt_ids: Sequence[int] | None = None, eval_fraction: float = 0.1, split_seed: int = 0
) -> set[int]:
    """The held-out ids among prompts (`texts[i]` has id `prompt_ids[i]`, default i, ids ascending):
    a seeded choice over distinct texts, so that prompts sharing a text fall on the same side.

    The one split rule: a store's `eval_prompts` and a stream's training prompts both use it."""
    if not 0.0 <= eval_fraction < 1.0:
        raise InputError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    prompt_ids = list(range(len(texts))) if prompt_ids is None else list(prompt_ids)
    by_text: dict[str, list[int]] = {}
    for text, prompt_id in zip(texts, prompt_ids):
        by_text.setdefault(text, []).append(int(prompt_id))
    groups = list(by_text.values())  # in order of first appearance
    count = int(round(eval_fraction * len(groups)))
    if eval_fraction > 0 and len(groups) > 1:
        count = min(max(count, 1), len(groups) - 1)
    order = torch.randperm(len(groups), generator=_rng(split_seed, 17)).tolist()
    return {prompt_id for i in order[:count] for prompt_id in groups[i]}


MAP_KEY = ("model", "hook", "prompt_id", "seed", "step", "branch")
# The index columns every reader relies on (`positions` is absent from stores of older versions).
INDEX_REQUIRED = (*MAP_KEY, "prompt", "t", "shard", "offset", "h", "w", "d", "crc32")


def _refuse_duplicate_rows(index: pl.DataFrame, path: Path) -> None:
    """Each map is listed once: a repeated row would weigh some maps twice (and change FVU)."""
    for key in (MAP_KEY, ("shard", "offset", "hook")):
        repeated = index.filter(index.select(list(key)).is_duplicated())
        if repeated.height:
            first = repeated.row(0, named=True)
            extra = index.height - index.unique(subset=list(key)).height
            raise InputError(
                f"{path}: {extra} row(s) list a map a second time (e.g. "
                f"{', '.join(f'{k}={first[k]!r}' for k in key)}); the index is rebuilt from the shards: "
                f"delete {path} and run the same `diffdict harvest CONFIG` again"
            )


class ActivationStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path, index_path = self.root / META_FILE, self.root / INDEX_FILE
        if not meta_path.is_file():
            raise MissingFileError(
                f"{self.root} is not an activation store (no {META_FILE}); create one with `diffdict harvest CONFIG`"
            )
        if not index_path.is_file():
            raise MissingFileError(
                f"{self.root} has no {INDEX_FILE}: the harvest did not finish; "
                f"run the same `diffdict harvest CONFIG` again to resume it"
            )
        self.meta = read_json(meta_path, "a store's settings (store.json)", store_settings_fix(meta_path))
        self.index = read_parquet(
            index_path, "a store index", rebuild_index_fix(index_path), columns=INDEX_REQUIRED
        ).with_row_index("map_row")
        _refuse_duplicate_rows(self.index, index_path)

    @property
    def hooks(self) -> list[str]:
        return sorted(self.index["hook"].unique().to_list())

    def d(self, hook: str) -> int:
        rows = self.index.filter(pl.col("hook") == hook)
        if rows.is_empty():
            raise InputError(f"hook {hook!r} is not in the store {self.root}; stored hooks: {self.hooks}")
        return int(rows["d"][0])

    # --- selection ---
    def eval_prompts(self, eval_fraction: float = 0.1, split_seed: int = 0) -> set[int]:
        """The held-out prompt ids: a seeded choice over distinct prompt *texts*, never over tokens.

        Prompts that share a text (a prompt list with repeats, more toy prompts than the world has
        captions) fall on the same side, so no caption is both trained on and held out. With every
        text distinct this is the same choice as a split by prompt id."""
        pairs = self.index.select("prompt_id", "prompt").unique().sort("prompt_id")
        return held_out_prompts(pairs["prompt"].to_list(), pairs["prompt_id"].to_list(), eval_fraction, split_seed)

    def select(
        self,
        hook: str,
        model: str | None = None,
        branch: str | None = None,
        steps: Sequence[int] | None = None,
        t_range: tuple[float, float] | None = None,
        split: str = "all",
        eval_fraction: float = 0.1,
        split_seed: int = 0,
    ) -> pl.DataFrame:
        """Index rows for one hook, filtered; split is by prompt id."""
        self.d(hook)
        if split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {split!r}")
        rows = self.index.filter(pl.col("hook") == hook)
        if model is not None:
            rows = rows.filter(pl.col("model") == model)
        if branch is not None:
            rows = rows.filter(pl.col("branch") == branch)
        if steps is not None:
            rows = rows.filter(pl.col("step").is_in(list(steps)))
        if t_range is not None:
            rows = rows.filter(pl.col("t").is_between(t_range[0], t_range[1]))
        if split != "all":
            held_out = list(self.eval_prompts(eval_fraction, split_seed))
            keep = pl.col("prompt_id").is_in(held_out)
            rows = rows.filter(keep if split == "eval" else ~keep)
        if rows.is_empty():
            raise InputError(
                f"no maps in {self.root} match hook={hook!r} model={model!r} branch={branch!r} "
                f"steps={steps!r} t_range={t_range!r} split={split!r}"
            )
        return rows

    # --- reading ---
    def _shard(self, name: str) -> Path:
        return self.root / SHARD_DIR / f"{name}.safetensors"

    def read_maps(self, rows: pl.DataFrame) -> list[torch.Tensor]:
        """Each selected map as (h*w, d) float32, checksum-verified; shards opened once each."""
        out: list[torch.Tensor | None] = [None] * rows.height
        by_shard: dict[str, list[tuple[int, int, int]]] = {}
        for position, (shard, offset, crc) in enumerate(rows.select("shard", "offset", "crc32").iter_rows()):
            by_shard.setdefault(shard, []).append((position, offset, crc))
        for shard, wanted in by_shard.items():
            path = self._shard(shard)
            if not path.is_file():
                raise corrupt(path, "the file is missing but the index lists it")
            try:
                with safe_open(str(path), framework="pt") as handle:
                    for position, offset, crc in wanted:
                        value = handle.get_tensor(str(offset))
                        if tensor_crc32(value) != crc:
                            raise corrupt(path, f"map {offset} fails its CRC-32 check")
                        out[position] = value.reshape(-1, value.shape[-1]).float()
            except ValueError:
                raise
            except Exception as error:
                raise corrupt(path, f"cannot read ({error})") from error
        return out  # type: ignore[return-value]

    def tokens(self, rows: pl.DataFrame) -> torch.Tensor:
        """All tokens of the selected maps as one (T, d) tensor (small selections only)."""
        maps = self.read_maps(rows)
        return torch.cat(maps) if maps else torch.zeros(0, 0)

    # --- streaming ---
    def stream(
        self,
        hook: str,
        batch_size: int,
        buffer_tokens: int = 65536,
        seed: int = 0,
        epochs: int | None = 1,
        start_batch: int = 0,
        with_provenance: bool = False,
        **selection,
    ) -> Iterator[torch.Tensor | TokenBatch]:
        """Token batches (batch_size, d) of one hook; see the module docstring for the order.

        epochs=None cycles forever (each epoch reshuffled). The final partial batch of the
        whole stream is dropped so every batch has batch_size rows.
        """
        if batch_size < 1 or buffer_tokens < 1:
            raise InputError(f"batch_size and buffer_tokens must be >= 1, got {batch_size}, {buffer_tokens}")
        rows = self.select(hook, **selection)
        return self._stream_rows(rows, batch_size, buffer_tokens, seed, epochs, start_batch, with_provenance)

    def _windows(self, rows: pl.DataFrame, buffer_tokens: int, seed: int, epoch: int) -> list[pl.DataFrame]:
        order = torch.randperm(rows.height, generator=_rng(seed, epoch, 1)).tolist()
        shuffled = rows[order]
        sizes = (shuffled["h"] * shuffled["w"]).to_list()
        windows, start, total = [], 0, 0
        for i, size in enumerate(sizes):
            total += size
            if total >= buffer_tokens:
                windows.append(shuffled[start : i + 1])
                start, total = i + 1, 0
        if start < len(sizes):
            windows.append(shuffled[start:])
        return windows

    def _stream_rows(self, rows, batch_size, buffer_tokens, seed, epochs, start_batch, with_provenance):
        skip = start_batch * batch_size  # tokens to pass over before the first batch we yield
        carry_x: torch.Tensor | None = None
        carry_p: dict[str, torch.Tensor] | None = None
        epoch = 0
        while epochs is None or epoch < epochs:
            for w, window in enumerate(self._windows(rows, buffer_tokens, seed, epoch)):
                size = int((window["h"] * window["w"]).sum())
                if skip >= size:  # resuming: this window was consumed before; do not load it
                    skip -= size
                    continue
                maps = self.read_maps(window)
                x = torch.cat(maps)
                perm = torch.randperm(size, generator=_rng(seed, epoch, w, 2))[skip:]
                skip = 0
                x = x[perm]
                prov = self._provenance(window, maps, perm) if with_provenance else None
                if carry_x is not None:
                    x = torch.cat([carry_x, x])
                    if prov is not None:
                        assert carry_p is not None  # carried beside carry_x whenever provenance is read
                        prov = {k: torch.cat([carry_p[k], v]) for k, v in prov.items()}
                full = (x.shape[0] // batch_size) * batch_size
                for start in range(0, full, batch_size):
                    batch = x[start : start + batch_size]
                    if prov is None:
                        yield batch
                    else:
                        yield TokenBatch(batch, {k: v[start : start + batch_size] for k, v in prov.items()})
                carry_x = x[full:].clone()
                carry_p = {k: v[full:].clone() for k, v in prov.items()} if prov is not None else None
                del x, maps
            epoch += 1

    @staticmethod
    def _provenance(window: pl.DataFrame, maps: list[torch.Tensor], perm: torch.Tensor) -> dict[str, torch.Tensor]:
        counts = torch.tensor([m.shape[0] for m in maps])
        columns = {}
        for name in ("map_row", "prompt_id", "seed", "step"):
            columns[name] = torch.repeat_interleave(torch.tensor(window[name].to_list()), counts)[perm]
        # a map harvested with tokens_per_image lists its grid positions; a whole map is 0..h*w-1
        listed = window["positions"].to_list() if "positions" in window.columns else [None] * window.height
        columns["position"] = torch.cat(
            [
                torch.tensor(p, dtype=torch.long) if p is not None else torch.arange(int(c))
                for p, c in zip(listed, counts)
            ]
        )[perm]
        return columns
