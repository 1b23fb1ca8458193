"""The statistics behind every verdict: standard errors, paired differences, power and corrections.

A verdict compares rates measured on held-out prompts (edit success) or means over concepts
(alignment F1). The rules, stated once:
  - a difference counts when it exceeds z standard errors, z = 2 for one comparison; when a verdict
    reads the best of m cells (the best block of 12), z is Bonferroni's for m two-sided tests at 5%
  - on paired data (the same prompts edited by two methods, the same concepts scored by two methods)
    the standard error is that of the per-item differences
  - a cell rests on at least MIN_PROMPTS held-out prompts; fewer, and the verdict is "not testable"
  - a verdict whose ceiling is not above its floor by z standard errors is "not testable": the
    testbed cannot show a positive there, so a negative means nothing
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

MIN_PROMPTS = 64


def z_for(comparisons: int = 1) -> float:
    """Two-sided 5% critical value, Bonferroni-corrected for `comparisons` tests (2.0 for one)."""
    if comparisons <= 1:
        return 2.0
    return float(norm.ppf(1 - 0.025 / comparisons))


def rate_se(rate: float, n: int) -> float:
    """Standard error of a success rate over n prompts (at least that of one prompt in n)."""
    if n <= 0 or rate != rate:
        return float("inf")
    return max(math.sqrt(rate * (1 - rate) / n), 1 / n)


@dataclass(frozen=True)
class Difference:
    """a - b with its standard error, over `n` items (paired when the items are shared)."""

    diff: float
    se: float
    n: int
    paired: bool

    def above(self, z: float = 2.0) -> bool:
        return self.diff > z * self.se

    def text(self, z: float = 2.0) -> str:
        return f"{self.diff:+.2f} ± {z * self.se:.2f}"


def unpaired(a: float, n_a: int, b: float, n_b: int) -> Difference:
    """Two rates on different prompts."""
    se = math.sqrt(rate_se(a, n_a) ** 2 + rate_se(b, n_b) ** 2)
    return Difference(a - b, se, min(n_a, n_b), False)


def paired(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Per-item values of two methods on the same items (prompts or concepts), in the same order."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    if n < 2:
        return Difference(float(d.mean()) if n else float("nan"), float("inf"), n, True)
    se = max(float(d.std(ddof=1)) / math.sqrt(n), 1 / n)
    return Difference(float(d.mean()), se, n, True)


def too_few(n: int) -> str | None:
    """Why a cell of n held-out prompts cannot carry a verdict, or None."""
    if n < MIN_PROMPTS:
        return f"{n} held-out prompts per cell; a verdict needs at least {MIN_PROMPTS}"
    return None
