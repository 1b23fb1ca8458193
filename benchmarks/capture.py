"""Capture overhead: generation with four hook points captured vs the same generation without.

Both are timed in this process, interleaved, several repeats; the ratio of the best runs is
printed (the minimum is the least disturbed by other load on the machine, as in `timeit`),
with the ratio of medians beside it.
Goal: at most 1.10 on tiny/sdxl.

    python benchmarks/capture.py --model tiny/sdxl --repeats 7
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import adapters

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

    def timed(**kw) -> float:
        start = time.perf_counter()
        adapter.generate(prompts, seeds=0, steps=args.steps, **kw)
        return time.perf_counter() - start

    timed(hooks=hooks)  # warm-up both paths
    timed()
    plain, captured = [], []
    for _ in range(args.repeats):
        plain.append(timed())
        captured.append(timed(hooks=hooks))
    print(f"model={args.model} batch={args.batch} steps={args.steps or adapter.defaults.steps} hooks={len(hooks)}")
    print(f"without capture: best {min(plain) * 1000:.1f} ms, median {statistics.median(plain) * 1000:.1f} ms over {args.repeats} runs")
    print(f"with capture:    best {min(captured) * 1000:.1f} ms, median {statistics.median(captured) * 1000:.1f} ms")
    print(f"median_ratio={statistics.median(captured) / statistics.median(plain):.3f}")
    print(f"capture_overhead_ratio={min(captured) / min(plain):.3f}")


if __name__ == "__main__":
    main()
