"""Cross-model transfer: a dictionary fit on one model and hook, evaluated on the same hook of
other models and step counts (1-step Turbo -> 4-step Turbo -> Base), per step and CFG branch.

Tables:
  transfer_metrics   dictionary, source_model, target_model, hook, branch, step, t, fvu, l0, explained_variance
  transfer_splice    dictionary, source_model, target_model, hook, prompts, pixel_similarity,
                     judge_agreement (toy world) or clip_similarity (real models)
  transfer_edits     (with edit_prompts > 0) the editability table's columns plus dictionary and
                     source_model: each target model edited at the dictionary's hook by the transferred
                     dictionary's features, the target's own dictionaries there, and the target's own
                     oracle and random directions (features and directions chosen on the target's
                     selection prompts, judged on its held-out ones)
"""

from __future__ import annotations

import polars as pl
import torch
from tqdm.auto import tqdm

from .run import Run


def transfer_metrics(run: Run, dictionary_name: str, target_model: str) -> list[dict]:
    """FVU / L0 of one dictionary on one model's held-out maps, per (branch, step)."""
    from diffdict.dictionaries.metrics import evaluate

    entry = run.config.dictionary(dictionary_name)
    dictionary = run.dictionary(dictionary_name)
    store = run.store(target_model)
    prompts = run.config.prompts
    rows = store.select(entry.hook, split="eval", eval_fraction=prompts.eval_fraction, split_seed=run.config.seed)
    maps = store.read_maps(rows)  # one pass over the shards: reading per (branch, step) reopens each shard
    rows = rows.with_row_index("position")
    out = []
    for (branch, step), group in sorted(rows.group_by(["branch", "step"]), key=lambda item: (item[0][0], item[0][1])):
        metrics = evaluate(dictionary, [torch.cat([maps[i] for i in group["position"].to_list()])])
        out.append(
            {
                "dictionary": dictionary_name,
                "architecture": entry.architecture,
                "source_model": entry.model,
                "target_model": target_model,
                "hook": entry.hook,
                "branch": branch,
                "step": int(step),
                "t": float(group["t"].mean()),
                "fvu": metrics["fvu"],
                "l0": metrics["l0"],
                "explained_variance": metrics["explained_variance"],
            }
        )
    return out


def splice_fidelity(run: Run, dictionary_name: str, target_model: str, count: int) -> dict:
    """Generate held-out prompts with and without the block's update replaced by its reconstruction."""
    from diffdict import adapters

    from .similarity import judge_agreement, pixel_similarity

    entry = run.config.dictionary(dictionary_name)
    from .labelled import prompt_ids

    prompts = [run.prompts[i] for i in prompt_ids(run, target_model, "scoring")[:count]]
    texts, seeds = [p.text for p in prompts], [run.study_seed] * len(prompts)
    splice = adapters.Splice(entry.hook, dictionary=run.dictionary(dictionary_name), branch="both")
    original = run.generate(target_model, texts, seeds).images
    spliced = run.generate(target_model, texts, seeds, interventions=[splice]).images
    row = {
        "dictionary": dictionary_name,
        "architecture": entry.architecture,
        "source_model": entry.model,
        "target_model": target_model,
        "hook": entry.hook,
        "prompts": len(prompts),
        "pixel_similarity": sum(map(pixel_similarity, original, spliced)) / len(prompts),
    }
    if all(p.scene is not None for p in prompts):
        row["judge_agreement"] = sum(map(judge_agreement, original, spliced)) / len(prompts)
    else:
        row["clip_similarity"] = float(run.clip.image_image(spliced, original).mean())
    return row


def transfer_edits(run: Run, dictionary_name: str, target_model: str) -> list[dict]:
    """Edits on `target_model` with the transferred dictionary against the target's own references."""
    from .editability import EditCells

    study = run.config.studies.transfer
    entry = run.config.dictionary(dictionary_name)
    # the target's own dictionaries of the same architecture at that hook (an SAE is compared with an SAE)
    own = [
        d.name
        for d in run.config.dictionaries
        if d.model == target_model
        and d.hook == entry.hook
        and d.name != dictionary_name
        and d.architecture == entry.architecture
    ]
    cells = EditCells(
        run, target_model, [entry.hook], study.edit_selection_prompts, study.edit_prompts, study.edit_tuning_prompts
    )
    rows = []
    for attribute in study.edit_attributes:
        rows += cells.edit(
            entry.hook,
            [entry.hook],
            attribute,
            "edit window",
            tuple(study.edit_window),
            study.edit_strengths,
            {entry.hook: [dictionary_name, *own]},
        )
    return [{"dictionary": dictionary_name, "source_model": entry.model, **row} for row in rows]


def run_transfer(run: Run) -> dict[str, pl.DataFrame]:
    study = run.config.studies.transfer
    metrics, splices, edits = [], [], []
    pairs = [(name, model) for name in study.dictionaries for model in study.models]
    for name, model in tqdm(pairs, desc="transfer", disable=not run.progress):
        if run.config.dictionary(name).hook not in run.store(model).hooks:
            continue
        metrics += transfer_metrics(run, name, model)
        splices.append(splice_fidelity(run, name, model, study.splice_prompts))
        if study.edit_prompts:
            edits += transfer_edits(run, name, model)
    return {
        "transfer_metrics": pl.DataFrame(metrics),
        "transfer_splice": pl.DataFrame(splices),
        "transfer_edits": pl.DataFrame(edits, infer_schema_length=None),
    }


def transfer_edit_success(edits: pl.DataFrame) -> pl.DataFrame:
    """Per dictionary, target model, attribute and method: success at the method's best strength."""
    from .editability import best_strengths

    if edits.is_empty():
        return edits
    parts = [
        best_strengths(group.drop("dictionary", "source_model")).with_columns(
            pl.lit(name).alias("dictionary"), pl.lit(source).alias("source_model")
        )
        for (name, source), group in edits.group_by(["dictionary", "source_model"], maintain_order=True)
    ]
    return pl.concat(parts).rename({"model": "target_model"})


def plot_transfer(run: Run, tables: dict[str, pl.DataFrame]) -> list[tuple[str, object]]:
    from diffdict.analysis.plots import line_plot

    plots = []
    table = tables["transfer_metrics"]
    for name in table["dictionary"].unique(maintain_order=True).to_list():
        subset = table.filter(pl.col("dictionary") == name)
        path = line_plot(
            subset,
            "t",
            "fvu",
            "target_model",
            run.plot_path(f"transfer_fvu_{name}"),
            title=f"{name} (fit on {subset['source_model'][0]}): held-out FVU per denoising step",
            facet="branch" if subset["branch"].n_unique() > 1 else None,
        )
        plots.append(
            (
                f"Transfer of {name}: held-out FVU at each step's normalised time t, one line per target "
                "model (one panel per CFG branch; lower is better)",
                path,
            )
        )
    return plots
