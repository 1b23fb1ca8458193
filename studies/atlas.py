"""Feature atlas: each dictionary's top features, their top-activating images with heatmap
overlays, and a label (toy world: the concept the feature aligns with best; ITDA: where its
atom came from).

Tables:
  atlas         dictionary, feature, label, auroc, frequency, mean_activation, top_prompts
  atlas_tiles   dictionary, feature, title, caption, path (PNG under atlas/ in the run folder)
"""
from __future__ import annotations

import numpy as np
import polars as pl
from PIL import Image

from .compare import alignment_data
from .concepts import auroc_matrix, dense_codes
from .run import Run

OVERLAY_SIZE = 96


def overlay(image: Image.Image, activation: np.ndarray) -> Image.Image:
    """The image with the feature's (h, w) activation map laid over it in red."""
    base = image.convert("RGB").resize((OVERLAY_SIZE, OVERLAY_SIZE), Image.NEAREST)
    peak = float(activation.max())
    heat = activation / peak if peak > 0 else activation
    heat_image = Image.fromarray((heat * 255).astype(np.uint8)).resize((OVERLAY_SIZE, OVERLAY_SIZE), Image.BILINEAR)
    red = Image.new("RGB", base.size, (255, 0, 0))
    return Image.composite(red, base, heat_image.point(lambda v: int(v * 0.6)))


def _provenance_label(run: Run, dictionary, feature: int) -> str | None:
    provenance = getattr(dictionary, "provenance", None)
    if not provenance or "prompt_id" not in provenance or feature >= len(provenance["prompt_id"]):
        return None
    prompt_id = int(provenance["prompt_id"][feature])
    text = run.prompts[prompt_id].text if 0 <= prompt_id < len(run.prompts) else "?"
    return (f"atom from prompt {prompt_id} ({text!r}), step {int(provenance['step'][feature])}, "
            f"cell {int(provenance['position'][feature])}")


def atlas_for(run: Run, name: str, count: int, images_per_feature: int, prompts: int):
    """(feature rows, tile rows) for one dictionary; tiles are written as PNG files."""
    entry = run.config.dictionary(name)
    dictionary = run.dictionary(name)
    data = alignment_data(run, entry.model, entry.hook, prompts)
    codes = dense_codes(dictionary, data.x)  # (N, n)
    frequency = (codes != 0).mean(axis=0)
    auc = auroc_matrix(codes, data.targets) if data.concepts else None  # (n, C)
    if auc is not None:
        best_auc = np.nan_to_num(np.nanmax(np.where(np.isnan(auc), -np.inf, auc), axis=1), nan=0.0, neginf=0.0)
        ranking = np.argsort(-(best_auc + 1e-3 * frequency))  # aligned features first, frequent ones break ties
    else:
        ranking = np.argsort(-frequency)
    ranking = [int(f) for f in ranking if frequency[f] > 0][:count]
    h, w = data.grid
    steps = len(data.x) // (len(data.prompts) * h * w)
    per_prompt = codes.reshape(steps, len(data.prompts), h * w, -1)  # (steps, prompts, cells, n)
    rows, tile_rows = [], []
    folder = run.root / "atlas" / name
    folder.mkdir(parents=True, exist_ok=True)
    for feature in ranking:
        strength = per_prompt[..., feature].max(axis=(0, 2))  # (prompts,)
        top = [int(i) for i in np.argsort(-strength)[:images_per_feature] if strength[i] > 0]
        if auc is not None:
            concept = int(np.nanargmax(np.where(np.isnan(auc[feature]), -np.inf, auc[feature])))
            label, score = data.concepts[concept], float(auc[feature, concept])
        else:
            label, score = "", float("nan")
        provenance = _provenance_label(run, dictionary, feature)
        if provenance:
            label = f"{label}; {provenance}" if label else provenance
        active = codes[:, feature][codes[:, feature] != 0]
        rows.append({"dictionary": name, "feature": feature, "label": label or "(no label)", "auroc": score,
                     "frequency": float(frequency[feature]),
                     "mean_activation": float(active.mean()) if active.size else 0.0,
                     "top_prompts": "; ".join(data.prompts[i].text for i in top[:3])})
        title = f"{name} feature {feature}: {label or 'no label'}" + (f" (AUROC {score:.2f})" if not np.isnan(score) else "")
        for rank, i in enumerate(top):
            step = int(per_prompt[:, i, :, feature].max(axis=1).argmax())
            heat = per_prompt[step, i, :, feature].reshape(h, w)
            path = folder / f"feature{feature}_{rank}.png"
            overlay(data.images[i], heat).save(path)
            tile_rows.append({"dictionary": name, "feature": feature, "title": title,
                              "caption": f"{strength[i]:.2f}: {data.prompts[i].text}", "path": str(path)})
    return rows, tile_rows


def run_atlas(run: Run) -> dict[str, pl.DataFrame]:
    study = run.config.studies.atlas
    prompts = run.config.studies.compare.prompts if run.config.studies.compare else 32
    rows, tiles = [], []
    for name in study.dictionaries:
        more_rows, more_tiles = atlas_for(run, name, study.top_features, study.images_per_feature, prompts)
        rows += more_rows
        tiles += more_tiles
    return {"atlas": pl.DataFrame(rows), "atlas_tiles": pl.DataFrame(tiles)}


def atlas_galleries(tables: dict[str, pl.DataFrame]) -> list[tuple[str, list[tuple[str, Image.Image]]]]:
    """Report galleries from the tile table: one gallery per feature."""
    tiles = tables.get("atlas_tiles")
    if tiles is None or tiles.is_empty():
        return []
    galleries = []
    for (title,), group in tiles.group_by(["title"], maintain_order=True):
        galleries.append((title, [(row["caption"], Image.open(row["path"]).copy()) for row in group.iter_rows(named=True)]))
    return galleries
