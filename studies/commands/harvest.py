"""`diffdict harvest CONFIG`: capture activations into a store ([harvest] section of a TOML config)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "harvest",
        help="capture a model's activations into an activation store",
        description="Run the [harvest] model over prompts x seeds with capture on the chosen hooks and write "
        "sharded safetensors + a parquet index to `out`. Safe to kill: running it again resumes at the first "
        "missing shard and never duplicates or loses a map. Per-hook statistics are computed at the end.",
    )
    parser.add_argument("config", help="TOML file with a [harvest] table (model, hooks, prompts, seeds, dtype, out)")
    parser.add_argument("--device", default="cpu", help="device for the model (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dictionaries.config import load_config
    from dictionaries.harvest import harvest

    config = load_config(args.config)
    if config.harvest is None:
        raise ValueError(f"{config.path}: no [harvest] table; add one with model, hooks, prompts, seeds, out")
    section = config.harvest
    prompts = config.prompts()

    import adapters

    adapter = adapters.load(section.model, device=args.device)
    out = config.resolve(section.out)
    store = harvest(adapter, prompts, section.seeds, section.hooks, out, dtype=section.dtype,
                    batch_size=section.batch_size, capture=section.capture, steps=section.steps,
                    guidance=section.guidance, height=section.height, width=section.width,
                    progress=not args.no_progress)
    print(f"store {out}: {store.index.height} maps, hooks {store.hooks}")
    return 0
