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
    """A study: how to compute its tables, plot them and (optionally) say what they show.

    summarize(run, tables) -> two or three sentences with the headline numbers, written from
    the tables; they open the report. A study without one gets no sentence there.
    """

    title: str
    about: str
    compute: Callable[[Run], dict[str, pl.DataFrame]]
    plot: Callable[[Run, dict[str, pl.DataFrame]], list]
    tables: tuple[str, ...]
    summarize: Callable[[Run, dict[str, pl.DataFrame]], str] | None = None


def _kinds() -> dict[str, StudyKind]:
    from .atlas import run_atlas, summarize_atlas
    from .compare import plot_compare, run_compare, summarize_compare
    from .editability import plot_editability, run_editability, summarize_editability
    from .layout import plot_layout, run_layout, summarize_layout
    from .training import plot_training, run_training, summarize_training
    from .summaries import summarize_transfer, summarize_windows
    from .transfer import plot_transfer, run_transfer
    from .windows import plot_windows, run_windows

    return {
        "transfer": StudyKind(
            "Cross-model transfer",
            "A dictionary fit on one model and hook, evaluated on the same hook of the other models and step "
            "counts, per step and CFG branch, on held-out prompts. Spliced fidelity: the image generated with the "
            "block's update replaced by its reconstruction, compared with the original (judge agreement on the "
            "toy world; pixel and CLIP similarity on real models). With edit_prompts, each target model is also "
            "edited at the hook with the transferred dictionary's features, beside its own dictionaries there and "
            "its own oracle and random directions (success at each method's best strength).",
            run_transfer, plot_transfer, ("transfer_metrics", "transfer_splice", "transfer_edits"), summarize_transfer),
        "compare": StudyKind(
            "SAE vs ITDA",
            "Same hook, same size and sparsity. Reconstruction on held-out maps, and (toy world) concept alignment "
            "per ground-truth concept: each method's feature and threshold are chosen on train prompts and scored on "
            "held-out prompts (AUROC, F1, precision, recall; k-sparse probing with k = 1, 2, 4, 8), beside the floor "
            "(the block's raw channels, random directions) and the ceiling (the concept's diff-in-means direction, "
            "a logistic probe on all channels).",
            run_compare, plot_compare,
            ("compare_metrics", "compare_alignment", "compare_sparse_probing", "compare_alignment_by_t"), summarize_compare),
        "windows": StudyKind(
            "Timestep-window interventions",
            "Edits of one concept made with dictionary features inside one time window at a time, in the edit "
            "styles of the papers, beside the oracle (diff-in-means) and random directions of the same norm in the "
            "same window. Success is strict (position: the object left its place; background: the objects kept "
            "their colour); clean success also keeps every attribute that was right before the edit.",
            run_windows, plot_windows, ("windows",), summarize_windows),
        "editability": StudyKind(
            "Editability map",
            "Which block edits which attribute, and when: per attribute, hook (or group of hooks), time window and "
            "strength (x the block's mean update norm at the edited cells), the success and clean success of the "
            "diff-in-means oracle direction, a random direction of the same norm, and each dictionary's best "
            "features, on held-out prompts.",
            run_editability, plot_editability, ("editability", "editability_best"), summarize_editability),
        "layout": StudyKind(
            "Layout from early steps",
            "At each denoising step, the final image's object mask predicted from the hook's activations (a probe on "
            "all channels; each dictionary's best feature), as IoU with the judged final image, beside what the "
            "caption alone gives and what another seed's image of the same caption gives.",
            run_layout, plot_layout, ("layout",), summarize_layout),
        "training": StudyKind(
            "Dictionary training",
            "FVU (training batches) and dead fraction against tokens seen; a fit has plateaued when its FVU moved "
            "less than 5% over its last tenth.",
            run_training, plot_training, ("training_curves", "training_summary"), summarize_training),
        "atlas": StudyKind(
            "Feature atlas",
            "One card per top feature of each dictionary: its label (the best-aligned ground-truth concept on the "
            "toy world, with that AUROC; for ITDA also where the atom came from), how often it fires, its "
            "top-activating held-out images (red marks where it fires), what it draws by itself (the empty "
            "prompt with its decoder direction added everywhere) and a modulation strip (its top prompt with the "
            "direction added at strengths from negative to strong). Strengths are multiples of the feature's "
            "mean activation.",
            run_atlas, lambda run, tables: [], ("atlas", "atlas_tiles"), summarize_atlas),
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
    run.save_config_copy()
    for name in selected:
        kind = kinds[name]
        if not force and read_tables(run, kind.tables) is not None:
            continue
        start = time.perf_counter()
        for table_name, table in kind.compute(run).items():
            write_table(table, run.table_path(table_name))
        seconds[name] = time.perf_counter() - start
        record_timings(run, "study_seconds", {name: seconds[name]})
    return seconds


def record_timings(run: Run, key: str, seconds: dict[str, float]) -> None:
    """Merge measured seconds into RESULTS/timings.json (what findings report as the run's cost)."""
    import json

    from dictionaries.atomic import write_json_atomic

    path = run.results_root / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings.setdefault(key, {}).update({k: round(v, 1) for k, v in seconds.items()})
    write_json_atomic(path, timings)


def record_code(run: Run) -> None:
    """The code a run is made with (commit, date) into RESULTS/timings.json, for `diffdict findings`."""
    import datetime
    import json

    from dictionaries.atomic import write_json_atomic

    from .code_version import code_commit

    path = run.results_root / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings["code"] = {"commit": code_commit(), "date": datetime.date.today().isoformat()}
    write_json_atomic(path, timings)


def build_report(run: Run) -> Path:
    """report.html from every study's tables on disk (plots are redrawn from them): the studies'
    summaries first, then per study its plots and cards, its tables last and collapsed."""
    from analysis.report import Section, write_report

    from .atlas import atlas_cards

    run.save_config_copy()
    sections = claims_section(run)
    for name in configured_studies(run):
        kind = _kinds()[name]
        tables = read_tables(run, kind.tables)
        if tables is None:
            sections.append(Section(kind.title, f"Not computed yet: run `diffdict study {run.config.path} --only {name}`."))
            continue
        shown = [(table_name, table) for table_name, table in tables.items() if table_name != "atlas_tiles"]
        sections.append(Section(kind.title, kind.about, tables=shown, plots=kind.plot(run, tables),
                                summary=kind.summarize(run, tables) if kind.summarize else "",
                                cards=atlas_cards(tables) if name == "atlas" else []))
    models = ", ".join(f"{m.name} = {m.id}" for m in run.config.models)
    dictionaries = ", ".join(f"{d.name} ({d.architecture}, {d.model} {d.hook}, n={d.n}, k={d.k})"
                             for d in run.config.dictionaries)
    summary = f"Models: {models}. Dictionaries: {dictionaries}. Prompts: {len(run.prompts)} ({run.config.prompts.source})."
    return write_report(run.results_root / "report.html", f"diffdict: {run.config.name}", sections, summary)


def claims_section(run: Run) -> list:
    """The papers' claims, first in the report, when the run measures at least half of them."""
    from analysis.report import Section

    from .claims import UNMEASURED, judge_claims
    from .findings import run_tables

    findings = judge_claims(run_tables(run.results_root))
    if 2 * sum(f.verdict == UNMEASURED for f in findings) > len(findings):
        return []
    verdicts = pl.DataFrame({"paper": [f.paper.split(",")[0] for f in findings], "claim": [f.claim for f in findings],
                             "verdict": [f.verdict for f in findings]})
    summary = "; ".join(f"{f.paper.split(',')[0]}: {f.claim.rstrip('.')} — {f.verdict}" for f in findings) + "."
    return [Section("The papers' claims", "Each claim judged from this run's tables beside its floor and ceiling "
                    "(a verdict about these models at this run's scale); `diffdict findings RUN_DIR` writes the "
                    "numbers and the rule behind each verdict.",
                    tables=[("claims", verdicts)], summary=summary)]


def run_all(run: Run, force: bool = False, log: Callable[[str], None] = print) -> dict[str, float]:
    """The whole config; returns seconds per stage."""
    timings = {}
    run.save_config_copy()
    record_code(run)
    for stage, action in (("harvest", run.harvest), ("train", run.train),
                          ("studies", lambda: run_studies(run, force=force)), ("report", lambda: build_report(run))):
        log(f"[{stage}] ...")
        start = time.perf_counter()
        result = action()
        timings[stage] = time.perf_counter() - start
        if stage == "studies" and result:
            log("[studies] " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.items()))
        log(f"[{stage}] done in {timings[stage]:.1f} s")
        record_timings(run, "stage_seconds", {stage: timings[stage]})
    return timings
