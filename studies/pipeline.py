"""harvest -> train -> studies -> report, each stage resumable and callable on its own."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from .errors import UserError
from .registry import study_kinds
from .run import Run
from .table_inputs import describe_inputs, inputs_hash, recorded_hash, study_inputs
from .table_inputs import record as record_inputs


def configured_studies(run: Run) -> list[str]:
    """The studies the run's config has a [studies.NAME] table for, in the registry's order."""
    return [name for name, _ in run.config.studies.items()]


def write_table(table: pl.DataFrame, path: Path) -> None:
    """Atomic parquet write: a killed run never leaves half a table behind (and a full disk says so)."""
    from diffdict.dictionaries.atomic import write_file_atomic

    write_file_atomic(path, lambda tmp: table.write_parquet(tmp))


def read_tables(run: Run, names: tuple[str, ...], study: str | None = None) -> dict[str, pl.DataFrame] | None:
    """A study's tables, or None while one is missing; a damaged one is refused with the command that
    computes that study again (the other studies' tables are kept)."""
    from diffdict.dictionaries.guarded_read import read_parquet

    if not all(run.table_path(n).exists() for n in names):
        return None
    fix = recompute_fix(run.config.path, study, run.seed_override)
    return {n: read_parquet(run.table_path(n), "a study table", fix) for n in names}


def recompute_fix(config: str | Path | None, study: str | None, seed: int | None = None) -> str:
    """The safe fix for a damaged study table: compute that study again (its tables replaced, the others kept)."""
    again = (
        f"diffdict study {config or 'CONFIG'}{f' --only {study}' if study else ''} --force"
        f"{f' --seed {seed}' if seed is not None else ''}"
    )
    return (
        f"compute it again with `{again}`, which replaces {'that study' if study else 'the studies'}'s tables "
        f"and keeps the others"
    )


def study_of_table(table: str) -> str | None:
    """The study that writes `table` (its StudyKind declares it), or None."""
    return next((name for name, kind in study_kinds().items() if table in kind.tables), None)


def run_studies(run: Run, only: list[str] | None = None, force: bool = False) -> dict[str, float]:
    """Compute every configured study whose tables are missing or were computed from other inputs (their
    config table, fits, stores, prompts or seed; see table_inputs.py), every one with force."""
    kinds = study_kinds()
    selected = only or configured_studies(run)
    unknown = [s for s in selected if s not in kinds]
    if unknown:
        raise UserError(f"unknown study {unknown}; studies: {', '.join(kinds)}")
    missing = [s for s in selected if getattr(run.config.studies, s) is None]
    if missing:
        raise UserError(f"{missing} not configured: add a [studies.{missing[0]}] table to the config")
    seconds = {}
    run.save_config_copy()
    from diffdict.dictionaries.atomic import remove_stale_temps

    remove_stale_temps(run.results_root / "tables")  # a table write killed mid-way (we hold the run lock)
    tables_folder = run.table_path("x").parent
    for name in selected:
        kind = kinds[name]
        inputs = study_inputs(run, name)  # its config, fits, stores, prompts and seed: stale tables are recomputed
        if (
            not force
            and read_tables(run, kind.tables, name) is not None
            and recorded_hash(tables_folder, name) == inputs_hash(inputs)
        ):
            continue
        start = time.perf_counter()
        compute = kind.function("compute")
        assert compute is not None, f"study {name!r} declares no compute function"
        tables = compute(run)
        if set(tables) != set(kind.tables):  # an undeclared table is never read back; a missing one reruns forever
            raise TypeError(
                f"study {name!r} computed the tables {sorted(tables)}, but declares {list(kind.tables)} "
                f"(StudyKind.tables): they must be the same"
            )
        for table_name, table in tables.items():
            write_table(table, run.table_path(table_name))
        record_inputs(tables_folder, name, inputs)  # last: tables without it are recomputed
        seconds[name] = time.perf_counter() - start
        record_timings(run, "study_seconds", {name: seconds[name]})
    return seconds


def record_timings(run: Run, key: str, seconds: dict[str, float]) -> None:
    """Merge measured seconds into RESULTS/timings.json (what findings report as the run's cost)."""
    _update_timings(
        run, lambda timings: timings.setdefault(key, {}).update({k: round(v, 1) for k, v in seconds.items()})
    )


def record_code(run: Run) -> None:
    """The code a run is made with (commit, date) into RESULTS/timings.json, for `diffdict findings`."""
    import datetime

    from .code_version import code_commit

    code = {"commit": code_commit(), "date": datetime.date.today().isoformat()}
    _update_timings(run, lambda timings: timings.update(code=code))


def record_compute(run: Run, stage: str) -> None:
    """What a stage computed with into RESULTS/timings.json ("compute": {stage: ...}): torch's CPU thread
    count, the device and the models' dtypes. Bit-equal reruns need all three the same: the thread count
    changes how float sums are split (between 1 and 2 threads, captured maps differ by ~1e-5 and an SAE's
    atoms by ~1e-2), so a rerun that differs in the last digits is explained here."""
    import os

    import torch

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 records for the group (as it holds the lock)
        return
    record = {
        "threads": torch.get_num_threads(),
        "device": str(run.adapter_device()),
        "model_dtypes": run.model_dtypes(),
        "store_dtype": run.config.harvest.dtype,
    }
    _update_timings(run, lambda timings: timings.setdefault("compute", {}).update({stage: record}))


def read_timings(run: Run) -> dict:
    """RESULTS/timings.json, or {}; a stage reads it before it starts, so a damaged one stops it before work."""
    from diffdict.dictionaries.guarded_read import read_json

    path = run.results_root / "timings.json"
    if not path.exists():
        return {}
    return read_json(
        path,
        "the run's timings",
        f"it only records stage times, threads and the code's commit: "
        f"delete {path} (it is written again by the next stage)",
    )


def _update_timings(run: Run, change: Callable[[dict], None]) -> None:
    """Read RESULTS/timings.json (or {}), apply `change` to it in place, write it back atomically."""
    from diffdict.dictionaries.atomic import write_json_atomic

    timings = read_timings(run)
    change(timings)
    write_json_atomic(run.results_root / "timings.json", timings)


def build_report(run: Run) -> Path:
    """report.html from every study's tables on disk (plots are redrawn from them): the studies'
    summaries first, then per study its plots and cards, its tables last and collapsed."""
    from diffdict.analysis.report import Section, write_report

    run.save_config_copy()
    sections = claims_section(run)
    kinds = study_kinds()
    for name in configured_studies(run):
        kind = kinds[name]
        tables = read_tables(run, kind.tables, name)
        if tables is None:
            sections.append(
                Section(kind.title, f"Not computed yet: run `diffdict study {run.config.path} --only {name}`.")
            )
            continue
        shown = [(table_name, table) for table_name, table in tables.items() if table_name not in kind.unlisted]
        plot, summarize, cards = (kind.function(role) for role in ("plot", "summarize", "cards"))
        about = f"{kind.about} {describe_inputs(run.table_path('x').parent, name)}".strip()
        sections.append(
            Section(
                kind.title,
                about,
                tables=shown,
                plots=plot(run, tables) if plot else [],
                summary=summarize(run, tables) if summarize else "",
                cards=cards(tables) if cards else [],
            )
        )
    models = ", ".join(f"{m.name} = {m.id}" for m in run.config.models)
    dictionaries = ", ".join(
        f"{d.name} ({d.architecture}, {d.model} {d.hook}, n={d.n}, k={d.k})" for d in run.config.dictionaries
    )
    summary = (
        f"Models: {models}. Dictionaries: {dictionaries}. Prompts: {len(run.prompts)} ({run.config.prompts.source})."
    )
    return write_report(run.results_root / "report.html", f"diffdict: {run.config.name}", sections, summary)


def claims_section(run: Run) -> list:
    """The papers' claims, first in the report, when the run measures at least half of them."""
    from diffdict.analysis.report import Section

    from .claims import UNMEASURED, judge_claims
    from .findings import run_tables

    findings = judge_claims(run_tables(run.results_root, run.config.path))
    if 2 * sum(f.verdict == UNMEASURED for f in findings) > len(findings):
        return []
    verdicts = pl.DataFrame(
        {
            "paper": [f.paper.split(",")[0] for f in findings],
            "claim": [f.claim for f in findings],
            "verdict": [f.verdict for f in findings],
        }
    )
    summary = "; ".join(f"{f.paper.split(',')[0]}: {f.claim.rstrip('.')} — {f.verdict}" for f in findings) + "."
    return [
        Section(
            "The papers' claims",
            "Each claim judged from this run's tables beside its floor and ceiling "
            "(a verdict about these models at this run's scale); `diffdict findings RUN_DIR` writes the "
            "numbers and the rule behind each verdict.",
            tables=[("claims", verdicts)],
            summary=summary,
        )
    ]


def run_all(run: Run, force: bool = False, log: Callable[[str], None] = print) -> dict[str, float]:
    """The whole config; returns seconds per stage."""
    timings = {}
    run.save_config_copy()
    record_code(run)
    for stage, action in (
        ("harvest", run.harvest),
        ("train", run.train),
        ("studies", lambda: run_studies(run, force=force)),
        ("report", lambda: build_report(run)),
    ):
        log(f"[{stage}] ...")
        start = time.perf_counter()
        result = action()
        timings[stage] = time.perf_counter() - start
        if stage == "studies" and isinstance(result, dict) and result:
            log("[studies] " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.items()))
        log(f"[{stage}] done in {timings[stage]:.1f} s")
        record_timings(run, "stage_seconds", {stage: timings[stage]})
        if stage != "report":
            record_compute(run, stage)
    return timings
