"""`diffdict train CONFIG`: fit the [[dictionaries]] of a TOML config on an activation store."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train dictionaries (top-k SAE, ITDA) on an activation store",
        description="Train every [[dictionaries]] entry on the store of [train] (default: [harvest].out). "
        "Dictionaries on the same hook share one stream. Checkpoints every [train].checkpoint_every steps; "
        "running it again after a kill resumes and ends identical to an uninterrupted run. Metrics go to "
        "OUT/metrics.parquet, held-out (by prompt) evaluation to the rows with kind='eval'.",
    )
    parser.add_argument("config", help="TOML file with [train] and [[dictionaries]] tables")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from dictionaries.config import load_config
    from dictionaries.store_reader import ActivationStore
    from dictionaries.train import train

    config = load_config(args.config)
    if config.train is None:
        raise ValueError(f"{config.path}: no [train] table; add one with out and tokens")
    if not config.dictionaries:
        raise ValueError(f"{config.path}: no [[dictionaries]] entries; add at least one with name, "
                         f"architecture, hook")
    store_path = config.train.store or (config.harvest.out if config.harvest else "")
    if not store_path:
        raise ValueError(f"{config.path}: [train].store is not set and there is no [harvest].out to default to")
    store = ActivationStore(config.resolve(store_path))
    for spec in config.dictionaries:
        store.d(spec.hook)  # unknown hook: fail before any training
    out = config.resolve(config.train.out)
    dictionaries = train(store, config.dictionaries, config.train.settings(), out, progress=not args.no_progress)
    metrics = pl.read_parquet(out / "metrics.parquet")
    evals = metrics.filter(pl.col("kind") == "eval")
    for name, dictionary in dictionaries.items():
        row = evals.filter(pl.col("name") == name)
        summary = (f"held-out fvu {row['fvu'][0]:.4f}, L0 {row['l0'][0]:.1f}, dead {row['dead_fraction'][0]:.1%}"
                   if row.height else "no held-out prompts")
        print(f"{name}: {dictionary.architecture} n={dictionary.n} -> {out / name} ({summary})")
    return 0
