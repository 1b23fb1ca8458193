"""Interleaved timing of a candidate against a baseline in one process (shared by the benchmarks).

Both run alternately, `reps` times each, so that load from other jobs hits both alike. On a
GPU every call is synchronised (GPU work is asynchronous); on the CPU the process CPU time is
recorded beside the wall clock, because on a shared machine the wall clock of either side
swings with other tenants while the CPU time each needs does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Timings:
    baseline_wall: list[float] = field(default_factory=list)
    baseline_cpu: list[float] = field(default_factory=list)
    candidate_wall: list[float] = field(default_factory=list)
    candidate_cpu: list[float] = field(default_factory=list)

    def ratio(self, device: torch.device) -> float:
        """Headline ratio of the best runs: CPU time on the CPU, synchronised wall time on a GPU."""
        if device.type == "cpu":
            return min(self.candidate_cpu) / min(self.baseline_cpu)
        return self.wall_ratio

    @property
    def wall_ratio(self) -> float:
        return min(self.candidate_wall) / min(self.baseline_wall)


def interleaved(
    baseline: Callable[[], None],
    candidate: Callable[[], None],
    reps: int,
    device: torch.device,
    before_candidate: Callable[[], None] | None = None,
) -> Timings:
    """Time baseline and candidate alternately; `before_candidate` runs untimed before each candidate."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    timings = Timings()
    for _ in range(reps):
        for run, wall, cpu, prepare in (
            (baseline, timings.baseline_wall, timings.baseline_cpu, None),
            (candidate, timings.candidate_wall, timings.candidate_cpu, before_candidate),
        ):
            if prepare is not None:
                prepare()
            sync()
            start, cpu_start = time.perf_counter(), time.process_time()
            run()
            sync()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
    return timings
