"""Editability map: which block (or group of blocks) edits which attribute, when, and how strongly.

For every attribute, hook unit (a single hook or a configured group), time window and
strength, each tuning prompt (train split) is edited by adding one direction per region (studies/edits.py):
the concepts' diff-in-means (oracle, the ceiling), a random direction of the same norm (the
floor), and, on hooks that have one, each dictionary's best distinct features. The norm is
`strength` x the block's mean update norm at the edited cells (selection prompts, in the
window), the same for every method. Directions, features and norms come from selection
(train-split) prompts; each method's strength is the sweep's best clean success on the tuning
prompts; the held-out prompts are edited at that strength alone and every reported rate is theirs.

Tables:
  editability       model, unit, hooks, attribute, window, t_low, t_high, steps_in_window, method, kind,
                    split (tune / score), strength, prompt_id, success, clean_success, target_before, feature_rank
  editability_best  model, unit, attribute, window, method, kind, best_strength (chosen on tune), success,
                    clean_success, target_before, prompts (held-out), tune_success, tune_clean_success, tune_prompts
"""

from __future__ import annotations

import polars as pl
import torch
from tqdm.auto import tqdm

from .aggregates import number
from .alignment import distinct_features
from .concepts import dense_codes
from .edits import (
    DICTIONARY,
    ORACLE,
    RANDOM,
    Variant,
    concept_means,
    concept_norms,
    interventions_for,
    judge_edit,
    plans_for,
    region_direction,
    region_seed,
)
from .labelled import labelled_set
from .run import Run

BATCH_LIMIT = 96  # edited images per generate call
TUNE, SCORE = "tune", "score"  # the strength sweep's prompts, and the held-out prompts scored at its choice


def attribute_groups(concepts: list[str]) -> list[list[int]]:
    """Concept indices grouped by attribute (the values that must not share a feature)."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(concepts):
        groups.setdefault(name.split(":")[0], []).append(i)
    return list(groups.values())


def dictionary_atoms(run: Run, name: str, tokens) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """(concept -> atom of its distinct best feature, concept -> rank of that feature) on selection tokens."""
    dictionary = run.dictionary(name)
    codes = dense_codes(dictionary, tokens.x)
    chosen = distinct_features(codes, tokens.targets, attribute_groups(tokens.concepts))
    atoms = dictionary.atoms.detach().float().cpu()
    return (
        {tokens.concepts[c]: atoms[f] for c, (f, _) in chosen.items()},
        {tokens.concepts[c]: rank for c, (_, rank) in chosen.items()},
    )


def hook_units(run: Run, model: str) -> dict[str, list[str]]:
    """unit name -> hooks: every configured single hook, then every configured group whose hooks
    the model has (a group of U-Net blocks is skipped on Flux, and the other way round)."""
    study = run.config.studies.editability
    points = set(run.adapter(model).hook_points)
    hooks = [h for h in study.hooks if h in points] if study.hooks else image_attention_hooks(run, model)
    groups = {unit: members for unit, members in study.groups.items() if all(h in points for h in members)}
    return {**{h: [h] for h in hooks}, **groups}


def image_attention_hooks(run: Run, model: str) -> list[str]:
    """Every image-stream hook point of the model (text-stream `.txt` hooks carry no grid cells)."""
    adapter = run.adapter(model)
    return [name for name in adapter.hook_points if not name.endswith(".txt")]


def dictionaries_by_hook(run: Run, names: list[str], model: str) -> dict[str, list[str]]:
    """hook -> the named dictionaries that can edit it on `model`: fit at that hook, on this model or on
    another one with the same width (a Turbo dictionary edits Base, whose U-Net it shares)."""
    points = run.adapter(model).hook_points
    out: dict[str, list[str]] = {}
    for name in names:
        entry = run.config.dictionary(name)
        if entry.hook in points and points[entry.hook].d == run.dictionary(name).atoms.shape[1]:
            out.setdefault(entry.hook, []).append(name)
    return out


def run_editability(run: Run) -> dict[str, pl.DataFrame]:
    study = run.config.studies.editability
    rows = []
    for model in study.models:
        units = hook_units(run, model)
        all_hooks = sorted({h for hooks in units.values() for h in hooks})
        cells = EditCells(run, model, all_hooks, study.selection_prompts, study.prompts, study.tuning_prompts)
        dictionaries = dictionaries_by_hook(run, study.dictionaries, model)
        jobs = [(a, u, w) for a in study.attributes for u in units for w in study.windows]
        for attribute, unit, window in tqdm(jobs, desc=f"editability {model}", disable=not run.progress):
            rows += cells.edit(
                unit,
                units[unit],
                attribute,
                window,
                tuple(study.windows[window]),
                study.strengths,
                {h: dictionaries[h] for h in units[unit] if h in dictionaries},
            )
    table = pl.DataFrame(rows, infer_schema_length=None)
    return {"editability": table, "editability_best": best_strengths(table)}


class EditCells:
    """One model's edit bench: selection tokens at the hooks (directions, features, norms), tuning prompts
    (the strength sweep), held-out scoring prompts, and the judged unedited images of both. `edit` runs
    one (unit, attribute, window) cell of every method and returns its rows (editability, and transfer's
    cross-model edits): each method's strength is chosen on the tuning prompts and scored on the
    held-out prompts at that strength alone."""

    def __init__(
        self, run: Run, model: str, hooks: list[str], selection_prompts: int, scoring_prompts: int, tuning_prompts: int
    ):
        from diffdict.adapters import PrefixCache
        from diffdict.toyworld.judge import judge

        self.run, self.model = run, model
        self.selection = labelled_set(run, model, hooks, "selection", selection_prompts)
        self.sets = {
            TUNE: labelled_set(run, model, [], "tuning", tuning_prompts),
            SCORE: labelled_set(run, model, [], "scoring", scoring_prompts),
        }
        entry = run.config.model(model)
        adapter = run.adapter(model)
        self.grids = {
            h: adapter.hook_point(h).grid(
                entry.height or adapter.defaults.height, entry.width or adapter.defaults.width
            )
            for h in hooks
        }
        self.originals = {split: [judge(image) for image in prompts.images] for split, prompts in self.sets.items()}
        # edits in a middle or late window replay the unedited steps before it from here
        self.prefix_cache = PrefixCache()

    def edit(
        self,
        unit: str,
        hooks: list[str],
        attribute: str,
        window: str,
        t_range: tuple[float, float],
        strengths: list[float],
        dictionaries: dict[str, list[str]],
    ) -> list[dict]:
        low, high = t_range
        steps = sum(low <= t <= high for t in self.selection.step_t)
        if steps == 0:
            return []  # the window holds no denoising step of this model (e.g. late, for 1-step Turbo)
        base = {
            "model": self.model,
            "unit": unit,
            "hooks": ",".join(hooks),
            "attribute": attribute,
            "window": window,
            "t_low": low,
            "t_high": high,
            "steps_in_window": steps,
        }
        tuned = self._judged(TUNE, hooks, attribute, t_range, strengths, dictionaries, None, base)
        chosen = _chosen_strengths(tuned)
        return tuned + self._judged(SCORE, hooks, attribute, t_range, strengths, dictionaries, chosen, base)

    def _judged(
        self,
        split: str,
        hooks: list[str],
        attribute: str,
        t_range: tuple[float, float],
        strengths: list[float],
        dictionaries: dict[str, list[str]],
        chosen: dict[str, float] | None,
        base: dict,
    ) -> list[dict]:
        """Rows of one split's edits: every strength (tuning), or each method's chosen one (scoring)."""
        run, prompts = self.run, self.sets[split]
        plans = plans_for(prompts.prompts, attribute)
        variants = _variants(run, plans, hooks, self.selection, t_range, strengths, dictionaries)
        if chosen is not None:
            variants = [v for v in variants if chosen.get(v.method) == v.strength]
        rows = []
        for start in range(0, len(variants), BATCH_LIMIT):
            chunk = variants[start : start + BATCH_LIMIT]
            images = run.generate(
                self.model,
                [prompts.prompts[v.plan.prompt_index].text for v in chunk],
                [run.study_seed] * len(chunk),
                interventions=interventions_for(chunk, {h: self.grids[h] for h in hooks}, t_range),
                prefix_cache=self.prefix_cache,
            ).images
            for variant, image in zip(chunk, images):
                index = variant.plan.prompt_index
                judged = judge_edit(variant.plan, prompts.prompts[index].scene, self.originals[split][index], image)
                rows.append(
                    {
                        **base,
                        "method": variant.method,
                        "kind": DICTIONARY if variant.method not in (ORACLE, RANDOM) else variant.method,
                        "split": split,
                        "strength": variant.strength,
                        "prompt_id": prompts.prompts[index].id,
                        "success": float(judged.success),
                        "clean_success": float(judged.clean_success),
                        "target_before": float(judged.target_before),
                        "feature_rank": variant.feature_rank,
                    }
                )
        return rows


def _chosen_strengths(rows: list[dict]) -> dict[str, float]:
    """method -> the strength of the tuning sweep with the highest clean success (then success; then the
    smaller strength)."""
    if not rows:
        return {}
    table = (
        pl.DataFrame(rows)
        .group_by(["method", "strength"])
        .agg(pl.col("clean_success").mean(), pl.col("success").mean())
    )
    best = (
        table.sort(["clean_success", "success", "strength"], descending=[True, True, False])
        .group_by("method", maintain_order=True)
        .first()
    )
    return dict(best.select("method", "strength").iter_rows())


def _variants(
    run: Run,
    plans,
    hooks: list[str],
    selection,
    t_range: tuple[float, float],
    strengths: list[float],
    dictionaries: dict[str, list[str]],
) -> list[Variant]:
    """Every (plan, method, strength) edit of one unit in one window, with its scaled vectors."""
    low, high = t_range
    per_hook = {}
    for hook in hooks:
        tokens = selection.tokens(hook)
        window = tokens.rows((tokens.t >= low) & (tokens.t <= high))
        per_hook[hook] = (
            concept_means(window.x, window.targets, window.concepts),
            concept_norms(window.x, window.targets, window.concepts),
            window.x.shape[1],
        )
    methods: dict[str, tuple[dict, dict] | None] = {ORACLE: None, RANDOM: None}
    if len(hooks) == 1:  # a group has no single dictionary
        for name in dictionaries.get(hooks[0], []):
            methods[name] = dictionary_atoms(run, name, selection.tokens(hooks[0]))
    variants = []
    for method, features in methods.items():
        for plan in plans:
            unit_vectors = _plan_directions(plan, hooks, per_hook, method, features)
            if unit_vectors is None:
                continue
            rank = (
                max((features[1][c] for r in plan.regions for c in (r.source, r.target)), default=None)
                if features
                else None
            )
            for strength in strengths:
                vectors = {hook: [v * strength for v in vs] for hook, vs in unit_vectors.items()}
                variants.append(Variant(plan, method, float(strength), vectors, rank))
    return variants


def _plan_directions(
    plan, hooks: list[str], per_hook: dict, method: str, features: tuple[dict, dict] | None
) -> dict[str, list[torch.Tensor]] | None:
    """hook -> per region, the method's direction scaled to the reference norm (strength 1); None
    when the method has no direction for one of the plan's concepts."""
    out = {}
    for hook in hooks:
        means, norms, d = per_hook[hook]
        vectors = []
        for r, region in enumerate(plan.regions):
            seed = region_seed(hook, plan, r)
            direction = region_direction(
                DICTIONARY if features else method,
                region,
                means=means,
                atoms=features[0] if features else None,
                d=d,
                seed=seed,
            )
            if direction is None or region.source not in norms:
                return None
            vectors.append(direction * norms[region.source])
        out[hook] = vectors
    return out


def best_strengths(table: pl.DataFrame) -> pl.DataFrame:
    """Per model, unit, attribute, window and method: the strength chosen on the tuning prompts (the best
    clean success there, then success, then the smaller strength), its rates there, and its success, clean
    success and no-edit rate (`target_before`) on the held-out prompts scored at it."""
    if table.is_empty():
        return table
    if "split" not in table.columns:  # a run from before the tuning split swept its held-out prompts
        table = pl.concat([table.with_columns(pl.lit(split).alias("split")) for split in (TUNE, SCORE)])
    if "target_before" not in table.columns:
        table = table.with_columns(pl.lit(None, dtype=pl.Float64).alias("target_before"))
    keys = ["model", "unit", "attribute", "window", "method", "kind"]
    tune = (
        table.filter(pl.col("split") == TUNE)
        .group_by([*keys, "strength"])
        .agg(
            pl.col("clean_success").mean().alias("tune_clean_success"),
            pl.col("success").mean().alias("tune_success"),
            pl.len().alias("tune_prompts"),
        )
        .sort(["tune_clean_success", "tune_success", "strength"], descending=[True, True, False])
        .group_by(keys, maintain_order=True)
        .first()
    )
    scored = (
        table.filter(pl.col("split") == SCORE)
        .group_by([*keys, "strength"])
        .agg(
            pl.col("success").mean(),
            pl.col("clean_success").mean(),
            pl.col("target_before").mean(),
            pl.len().alias("prompts"),
        )
    )
    return scored.join(tune, on=[*keys, "strength"], how="inner").rename({"strength": "best_strength"}).sort(keys)


def plot_editability(run: Run, tables: dict[str, pl.DataFrame]) -> list[tuple[str, object]]:
    from diffdict.analysis.plots import heatmap, line_plot

    best = tables["editability_best"]
    plots = []
    if best.is_empty():
        return plots
    for (model, window), group in best.group_by(["model", "window"], maintain_order=True):
        for method in (ORACLE, RANDOM):
            subset = group.filter(pl.col("method") == method)
            if subset.is_empty():
                continue
            path = heatmap(
                subset,
                "unit",
                "attribute",
                "clean_success",
                run.plot_path(f"editability_{model}_{window}_{method}"),
                f"{model}, {window}: {method} clean success (held out) at its tuned strength",
            )
            plots.append((f"Editability map, {model}, {window} window: {method} direction", path))
    table = tables["editability"]
    # Dose-response (the tuning sweep) at each attribute's best unit for the oracle, chosen on tuning prompts.
    oracle = best.filter(pl.col("method") == ORACLE).sort("tune_clean_success", descending=True, nulls_last=True)
    for (model, attribute), group in oracle.group_by(["model", "attribute"], maintain_order=True):
        top = group.row(0, named=True)
        dose = (
            table.filter(
                (pl.col("model") == model)
                & (pl.col("attribute") == attribute)
                & (pl.col("unit") == top["unit"])
                & (pl.col("window") == top["window"])
                & (pl.col("split") == TUNE)
            )
            .group_by(["method", "strength"])
            .agg(pl.col("clean_success").mean())
            .sort("strength")
        )
        path = line_plot(
            dose,
            "strength",
            "clean_success",
            "method",
            run.plot_path(f"editability_dose_{model}_{attribute}"),
            f"{model} {attribute} at {top['unit']} ({top['window']}): clean success against strength (tuning prompts)",
        )
        plots.append((f"Dose-response, {model}, {attribute} at {top['unit']}", path))
    return plots


def summarize_editability(run: Run, tables: dict[str, pl.DataFrame]) -> str:
    """Per attribute, the unit where the oracle edits best on the tuning prompts, with its held-out clean
    success beside random and dictionary rows there."""
    best = tables["editability_best"]
    if best.is_empty():
        return "No edit was planned."
    sentences = []
    for (model,), rows in best.group_by(["model"], maintain_order=True):
        parts = []
        prompts = int(number(rows["prompts"].max()))
        for (attribute,), group in rows.group_by(["attribute"], maintain_order=True):
            oracle = group.filter(pl.col("method") == ORACLE).sort(
                ["tune_clean_success", "tune_success"], descending=True, nulls_last=True
            )
            if oracle.is_empty():
                continue
            top = oracle.row(0, named=True)
            same = group.filter((pl.col("unit") == top["unit"]) & (pl.col("window") == top["window"]))
            others = ", ".join(
                f"{r['method']} {r['clean_success']:.2f}" for r in same.iter_rows(named=True) if r["method"] != ORACLE
            )
            parts.append(
                f"{attribute} at {top['unit']} ({top['window']}): oracle {top['clean_success']:.2f} "
                f"(success {top['success']:.2f}, no edit {top['target_before']:.2f}, strength "
                f"{top['best_strength']:g}), {others}"
            )
        sentences.append(
            f"{model}, clean success at each attribute's best unit (chosen on tuning prompts; "
            f"{prompts} held-out prompts per cell): " + "; ".join(parts) + "."
        )
    return " ".join(sentences)
