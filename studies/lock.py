"""One run per folder: a lock file in the run folder names the process that holds it.

`run_lock(root)` creates ROOT/.diffdict.lock with the holder's process id, host and start time, and
removes it on exit. The lock appears with its content: it is written to a temporary file that is then
hard-linked to the lock's name (which fails if the lock exists), so no other process can read an empty
lock and take it for a stale one (a file system without hard links falls back to O_CREAT | O_EXCL, and
a lock that names no holder is never removed, only reported). A second `diffdict` stage on the same
folder is refused with a message naming the holder. A lock whose process is gone (a run killed
with -9, a crashed machine) is stale: on the same host that is detected (the pid no longer
exists) and the lock is taken over with a note; a lock from another host cannot be checked, so
the message says how to remove it once that run is known to be over.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

LOCK_FILE = ".diffdict.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # gone, being written (the O_EXCL fallback) or not a lock: never taken for stale
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _settled_holder(path: Path, attempts: int = 10, pause: float = 0.1) -> dict | None:
    """The holder, re-read for up to about a second while the lock names none (a writer on the O_EXCL path
    may be between creating the file and writing it)."""
    for _ in range(attempts):
        holder = _holder(path)
        if holder is not None or not path.exists():
            return holder
        time.sleep(pause)
    return None


def _create(path: Path, me: dict) -> bool:
    """Create the lock holding `me`; False when it exists already. Atomic: the content is there from the start."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.new")
    tmp.write_text(json.dumps(me))
    try:
        os.link(tmp, path)  # fails with FileExistsError if another process holds the lock
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some network or FAT file systems): exclusive create, then write
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        return True
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def run_lock(root: str | Path, command: str = "diffdict", log: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold ROOT's lock for the duration of the block; raises UserError if another live run holds it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 holds the lock for the whole group
        yield path
        return
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
    }
    for _ in range(3):
        if not _create(path, me):
            holder = _settled_holder(path)
            if holder is None and path.exists():
                raise UserError(
                    f"{path} exists but names no holder (it is empty or not a diffdict lock): another "
                    f"diffdict may be starting on {root} right now. Wait a moment and run again; if no "
                    f"other diffdict uses {root}, delete {path} and run again"
                ) from None
            if holder is not None and holder.get("host") != me["host"]:
                raise UserError(
                    f"{root} is in use by `{holder.get('command')}` (pid {holder.get('pid')} on host "
                    f"{holder.get('host')}, since {holder.get('started')}); wait for it to finish. If "
                    f"that run is over (the machine crashed), delete {path} and run again"
                ) from None
            if holder is not None and _alive(int(holder.get("pid", -1))) and holder.get("pid") != me["pid"]:
                raise UserError(
                    f"{root} is in use by `{holder.get('command')}` (pid {holder['pid']} on this host, "
                    f"since {holder.get('started')}); one run per folder: wait for it to finish, or "
                    f"choose another `out`. If that process is not a diffdict (its run crashed and the "
                    f"pid was reused), delete {path} and run again"
                ) from None
            if holder is not None and holder.get("pid") == me["pid"]:
                yield path  # re-entered by the same process (e.g. `run` calling its stages): already held
                return
            if holder is not None:
                log(f"note: removing the stale lock {path} (pid {holder.get('pid')} is gone)")
                path.unlink(missing_ok=True)
            continue  # removed as stale, or released meanwhile: try to take it again
        break
    else:
        raise UserError(f"{path}: could not take the run lock; delete it if no other run uses {root}")
    try:
        yield path
    finally:
        holder = _holder(path)
        if holder is not None and holder.get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
