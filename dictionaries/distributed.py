"""torch.distributed for harvest and training, and a no-op stand-in when there is one process.

`world()` reads the launcher's environment (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) and starts the process group once: gloo for CPU tensors and, when
CUDA is present, NCCL for CUDA tensors (each rank on its own GPU, `cuda:LOCAL_RANK`). Without
those variables (or with WORLD_SIZE=1) every collective below returns its input, so callers
write one code path for both cases.

Collectives used by this package, all in a fixed rank order so results are deterministic:
  all_reduce_sum   gradients and sums of the SAE step (every rank gets the same bits back)
  gather_rows      variable-length rows from every rank, concatenated rank-major (ITDA)
  on_main          work only rank 0 does (index, stats, checkpoints); its error reaches all ranks
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from diffdict.dictionaries.errors import InputError

T = TypeVar("T")
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# Ranks wait while rank 0 alone indexes a store and computes its statistics (one pass over
# every shard): hours for a terabyte store, hence a long default. A crashed rank does not
# make the others wait this long: torchrun stops the whole job when one worker fails.
TIMEOUT = timedelta(minutes=int(os.environ.get("DIFFDICT_DIST_TIMEOUT_MIN", "240")))


class RankFailed(RuntimeError):
    """Raised on every rank when the work `on_main` gave to rank 0 failed there."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, total: int) -> slice:
        """This rank's contiguous part of `total` items (equal parts; total % size == 0)."""
        if total % self.size:
            raise InputError(
                f"{total} rows cannot be split evenly over {self.size} ranks; choose a batch size "
                f"that is a multiple of the number of processes (torchrun --nproc-per-node x --nnodes)"
            )
        part = total // self.size
        return slice(self.rank * part, (self.rank + 1) * part)


def _from_env() -> World:
    if not all(key in os.environ for key in ENV_KEYS[:2]):
        return World()
    try:
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as error:
        raise InputError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({error}); launch with torchrun") from error
    if not 0 <= rank < size:
        raise InputError(f"RANK={rank} is outside WORLD_SIZE={size}; launch with torchrun")
    return World(rank, size, local)


def world() -> World:
    """This process's place in the job; initialises the process group on first use."""
    found = _from_env()
    if found.distributed and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(found.local_rank)  # "cuda" now means this rank's GPU
            backend = "cpu:gloo,cuda:nccl"
        else:
            backend = "gloo"
        dist.init_process_group(backend=backend, rank=found.rank, world_size=found.size, timeout=TIMEOUT)
    return found


def barrier(w: World) -> None:
    if w.distributed:
        dist.barrier()


def all_reduce_sum(tensors: list[torch.Tensor], w: World) -> None:
    """Sum each tensor over ranks, in place. One flat buffer per dtype/device: one message, not many."""
    if not w.distributed or not tensors:
        return
    groups: dict[tuple, list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    for members in groups.values():
        flat = torch.cat([t.reshape(-1) for t in members])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        start = 0
        for tensor in members:
            tensor.copy_(flat[start : start + tensor.numel()].view_as(tensor))
            start += tensor.numel()


def all_reduce_max(tensor: torch.Tensor, w: World) -> None:
    if w.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)


def gather_rows(rows: torch.Tensor, w: World) -> torch.Tensor:
    """(r_i, *rest) on rank i -> (sum r_i, *rest) on every rank, rank 0's rows first.

    Lengths differ per rank, so rows are padded to the longest and trimmed after the gather.
    """
    if not w.distributed:
        return rows
    count = torch.tensor([rows.shape[0]], dtype=torch.long, device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(w.size)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: rows.shape[0]] = rows
    gathered = [torch.zeros_like(padded) for _ in range(w.size)]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([part[: int(c.item())] for part, c in zip(gathered, counts)])


def on_main(work: Callable[[], T], w: World) -> T | None:
    """Run `work` on rank 0 only; every rank returns after it finished (None off rank 0).

    A failure on rank 0 is re-raised on every rank (as the same message), so no rank waits
    forever at a barrier for a rank that has already given up.
    """
    if not w.distributed:
        return work()
    result, message, failure = None, None, None
    if w.is_main:
        try:
            result = work()
        except Exception as error:  # sent to the other ranks, then re-raised here unchanged
            message = f"{type(error).__name__}: {error}"
            failure = error
    box = [message]
    dist.broadcast_object_list(box, src=0)
    if failure is not None:
        raise failure
    if box[0] is not None:
        raise RankFailed(f"rank 0 failed, so rank {w.rank} stops too: {box[0]}")
    return result


def shutdown(wait_for_peers: bool = True) -> bool:
    """Tear the process group down (end of a command), so the process exits cleanly.
    Returns False when a peer rank was found to have failed, True otherwise.

    After a normal end every rank first waits for the others: rank 0 hosts the rendezvous
    store, and a rank still talking to it when it went away would abort (seen once as a
    SIGABRT in the 2-rank tests). After an error there is no waiting: the other ranks may
    never arrive. So a rank that ended well but waits for one that failed sees the
    connection drop instead of a barrier: it says so and reports failure (its own output
    is complete; the failed rank printed the error)."""
    peers_ok = True
    if dist.is_initialized():
        if wait_for_peers:
            try:
                dist.barrier()
            except (RuntimeError, ConnectionError) as error:  # gloo raises DistBackendError, a RuntimeError
                first_line = (str(error).splitlines() or [""])[0]
                print(
                    f"rank {dist.get_rank()}: finished, but another rank ended with an error (see its output "
                    f"above); the run failed. ({type(error).__name__}: {first_line})",
                    file=sys.stderr,
                )
                peers_ok = False
        dist.destroy_process_group()
    return peers_ok


def check_identical(tensors: dict[str, torch.Tensor], w: World, what: str) -> None:
    """Raise if the ranks hold different bits for `tensors` (a data-parallel run diverged)."""
    if not w.distributed:
        return
    digest = 0
    for name in sorted(tensors):
        raw = tensors[name].detach().cpu().contiguous().view(torch.uint8).numpy().data
        digest = zlib.crc32(raw, zlib.crc32(name.encode(), digest))
    digests: list[int | None] = [None] * w.size
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise RuntimeError(
            f"{what}: the ranks hold different weights (crc32 per rank {digests}); every rank must "
            f"run the same code on the same threads (torchrun sets OMP_NUM_THREADS=1 for all)"
        )
