"""docs/findings.md from a run: the papers' claims (studies/claims.py), each with its numbers and verdict.

Two steps, so that anyone can check the committed text against the committed numbers:
  export   the small tables the claims read, from RUN/tables (seed 0) and RUN/seeds/N/tables (the
           reruns of `diffdict study --seed N`), into a folder of CSV files (seed-N/NAME.csv) with
           provenance.json (command, commit, date, stage times)
  render   findings markdown from such a folder alone; `diffdict findings` runs both, and a test
           renders the committed folder and compares it with the committed docs/findings.md

A verdict that differs between seeds is marked fragile.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

from .claims import Finding, judge_claims
from .claims_shabalin import INFO_FRAMES, VERDICT_FRAMES

# The run tables the claims read, as they are (small) or reduced (per-prompt rows -> rates).
PLAIN = (
    "editability_best",
    "transfer_metrics",
    "transfer_splice",
    "compare_metrics",
    "compare_alignment",
    "training_summary",
    "layout",
)
STAGE_ORDER = ["harvest", "train", "studies", "report"]
SEED_FOLDER = re.compile(r"seed-(\d+)$")


def run_tables(results: Path, config: str | Path | None = None) -> dict[str, pl.DataFrame]:
    """The claims' tables from one results folder (a run, or one of its seeds/N folders); `config`, the run's
    config when known, goes into the fix for a damaged table."""
    from diffdict.dictionaries.guarded_read import read_parquet

    from .pipeline import recompute_fix, study_of_table

    folder = results / "tables"
    seed = int(results.name) if results.parent.name == "seeds" and results.name.isdigit() else None

    def read(name: str) -> pl.DataFrame | None:
        # a table a study left empty (e.g. alignment without ground-truth concepts) has nothing to judge
        path = folder / f"{name}.parquet"
        fix = recompute_fix(config, study_of_table(name), seed)
        table = read_parquet(path, "a study table", fix) if path.exists() else None
        return None if table is None or table.is_empty() else table

    tables = {name: table for name in PLAIN if (table := read(name)) is not None}
    if (edits := read("editability")) is not None and "split" in edits.columns:
        tables["editability_prompts"] = held_out_prompts(edits, ["model", "unit", "attribute", "window", "method"])
    if (edits := read("transfer_edits")) is not None:
        from .transfer import transfer_edit_success

        tables["transfer_edit_success"] = transfer_edit_success(edits)
        if "split" in edits.columns:
            tables["transfer_edit_prompts"] = held_out_prompts(
                edits.rename({"model": "target_model"}), ["dictionary", "target_model", "attribute", "method"]
            )
    if (windows := read("windows")) is not None:
        tables["windows_success"] = windows_success(windows)
        if "split" in windows.columns:
            tables["windows_prompts"] = held_out_prompts(
                windows, ["model", "hook", "dictionary", "edit", "style", "window"]
            )
    if "compare_alignment" in tables:  # the claims read F1 per concept (random draws averaged) in their frames
        alignment = tables["compare_alignment"]
        if "family" in alignment.columns:  # row and column concepts stay in the run's tables: no claim reads them
            claimed = {family for _, family in (*INFO_FRAMES, *VERDICT_FRAMES)}
            alignment = alignment.filter(pl.col("family").is_in(list(claimed)))
        keys = [
            c
            for c in ("world", "pair", "method", "kind", "scope", "family", "concept", "attribute")
            if c in alignment.columns
        ]
        tables["compare_alignment"] = alignment.group_by(keys, maintain_order=True).agg(
            pl.col("auroc").mean(), pl.col("f1").mean()
        )
    return tables


def held_out_prompts(edits: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per-prompt clean success of the held-out rows (what paired tests read), sorted."""
    return (
        edits.filter(pl.col("split") == "score")
        .select(*keys, "prompt_id", pl.col("clean_success").cast(pl.Int8))
        .sort([*keys, "prompt_id"])
    )


def windows_success(windows: pl.DataFrame) -> pl.DataFrame:
    """Per (split, model, hook, dictionary, edit, style, kind, window): mean success, clean success, no-edit
    rate and the prompts they rest on."""
    keys = [
        c
        for c in (
            "split",
            "model",
            "hook",
            "dictionary",
            "edit",
            "style",
            "kind",
            "window",
            "t_low",
            "t_high",
            "steps_in_window",
        )
        if c in windows.columns
    ]
    rates = [pl.col(c).mean() for c in ("success", "clean_success", "target_before") if c in windows.columns]
    return (
        windows.group_by(keys)
        .agg(*rates, pl.len().alias("prompts"))
        .sort([k for k in keys if k in ("split", "model", "hook", "dictionary", "edit", "style", "window")])
    )


def seed_results(run_dir: Path, base_seed: int) -> dict[int, Path]:
    """seed -> results folder: the run itself, and every seeds/N it holds."""
    out = {base_seed: run_dir}
    seeds = run_dir / "seeds"
    if seeds.is_dir():
        for folder in sorted(seeds.iterdir()):
            if folder.name.isdigit() and (folder / "tables").is_dir():
                out[int(folder.name)] = folder
    return out


def export(run_dir: Path, out: Path, provenance: dict) -> list[Path]:
    """Write every seed's claim tables as CSV under out/seed-N/, and out/provenance.json.

    Every table is read before the first file is written, so a damaged table stops the export with
    nothing written (no folder of some seeds' tables beside an old provenance); each file is atomic."""
    from diffdict.dictionaries.atomic import write_file_atomic

    base_seed = int(provenance.get("study_seed", 0))
    tables = {seed: run_tables(results) for seed, results in seed_results(run_dir, base_seed).items()}
    written = []
    for seed, named in tables.items():
        folder = out / f"seed-{seed}"
        for name, table in named.items():
            path = folder / f"{name}.csv"
            written.append(write_file_atomic(path, lambda tmp, table=table: table.write_csv(tmp, float_precision=6)))
    text = json.dumps(provenance, indent=2, sort_keys=True) + "\n"
    write_file_atomic(out / "provenance.json", lambda tmp: tmp.write_text(text))
    return written


def read_export(folder: Path) -> tuple[dict[int, dict[str, pl.DataFrame]], dict]:
    """(seed -> tables, provenance) from an exported folder."""
    if not folder.is_dir():
        from .errors import MissingFileError

        raise MissingFileError(
            f"{folder} is not a findings folder; make one with `diffdict findings RUN_DIR --tables {folder}`"
        )
    from diffdict.dictionaries.guarded_read import read_csv, read_json

    fix = (
        f"export it again from the run with `diffdict findings RUN_DIR --tables {folder}` (or restore it, e.g. "
        f"`git checkout -- {folder}` for the committed docs/findings)"
    )
    seeds = {}
    for sub in sorted(folder.iterdir()):
        match = SEED_FOLDER.match(sub.name)
        if match and sub.is_dir():
            seeds[int(match.group(1))] = {
                p.stem: read_csv(p, "an exported claims table (CSV)", fix, infer_schema_length=None)
                for p in sorted(sub.glob("*.csv"))
            }
    provenance_file = folder / "provenance.json"
    provenance = read_json(provenance_file, "the export's provenance (JSON)", fix) if provenance_file.exists() else {}
    return dict(sorted(seeds.items())), provenance


def render(seeds: dict[int, dict[str, pl.DataFrame]], provenance: dict, source: str = "docs/findings") -> str:
    """The findings markdown: a verdict table, then one block per claim (numbers from the first seed).

    source: the folder of exported tables it is rendered from, as the text names it."""
    if not seeds:
        raise ValueError("no seed folders to render")
    base_seed = int(provenance.get("study_seed", min(seeds)))
    base_seed = base_seed if base_seed in seeds else min(seeds)
    findings = {seed: judge_claims(tables) for seed, tables in seeds.items()}
    main = findings[base_seed]
    others = {seed: {f.key: f.verdict for f in fs} for seed, fs in findings.items() if seed != base_seed}
    lines = [
        "# The papers' claims on the toy world",
        "",
        f"Generated by `diffdict findings` from the tables in {source.rstrip('/')}/ (do not edit by hand). "
        "Each claim "
        "is measured on the toy world, where the truth is known, beside a floor (random directions, raw "
        "channels) and a ceiling (the diff-in-means oracle, a supervised probe). A verdict is about these toy "
        "models at this scale, not about the papers' models.",
        "",
    ]
    lines += _provenance_lines(provenance, seeds)
    lines += ["", "| paper | claim | verdict |", "|---|---|---|"]
    for finding in main:
        lines.append(f"| {finding.paper.split(',')[0]} | {finding.claim} | {_verdict(finding, others)} |")
    for finding in main:
        lines += [
            "",
            f"## {finding.claim}",
            "",
            f"*{finding.paper}.* Verdict: **{_verdict(finding, others)}**.",
            "",
            finding.body,
        ]
    return "\n".join(lines) + "\n"


def _verdict(finding: Finding, others: dict[int, dict[str, str]]) -> str:
    flips = [
        f"seed {seed}: {verdicts[finding.key]}"
        for seed, verdicts in others.items()
        if verdicts.get(finding.key, finding.verdict) != finding.verdict
    ]
    return finding.verdict + (
        f" (fragile; {', '.join(flips)})"
        if flips
        else f" (same with seed {', '.join(map(str, others))})"
        if others
        else ""
    )


def _provenance_lines(provenance: dict, seeds: dict) -> list[str]:
    lines = []
    if provenance.get("command"):
        lines.append(
            f"- Run: `{provenance['command']}` at commit {provenance.get('commit', '?')}, "
            f"{provenance.get('date', '?')}."
        )
    if provenance.get("stage_seconds"):
        seconds = provenance["stage_seconds"]
        order = sorted(seconds, key=lambda k: STAGE_ORDER.index(k) if k in STAGE_ORDER else len(STAGE_ORDER))
        stages = ", ".join(f"{k} {seconds[k] / 60:.1f}" for k in order)
        lines.append(
            f"- Time on {provenance.get('machine', 'this machine')}: {sum(seconds.values()) / 60:.1f} min ({stages})."
        )
    if provenance.get("study_seconds"):
        seconds = provenance["study_seconds"]
        studies = ", ".join(f"{k} {seconds[k] / 60:.1f}" for k in sorted(seconds, key=lambda k: -seconds[k]))
        lines.append(f"- Studies (min, longest first): {studies}.")
    extra = sorted(set(seeds) - {int(provenance.get("study_seed", min(seeds)))})
    if extra:
        lines.append(
            f"- Seeds: the numbers below are seed {provenance.get('study_seed', min(seeds))}'s; "
            f"`diffdict study --seed {extra[0]}` reran every study on other prompts from the same splits "
            "(same stores and dictionaries). A verdict that changes with the seed is marked fragile."
        )
    return lines
