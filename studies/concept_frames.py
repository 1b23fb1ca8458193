"""Which tokens a concept is scored on, and which concepts a hook's grid can carry at a token.

A frame is one scoring problem: a set of rows (tokens) and the concepts scored on them.

  scope "all cells"     every token; the scene's global concepts (`colour:red`, `background:black`)
  scope "within group"  object concepts on object cells only, background concepts on background cells
                        only: a feature is no longer credited for telling objects from background
  family "global"       the concept itself
  family "cell", "row", "column"
                        the concept at one grid cell, row or column (`background:black@r3c4`,
                        `colour:red@row2`): what a dictionary of location-specific features can
                        represent at a token, so that such a feature is credited for what it is

Location families are scored within group only, and a concept enters a frame only when both splits
have at least `MIN_POSITIVES` positive and one negative token (rare cell-concepts are left out, and
the frame says how many concepts it kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALL_CELLS, WITHIN_GROUP = "all cells", "within group"
GLOBAL, CELL, ROW, COLUMN = "global", "cell", "row", "column"
FAMILIES = (GLOBAL, CELL, ROW, COLUMN)
OBJECT, BACKGROUND = "object", "background"
MIN_POSITIVES = 8


BACKGROUND_ATTRIBUTES = ("background", "pattern")  # what a background cell carries
# The pattern is drawn the same at every background cell: "pattern p017 at r3c4" is no concept of its own, and
# with 128 patterns it would add thousands of location columns whose positives are one or two prompts.
LOCATION_INVARIANT = ("pattern",)


def group_of(concept: str) -> str:
    """Background colour and pattern concepts belong to background cells; every other attribute to object cells."""
    return BACKGROUND if concept.split(":")[0] in BACKGROUND_ATTRIBUTES else OBJECT


def attribute_of(concept: str) -> str:
    return concept.split(":")[0]


def object_cells(targets: np.ndarray, concepts: list[str]) -> np.ndarray:
    """(N,) bool: the tokens labelled with an object (no background concept)."""
    background = [i for i, c in enumerate(concepts) if group_of(c) == BACKGROUND]
    return np.asarray(~targets[:, background].any(1))


@dataclass
class Frame:
    """One scoring problem on one split: rows of the hook's tokens and the concepts scored on them."""

    scope: str
    family: str
    group: str  # "object", "background" or "all"
    rows: np.ndarray  # (N_frame,) indices into the split's tokens
    concepts: list[str]
    targets: np.ndarray  # (N_frame, C) bool
    places: np.ndarray  # (N_frame, C) bool: the label-only floor's prediction (group, and the concept's place)


def _place_masks(location: np.ndarray, grid: tuple[int, int], family: str) -> dict[str, np.ndarray]:
    """suffix -> (N,) bool for each cell, row or column of the grid."""
    h, w = grid
    row, col = location // w, location % w
    if family == CELL:
        return {f"@r{r}c{c}": (row == r) & (col == c) for r in range(h) for c in range(w)}
    if family == ROW:
        return {f"@row{r}": row == r for r in range(h)}
    return {f"@col{c}": col == c for c in range(w)}


def frames(
    targets: np.ndarray,
    concepts: list[str],
    location: np.ndarray,
    grid: tuple[int, int],
    families: tuple[str, ...] = FAMILIES,
) -> list[Frame]:
    """Every frame of one split's tokens: targets (N, C) over `concepts`, location (N,) cell index."""
    is_object = object_cells(targets, concepts)
    group_rows = {OBJECT: is_object, BACKGROUND: ~is_object}
    # the label-only floor knows a token's group: object concepts are predicted on every object cell
    group_place = np.stack([group_rows[group_of(c)] for c in concepts], axis=1)
    out = [Frame(ALL_CELLS, GLOBAL, "all", np.arange(len(targets)), list(concepts), targets, group_place)]
    for group, in_group in group_rows.items():
        rows = np.flatnonzero(in_group)
        columns = [i for i, c in enumerate(concepts) if group_of(c) == group]
        names = [concepts[i] for i in columns]
        base = targets[np.ix_(rows, np.asarray(columns, dtype=np.intp))]
        if GLOBAL in families:
            out.append(Frame(WITHIN_GROUP, GLOBAL, group, rows, names, base, np.ones_like(base)))
        placed = [i for i, name in enumerate(names) if attribute_of(name) not in LOCATION_INVARIANT]
        for family in (CELL, ROW, COLUMN):
            if family not in families or not placed:
                continue
            masks = _place_masks(location[rows], grid, family)
            located, place, located_names = [], [], []
            for suffix, where in masks.items():
                located.append(base[:, placed] & where[:, None])
                place.append(np.repeat(where[:, None], len(placed), axis=1))
                located_names += [f"{names[i]}{suffix}" for i in placed]
            out.append(
                Frame(
                    WITHIN_GROUP,
                    family,
                    group,
                    rows,
                    located_names,
                    np.concatenate(located, axis=1),
                    np.concatenate(place, axis=1),
                )
            )
    return out


def scorable(selection: Frame, scoring: Frame, min_positives: int = MIN_POSITIVES) -> np.ndarray:
    """(C,) indices of the frame's concepts with enough positives and a negative in both splits."""

    def ok(targets: np.ndarray) -> np.ndarray:
        positives = targets.sum(0)
        return (positives >= min_positives) & (positives < len(targets))

    if selection.concepts != scoring.concepts:
        raise ValueError("selection and scoring frames must list the same concepts")
    return np.flatnonzero(ok(selection.targets) & ok(scoring.targets))
