"""Windows-study edits: one packed feature-edit intervention per hook against one EditFeatures per prompt.

The windows study edits every prompt of a batch with its own features on its own cells. Built as one
EditFeatures per prompt and region, each intervention encodes the whole batch at every step, so the
edit's cost grows with the batch squared; RowFeatureEdits carries every prompt's ops from one encode.
This times both on toy/sdxl-base at the tinaz_spatial style (zero the source feature on its cells, set
the target inside its region and zero it outside), per image, at two batch sizes, in one process, and
prints the ratios. Both edits give the same images up to float rounding (the test suite checks the
change they make: tests/test_adapters_interventions.py).

    python benchmarks/windows_packing.py [--steps 10] [--batches 16 48] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from diffdict import adapters
from diffdict.dictionaries.topk_sae import TopKSAE, TopKSAEConfig

HOOK = "down.2.1"


def ops_for(batch: int, grid: tuple[int, int], n: int) -> list[tuple[int, int, int, torch.Tensor]]:
    """(row, source feature, target feature, target cells) per prompt: a 3x3 region at a varying place."""
    out = []
    for row in range(batch):
        cells = torch.zeros(grid)
        r, c = row % (grid[0] - 2), (row * 3) % (grid[1] - 2)
        cells[r : r + 3, c : c + 3] = 1.0
        out.append((row, row % n, (row * 7 + 1) % n, cells))
    return out


def per_prompt(dictionary, plan, batch: int, grid, window) -> list:
    """The baseline: one EditFeatures per prompt and op, each confined to its row by a (batch, h, w) mask."""
    out = []
    common: dict[str, Any] = {"t_range": window, "branch": "cond+uncond-", "dictionary": dictionary}
    for row, source, target, cells in plan:

        def only(region, row=row):
            mask = torch.zeros(batch, *grid)
            mask[row] = region
            return mask

        out += [
            adapters.EditFeatures(HOOK, mask=only(cells), features=[source], mode="zero", **common),
            adapters.EditFeatures(HOOK, mask=only(cells), features=[target], mode="set", value=3.0, **common),
            adapters.EditFeatures(HOOK, mask=only(1.0 - cells), features=[target], mode="zero", **common),
        ]
    return out


def packed(dictionary, plan, window) -> list:
    ops = []
    for row, source, target, cells in plan:
        ops += [
            adapters.FeatureOp(row, source, "zero", cells),
            adapters.FeatureOp(row, target, "set", cells, 3.0),
            adapters.FeatureOp(row, target, "zero", 1.0 - cells),
        ]
    return [adapters.RowFeatureEdits(HOOK, dictionary=dictionary, ops=ops, t_range=window, branch="cond+uncond-")]


def seconds_per_image(adapter, batch: int, interventions: list, steps: int, repeats: int) -> float:
    prompts = ["a large red circle on the left, flat, on a black background"] * batch
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        adapter.generate(prompts, seeds=[0] * batch, steps=steps, interventions=interventions)
        best = min(best, time.perf_counter() - began)
    return best / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 48])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    adapter = adapters.load("toy/sdxl-base", device="cpu")
    point = adapter.hook_point(HOOK)
    grid = point.grid(64, 64)
    dictionary = TopKSAE.from_config(TopKSAEConfig(d=point.d, n=512, k=8))
    window = (0.2, 0.6)
    print(
        f"toy/sdxl-base, {args.steps} steps with CFG, tinaz_spatial edits at {HOOK} in t in {window}, "
        f"best of {args.repeats}"
    )
    rows = {}
    for batch in args.batches:
        plan = ops_for(batch, grid, 512)
        rows[batch] = (
            seconds_per_image(
                adapter, batch, per_prompt(dictionary, plan, batch, grid, window), args.steps, args.repeats
            ),
            seconds_per_image(adapter, batch, packed(dictionary, plan, window), args.steps, args.repeats),
            seconds_per_image(adapter, batch, [], args.steps, args.repeats),
        )
        old, new, none = rows[batch]
        print(
            f"batch {batch:3d}: s/image one-per-prompt {old:.4f}, packed {new:.4f}, no edit {none:.4f}; "
            f"packed / one-per-prompt {new / old:.2f}"
        )
    first, last = args.batches[0], args.batches[-1]
    for name, column in (("one-per-prompt", 0), ("packed", 1)):
        print(f"{name}: s/image at batch {last} / at batch {first}: {rows[last][column] / rows[first][column]:.2f}")


if __name__ == "__main__":
    main()
