"""Floors that measure what they claim, and the planted twin, on synthetic hooks where the answer is known."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from diffdict.studies import twin
from diffdict.studies.alignment_tables import LAYOUT, alignment_rows, candidate_sets, floors_and_ceiling, summarize
from diffdict.studies.concept_frames import ALL_CELLS, GLOBAL, WITHIN_GROUP, frames
from diffdict.studies.labelled import HookTokens

COLOURS = ["blue", "cyan", "gray", "green", "orange", "pink", "purple", "red"]
CONCEPTS = ["background:black", "background:white", *(f"colour:{c}" for c in COLOURS)]
GRID = (4, 4)


def _labels(prompts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A world of 4x4 cells: one object of a random colour covering a random 2x2 block, a random background."""
    rng = np.random.default_rng(seed)
    targets, location = [], []
    for _ in range(prompts):
        background, colour = rng.integers(2), rng.integers(len(COLOURS))
        row, col = rng.integers(3), rng.integers(3)
        for cell in range(16):
            r, c = divmod(cell, 4)
            on_object = row <= r <= row + 1 and col <= c <= col + 1
            label = np.zeros(len(CONCEPTS), dtype=bool)
            label[2 + colour if on_object else background] = True
            targets.append(label)
            location.append(cell)
    return np.array(targets), np.array(location)


def _tokens(x: torch.Tensor, targets: np.ndarray, location: np.ndarray) -> HookTokens:
    n = len(location)
    return HookTokens(
        x.float(), targets, CONCEPTS, np.arange(n) // 16, location, np.zeros(n, dtype=int), np.ones(n), GRID
    )


def _foreground_only(prompts: int, seed: int, d: int = 32) -> HookTokens:
    """Activations that carry 'object or not' strongly and nothing of the colour or background value."""
    targets, location = _labels(prompts, seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(location), d, generator=generator)
    on_object = torch.as_tensor(targets[:, 2:].any(1))
    x[on_object, 0] += 1.5  # visible to the block, but random directions catch only part of it
    return _tokens(x, targets, location)


def test_fg_bg_predictor_beats_random_and_the_floor_rises_to_it():
    selection, scoring = _foreground_only(120, 0), _foreground_only(60, 1)
    candidates = candidate_sets(selection, scoring, {}, n_atoms=64, draws=3, seed=0)
    rows = pl.DataFrame(alignment_rows({"world": "toy", "pair": "p"}, selection, scoring, candidates, 0, (GLOBAL,)))
    summary = summarize(rows)
    overall = summary.filter((pl.col("scope") == ALL_CELLS) & (pl.col("attribute") == "all"))
    f1 = dict(zip(overall["method"], overall["mean_f1"]))
    # every object concept is a subset of the object cells: knowing fg/bg alone beats random directions
    assert f1[LAYOUT] > f1["random"] + 0.05
    floor = floors_and_ceiling(summary).filter((pl.col("scope") == ALL_CELLS) & (pl.col("attribute") == "all"))
    assert floor["floor_method"].to_list() == [LAYOUT] and floor["floor_f1"][0] == f1[LAYOUT]
    # within its group a concept cannot be told by fg/bg: that floor falls to the base rate there
    within = summary.filter((pl.col("scope") == WITHIN_GROUP) & (pl.col("attribute") == "all"))
    for (group,), part in within.group_by(["group"]):
        by_method = dict(zip(part["method"], part["mean_f1"]))
        assert abs(by_method[LAYOUT] - by_method["base rate"]) < 1e-9, group


def test_frames_score_object_concepts_on_object_cells_and_name_location_concepts():
    targets, location = _labels(10, 0)
    found = {(f.scope, f.family, f.group): f for f in frames(targets, CONCEPTS, location, GRID)}
    objects = found[(WITHIN_GROUP, GLOBAL, "object")]
    assert objects.concepts == CONCEPTS[2:] and objects.targets.any(1).all()
    cell = found[(WITHIN_GROUP, "cell", "background")]
    assert "background:black@r3c0" in cell.concepts and cell.targets.shape[1] == 2 * 16
    column = cell.concepts.index("background:white@r1c2")
    rows = cell.rows[cell.targets[:, column]]
    assert set(location[rows]) == {6} and targets[rows, 1].all()


def _planted(prompts: int, seed: int) -> HookTokens:
    targets, location = _labels(prompts, seed)
    return _tokens(torch.zeros(len(location), 32), targets, location)


def test_twin_keeps_the_measured_proportions_and_its_sae_beats_random():
    # a "real" hook that is itself additive: the twin should measure its parts back
    labels = _planted(200, 0)
    generator = torch.Generator().manual_seed(3)
    cells, concepts = torch.randn(16, 32, generator=generator), torch.randn(len(CONCEPTS), 32, generator=generator)
    x = cells[torch.as_tensor(labels.location)] + torch.as_tensor(labels.targets, dtype=torch.float32) @ concepts
    real = _tokens(x + 0.3 * torch.randn(x.shape, generator=generator), labels.targets, labels.location)
    planted = twin.build(real, seed=1)
    shares = planted.proportions.shares
    assert shares["concepts"] > 0.3 and shares["cell"] > 0.3 and shares["noise"] < 0.1
    assert abs(planted.proportions.noise_std - 0.3) < 0.03
    from diffdict.dictionaries.train_common import DictionarySpec

    spec = DictionarySpec("sae", "topk_sae", "h", {"n": 64, "k": 4, "lr": 3e-3})
    sae = twin.train_twin_dictionary(spec, planted, real, tokens=100_000, batch=512, seed=0)
    selection, scoring = planted.tokens(real, 11), planted.tokens(_planted(80, 5), 12)
    from diffdict.studies.concepts import dense_codes

    codes = {"sae": (dense_codes(sae, selection.x), dense_codes(sae, scoring.x))}
    rows = pl.DataFrame(
        alignment_rows(
            {"world": "twin", "pair": "p"},
            selection,
            scoring,
            candidate_sets(selection, scoring, codes, 64, 3, 0),
            0,
            (GLOBAL,),
        )
    )
    within = summarize(rows).filter((pl.col("scope") == WITHIN_GROUP) & (pl.col("attribute") == "all"))
    f1 = {(g, m): v for g, m, v in within.select("group", "method", "mean_f1").iter_rows()}
    # eight colours in 32 channels: the twin's SAE finds them, random directions do not
    assert f1[("object", "sae")] > f1[("object", "random")] + 0.1, f1
    assert f1[("object", "sae")] > 0.9 and f1[("background", "sae")] >= f1[("background", "random")], f1


def test_location_invariant_patterns_are_scored_within_group_but_not_per_place():
    targets, location = _labels(10, 0)
    pattern = np.random.default_rng(1).integers(2, size=len(targets)).astype(bool) & ~targets[:, 2:].any(1)
    concepts = [*CONCEPTS, "pattern:p001"]
    found = {
        (f.scope, f.family, f.group): f
        for f in frames(np.concatenate([targets, pattern[:, None]], axis=1), concepts, location, GRID)
    }
    assert "pattern:p001" in found[(WITHIN_GROUP, GLOBAL, "background")].concepts
    cell = found[(WITHIN_GROUP, "cell", "background")]
    assert cell.targets.shape[1] == 2 * 16 and not any(c.startswith("pattern:") for c in cell.concepts)
