"""Atomic writes: a reader (or a resumed run) sees either the old file or the new one, never half.

Every writer goes through a temporary name in the same folder and `os.replace`, which is
atomic on POSIX for files. Folders (dictionary checkpoints) are swapped in three renames;
`resolve_dir` finds the surviving copy if a kill lands between them.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

TMP_MARK = ".tmp-"  # in the name of every temporary: the stale-temp sweep deletes what carries it
OLD_SUFFIX = ".old"  # a folder swap's backup: deleted once the new folder is in place


def temp_path(final: Path) -> Path:
    """A unique temporary sibling of `final` (same folder, so the rename never crosses devices)."""
    return final.with_name(f"{final.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")


def write_file_atomic(final: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` then rename the result onto `final`, fsync'ed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def write_json_atomic(final: str | Path, data: object) -> Path:
    return write_file_atomic(final, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True)))


def write_dir_atomic(final: str | Path, write: Callable[[Path], None]) -> Path:
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
