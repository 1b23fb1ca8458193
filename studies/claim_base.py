"""What every claim shares: the Finding it returns, verdict words, how parts combine, markdown helpers.

Verdicts:
  holds / holds partly / does not hold here   measured, with power, against a floor the testbed can beat
  not testable here    the testbed cannot show a positive there (no ceiling above the floor, no positive
                       control, or too few prompts), so a negative would mean nothing
  not measured         the run has no table for it
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

HOLDS, PARTLY, FAILS = "holds", "holds partly", "does not hold here"
NOT_TESTABLE, UNMEASURED = "not testable here", "not measured"
Tables = dict[str, pl.DataFrame]

# The names configs/toy_papers.toml gives its model entries and its Flux standardisation pair.
TURBO, BASE, FLUX = "turbo", "base", "flux"
FLUX_STANDARDISED, FLUX_RAW = "flux-sae", "flux-sae-raw"


@dataclass(frozen=True)
class Finding:
    key: str  # a stable id, e.g. "surkov-blocks"
    paper: str
    claim: str
    body: str  # markdown: the numbers, floor and ceiling, and the rule behind the verdict
    verdict: str


def combine(parts: list[bool | None]) -> str:
    """One verdict from its parts: True (holds), False (does not), None (not testable)."""
    if not parts:
        return UNMEASURED
    tested = [p for p in parts if p is not None]
    if not tested:
        return NOT_TESTABLE
    return HOLDS if all(tested) else PARTLY if any(tested) else FAILS


def has(tables: Tables, *names: str) -> bool:
    return all(name in tables and not tables[name].is_empty() for name in names)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def cell(value) -> str:
    if isinstance(value, float):
        return "–" if value != value else f"{value:.2f}"
    return str(value)


def unmeasured(key: str, paper: str, claim: str, missing: str) -> Finding:
    return Finding(key, paper, claim, f"Not measured: the run has no {missing}.", UNMEASURED)


def yes_no(part: bool | None) -> str:
    return "not testable" if part is None else "yes" if part else "no"
