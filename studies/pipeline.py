"""harvest -> train -> studies -> report, each stage resumable and callable on its own."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .run import Run
from .errors import UserError


@dataclass(frozen=True)
class StudyKind:
    title: str
    about: str
    compute: Callable[[Run], dict[str, pl.DataFrame]]
    plot: Callable[[Run, dict[str, pl.DataFrame]], list]
    tables: tuple[str, ...]


def _kinds() -> dict[str, StudyKind]:
    from .atlas import run_atlas
    from .compare import plot_compare, run_compare
    from .transfer import plot_transfer, run_transfer
    from .windows import plot_windows, run_windows

    return {
        "transfer": StudyKind(
            "Cross-model transfer",
            "A dictionary fit on one model and hook, evaluated on the same hook of the other models and step "
            "counts, per step and CFG branch, on held-out prompts. Spliced fidelity: the image generated with the "
            "block's update replaced by its reconstruction, compared with the original (judge agreement on the "
            "toy world; pixel and CLIP similarity on real models).",
            run_transfer, plot_transfer, ("transfer_metrics", "transfer_splice")),
        "compare": StudyKind(
            "SAE vs ITDA",
            "Same hook, same size and sparsity. Reconstruction on held-out maps, and (toy world) concept alignment: "
            "for every ground-truth concept the best single feature's AUROC per location, with the block's raw "
            "channels and random directions as baselines.",
            run_compare, plot_compare, ("compare_metrics", "compare_alignment")),
        "windows": StudyKind(
            "Timestep-window interventions",
            "Edits of one concept made with dictionary features inside one time window at a time, in the edit "
            "styles of the papers. Success: the judge sees the target concept; preservation: the other attributes "
            "the judge read correctly before the edit are still correct.",
            run_windows, plot_windows, ("windows",)),
        "atlas": StudyKind(
            "Feature atlas",
            "Top features of each dictionary with their top-activating held-out images; red marks where the "
            "feature fires. Labels: the best-aligned ground-truth concept (toy world) and, for ITDA, where the "
            "atom came from.",
            run_atlas, lambda run, tables: [], ("atlas", "atlas_tiles")),
    }


def configured_studies(run: Run) -> list[str]:
    return [name for name in _kinds() if getattr(run.config.studies, name) is not None]


def write_table(table: pl.DataFrame, path: Path) -> None:
    """Atomic parquet write: a killed run never leaves half a table behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    table.write_parquet(tmp)
    tmp.replace(path)


def read_tables(run: Run, names: tuple[str, ...]) -> dict[str, pl.DataFrame] | None:
    if not all(run.table_path(n).exists() for n in names):
        return None
    return {n: pl.read_parquet(run.table_path(n)) for n in names}


def run_studies(run: Run, only: list[str] | None = None, force: bool = False) -> dict[str, float]:
    """Compute every configured study whose tables are missing (all of them with force)."""
    kinds = _kinds()
    selected = only or configured_studies(run)
    unknown = [s for s in selected if s not in kinds]
    if unknown:
        raise UserError(f"unknown study {unknown}; studies: {', '.join(kinds)}")
    missing = [s for s in selected if getattr(run.config.studies, s) is None]
    if missing:
        raise UserError(f"{missing} not configured: add a [studies.{missing[0]}] table to the config")
    seconds = {}
    for name in selected:
        kind = kinds[name]
        if not force and read_tables(run, kind.tables) is not None:
            continue
        start = time.perf_counter()
        for table_name, table in kind.compute(run).items():
            write_table(table, run.table_path(table_name))
        seconds[name] = time.perf_counter() - start
    return seconds


def build_report(run: Run) -> Path:
    """report.html from every study's tables on disk (plots are redrawn from them)."""
    from analysis.report import Section, write_report

    from .atlas import atlas_galleries

    sections = []
    for name in configured_studies(run):
        kind = _kinds()[name]
        tables = read_tables(run, kind.tables)
        if tables is None:
            sections.append(Section(kind.title, f"Not computed yet: run `diffdict study {run.config.path} --only {name}`."))
            continue
        shown = [(table_name, table) for table_name, table in tables.items() if table_name != "atlas_tiles"]
        sections.append(Section(kind.title, kind.about, tables=shown, plots=kind.plot(run, tables),
                                galleries=atlas_galleries(tables) if name == "atlas" else []))
    models = ", ".join(f"{m.name} = {m.id}" for m in run.config.models)
    dictionaries = ", ".join(f"{d.name} ({d.architecture}, {d.model} {d.hook}, n={d.n}, k={d.k})"
                             for d in run.config.dictionaries)
    summary = f"Models: {models}. Dictionaries: {dictionaries}. Prompts: {len(run.prompts)} ({run.config.prompts.source})."
    return write_report(run.root / "report.html", f"diffdict: {run.config.name}", sections, summary)


def run_all(run: Run, force: bool = False, log: Callable[[str], None] = print) -> dict[str, float]:
    """The whole config; returns seconds per stage."""
    timings = {}
    for stage, action in (("harvest", run.harvest), ("train", run.train),
                          ("studies", lambda: run_studies(run, force=force)), ("report", lambda: build_report(run))):
        log(f"[{stage}] ...")
        start = time.perf_counter()
        action()
        timings[stage] = time.perf_counter() - start
        log(f"[{stage}] done in {timings[stage]:.1f} s")
    return timings
