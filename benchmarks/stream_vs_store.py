"""Stream training against store training on the toy world, same process, equal tokens.

The same config is run twice on toy/sdxl-turbo (1 step, down.2.1): once harvesting every prompt into
a store and training from it (train.source = "store"), once training from generation
(train.source = "stream"). Both keep every prompt in their store (harvest.prompts = all), so both
train on the same training prompts and are scored on the same held-out prompts. Printed:
held-out FVU of each SAE and their ratio (goal: within 5%), and seconds per million training
tokens: the store's harvest (its share for the training prompts) + training, against the
stream's generation + training (goal: the stream no slower).

    python benchmarks/stream_vs_store.py --prompts 384 --tokens 400000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from diffdict.studies.config import parse_config
from diffdict.studies.run import Run

TRAIN_SHARE = 0.75  # 1 - eval_fraction: the share of the harvested prompts that are trained on

CONFIG = """
name = "stream-vs-store"
out = "{out}"
seed = {seed}

[prompts]
source = "toyworld"
count = {prompts}
eval_fraction = 0.25

[[models]]
name = "turbo"
id = "toy/sdxl-turbo"

[harvest]
hooks = ["down.2.1"]
batch_size = 32
prompts = {prompts}

[train]
source = "{source}"
buffer_tokens = 16384
checkpoint_every = 1000000

[[dictionaries]]
name = "sae"
architecture = "topk_sae"
model = "turbo"
hook = "down.2.1"
n = 512
k = 8
tokens = {tokens}
batch = 1024
"""


def run_once(source: str, prompts: int, tokens: int, seed: int, folder: Path) -> dict[str, float]:
    import tomllib

    text = CONFIG.format(out=folder / source, source=source, prompts=prompts, tokens=tokens, seed=seed)
    run = Run(parse_config(tomllib.loads(text)), progress=False)
    began = time.perf_counter()
    run.harvest()
    harvested = time.perf_counter()
    run.train()
    trained = time.perf_counter()
    metrics = run.held_out_metrics("sae")
    assert metrics is not None, "training ends with a held-out evaluation"
    return {"fvu": metrics["fvu"], "harvest": harvested - began, "train": trained - harvested}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=384, help="toy-world prompts (a quarter held out)")
    parser.add_argument("--tokens", type=int, default=400_000, help="training tokens of each SAE")
    parser.add_argument("--seeds", type=int, default=2, help="runs of each source (FVU varies with the seed)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, list[dict[str, float]]] = {"store": [], "stream": []}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            for source in ("store", "stream"):
                results[source].append(run_once(source, args.prompts, args.tokens, seed, Path(folder) / str(seed)))
                print(f"seed {seed} {source:6s}: " + ", ".join(f"{k} {v:.4g}" for k, v in results[source][-1].items()))
    mean = {s: {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]} for s, rs in results.items()}
    per_million = 1e6 / args.tokens
    store, stream = mean["store"], mean["stream"]
    # The store run harvests every prompt once; the stream run generates the training prompts (a quarter is
    # held out and only stored). The store's cost of a training token is its harvest's share for the
    # training prompts plus its training; the stream's is its generation plus training.
    store_cost = store["harvest"] * TRAIN_SHARE + store["train"]
    print(
        f"held-out FVU ({args.tokens:,} tokens, {args.seeds} seeds, {args.prompts} prompts): store "
        f"{store['fvu']:.4f}, stream {stream['fvu']:.4f}"
    )
    print(
        f"seconds per million training tokens: store {store_cost * per_million:.1f} (harvest share "
        f"{store['harvest'] * TRAIN_SHARE * per_million:.1f} + training {store['train'] * per_million:.1f}), "
        f"stream (generation + training) {stream['train'] * per_million:.1f}"
    )
    print(f"stream_per_token_vs_store={stream['train'] / store_cost:.3f}")
    print(f"fvu_ratio_stream_to_store={stream['fvu'] / store['fvu']:.4f}")


if __name__ == "__main__":
    main()
