"""`--threads N`: torch's CPU thread count for the commands that compute.

The count is part of what a result depends on: torch splits float sums across threads, so between 1 and
2 threads captured maps differ by about 1e-5 and an SAE's atoms by about 1e-2 after training (bit-equal
reruns need the same count; each stage records it in RUN/timings.json, see pipeline.record_compute). On a
loaded machine fewer threads can also be much faster: spin-waiting threads compete with other jobs.

Without --threads, OMP_NUM_THREADS is honoured (torch reads it when it starts), else torch's default
(the machine's cores) is left as it is.
"""

from __future__ import annotations

import argparse
import os

from .errors import UserError

HELP = (
    "torch CPU threads (default: OMP_NUM_THREADS when set, else torch's default); results are bit-equal "
    "only between runs with the same count, which each run records"
)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=HELP)


def apply_threads(threads: int | None, flag: str = "--threads") -> int:
    """Set torch's intra-op threads to `threads` (checked first), or to OMP_NUM_THREADS when it is set and
    torch did not take it; returns the count in force. Called before any model loads."""
    import torch

    if threads is not None:
        if threads < 1:
            raise UserError(
                f"{flag} must be at least 1, got {threads}; leave it out for torch's default "
                f"({torch.get_num_threads()} here)"
            )
        torch.set_num_threads(threads)
        return threads
    wanted = os.environ.get("OMP_NUM_THREADS", "").strip()
    if wanted.isdigit() and int(wanted) >= 1 and torch.get_num_threads() != int(wanted):
        torch.set_num_threads(int(wanted))  # e.g. set after torch was imported by an embedding program
    return torch.get_num_threads()
