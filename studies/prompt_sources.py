"""Captions from tables: local .parquet / .jsonl / .csv files (read with polars) and Hugging Face
datasets (through `datasets`, streamed by default, so a 1.5M-caption protocol starts at once).

Every source gives the same thing: up to `count` non-empty captions of one column, the first
ones or, with `shuffle`, those after a seeded shuffle. Hub datasets are remembered in the run
folder (prompts.parquet), so every stage and every resume of a run reads the same captions
even if the dataset changes on the Hub meanwhile.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import polars as pl

from .config import TABLE_SUFFIXES, PromptsSection, resolve_relative
from .errors import UserError

CACHE_FILE = "prompts.parquet"
CACHE_KEY_FILE = "prompts.json"


def table_columns(file: Path) -> list[str]:
    """The column names of a local table, read from its schema (no full read)."""
    return _scan(file).collect_schema().names()


def check_caption_column(file: Path, column: str, where: str = "prompts.column") -> None:
    """The caption column holds text (schema only, no full read). Read as text, a column of integers would
    quietly become the prompts '0', '1', ...; a missing column is reported where the columns are listed."""
    schema = _scan(file).collect_schema()
    if column not in schema or _is_text(schema[column]):
        return
    texts = [name for name, dtype in schema.items() if _is_text(dtype)]
    hint = f"its text columns: {', '.join(texts)}" if texts else f"{file.name} has no text column"
    raise UserError(f"{where}: column {column!r} of {file} holds {_describe_dtype(schema[column])}, not text; every "
                    f"caption must be a string: give a column of caption text ({hint}), or write the captions "
                    f"as strings")


def _is_text(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))


def _describe_dtype(dtype: pl.DataType) -> str:
    if dtype == pl.Null:
        return "only nulls"
    if dtype.is_integer():
        kind = "integers"
    elif dtype.is_float() or dtype.is_decimal():
        kind = "numbers"
    elif dtype == pl.Boolean:
        kind = "true/false values"
    elif isinstance(dtype, (pl.List, pl.Array)):
        kind = "lists"
    elif isinstance(dtype, pl.Struct):
        kind = "objects"
    else:
        kind = "values"
    return f"{kind} ({dtype})"


def _scan(file: Path) -> pl.LazyFrame:
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        return pl.scan_parquet(file)
    if suffix == ".jsonl":
        return pl.scan_ndjson(file)
    if suffix == ".csv":
        return pl.scan_csv(file)
    raise UserError(f"{file}: expected a .parquet, .jsonl or .csv file")


def read_table(file: Path, column: str, count: int, shuffle: bool = False, seed: int = 0) -> list[str]:
    """Up to `count` non-empty captions of `column` in a local table (after a seeded shuffle if asked)."""
    names = table_columns(file)
    if column not in names:
        raise UserError(f"{file} has no column {column!r}; columns: {', '.join(names)}")
    check_caption_column(file, column)
    values = _scan(file).select(pl.col(column).cast(pl.String)).collect().to_series()
    values = values.drop_nulls().str.strip_chars()
    values = values.filter(values.str.len_chars() > 0)
    if shuffle:
        values = values.shuffle(seed=seed)
    return values.head(count).to_list()


def is_local_table(file: str, config_path: Path | None) -> bool:
    return resolve_relative(file, config_path).suffix.lower() in TABLE_SUFFIXES


def dataset_captions(section: PromptsSection, config_path: Path | None = None, cache: Path | None = None) -> list[str]:
    """The captions of a `source = "dataset"` section: a local table, a local dataset folder, or a Hub id.

    cache: a folder (the run's) where the captions of a Hub dataset are kept once read.
    """
    assert section.dataset and section.column  # the config's validation guarantees both
    local = resolve_relative(section.dataset, config_path)
    if local.is_file():
        return read_table(local, section.column, section.count, section.shuffle, section.shuffle_seed)
    name = str(local) if local.exists() else section.dataset
    if cache is None or local.exists():
        return _load_dataset(name, section)
    key = _cache_key(section)
    texts_file, key_file = cache / CACHE_FILE, cache / CACHE_KEY_FILE
    if texts_file.exists() and key_file.exists() and json.loads(key_file.read_text()) == key:
        return pl.read_parquet(texts_file)["text"].to_list()
    texts = _load_dataset(name, section)
    from diffdict.dictionaries.atomic import write_file_atomic, write_json_atomic

    write_file_atomic(texts_file, lambda tmp: pl.DataFrame({"text": texts}, schema={"text": pl.String}).write_parquet(tmp))
    write_json_atomic(key_file, key)
    return texts


def _cache_key(section: PromptsSection) -> dict:
    names = ("dataset", "config", "split", "column", "count", "shuffle", "shuffle_seed", "shuffle_buffer", "streaming")
    return {name: getattr(section, name) for name in names}


def _load_dataset(name: str, section: PromptsSection) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise UserError("prompts.source = 'dataset' needs the `datasets` package: pip install datasets") from None
    rows = datasets.load_dataset(name, section.config, split=section.split, streaming=section.streaming)
    columns = rows.column_names
    if columns is not None and section.column not in columns:
        raise UserError(f"dataset {section.dataset!r} (split {section.split!r}) has no column {section.column!r}; "
                         f"columns: {', '.join(columns)}")
    if columns is not None:  # a streamed dataset may not know its columns before the first row
        rows = rows.select_columns([section.column])
    if section.shuffle:
        rows = (rows.shuffle(seed=section.shuffle_seed, buffer_size=section.shuffle_buffer) if section.streaming
                else rows.shuffle(seed=section.shuffle_seed))
    return _first_captions(iter(rows), section.count, name, section.column)


def _first_captions(rows: Iterable[dict], count: int, name: str, column: str) -> list[str]:
    texts: list[str] = []
    for row in rows:
        if column not in row:
            raise UserError(f"dataset {name!r} has no column {column!r}; columns: {', '.join(row)}")
        value = row[column]
        if isinstance(value, str) and value.strip():
            texts.append(value.strip())
            if len(texts) == count:
                break
    if not texts:
        raise UserError(f"dataset {name!r} has no non-empty captions in column {column!r}")
    return texts


def describe(section: PromptsSection, config_path: Path | None = None) -> str:
    """One line for `diffdict check`: where the captions come from, without downloading anything. A local
    table's caption column must hold text (UserError otherwise: `check` and every stage call this)."""
    order = f"{section.count:,} after a shuffle (seed {section.shuffle_seed})" if section.shuffle else f"first {section.count:,}"
    key = f"{config_path or '<config>'}: prompts.column"
    if section.source == "dataset":
        local = resolve_relative(section.dataset or "", config_path)
        where = f"column {section.column!r}, {order}"
        if local.is_file():
            check_caption_column(local, section.column or "", key)
            return f"prompts: {local} ({where}); the file's schema was checked"
        if local.exists():
            return f"prompts: local dataset folder {local} (split {section.split!r}, {where}); read at run time"
        subset = f", config {section.config!r}" if section.config else ""
        mode = "streamed" if section.streaming else "downloaded"
        return (f"prompts: Hugging Face dataset {section.dataset!r} (split {section.split!r}{subset}, {where}): "
                f"not downloaded now; it will be {mode} at run time and kept in the run folder ({CACHE_FILE})")
    if section.source == "file":
        column = f", column {section.column!r}" if is_local_table(section.file or "", config_path) else ""
        if column:
            check_caption_column(resolve_relative(section.file or "", config_path), section.column or "", key)
        return f"prompts: file {resolve_relative(section.file or '', config_path)}{column} ({order if column else f'first {section.count:,}'})"
    return f"prompts: {section.source} ({section.count:,})"
