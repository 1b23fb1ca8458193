"""Capture overhead: generation with four hook points captured vs the same generation without.

Both are timed in this process, interleaved, several repeats. The headline ratio uses the
process CPU time of the best runs: on a shared machine wall time mostly measures the other
jobs, while CPU time counts only the work this process did (capture included). Wall-time
ratios are printed beside it.
Goal: at most 1.10 on tiny/sdxl.

    python benchmarks/capture.py --model tiny/sdxl --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffdict import adapters

PAPER_HOOKS = ["down.2.1", "mid.0", "up.0.0", "up.0.1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny/sdxl")
    parser.add_argument("--hooks", default=",".join(PAPER_HOOKS))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    adapter = adapters.load(args.model)
    hooks = args.hooks.split(",")
    prompts = [f"a red circle number {i}" for i in range(args.batch)]

    def timed(**kw) -> tuple[float, float]:
        """(CPU seconds, wall seconds) of one generation."""
        cpu, wall = time.process_time(), time.perf_counter()
        adapter.generate(prompts, seeds=0, steps=args.steps, **kw)
        return time.process_time() - cpu, time.perf_counter() - wall

    timed(hooks=hooks)  # warm-up both paths
    timed()
    plain, captured = [], []
    for _ in range(args.repeats):
        plain.append(timed())
        captured.append(timed(hooks=hooks))
    print(
        f"model={args.model} batch={args.batch} steps={args.steps or adapter.defaults.steps} hooks={len(hooks)} "
        f"repeats={args.repeats}"
    )
    for label, index in (("cpu", 0), ("wall", 1)):
        base = [run[index] for run in plain]
        with_capture = [run[index] for run in captured]
        print(
            f"{label:4s} without capture: best {min(base) * 1000:8.1f} ms  median "
            f"{statistics.median(base) * 1000:8.1f} ms"
        )
        print(
            f"{label:4s} with capture:    best {min(with_capture) * 1000:8.1f} ms  median "
            f"{statistics.median(with_capture) * 1000:8.1f} ms"
        )
        print(f"{label}_median_ratio={statistics.median(with_capture) / statistics.median(base):.3f}")
    cpu_best = min(run[0] for run in captured) / min(run[0] for run in plain)
    print(f"capture_overhead_ratio={cpu_best:.3f}")


if __name__ == "__main__":
    main()
