"""Reading back what a run folder holds, through one guarded reader.

A run folder's own files (a store's store.json and index.parquet, a fit's metrics.parquet, the studies'
tables, the config copy, timings.json) can be truncated by a full disk or a copy that stopped, or replaced
by a file of another kind. Read directly, each would end in the parser's traceback (a polars ComputeError,
a JSONDecodeError) that names neither the file nor what to do. Every such read goes through here instead:
a damaged or foreign file raises DamagedFileError naming the file, what is wrong and `fix`, the safe way
back, which the caller states (rebuild the index from the shards, rerun the stage that writes the file;
never a step that deletes good data).

A missing file is the caller's to check (it usually means a stage has not run yet, with its own advice);
a file the operating system refuses to read (permissions, a folder where the file belongs) keeps its
OSError, which the command line already turns into one message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from diffdict.dictionaries.errors import DamagedFileError


def damaged(path: str | Path, what: str, why: str, fix: str) -> DamagedFileError:
    """The error for a file that is not the `what` it should be: `PATH: damaged or not WHAT (WHY); FIX`."""
    return DamagedFileError(f"{path}: damaged or not {what} ({why}); {fix}")


def _why(error: BaseException) -> str:
    """The parser's own words, first line only and bounded (polars adds hints on further lines)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _guarded(path: Path, what: str, fix: str, read: Callable[[], Any]) -> Any:
    """`read()`, with every parse failure turned into DamagedFileError (OS errors with an errno pass)."""
    try:
        return read()
    except OSError as error:
        if error.errno is not None:
            raise  # permission, a folder in the way, ...: the command line's file-system message
        raise damaged(path, what, _why(error), fix) from None
    except UnicodeDecodeError as error:
        raise damaged(path, what, f"not UTF-8 text: {error.reason} at byte {error.start}", fix) from None
    except Exception as error:  # each parser raises its own kinds (ComputeError, JSONDecodeError, TOMLDecodeError)
        raise damaged(path, what, _why(error), fix) from None
    except BaseException as error:  # polars' PanicException derives from BaseException
        if type(error).__name__ != "PanicException":
            raise
        raise damaged(path, what, _why(error), fix) from None


def read_parquet(path: str | Path, what: str, fix: str, columns: Iterable[str] = ()):
    """A parquet table (polars DataFrame) holding at least `columns`."""
    import polars as pl

    path = Path(path)
    frame = _guarded(path, what, fix, lambda: pl.read_parquet(path))
    _require_columns(path, what, fix, frame.columns, columns)
    return frame


def read_csv(path: str | Path, what: str, fix: str, columns: Iterable[str] = (), **options: Any):
    """A CSV table (polars DataFrame; `options` go to pl.read_csv) holding at least `columns`."""
    import polars as pl

    path = Path(path)
    frame = _guarded(path, what, fix, lambda: pl.read_csv(path, **options))
    _require_columns(path, what, fix, frame.columns, columns)
    return frame


def _require_columns(path: Path, what: str, fix: str, present: list[str], columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in present]
    if missing:
        raise damaged(
            path, what, f"no column {', '.join(map(repr, missing))}; its columns: {', '.join(present) or 'none'}", fix
        )


def read_json(path: str | Path, what: str, fix: str, kind: type = dict) -> Any:
    """A JSON document whose top level is a `kind` (an object by default)."""
    path = Path(path)
    document = _guarded(path, what, fix, lambda: json.loads(path.read_text(encoding="utf-8")))
    if not isinstance(document, kind):
        raise damaged(
            path,
            what,
            f"a JSON {type(document).__name__} where a JSON {'object' if kind is dict else kind.__name__} belongs",
            fix,
        )
    return document


def read_toml(path: str | Path, what: str, fix: str) -> dict:
    """A TOML document."""
    import tomllib

    path = Path(path)
    return _guarded(path, what, fix, lambda: tomllib.loads(path.read_text(encoding="utf-8")))


# ---- the safe fixes the layers share ------------------------------------------------------------------------
def rebuild_index_fix(path: str | Path) -> str:
    """index.parquet is rebuilt from the shard headers by a harvest that finds every shard in place."""
    return (
        f"the index is rebuilt from the shard headers: delete {path} and run the same `diffdict harvest CONFIG` "
        f"again (the shards are kept and nothing is generated again)"
    )


def metrics_fix(path: str | Path) -> str:
    """metrics.parquet is assembled from the parts under metrics/ by `diffdict train`."""
    folder = Path(path).parent / "metrics"
    return (
        f"it is assembled from the parts in {folder}: delete {path} and run `diffdict train CONFIG` again, "
        f"which rebuilds it (the dictionaries are kept)"
    )


def store_settings_fix(path: str | Path) -> str:
    """store.json is written again by a harvest that finds it missing; the shards stay."""
    return (
        f"if this store was harvested with the config, delete {path} and run the same `diffdict harvest CONFIG` "
        f"again: it records the settings anew and keeps the shards (if not, add --force, which harvests it again)"
    )
