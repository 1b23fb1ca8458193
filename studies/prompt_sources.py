"""Captions from tables: local .parquet / .jsonl / .csv files (read with polars) and Hugging Face
datasets (through `datasets`, streamed by default, so a 1.5M-caption protocol starts at once).

Every source gives the same thing: up to `count` non-empty captions of one column, the first
ones or, with `shuffle`, those after a seeded shuffle. Before any model loads, a source is read far
enough to know it will give them (`summarize_table`, `check_dataset_folder`, `probe_hub_dataset`):
a table polars cannot read, one without a non-blank caption, a folder with only a loading script
are refused naming the file and column. Hub datasets are remembered in the run
folder (prompts.parquet), so every stage and every resume of a run reads the same captions
even if the dataset changes on the Hub meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

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
    problem = _caption_type_problem(file, column)
    if problem:
        raise UserError(f"{where}: {problem}")


def _caption_type_problem(file: Path, column: str) -> str | None:
    schema = _scan(file).collect_schema()
    if column not in schema or _is_text(schema[column]):
        return None
    texts = [name for name, dtype in schema.items() if _is_text(dtype)]
    hint = f"its text columns: {', '.join(texts)}" if texts else f"{file.name} has no text column"
    return (
        f"column {column!r} of {file} holds {_describe_dtype(schema[column])}, not text; every caption must be "
        f"a string: give a column of caption text ({hint}), or write the captions as strings"
    )


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


class SourceError(UserError):
    """A prompt source that cannot give captions. `about` is what the fix concerns: "file" (unreadable,
    empty: the config's file key) or "column" (blank, one caption: prompts.column)."""

    def __init__(self, message: str, about: str = "file") -> None:
        super().__init__(message)
        self.about = about


@dataclass(frozen=True)
class TableSummary:
    """What `check` learns of a local table by reading its caption column once."""

    rows: int
    non_blank: int
    distinct: int  # among the captions the run uses (the first `count`, or all of them with a shuffle)


def _caption(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).str.strip_chars()


def summarize_table(file: Path, column: str, count: int, shuffle: bool = False) -> TableSummary:
    """Read a local table far enough to know it will give captions: every row parsed (a csv's encoding and
    its rows' field counts, a jsonl's every line), rows, non-blank captions, distinct captions used.

    Refuses (SourceError, naming the file and column) a table polars cannot read, one without rows or
    without a non-blank caption, and one whose used captions are all the same text (train and eval are
    split by text). Lazy and column-projected for parquet; remembered per file state, so `check` and the
    harvest after it read the file once."""
    stat = file.stat()
    return _summarize(str(file), stat.st_size, stat.st_mtime_ns, column, count, shuffle)


@lru_cache(maxsize=16)
def _summarize(file: str, size: int, mtime_ns: int, column: str, count: int, shuffle: bool) -> TableSummary:
    path = Path(file)
    if size == 0:
        raise SourceError(f"{path} is empty; give a table with a header (or schema) and one caption per row")
    caption = _caption(column)
    kept = caption.filter(caption.str.len_chars() > 0)  # nulls and blanks dropped, as read_table drops them
    used = kept if shuffle else kept.head(count)
    frame = _read(
        path,
        lambda: (
            _scan(path)
            .select(pl.len().alias("rows"), kept.len().alias("non_blank"), used.n_unique().alias("distinct"))
            .collect()
        ),
    )
    if path.suffix.lower() != ".parquet":  # polars checks a csv's fields and bytes only where it reads them
        _read(path, lambda: _scan(path).select(pl.all().null_count()).collect())
    rows, non_blank, distinct = frame.row(0)
    where = f"column {column!r} of {path}"
    if rows == 0:
        raise SourceError(f"{path} has no rows; give a table with one caption per row")
    if non_blank == 0:
        raise SourceError(
            f"{where} holds no caption: its {rows:,} row(s) are all empty or null; give the column "
            f"that holds the captions{_text_columns(path, column)}",
            "column",
        )
    if distinct < 2:
        used_count = non_blank if shuffle else min(count, non_blank)
        raise SourceError(
            f"{where} has 1 distinct caption (of {used_count:,} used), but train and eval are split "
            f"by prompt text, so at least 2 different captions are needed; add captions",
            "column",
        )
    return TableSummary(rows, non_blank, distinct)


def _text_columns(path: Path, column: str) -> str:
    texts = [name for name, dtype in _scan(path).collect_schema().items() if _is_text(dtype) and name != column]
    return f" (its other text columns: {', '.join(texts)})" if texts else ""


def _read(path: Path, collect: Callable[[], Any]) -> Any:
    """`collect()`, with polars' errors for a file it cannot read turned into one message with the fix."""
    try:
        return collect()
    except (pl.exceptions.PolarsError, OSError) as error:
        if isinstance(error, OSError) and error.errno is not None:
            raise
        raise SourceError(unreadable_message(path, error)) from None


def unreadable_message(path: Path, error: BaseException) -> str:
    """What is wrong with a table polars refused, and how to write it so that it reads."""
    why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    suffix = path.suffix.lower()
    if "utf-8" in why.lower() or "utf8" in why.lower():
        return (
            f"{path} is not UTF-8 text ({why}); save it as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}`"
        )
    if "more fields" in why:
        return (
            f"{path} has a row with more fields than its header ({why}); quote every caption that holds the "
            f'separator ("a red, round circle") or fix that row'
        )
    if isinstance(error, pl.exceptions.NoDataError) or "empty" in why.lower():
        return f"{path} is empty ({why}); give a table with a header (or schema) and one caption per row"
    if suffix == ".jsonl":
        return (
            f"{path} is not valid JSON lines ({why}); write one JSON object per line, e.g. "
            f'{{"caption": "a red circle"}}'
        )
    return f"{path} cannot be read as {suffix[1:]} ({why}); it may be truncated or of another format: write it again"


def read_table(file: Path, column: str, count: int, shuffle: bool = False, seed: int = 0) -> list[str]:
    """Up to `count` non-empty captions of `column` in a local table (after a seeded shuffle if asked)."""
    names = _read(file, lambda: table_columns(file))
    if column not in names:
        raise UserError(f"{file} has no column {column!r}; columns: {', '.join(names)}")
    check_caption_column(file, column)
    summarize_table(file, column, count, shuffle)  # refuses an unreadable, empty or all-blank table by name
    values = _read(file, lambda: _scan(file).select(_caption(column)).collect()).to_series()
    values = values.drop_nulls()
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
    if texts_file.exists() and key_file.exists():
        from diffdict.dictionaries.guarded_read import read_json, read_parquet

        fix = (
            f"delete {texts_file} and {key_file} and run the same command again: the captions are read again "
            f"from the dataset (should it have changed on the Hub since, the stores' prompt hash says so)"
        )
        if read_json(key_file, "the run's record of its dataset captions", fix) == key:
            return read_parquet(texts_file, "the run's dataset captions", fix, columns=("text",))["text"].to_list()
    texts = _load_dataset(name, section)
    from diffdict.dictionaries.atomic import write_file_atomic, write_json_atomic

    write_file_atomic(
        texts_file, lambda tmp: pl.DataFrame({"text": texts}, schema={"text": pl.String}).write_parquet(tmp)
    )
    write_json_atomic(key_file, key)
    return texts


def _cache_key(section: PromptsSection) -> dict:
    names = ("dataset", "config", "split", "column", "count", "shuffle", "shuffle_seed", "shuffle_buffer", "streaming")
    return {name: getattr(section, name) for name in names}


def _load_dataset(name: str, section: PromptsSection) -> list[str]:
    """The captions of a local dataset folder or a Hub dataset, through `datasets`. A Hub dataset is probed
    first (one bounded request): without network `datasets` would retry for about 40 s, then raise a
    ConnectionError that never says which dataset. Whatever `datasets` refuses (a loading script, a split
    that does not exist, a dataset not in the offline cache) is one message naming the dataset."""
    try:
        import datasets
        import datasets.exceptions
    except ImportError:
        raise UserError("prompts.source = 'dataset' needs the `datasets` package: pip install datasets") from None
    hub = not Path(name).exists()
    if hub:
        kind, problem = _ask_hub(name)
        if kind == "unreachable":
            raise UserError(
                f"prompts.dataset: cannot reach the Hugging Face Hub to read dataset {name!r} ({problem}); "
                f"check the network (or HF_ENDPOINT and proxy settings) and run the same command again; "
                f"nothing was generated"
            )
    try:
        rows = datasets.load_dataset(name, section.config, split=section.split, streaming=section.streaming)
        return _captions_of(rows, name, section)
    except UserError:
        raise
    except (RuntimeError, ValueError, OSError, datasets.exceptions.DatasetsError) as error:  # `datasets`' kinds
        raise UserError(_dataset_refused(name, section, error, hub)) from None


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _dataset_refused(name: str, section: PromptsSection, error: BaseException, hub: bool) -> str:
    """One message for a dataset `datasets` cannot load: which dataset, what it said, and the fix."""
    why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    what = f"dataset {name!r} (split {section.split!r}{f', config {section.config!r}' if section.config else ''})"
    if "scripts are no longer supported" in why:
        fix = (
            "the installed `datasets` no longer runs loading scripts: write the captions as data files "
            "(parquet, jsonl or csv) in that folder, or point prompts.dataset at such a file"
        )
    elif hub and _offline():
        fix = (
            "HF_HUB_OFFLINE is set and the dataset is not in the local cache: unset HF_HUB_OFFLINE on a machine "
            "with network access and run the same command again (the run folder then keeps its captions)"
        )
    elif "split" in why.lower():
        fix = "set prompts.split to one of the dataset's splits"
    else:
        fix = "check prompts.dataset, prompts.config and prompts.split"
    return f"prompts.dataset: {what} cannot be read ({type(error).__name__}: {why}); {fix}"


def _captions_of(rows: Any, name: str, section: PromptsSection) -> list[str]:
    assert section.column is not None  # required for a dataset source: the config check refuses a config without it
    columns = rows.column_names
    if columns is not None and section.column not in columns:
        raise UserError(
            f"dataset {section.dataset!r} (split {section.split!r}) has no column {section.column!r}; "
            f"columns: {', '.join(columns)}"
        )
    if columns is not None:  # a streamed dataset may not know its columns before the first row
        rows = rows.select_columns([section.column])
    if section.shuffle:
        rows = (
            rows.shuffle(seed=section.shuffle_seed, buffer_size=section.shuffle_buffer)
            if section.streaming
            else rows.shuffle(seed=section.shuffle_seed)
        )
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
        raise UserError(
            f"dataset {name!r} has no non-empty captions in column {column!r}; give the column that "
            f"holds the captions (prompts.column), or another split (prompts.split)"
        )
    if len(set(texts)) < 2:
        raise UserError(
            f"dataset {name!r} has 1 distinct caption in column {column!r} (of {len(texts)} used), but "
            f"train and eval are split by prompt text, so at least 2 different captions are needed"
        )
    return texts


# Files `datasets` builds a dataset from (its packaged builders); anything else in a folder is not data.
DATA_SUFFIXES = (".parquet", ".arrow", ".csv", ".tsv", ".json", ".jsonl", ".txt", ".zip", ".tar", ".gz", ".zst")


def _visible_files(folder: Path) -> list[Path]:
    """Every file under `folder` outside hidden folders (.git, .cache, .huggingface)."""
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def data_files(folder: Path) -> list[Path]:
    return [p for p in _visible_files(folder) if p.suffix.lower() in DATA_SUFFIXES]


def check_dataset_folder(folder: Path, column: str) -> int:
    """A local dataset folder holds data files `datasets` can read, and (where they are tables polars reads)
    the caption column with at least two different non-blank captions. Returns the number of data files.

    A folder with only a loading script (NAME.py) is refused: the installed `datasets` no longer runs
    them, and would say so only after the models load. Reads stop at the first two different captions,
    so a large folder costs a few row groups."""
    data = data_files(folder)
    if not data:
        scripts = [p.name for p in _visible_files(folder) if p.suffix == ".py"]
        if scripts:
            raise SourceError(
                f"{folder} holds only a loading script ({', '.join(scripts)}) and no data files; the "
                f"installed `datasets` no longer runs loading scripts: write the captions as data files "
                f"(parquet, jsonl or csv) in that folder, or point prompts.dataset at such a file"
            )
        raise SourceError(
            f"{folder} holds no data files ({', '.join(DATA_SUFFIXES[:6])}, ...); give a folder of "
            f"parquet, jsonl or csv files, a single such file, or a Hugging Face dataset id"
        )
    tables = [p for p in data if p.suffix.lower() in (".parquet", ".jsonl", ".csv")]
    if len(tables) == len(data):
        _check_folder_captions(folder, tables, column)
    return len(data)


def _check_folder_captions(folder: Path, tables: list[Path], column: str) -> None:
    seen: set[str] = set()
    columns: set[str] = set()
    for table in tables:
        names = _read(table, lambda: table_columns(table))
        columns.update(names)
        if column not in names:
            continue
        problem = _read(table, lambda: _caption_type_problem(table, column))
        if problem:
            raise SourceError(problem, "column")
        caption = _caption(column)
        first = _read(
            table, lambda: _scan(table).select(caption.filter(caption.str.len_chars() > 0).head(64)).collect()
        ).to_series()
        seen.update(first.to_list())
        if len(seen) >= 2:
            return
    if column not in columns:
        raise SourceError(
            f"no data file of {folder} has a column {column!r}; their columns: {', '.join(sorted(columns))}", "column"
        )
    raise SourceError(
        f"column {column!r} of the data files in {folder} holds "
        f"{'no caption: every row is empty or null' if not seen else '1 distinct caption'}; train and "
        f"eval are split by prompt text, so at least 2 different captions are needed",
        "column",
    )


PROBE_TIMEOUT_S = 5.0  # a dead network or a slow Hub costs `check` at most this much


def probe_hub_dataset(repo_id: str) -> str | None:
    """None when the Hub says the dataset exists; else why it cannot be reached now (a warning for `check`).
    One bounded request; nothing is downloaded. A dataset the Hub says does not exist is refused."""
    return _ask_hub(repo_id)[1]


def _ask_hub(repo_id: str) -> tuple[str, str | None]:
    """(kind, why): kind "ok", "offline", "gated" (the harvest may still read it with a token), "unreachable"
    (no network, or the Hub failing); raises SourceError when the Hub says there is no such dataset."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    from diffdict.dictionaries.hub import network_errors

    if _offline():
        return "offline", "HF_HUB_OFFLINE is set, so it was not asked"
    try:
        HfApi(library_name="diffdict").dataset_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        return "gated", (
            f"it is gated: accept its terms at https://huggingface.co/datasets/{repo_id} and log in "
            f"with `hf auth login`"
        )
    except RepositoryNotFoundError:
        raise SourceError(
            f"dataset {repo_id!r} is not on the Hugging Face Hub (or it is private and no token here "
            f"may read it): check the id at https://huggingface.co/datasets/{repo_id}, or log in with "
            f"`hf auth login`"
        ) from None
    except HfHubHTTPError as error:
        return "unreachable", f"the Hub answered {getattr(getattr(error, 'response', None), 'status_code', '?')}"
    except network_errors() as error:
        return "unreachable", f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else '?'}"
    return "ok", None


def describe(section: PromptsSection, config_path: Path | None = None) -> str:
    """One line for `diffdict check`: where the captions come from, without downloading anything. A local
    table's caption column must hold text and give captions (UserError otherwise: `check` and every stage
    call this); a Hub dataset is asked for once, briefly: one the Hub does not have is refused, one it cannot
    be asked about now is a warning on the line."""
    order = (
        f"{section.count:,} after a shuffle (seed {section.shuffle_seed})"
        if section.shuffle
        else f"first {section.count:,}"
    )
    key = f"{config_path or '<config>'}: prompts.column"
    if section.source == "dataset":
        local = resolve_relative(section.dataset or "", config_path)
        where = f"column {section.column!r}, {order}"
        if local.is_file():
            check_caption_column(local, section.column or "", key)
            return f"prompts: {local} ({where}); {_counted(local, section, config_path)}"
        if local.exists():  # its data files and captions were checked with the config (config._check_dataset)
            return (
                f"prompts: local dataset folder {local} (split {section.split!r}, {where}): "
                f"{len(data_files(local))} data file(s); read through `datasets` at run time"
            )
        subset = f", config {section.config!r}" if section.config else ""
        mode = "streamed" if section.streaming else "downloaded"
        kind, why = _checked(lambda: _ask_hub(section.dataset or ""), config_path, "prompts.dataset")
        reach = {
            "ok": "the Hub has it",
            "offline": "not asked (HF_HUB_OFFLINE is set): the harvest reads it from the local cache, or the "
            "captions a run of this section kept in its folder",
            "gated": f"warning: {why}",
            "unreachable": f"warning: not reachable now ({why}); the harvest needs the Hub (or the captions a "
            f"run of this section kept in its folder)",
        }[kind]
        return (
            f"prompts: Hugging Face dataset {section.dataset!r} (split {section.split!r}{subset}, {where}): "
            f"not downloaded now; it will be {mode} at run time and kept in the run folder ({CACHE_FILE}); "
            f"{reach}"
        )
    if section.source == "file":
        column = f", column {section.column!r}" if is_local_table(section.file or "", config_path) else ""
        file = resolve_relative(section.file or "", config_path)
        if column:
            check_caption_column(file, section.column or "", key)
            return f"prompts: file {file}{column} ({order}); {_counted(file, section, config_path)}"
        return f"prompts: file {file} (first {section.count:,})"
    return f"prompts: {section.source} ({section.count:,})"


def _checked(action: Callable[[], Any], config_path: Path | None, key: str) -> Any:
    """`action()`, a SourceError prefixed with the config and the key it concerns (`key`, or prompts.column)."""
    try:
        return action()
    except SourceError as error:
        where = "prompts.column" if error.about == "column" else key
        raise SourceError(f"{config_path or '<config>'}: {where}: {error}", error.about) from None


def _counted(file: Path, section: PromptsSection, config_path: Path | None) -> str:
    """'N rows, M non-blank captions' of a local table (read once: the config's check read it already)."""
    key = "prompts.dataset" if section.source == "dataset" else "prompts.file"
    summary = _checked(
        lambda: summarize_table(file, section.column or "", section.count, section.shuffle), config_path, key
    )
    return f"{summary.rows:,} rows, {summary.non_blank:,} non-blank captions"
