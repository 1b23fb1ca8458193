"""`diffdict findings RUN_DIR`: the papers' claims judged from a run's tables, as markdown."""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path
from typing import Any

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
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        nargs="?",
        default=None,
        help="a finished run folder, e.g. runs/toy_papers (omit with --render)",
    )
    parser.add_argument(
        "--tables",
        default=None,
        metavar="DIR",
        help="where the exported CSV tables go (default: RUN_DIR/findings), e.g. docs/findings",
    )
    parser.add_argument(
        "--markdown",
        default=None,
        metavar="FILE",
        help="the markdown to write (default: RUN_DIR/findings.md), e.g. docs/findings.md",
    )
    parser.add_argument(
        "--render",
        default=None,
        metavar="DIR",
        help="render from an exported folder instead of a run (e.g. docs/findings), writing --markdown",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffdict.studies.errors import UserError

    if args.render:
        if not args.markdown:
            raise UserError("--render needs --markdown FILE (where to write the findings)")
        return _write(None, Path(args.render), Path(args.markdown))
    if args.run_dir is None:
        raise UserError("give a run folder (e.g. runs/toy_papers), or --render DIR with an exported folder")
    run_dir = Path(args.run_dir)
    if not (run_dir / "tables").is_dir():
        raise UserError(f"{run_dir} has no tables/: run `diffdict run configs/toy_papers.toml` first")
    folder = Path(args.tables) if args.tables else run_dir / "findings"
    markdown = Path(args.markdown) if args.markdown else run_dir / "findings.md"
    if not any(_inside(path, run_dir) for path in (folder, markdown)):
        return _write(run_dir, folder, markdown)
    from diffdict.studies.lock import run_lock

    with run_lock(run_dir, command=f"diffdict findings {run_dir}"):  # a stage may be writing its tables
        return _write(run_dir, folder, markdown)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _write(run_dir: Path | None, folder: Path, markdown: Path) -> int:
    """Export the run's tables into `folder` (when a run is given), then render `markdown` from `folder`."""
    from diffdict.dictionaries.atomic import write_file_atomic
    from diffdict.studies.errors import UserError
    from diffdict.studies.findings import export, read_export, render

    if run_dir is not None:
        export(run_dir, folder, provenance(run_dir))
    seeds, record = read_export(folder)
    if not seeds:
        raise UserError(f"{folder} holds no seed-N/ folders of tables")
    shown = os.path.relpath(folder) if _inside(folder, Path.cwd()) else str(folder)
    text = render(seeds, record, source=shown)  # the header names the tables it was rendered from
    write_file_atomic(markdown, lambda tmp: tmp.write_text(text))
    print(f"findings: {markdown} (tables in {folder}; seeds {', '.join(map(str, seeds))})")
    return 0


def provenance(run_dir: Path) -> dict:
    """How the run was made: its command, the code's commit, the date, measured stage times."""
    from diffdict.dictionaries.guarded_read import read_json, read_toml

    record: dict[str, Any] = {"date": datetime.date.today().isoformat(), "machine": f"{os.cpu_count()} CPU cores"}
    run_json, timings, copy = run_dir / "run.json", run_dir / "timings.json", run_dir / "config.toml"
    rerun = "it is written again by the next `diffdict study` or `report` of the run's config"
    recorded = read_json(run_json, "the run's record of its config (run.json)", rerun) if run_json.exists() else {}
    config = Path(recorded["config"]) if isinstance(recorded.get("config"), str) else None
    if config is not None:
        shown = os.path.relpath(config) if config.is_absolute() else str(config)
        record["command"] = f"diffdict run {shown}"
        if copy.exists():
            seeds = read_toml(copy, "the run's copy of its config (TOML)", rerun).get("prompts", {}).get("seeds", [0])
            try:
                record["study_seed"] = int(seeds[0])
            except (TypeError, ValueError, IndexError, KeyError):
                pass
    record["commit"] = code_commit()  # a run made before runs recorded their code: the code reading it
    if timings.exists():
        measured = read_json(
            timings,
            "the run's timings",
            f"delete {timings}: it only records stage times, "
            "threads and the code's commit (the findings then show the code reading the run)",
        )
        record.update(measured.pop("code", {}))  # the run's own commit and date
        record.update(measured)
    return record
