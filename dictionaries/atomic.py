"""Atomic writes: a reader (or a resumed run) sees either the old file or the new one, never half.

Every writer goes through a temporary name in the same folder and `os.replace`, which is
atomic on POSIX for files. Folders (dictionary checkpoints) are swapped in three renames;
`resolve_dir` finds the surviving copy if a kill lands between them.

A write that runs out of space raises DiskFullError naming the file and how to resume, whatever library
wrote it: Python raises OSError(ENOSPC), but safetensors raises its own SafetensorError and polars a
ComputeError, both with only "No space left on device (os error 28)" in their text. The temporary is
removed, so the file the reader sees is still the old one (or none).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from diffdict.dictionaries.errors import DiskFullError

TMP_MARK = ".tmp-"  # in the name of every temporary: the stale-temp sweep deletes what carries it
OLD_SUFFIX = ".old"  # a folder swap's backup: deleted once the new folder is in place


def temp_path(final: Path) -> Path:
    """A unique temporary sibling of `final` (same folder, so the rename never crosses devices)."""
    return final.with_name(f"{final.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")


# errno -> the words of the storage libraries that do not raise OSError (Rust's io::Error text)
_FULL_ERRNOS = {
    errno.ENOSPC: ("No space left on device", "os error 28"),
    errno.EDQUOT: ("Disk quota exceeded", "os error 122"),
}


def full_disk_errno(error: BaseException) -> int | None:
    """ENOSPC / EDQUOT when `error` says the disk (or the quota) is full, from any library; else None."""
    if isinstance(error, OSError):
        return error.errno if error.errno in _FULL_ERRNOS else None
    text = str(error)
    return next((code for code, words in _FULL_ERRNOS.items() if any(w in text for w in words)), None)


def disk_full(path: str | Path, code: int, what: str = "") -> DiskFullError:
    """The one message for a write that ran out of space."""
    words = "disk quota exceeded" if code == errno.EDQUOT else "no space left"
    return DiskFullError(
        code,
        f"{words} to write {what or Path(path).name} ({path}); what was written before "
        f"is kept: free space on that disk (or choose another `out`) and run the same command "
        f"again to resume",
        str(path),
    )


def write_file_atomic(final: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)` then rename the result onto `final`, fsync'ed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except Exception as error:
        code = full_disk_errno(error)
        if code is None or isinstance(error, DiskFullError):
            raise
        raise disk_full(final, code) from error
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def write_json_atomic(final: str | Path, data: object) -> Path:
    return write_file_atomic(final, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True)))


def write_dir_atomic(final: str | Path, write: Callable[[Path], object]) -> Path:
    """Fill a temporary folder with `write(tmp_dir)` and swap it in place of `final`.

    Swap: final -> final.old, tmp -> final, delete final.old. A kill between the first two
    renames leaves only `final.old`, which `resolve_dir` returns.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    old = final.with_name(final.name + OLD_SUFFIX)
    try:
        tmp.mkdir()
        write(tmp)
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
    except Exception as error:
        code = full_disk_errno(error)
        if code is None or isinstance(error, DiskFullError):
            raise
        raise disk_full(final, code, f"the folder {final.name}") from error
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def resolve_dir(path: str | Path) -> Path | None:
    """The complete copy of a folder written by `write_dir_atomic`, or None if there is none."""
    path = Path(path)
    if path.is_dir():
        return path
    old = path.with_name(path.name + OLD_SUFFIX)
    return old if old.is_dir() else None


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temporaries left by a killed writer; returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for item in folder.iterdir():
        if TMP_MARK in item.name:
            shutil.rmtree(item) if item.is_dir() else item.unlink()
            removed.append(item)
    return removed
