"""Generation speed of the shipped toy models on this machine, against the issue's budgets.

64 held-out captions: toy/sdxl-turbo at its 1 step (budget 5 s), toy/sdxl-base at 25 steps
with CFG (budget 60 s), toy/flux at its 4 steps. Best of --repeats runs, wall and CPU time;
the last line gives each model's best wall time as a ratio to its budget.

    python benchmarks/toy_speed.py --repeats 3
"""

from __future__ import annotations

import argparse
import time

import torch

from diffdict import adapters
from diffdict.toyworld.scenes import eval_scenes

BUDGETS = {"toy/sdxl-turbo": 5.0, "toy/sdxl-base": 60.0, "toy/flux": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(BUDGETS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scenes = eval_scenes(args.images)
    captions, seeds = [s.caption for s in scenes], [s.seed for s in scenes]
    ratios = []
    for model in args.models.split(","):
        adapter = adapters.load(model, device="cpu")
        adapter.generate(captions[:2], seeds=seeds[:2])  # warm-up
        walls, cpus = [], []
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            adapter.generate(captions, seeds=seeds)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        budget = BUDGETS.get(model)
        print(
            f"{model}: {args.images} images, {adapter.defaults.steps} steps, guidance {adapter.defaults.guidance}: "
            f"best wall {min(walls):.2f} s, best CPU {min(cpus):.2f} s"
            + (f" (budget {budget:.0f} s)" if budget else "")
        )
        if budget:
            ratios.append(f"{model.split('/')[1]}={min(walls) / budget:.3f}")
    print("ratio_to_budget " + " ".join(ratios))


if __name__ == "__main__":
    main()
