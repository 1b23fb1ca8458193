"""Feature atlas: one card per feature of each dictionary, saying what the feature is and what it
draws on its own.

A card holds the feature's label (toy world: the ground-truth concept it predicts best, with
that AUROC; ITDA: where its atom came from), its firing frequency and mean activation, its
top-activating held-out images with a heatmap of where it fires, the images generated from the
empty prompt "" with the feature's decoder direction added everywhere (SDLens's empty-prompt
activation; the 0x image is the unedited empty prompt), and a modulation strip: the feature's
top prompt with the direction added at each strength (0x: its held-out image, not regenerated).
Strengths are multiples of the feature's mean activation where active. All images of a dictionary
are generated in batches of `harvest.batch_size`, each prompt carrying its own strength through a
per-prompt mask.

Tables:
  atlas         dictionary, architecture, feature, label, auroc, provenance, frequency,
                mean_activation, top_prompt_ids, strip_prompt_id
  atlas_tiles   dictionary, feature, kind (top | empty | strip), rank, strength, caption, hover,
                path (PNG under atlas/ in the run folder)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image

from .compare import AlignmentData, alignment_data
from .concepts import auroc_matrix, dense_codes
from .run import Run

TILE_SIZE = 128  # px: atlas images larger than this are shrunk to it; the page shows every tile at 128 px
STRIP_STRENGTHS = (-4.0, 0.0, 2.0, 4.0, 8.0)
EMPTY_STRENGTHS = (12.0,)


def thumbnail(image: Image.Image, size: int = TILE_SIZE) -> Image.Image:
    """At most `size` px square (Lanczos). Smaller images keep their pixels: the page enlarges them
    without smoothing, which reads the same and keeps the report small."""
    image = image.convert("RGB")
    return (
        image if image.width <= size and image.height <= size else image.resize((size, size), Image.Resampling.LANCZOS)
    )


def overlay(image: Image.Image, activation: np.ndarray, size: int = TILE_SIZE) -> Image.Image:
    """The image with the feature's (h, w) activation map laid over it in red."""
    base = thumbnail(image, size)
    peak = float(activation.max())
    heat = np.clip(activation / peak, 0, 1) if peak > 0 else np.zeros_like(activation)
    heat_image = Image.fromarray((heat * 255).astype(np.uint8)).resize(base.size, Image.Resampling.BILINEAR)
    red = Image.new("RGB", base.size, (255, 0, 0))
    return Image.composite(red, base, heat_image.point(lambda v: int(v * 0.6)))


@dataclass
class FeatureStats:
    """One dictionary's codes on held-out prompts, and per-feature statistics."""

    name: str
    data: AlignmentData
    codes: np.ndarray  # (N, n)
    frequency: np.ndarray  # (n,) share of tokens where the feature is active
    mean_activation: np.ndarray  # (n,) mean value where active (0 when never active)
    auc: np.ndarray | None  # (n, C) AUROC per concept; None without ground truth

    @property
    def per_prompt(self) -> np.ndarray:
        """(steps, prompts, cells, n) view of the codes."""
        h, w = self.data.grid
        prompts = len(self.data.prompts)
        return self.codes.reshape(len(self.codes) // (prompts * h * w), prompts, h * w, -1)


def feature_stats(run: Run, name: str, prompts: int) -> FeatureStats:
    entry = run.config.dictionary(name)
    data = alignment_data(run, entry.model, entry.hook, prompts)
    codes = dense_codes(run.dictionary(name), data.x)  # (N, n)
    active = codes != 0
    frequency = active.mean(axis=0)
    mean_activation = np.where(active.any(0), (codes * active).sum(0) / np.maximum(active.sum(0), 1), 0.0)
    auc = auroc_matrix(codes, data.targets) if data.concepts else None
    return FeatureStats(name, data, codes, frequency, mean_activation, auc)


def ranked_features(stats: FeatureStats, count: int) -> list[int]:
    """Aligned features first (best concept AUROC), frequent ones breaking ties; live ones only."""
    if stats.auc is not None:
        filled = np.where(np.isnan(stats.auc), -np.inf, stats.auc)
        best = np.nan_to_num(filled.max(axis=1), nan=0.0, neginf=0.0)
        order = np.argsort(-(best + 1e-3 * stats.frequency))
    else:
        order = np.argsort(-stats.frequency)
    return [int(f) for f in order if stats.frequency[f] > 0][:count]


def provenance_text(run: Run, dictionary, feature: int) -> str:
    """ITDA: 'prompt 17 ("a red ..."), step 0, cell 3'; '' for dictionaries without provenance."""
    provenance = getattr(dictionary, "provenance", None)
    if not provenance or "prompt_id" not in provenance or feature >= len(provenance["prompt_id"]):
        return ""
    prompt_id = int(provenance["prompt_id"][feature])
    text = run.prompts[prompt_id].text if 0 <= prompt_id < len(run.prompts) else "?"
    return (
        f"atom from prompt {prompt_id} ({text!r}), step {int(provenance['step'][feature])}, "
        f"cell {int(provenance['position'][feature])}"
    )


def steered_images(
    run: Run, name: str, jobs: list[tuple[str, int | None, float]], unit: np.ndarray, grid: tuple[int, int]
) -> list[Image.Image]:
    """One image per job (prompt, feature or None, multiple): the feature's decoder direction added
    everywhere at multiple x unit[feature], on the cond branch and subtracted from uncond (SDLens
    for CFG). Jobs are generated in batches; each feature is one intervention whose per-prompt
    mask holds each prompt's multiple (0 on prompts of other features)."""
    from diffdict import adapters

    entry = run.config.dictionary(name)
    atoms = run.dictionary(name).atoms.detach().float().cpu()
    seed = run.study_seed
    batch = max(1, run.config.harvest.batch_size)
    images: list[Image.Image] = []
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        masks: dict[int, torch.Tensor] = {}
        for row, (_, feature, multiple) in enumerate(chunk):
            if feature is not None and multiple != 0:
                masks.setdefault(feature, torch.zeros(len(chunk), *grid))[row] = multiple
        interventions = [
            adapters.AddDirection(
                entry.hook, mask=mask, direction=atoms[f], strength=float(unit[f]), branch="cond+uncond-"
            )
            for f, mask in masks.items()
        ]
        images += run.generate(
            entry.model, [p for p, _, _ in chunk], [seed] * len(chunk), interventions=interventions
        ).images
    return images


def atlas_for(
    run: Run,
    name: str,
    stats: FeatureStats,
    features: list[int],
    images_per_feature: int,
    strengths: tuple[float, ...] = STRIP_STRENGTHS,
    empty_strengths: tuple[float, ...] = EMPTY_STRENGTHS,
    folder: Path | None = None,
) -> tuple[list[dict], list[dict]]:
    """(feature rows, tile rows) for the given features of one dictionary; tiles are PNG files."""
    entry = run.config.dictionary(name)
    dictionary = run.dictionary(name)
    data = stats.data
    h, w = data.grid
    per_prompt = stats.per_prompt
    folder = folder or run.results_root / "atlas" / name
    folder.mkdir(parents=True, exist_ok=True)
    # A feature never active here still gets a strength unit: the median live feature's.
    live = stats.mean_activation[stats.mean_activation > 0]
    unit = np.where(stats.mean_activation > 0, stats.mean_activation, float(np.median(live)) if live.size else 1.0)
    rows, tiles, tops = [], [], {}
    for feature in features:
        peak = per_prompt[..., feature].max(axis=(0, 2))  # (prompts,)
        top = [int(i) for i in np.argsort(-peak)[:images_per_feature] if peak[i] > 0]
        tops[feature] = top
        label, score = "", float("nan")
        if stats.auc is not None:
            concept = int(np.nanargmax(np.where(np.isnan(stats.auc[feature]), -np.inf, stats.auc[feature])))
            label, score = data.concepts[concept], float(stats.auc[feature, concept])
        strip_prompt = top[0] if top else 0
        rows.append(
            {
                "dictionary": name,
                "architecture": entry.architecture,
                "feature": feature,
                "label": label,
                "auroc": score,
                "provenance": provenance_text(run, dictionary, feature),
                "frequency": float(stats.frequency[feature]),
                "mean_activation": float(stats.mean_activation[feature]),
                "top_prompt_ids": ", ".join(str(data.prompts[i].id) for i in top),
                "strip_prompt_id": int(data.prompts[strip_prompt].id),
            }
        )
        for rank, i in enumerate(top):
            step = int(per_prompt[:, i, :, feature].max(axis=1).argmax())
            path = folder / f"feature{feature}_top{rank}.png"
            overlay(data.images[i], per_prompt[step, i, :, feature].reshape(h, w)).save(path, optimize=True)
            tiles.append(
                _tile(
                    name,
                    feature,
                    "top",
                    rank,
                    float("nan"),
                    f"{peak[i]:.3g}",
                    f"prompt {data.prompts[i].id}: {data.prompts[i].text}",
                    path,
                )
            )
    # One list of generation jobs for the whole dictionary: the empty-prompt reference, the
    # empty-prompt activations, then every feature's strip.
    jobs: list[tuple[str, int | None, float]] = [("", None, 0.0)]
    jobs += [("", f, s) for f in features for s in empty_strengths]
    strip_of = {f: data.prompts[tops[f][0] if tops[f] else 0] for f in features}
    # Strength 0 is the held-out image itself (same prompt and seed): reused, not generated again.
    jobs += [(strip_of[f].text, f, s) for f in features for s in strengths if s != 0]
    images = iter(steered_images(run, name, jobs, unit, data.grid))
    reference = folder / "empty_reference.png"
    thumbnail(next(images)).save(reference, optimize=True)
    for f in features:
        tiles.append(_tile(name, f, "empty", 0, 0.0, "off", 'empty prompt "", no edit', reference))
        for rank, s in enumerate(empty_strengths, start=1):
            path = folder / f"feature{f}_empty{rank}.png"
            thumbnail(next(images)).save(path, optimize=True)
            tiles.append(
                _tile(name, f, "empty", rank, s, f"{s:g}x", f'empty prompt "", +{s:g} x mean activation', path)
            )
    for f in features:
        for rank, s in enumerate(strengths):
            path = folder / f"feature{f}_strip{rank}.png"
            original = data.images[tops[f][0] if tops[f] else 0]
            thumbnail(next(images) if s != 0 else original).save(path, optimize=True)
            tiles.append(
                _tile(
                    name,
                    f,
                    "strip",
                    rank,
                    s,
                    "off (original)" if s == 0 else f"{s:+g}x",
                    f"prompt {strip_of[f].id}: {strip_of[f].text}",
                    path,
                )
            )
    return rows, tiles


def _tile(name: str, feature: int, kind: str, rank: int, strength: float, caption: str, hover: str, path: Path) -> dict:
    return {
        "dictionary": name,
        "feature": feature,
        "kind": kind,
        "rank": rank,
        "strength": strength,
        "caption": caption,
        "hover": hover,
        "path": str(path),
    }


def atlas_settings(run: Run) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(held-out prompts, strip strengths, empty-prompt strengths) of this run's atlas."""
    study = run.config.studies.atlas
    prompts = run.config.studies.compare.prompts if run.config.studies.compare else 32
    strengths = tuple(getattr(study, "strengths", None) or STRIP_STRENGTHS) if study else STRIP_STRENGTHS
    empty = tuple(getattr(study, "empty_strengths", None) or EMPTY_STRENGTHS) if study else EMPTY_STRENGTHS
    return prompts, strengths, empty


def run_atlas(run: Run) -> dict[str, pl.DataFrame]:
    study = run.config.studies.atlas
    prompts, strengths, empty = atlas_settings(run)
    rows, tiles = [], []
    for name in study.dictionaries:
        stats = feature_stats(run, name, prompts)
        features = ranked_features(stats, study.top_features)
        more_rows, more_tiles = atlas_for(run, name, stats, features, study.images_per_feature, strengths, empty)
        rows += more_rows
        tiles += more_tiles
    return {
        "atlas": pl.DataFrame(rows, infer_schema_length=None),
        "atlas_tiles": pl.DataFrame(tiles, infer_schema_length=None),
    }


def atlas_cards(tables: dict[str, pl.DataFrame]) -> list:
    """Report cards from the atlas tables, in the table's order."""
    from diffdict.analysis.report import FeatureCard, Tile

    atlas, tiles = tables.get("atlas"), tables.get("atlas_tiles")
    if atlas is None or atlas.is_empty():
        return []
    by_feature: dict[tuple[str, int], list[dict]] = {}
    if tiles is not None and not tiles.is_empty():
        for row in tiles.iter_rows(named=True):
            by_feature.setdefault((row["dictionary"], row["feature"]), []).append(row)
    cards = []
    for row in atlas.iter_rows(named=True):
        own = by_feature.get((row["dictionary"], row["feature"]), [])

        def of(kind: str) -> list:
            return [Tile(Path(t["path"]), t["caption"], t["hover"]) for t in own if t["kind"] == kind]

        strip = [t for t in own if t["kind"] == "strip"]
        cards.append(
            FeatureCard(
                dictionary=row["dictionary"],
                feature=row["feature"],
                label=row["label"] or "",
                score=float("nan") if row["auroc"] is None else row["auroc"],
                provenance=row["provenance"] or "",
                frequency=row["frequency"],
                mean_activation=row["mean_activation"],
                top=of("top"),
                empty=of("empty"),
                strip=of("strip"),
                strip_prompt=strip[0]["hover"] if strip else "",
                architecture=row["architecture"],
            )
        )
    return cards


def summarize_atlas(run: Run, tables: dict[str, pl.DataFrame]) -> str:
    atlas = tables["atlas"]
    if atlas.is_empty():
        return "No live features to show."
    dictionaries = atlas["dictionary"].n_unique()
    text = f"{atlas.height} features from {dictionaries} dictionar{'y' if dictionaries == 1 else 'ies'}"
    scored = atlas.filter(pl.col("auroc").is_not_nan()) if atlas.schema["auroc"].is_float() else atlas.clear()
    if scored.is_empty():
        return text + f", median firing frequency {atlas['frequency'].median():.1%}; no ground truth to label them."
    above = scored.filter(pl.col("auroc") > 0.9)
    best = scored.sort("auroc", descending=True).row(0, named=True)
    distinct = above["label"].n_unique()
    return (
        f"{text}; {above.height} of {scored.height} predict a ground-truth concept with AUROC above 0.9 "
        f"({distinct} distinct concept{'s' if distinct != 1 else ''}). Best: {best['dictionary']} "
        f"#{best['feature']} = {best['label']} (AUROC {best['auroc']:.3f}). Each card shows what the feature "
        f"draws from the empty prompt and along a strength sweep."
    )
