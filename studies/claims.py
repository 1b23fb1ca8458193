"""The four papers' claims, each judged from a run's tables against its floor and ceiling.

Every claim is one function `(tables) -> Finding` (studies/claims_*.py, one file per paper): it reads
the small tables `studies.findings` collects from a run, writes its numbers as markdown and gives a
verdict by a rule stated in its text. The statistics behind every rule (standard errors, paired
differences, power, corrections) are studies/claim_stats.py; what a verdict word means is
studies/claim_base.py.

Tables read (as collected by studies/findings.py):
  editability_best, editability_prompts   the editability map at each method's tuned strength (held out),
                                          and its per-prompt clean success
  transfer_metrics, transfer_splice, transfer_edit_success, transfer_edit_prompts
  compare_metrics, compare_alignment      per-concept F1 of every method, frame and world (toy, twin)
  training_summary
  windows_success, windows_prompts        the windows study per (split, model, hook, dictionary, edit, style,
                                          kind, window), and its per-prompt held-out clean success
  layout
Models and dictionaries are found by the names configs/toy_papers.toml gives them (claim_base).
"""

from __future__ import annotations

from .claim_base import FAILS, HOLDS, NOT_TESTABLE, PARTLY, UNMEASURED, Finding, Tables
from .claim_stats import unpaired
from .claims_leask import leask_fit_time
from .claims_shabalin import shabalin_flux_steering, shabalin_interpretable, shabalin_itda_fvu, shabalin_standardise
from .claims_surkov import surkov_blocks, surkov_causal, surkov_transfer
from .claims_tinaz import tinaz_layout, tinaz_windows

CLAIMS = (
    surkov_blocks,
    surkov_causal,
    surkov_transfer,
    shabalin_itda_fvu,
    shabalin_interpretable,
    shabalin_flux_steering,
    shabalin_standardise,
    leask_fit_time,
    tinaz_layout,
    tinaz_windows,
)


def above(a: float, n_a: int, b: float, n_b: int) -> bool:
    """Success rate a (of n_a prompts) is above b (of n_b) by more than two standard errors (unpaired)."""
    return unpaired(a, n_a, b, n_b).above()


def judge_claims(tables: Tables) -> list[Finding]:
    return [claim(tables) for claim in CLAIMS]


__all__ = [
    "CLAIMS",
    "FAILS",
    "HOLDS",
    "NOT_TESTABLE",
    "PARTLY",
    "UNMEASURED",
    "Finding",
    "above",
    "judge_claims",
    "leask_fit_time",
    "shabalin_flux_steering",
    "shabalin_interpretable",
    "shabalin_itda_fvu",
    "shabalin_standardise",
    "surkov_blocks",
    "surkov_causal",
    "surkov_transfer",
    "tinaz_layout",
    "tinaz_windows",
]
