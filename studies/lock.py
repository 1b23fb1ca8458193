"""One run per folder: a lock file in the run folder names the process that holds it.

`run_lock(root)` creates ROOT/.diffdict.lock exclusively (O_CREAT | O_EXCL) with the holder's
process id, host and start time, and removes it on exit. A second `diffdict` stage on the same
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
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

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
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # half-written or unreadable: treated as stale below


@contextmanager
def run_lock(root: str | Path, command: str = "diffdict", log: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold ROOT's lock for the duration of the block; raises UserError if another live run holds it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 holds the lock for the whole group
        yield path
        return
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
          "command": command}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and holder.get("host") != me["host"]:
                raise UserError(f"{root} is in use by `{holder.get('command')}` (pid {holder.get('pid')} on host "
                                f"{holder.get('host')}, since {holder.get('started')}); wait for it to finish. If "
                                f"that run is over (the machine crashed), delete {path} and run again") from None
            if holder is not None and _alive(int(holder.get("pid", -1))) and holder.get("pid") != me["pid"]:
                raise UserError(f"{root} is in use by `{holder.get('command')}` (pid {holder['pid']} on this host, "
                                f"since {holder.get('started')}); one run per folder: wait for it to finish, or "
                                f"choose another `out`") from None
            if holder is not None and holder.get("pid") == me["pid"]:
                yield path  # re-entered by the same process (e.g. `run` calling its stages): already held
                return
            log(f"note: removing the stale lock {path} (pid {holder.get('pid') if holder else '?'} is gone)")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        break
    else:
        raise UserError(f"{path}: could not take the run lock; delete it if no other run uses {root}")
    try:
        yield path
    finally:
        holder = _holder(path)
        if holder is not None and holder.get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
