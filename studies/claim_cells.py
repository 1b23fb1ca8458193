"""Edit cells as claims read them: a method's clean success at one place, with its per-prompt values.

A cell is what one method did to one attribute at one unit (and window) on the held-out prompts, at
the strength chosen on tuning prompts. When the run exported per-prompt rows, two cells on the same
prompts are compared paired; otherwise by their rates alone (unpaired).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from .claim_stats import Difference, paired, unpaired

SINGLE_HOOK = re.compile(r"^[a-z]+\.\d+(\.\d+)?$")  # down.2.1, mid.0, single.1: not a group such as up.0.x


@dataclass(frozen=True)
class EditCell:
    rate: float  # clean success (what verdicts use)
    success: float  # success by the target alone
    before: float  # no-edit rate: the unedited image already read as the target
    n: int  # held-out prompts
    values: dict | None  # prompt key -> clean success, when per-prompt rows exist
    row: dict  # the summary row it came from

    def minus(self, other: EditCell) -> Difference:
        if self.values is not None and other.values is not None:
            shared = sorted(set(self.values) & set(other.values))
            if len(shared) >= 2:
                return paired([self.values[k] for k in shared], [other.values[k] for k in shared])
        return unpaired(self.rate, self.n, other.rate, other.n)


def choose(rows: pl.DataFrame) -> dict | None:
    """The row chosen on tuning prompts (highest tuning clean success); tables without tuning columns
    fall back to the held-out rate, which a verdict on them must not trust (they have too few prompts)."""
    if rows.is_empty():
        return None
    keys = [c for c in ("tune_clean_success", "tune_success", "clean_success", "success") if c in rows.columns]
    return rows.sort(keys, descending=True, nulls_last=True).row(0, named=True)


def _matching(table: pl.DataFrame, match: dict) -> pl.DataFrame:
    """The rows of `table` whose columns equal `match`'s values."""
    for key, value in match.items():
        table = table.filter(pl.col(key) == value)
    return table


def chosen_cell(
    rows: pl.DataFrame, prompts: pl.DataFrame | None, match: dict, carried: tuple[str, ...] = ()
) -> EditCell | None:
    """The cell of the summary `rows` matching `match`, chosen on tuning prompts (`choose`); its per-prompt
    values are the `prompts` rows matching `match` and the chosen row's `carried` columns (e.g. its window)."""
    row = choose(_matching(rows, match))
    if row is None:
        return None
    return edit_cell(row, prompts, {**match, **{key: row[key] for key in carried}})


def edit_cell(row: dict | None, prompts: pl.DataFrame | None, match: dict) -> EditCell | None:
    """The cell of one summary row, with its per-prompt values from `prompts` rows matching `match`."""
    if row is None:
        return None
    values = None
    if prompts is not None and not prompts.is_empty():
        hit = _matching(prompts, match)
        if hit.height:
            keys = [c for c in ("attribute", "prompt_id") if c in hit.columns]
            values = {tuple(r[k] for k in keys): float(r["clean_success"]) for r in hit.iter_rows(named=True)}
    return EditCell(
        float(row["clean_success"]),
        float(row["success"]),
        float("nan") if row.get("target_before") is None else float(row["target_before"]),
        int(row["prompts"]),
        values,
        row,
    )


def pooled(maybe_cells: list[EditCell | None]) -> EditCell | None:
    """Cells of several attributes as one (their prompts side by side); None when any of them is missing."""
    cells = [c for c in maybe_cells if c is not None]
    if not cells or len(cells) < len(maybe_cells):
        return None
    n = sum(c.n for c in cells)
    mean = lambda f: sum(f(c) * c.n for c in cells) / n  # noqa: E731
    values = None
    known = [c.values for c in cells if c.values is not None]
    if len(known) == len(cells):  # every cell has per-prompt values
        values = {}
        for i, cell_values in enumerate(known):
            values.update({(i, *key): v for key, v in cell_values.items()})
    return EditCell(
        mean(lambda c: c.rate), mean(lambda c: c.success), mean(lambda c: c.before), n, values, cells[0].row
    )
