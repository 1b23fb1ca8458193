"""Numbers out of polars aggregates.

polars types `Series.max()`, `.min()`, `.mean()` and `DataFrame.row(...)` values as any Python value
(or None), whatever the column holds; the studies read them from numeric columns that have values.
"""

from __future__ import annotations


def number(value: object) -> int | float:
    """A polars aggregate (typed as any Python value) of a numeric column that has values."""
    assert isinstance(value, (int, float)), f"expected a number, got {value!r}"
    return value
