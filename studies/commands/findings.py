"""`diffdict findings RUN_DIR`: the papers' claims judged from a run's tables, as markdown."""
from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

from diffdict.studies.code_version import code_commit


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "findings",
        help="judge the papers' claims from a run's tables (docs/findings.md)",
        description="Judge each paper's claim (block specialisation, causal edits and transfer; ITDA against "
        "the SAE, SAE features against neurons, Flux steering and standardisation; ITDA's fit time; layout "
        "and time windows) from a finished run of configs/toy_papers.toml, beside floor and ceiling, with a "
        "verdict. The tables the claims read are exported as CSV (with the command, commit, date and stage "
        "times) and the markdown is rendered from that export alone, so that the committed text can be "
        "checked against the committed numbers. Reruns made with `diffdict study --seed N` are included: a "
        "verdict that changes with the seed is marked fragile.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", default=None,
                        help="a finished run folder, e.g. runs/toy_papers (omit with --render)")
    parser.add_argument("--tables", default=None, metavar="DIR",
                        help="where the exported CSV tables go (default: RUN_DIR/findings), e.g. docs/findings")
    parser.add_argument("--markdown", default=None, metavar="FILE",
                        help="the markdown to write (default: RUN_DIR/findings.md), e.g. docs/findings.md")
    parser.add_argument("--render", default=None, metavar="DIR",
                        help="render from an exported folder instead of a run (e.g. docs/findings), writing --markdown")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffdict.studies.errors import UserError
    from diffdict.studies.findings import export, read_export, render

    if args.render:
        if not args.markdown:
            raise UserError("--render needs --markdown FILE (where to write the findings)")
        folder = Path(args.render)
    else:
        if args.run_dir is None:
            raise UserError("give a run folder (e.g. runs/toy_papers), or --render DIR with an exported folder")
        run_dir = Path(args.run_dir)
        if not (run_dir / "tables").is_dir():
            raise UserError(f"{run_dir} has no tables/: run `diffdict run configs/toy_papers.toml` first")
        folder = Path(args.tables) if args.tables else run_dir / "findings"
        export(run_dir, folder, provenance(run_dir))
    seeds, record = read_export(folder)
    if not seeds:
        raise UserError(f"{folder} holds no seed-N/ folders of tables")
    markdown = Path(args.markdown) if args.markdown else Path(args.run_dir) / "findings.md"
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(render(seeds, record))
    print(f"findings: {markdown} (tables in {folder}; seeds {', '.join(map(str, seeds))})")
    return 0


def provenance(run_dir: Path) -> dict:
    """How the run was made: its command, the code's commit, the date, measured stage times."""
    record = {"date": datetime.date.today().isoformat(), "machine": f"{os.cpu_count()} CPU cores"}
    run_json, timings = run_dir / "run.json", run_dir / "timings.json"
    config = Path(json.loads(run_json.read_text())["config"]) if run_json.exists() else None
    if config is not None:
        shown = os.path.relpath(config) if config.is_absolute() else str(config)
        record["command"] = f"diffdict run {shown}"
        try:
            import tomllib

            seeds = tomllib.loads((run_dir / "config.toml").read_text()).get("prompts", {}).get("seeds", [0])
            record["study_seed"] = int(seeds[0])
        except (OSError, ValueError):
            pass
    record["commit"] = code_commit()  # a run made before runs recorded their code: the code reading it
    if timings.exists():
        measured = json.loads(timings.read_text())
        record.update(measured.pop("code", {}))  # the run's own commit and date
        record.update(measured)
    return record
