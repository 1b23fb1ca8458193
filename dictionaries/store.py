"""The activation store on disk: sharded safetensors plus a parquet index, written atomically.

Layout of a store folder:
  store.json           model, dtype, harvest settings, format version
  shards/NAME.safetensors   one per harvest job; tensor "<offset>" is one map (h, w, d); the
                       header metadata carries that shard's index rows (so a shard is the
                       unit of commit: it exists completely or not at all)
  index.parquet        one row per map (INDEX_COLUMNS), rebuilt from the shard headers
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from diffdict.dictionaries.atomic import remove_stale_temps, write_file_atomic, write_json_atomic
from diffdict.dictionaries.errors import DiskFullError, InputError, MissingFileError
from diffdict.dictionaries.jobs import MapRecord  # noqa: F401  (importable from here too)

FORMAT_VERSION = 1
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
INDEX_COLUMNS = {
    "model": pl.Utf8,
    "hook": pl.Utf8,
    "prompt_id": pl.Int64,
    "prompt": pl.Utf8,
    "seed": pl.Int64,
    "step": pl.Int64,
    "timestep": pl.Float64,
    "t": pl.Float64,
    "branch": pl.Utf8,
    "shard": pl.Utf8,
    "offset": pl.Int64,
    "shape": pl.List(pl.Int64),
    "h": pl.Int64,
    "w": pl.Int64,
    "d": pl.Int64,
    "crc32": pl.Int64,
    # grid positions (row-major, h * w grid) of a map harvested with tokens_per_image; null for whole maps
    "positions": pl.List(pl.Int64),
}
SHARD_DIR = "shards"
INDEX_FILE = "index.parquet"
META_FILE = "store.json"


class CorruptShardError(ValueError):
    """A shard is truncated, unreadable or fails its checksum. Never skipped silently."""

    user_facing = True


def corrupt(shard: Path, why: str) -> CorruptShardError:
    return CorruptShardError(
        f"corrupt activation shard {shard}: {why}. Delete this file and run the same "
        f"`diffdict harvest CONFIG` again: it re-creates only the missing shards"
    )


def tensor_crc32(tensor: torch.Tensor) -> int:
    """CRC-32 of a tensor's raw bytes (works for fp16/bf16 through an integer view)."""
    raw = tensor.contiguous().view(torch.uint8) if tensor.dtype != torch.uint8 else tensor.contiguous()
    return zlib.crc32(raw.numpy().data)


def read_shard_rows(shard: Path) -> list[dict[str, Any]]:
    """The index rows stored in a shard's header; raises CorruptShardError if unreadable."""
    try:
        with safe_open(str(shard), framework="pt") as handle:
            metadata = handle.metadata() or {}
            keys = set(handle.keys())
    except Exception as error:  # safetensors raises its own error types for truncation
        raise corrupt(shard, f"cannot read header ({error})") from error
    if "index" not in metadata:
        raise corrupt(shard, "header has no index rows")
    try:
        rows = json.loads(metadata["index"])
    except ValueError as error:
        raise corrupt(shard, f"its header's index rows are not JSON ({error})") from None
    missing = [row["offset"] for row in rows if str(row["offset"]) not in keys]
    if missing:
        raise corrupt(shard, f"maps {missing[:5]} listed in the header are missing")
    return rows


class StoreWriter:
    """Writes shards atomically and rebuilds the index; resuming skips finished shards."""

    def __init__(
        self,
        root: str | Path,
        model: str,
        dtype: str = "fp16",
        settings: dict | None = None,
        primary: bool = True,
        replace: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        """primary=False: a second writer of the same harvest (another rank). It neither deletes
        temporaries (they may be a live rank's shard in flight) nor creates store.json.

        A store records the settings that produced it (store.json). Opened with other settings, a
        store that holds no shard yet (a harvest that failed before its first batch) starts afresh
        with a note; one that holds shards is refused with the fix, or with `replace` deleted and
        started afresh: maps of two settings are never mixed."""
        if dtype not in DTYPES:
            raise InputError(f"store dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.root = Path(root)
        self.model = model
        self.dtype = dtype
        self.shard_dir = self.root / SHARD_DIR
        meta = {"format_version": FORMAT_VERSION, "model": model, "dtype": dtype, "settings": settings or {}}
        meta_path = self.root / META_FILE
        if primary:
            self.shard_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.shard_dir)  # half-written shards of a killed run
            remove_stale_temps(self.root)
        elif not meta_path.exists():
            raise MissingFileError(f"{meta_path} is missing: the primary writer (rank 0) creates it first")
        if meta_path.exists():
            existing = self._recorded_settings(meta_path, primary, replace)
            # damaged with no shard to lose (or --force): the same as a store of other settings
            changed = changed_settings(existing, meta) if existing is not None else f"{META_FILE} damaged"
            if changed and primary:
                shards = sorted(self.shard_dir.glob("*.safetensors"))
                if shards and not replace:
                    raise InputError(
                        f"{self.root} holds {len(shards)} shard(s) harvested with other settings ({changed}); maps "
                        f"of two settings are never mixed. Run the same command with --force to delete that store "
                        f"and harvest it again, or delete {self.root} yourself, or choose a new `out`"
                    )
                reason = (
                    f"was harvested with other settings ({changed})"
                    if existing is not None
                    else f"has a damaged {META_FILE}"
                )
                log(
                    f"note: {self.root} {reason}; "
                    f"{'deleting its ' + str(len(shards)) + ' shard(s) and ' if shards else ''}starting a fresh store"
                )
                for item in [*shards, self.root / INDEX_FILE, *self.root.glob("stats.*")]:
                    item.unlink(missing_ok=True)
                write_json_atomic(meta_path, meta)
            elif changed:
                raise InputError(
                    f"{self.root} was harvested with other settings ({changed}); the primary writer "
                    f"(rank 0) should have replaced it"
                )
        else:
            write_json_atomic(meta_path, meta)

    def _recorded_settings(self, meta_path: Path, primary: bool, replace: bool) -> dict | None:
        """What store.json records, or None when it is damaged and the store holds no shard (or `replace`).
        Damaged beside shards, it is refused: calling it "other settings" would advise --force, which deletes
        shards that may well be good."""
        from diffdict.dictionaries.guarded_read import read_json

        shards = sorted(self.shard_dir.glob("*.safetensors"))
        fix = (
            f"the settings its {len(shards)} shard(s) were harvested with cannot be checked against the config. "
            f"If they were harvested with this config, delete {meta_path} and run the same `diffdict harvest "
            f"CONFIG` again: it records the settings anew and keeps the shards (and their maps); if not, run it "
            f"with --force, which deletes that store and harvests it again"
        )
        try:
            return read_json(meta_path, "a store's settings (store.json)", fix)
        except InputError:
            if not primary or (shards and not replace):
                raise
            return None

    def shard_path(self, name: str) -> Path:
        return self.shard_dir / f"{name}.safetensors"

    def has_shard(self, name: str) -> bool:
        return self.shard_path(name).is_file()

    def write_shard(self, name: str, records: list[MapRecord]) -> Path:
        """Write all maps of one job as one shard; the rename is the commit point."""
        dtype = DTYPES[self.dtype]
        tensors, rows = {}, []
        for offset, record in enumerate(records):
            value = record.value.detach().to("cpu", dtype).contiguous()
            if value.dim() != 3:
                raise InputError(f"a map must be (h, w, d), got {tuple(value.shape)} for {record.fields}")
            tensors[str(offset)] = value
            h, w, d = value.shape
            rows.append(
                {
                    **record.fields,
                    "model": self.model,
                    "shard": name,
                    "offset": offset,
                    "shape": [h, w, d],
                    "h": h,
                    "w": w,
                    "d": d,
                    "crc32": tensor_crc32(value),
                }
            )
        metadata = {"index": json.dumps(rows), "format_version": str(FORMAT_VERSION)}
        try:  # safetensors' own error for a full disk is mapped to DiskFullError by write_file_atomic
            return write_file_atomic(self.shard_path(name), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        except DiskFullError as error:
            size = sum(t.numel() * t.element_size() for t in tensors.values())
            raise DiskFullError(
                error.errno,
                f"no space left to write shard {self.shard_path(name)} (about "
                f"{size / 1e6:.1f} MB); the shards already written are kept: free space on that "
                f"disk (or choose another `out`) and run the same command again to resume",
                str(self.shard_path(name)),
            ) from error.__cause__

    def finalize(self) -> pl.DataFrame:
        """Rebuild index.parquet from every shard header (reads headers only)."""
        rows: list[dict] = []
        for shard in sorted(self.shard_dir.glob("*.safetensors")):
            rows.extend(read_shard_rows(shard))
        index = rows_to_frame(rows)
        write_file_atomic(self.root / INDEX_FILE, lambda tmp: index.write_parquet(tmp))
        return index


def changed_settings(existing: dict, wanted: dict) -> str:
    """'key: old -> new' for every harvest setting that differs ('' when none)."""
    old = {"model": existing.get("model"), "dtype": existing.get("dtype"), **(existing.get("settings") or {})}
    new = {"model": wanted["model"], "dtype": wanted["dtype"], **wanted["settings"]}
    return ", ".join(
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    )


def rows_to_frame(rows: list[dict]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema=INDEX_COLUMNS) if rows else pl.DataFrame(schema=INDEX_COLUMNS)
    return frame.sort(["shard", "offset"])
