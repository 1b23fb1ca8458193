"""`diffdict run | check | harvest | train | study | report CONFIG`: a study config, whole or by stage.

Every stage is resumable: a killed harvest continues at the first missing shard, a killed
training from its last checkpoint (ending identical to an uninterrupted run), and studies
whose tables exist are kept unless --force.
"""

from __future__ import annotations

import argparse
import json
import time

from diffdict.studies.registry import study_names
from diffdict.studies.threads import add_threads_option, apply_threads

STAGES = {
    "run": "harvest -> train -> study -> report for a whole config (resumes where it stopped)",
    "check": "resolve a config (models on the meta device, hooks, dims, dictionaries) and state its cost "
    "(generations, tokens, store bytes, memory, disk); refuses a run the disk cannot hold; no download, "
    "no generation",
    "harvest": "capture the config's hooks for every model its studies read, into activation stores (resumable)",
    "train": "train the config's dictionaries (top-k SAE, ITDA) on the harvested activations (resumable)",
    "study": "compute the config's studies from its trained dictionaries (tables + plots)",
    "report": "write report.html from the tables already computed",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, help_text in STAGES.items():
        parser = subparsers.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        parser.add_argument("config", help="a study config (TOML), e.g. configs/quickstart.toml")
        parser.add_argument("--out", default=None, metavar="DIR", help="the run folder (default: the config's `out`)")
        if name == "check":
            parser.add_argument(
                "--json",
                action="store_true",
                help="print the run's cost (generations, tokens, store bytes, memory, disk) as JSON",
            )
        if name != "check":
            parser.add_argument(
                "--device", default=None, help="cpu, cuda, ... (default: the config's, else cuda if available)"
            )
            add_threads_option(parser)
            parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
        if name in ("run", "study"):
            parser.add_argument(
                "--force",
                action="store_true",
                help="recompute studies whose tables already exist "
                "(run: also re-harvest a store harvested with other settings)",
            )
        if name == "harvest":
            parser.add_argument(
                "--force",
                action="store_true",
                help="delete and re-harvest a store that was harvested with other settings",
            )
        if name in ("study", "report"):
            parser.add_argument(
                "--seed",
                type=int,
                default=None,
                metavar="N",
                help="another study seed: the same stores and dictionaries, other selection and "
                "scoring prompts from the same splits and other noise; results in RUN/seeds/N/ "
                "(checks whether a finding survives the prompts it rests on)",
            )
        if name == "study":
            parser.add_argument(
                "--only",
                action="append",
                default=None,
                metavar="STUDY",
                help=f"{', '.join(study_names())} (repeatable; default: every configured one)",
            )
        parser.set_defaults(func=_run, stage=name)


def _run(args: argparse.Namespace) -> int:
    from diffdict.studies.check import check_and_cost
    from diffdict.studies.config import load_config
    from diffdict.studies.validate import check_device, check_out

    config = load_config(args.config)
    seed = getattr(args, "seed", None)
    # The layout study draws its other-seed baseline with seed + 1, so that must be a valid seed too.
    if seed is not None and not 0 <= seed <= 2**63 - 2:
        from diffdict.studies.errors import UserError

        raise UserError(
            f"--seed {seed} is out of range; study seeds are integers from 0 to 2**63 - 2 (the layout "
            f"study also uses seed + 1)"
        )
    if args.out is not None:
        check_out(args.out, "--out", "")
        config.out = args.out
    if args.stage != "check":  # the device exists and is free to use, before any model is loaded
        check_device(args.device, "--device") if args.device else check_device(config.device, f"{config.path}: device")
        apply_threads(args.threads)
    # Every stage resolves the whole config first, and refuses a run whose writes would not fit the disk.
    lines, cost = check_and_cost(config, device=getattr(args, "device", None))
    if args.stage == "check":
        print(json.dumps(cost.as_json(), indent=2) if args.json else "\n".join(lines))
        return 0
    from diffdict.studies.lock import run_lock

    with run_lock(config.out, command=f"diffdict {args.stage} {args.config}"):  # one run per folder
        return _stage(args, config)


def _stage(args: argparse.Namespace, config) -> int:
    from diffdict.studies.pipeline import build_report, read_timings, run_all, run_studies
    from diffdict.studies.run import Run

    run = Run(
        config,
        device=args.device,
        progress=not args.no_progress,
        force=getattr(args, "force", False),
        study_seed=getattr(args, "seed", None),
    )
    read_timings(run)  # a damaged timings.json is refused now, not after the stage's work
    start = time.perf_counter()
    if args.stage == "run":
        timings = run_all(run, force=args.force)
        print("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    elif args.stage == "harvest":
        for model, store in run.harvest().items():
            print(f"{model}: {store.index.height} maps of hooks {store.hooks} in {store.root}")
    elif args.stage == "train":
        run.train()
        _print_training(run)
    elif args.stage == "study":
        run_studies(run, only=args.only, force=args.force)
    if args.stage in ("harvest", "train", "study"):  # threads, device, dtypes (`run` records each stage itself)
        from diffdict.studies.pipeline import record_compute

        record_compute(run, args.stage)
    if args.stage in ("run", "study", "report"):
        path = build_report(run) if args.stage != "run" else run.root / "report.html"
        print(f"report: {path}")
    print(f"{args.stage} finished in {time.perf_counter() - start:.1f} s")
    return 0


def _print_training(run) -> None:
    for entry in run.config.dictionaries:
        metrics = run.held_out_metrics(entry.name)
        summary = (
            f"held-out fvu {metrics['fvu']:.4f}, L0 {metrics['l0']:.1f}, dead {metrics['dead_fraction']:.1%}"
            if metrics
            else "no held-out evaluation"
        )
        print(
            f"{entry.name}: {entry.architecture} n={entry.n} k={entry.k} on {entry.model} {entry.hook} -> "
            f"{run.dictionary_dir(entry.name)} ({summary})"
        )
