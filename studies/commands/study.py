"""`diffdict run | check | fit | study | report CONFIG`: a study config, whole or by stage."""
from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    commands = {
        "run": "harvest -> fit -> studies -> report for a whole config (resumes where it stopped)",
        "check": "resolve a config (models on the meta device, hooks, dims, dictionaries): no download, no generation",
        "fit": "fit the config's dictionaries on its harvested activations (resumable)",
        "study": "compute the config's studies from its fitted dictionaries (tables + plots)",
        "report": "write report.html from the tables already computed",
    }
    for name, help_text in commands.items():
        parser = subparsers.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        parser.add_argument("config", help="a study config (TOML), e.g. configs/quickstart.toml")
        if name != "check":
            parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the config's, else cuda if available)")
            parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
        if name in ("run", "study"):
            parser.add_argument("--force", action="store_true", help="recompute studies whose tables already exist")
        if name == "study":
            parser.add_argument("--only", action="append", default=None, metavar="STUDY",
                                help="transfer, compare, windows or atlas (repeatable; default: every configured one)")
        parser.set_defaults(func=_run, stage=name)


def _run(args: argparse.Namespace) -> int:
    from studies.config import load_config

    config = load_config(args.config)
    if args.stage == "check":
        from studies.check import check_config

        print("\n".join(check_config(config)))
        return 0
    from studies.pipeline import build_report, run_all, run_studies
    from studies.run import Run

    run = Run(config, device=args.device, progress=not args.no_progress)
    start = time.perf_counter()
    if args.stage == "run":
        timings = run_all(run, force=args.force)
        print("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    elif args.stage == "fit":
        run.fit()
    elif args.stage == "study":
        run_studies(run, only=args.only, force=args.force)
    if args.stage in ("run", "study", "report"):
        path = build_report(run) if args.stage != "run" else run.root / "report.html"
        print(f"report: {path}")
    print(f"{args.stage} finished in {time.perf_counter() - start:.1f} s")
    return 0
