"""Window edits with and without the prefix cache, on toy/sdxl-base at its protocol's 25 steps with CFG.

An edit inside a time window leaves every step before the window as the unedited generation ran it;
with a `PrefixCache` those steps are served from the first generation of the same prompts instead of
running the U-Net again. This times, in one process, the edits of one batch of prompts in the early,
middle and late windows of the windows study (oracle-like directions added on every cell), once
without the cache and once with it (filled by the unedited generation, as the studies' first edits
of a prompt set fill it), checks that both give the same images, and prints the ratios.

    python benchmarks/prefix_cache.py [--batch 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from diffdict import adapters

HOOK = "down.2.1"
WINDOWS = {"early": (0.6, 1.0), "middle": (0.2, 0.6), "late": (0.0, 0.2)}


def edit(adapter, window: tuple[float, float]) -> list:
    direction = torch.randn(adapter.hook_points[HOOK].d, generator=torch.Generator().manual_seed(0))
    return [adapters.AddDirection(HOOK, direction=direction, strength=4.0, t_range=window)]


def timed(adapter, prompts: list[str], window, cache) -> tuple[float, list[bytes]]:
    began = time.perf_counter()
    generation = adapter.generate(
        prompts, seeds=[0] * len(prompts), interventions=edit(adapter, window), prefix_cache=cache
    )
    return time.perf_counter() - began, [image.tobytes() for image in generation.images]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    adapter = adapters.load("toy/sdxl-base", device="cpu")
    colours, places = ["red", "blue", "green", "yellow"], ["left", "right", "top", "bottom"]
    prompts = [
        f"a large {colours[i % 4]} circle on the {places[i // 4 % 4]}, flat, on a black background"
        for i in range(args.batch)
    ]
    cache = adapters.PrefixCache()
    began = time.perf_counter()
    adapter.generate(prompts, seeds=[0] * len(prompts), prefix_cache=cache)
    unedited = time.perf_counter() - began
    print(
        f"toy/sdxl-base, {adapter.defaults.steps} steps, CFG {adapter.defaults.guidance}, batch {args.batch}, "
        f"threads {torch.get_num_threads()}; unedited generation (fills the cache) {unedited:.2f} s, "
        f"cache {cache.bytes / 2**20:.1f} MiB"
    )
    total = {"without": 0.0, "with": 0.0}
    for name, window in WINDOWS.items():
        best = {"without": float("inf"), "with": float("inf")}
        for _ in range(args.repeats):
            seconds, plain = timed(adapter, prompts, window, None)
            best["without"] = min(best["without"], seconds)
            seconds, cached = timed(adapter, prompts, window, cache)
            best["with"] = min(best["with"], seconds)
            if plain != cached:
                raise SystemExit(f"{name}: the cached generation's images differ from the full run's")
        for key in total:
            total[key] += best[key]
        print(
            f"{name:>6} {window}: without {best['without']:.2f} s, with {best['with']:.2f} s, "
            f"with / without {best['with'] / best['without']:.2f}"
        )
    print(f"all three windows: with / without {total['with'] / total['without']:.2f} (same images)")


if __name__ == "__main__":
    main()
