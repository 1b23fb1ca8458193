"""Leask et al.'s claim: ITDA trains far faster than an SAE of the same size."""

from __future__ import annotations

import polars as pl

from .claim_base import FAILS, PARTLY, Finding, Tables, combine, has, markdown_table, unmeasured
from .claims_shabalin import compare_pairs

LEASK = "Leask et al., Inference-Time Decomposition of Activations (ITDA) (arXiv 2505.17769)"


def leask_fit_time(tables: Tables) -> Finding:
    claim = "ITDA is about 100 times cheaper to train than an SAE of the same size."
    if not has(tables, "compare_metrics", "training_summary"):
        return unmeasured("leask-time", LEASK, claim, "compare and training tables")
    summary = {r["dictionary"]: r for r in tables["training_summary"].iter_rows(named=True)}
    table, verdicts = [], []
    for pair, rows in compare_pairs(tables):
        names = dict(rows.filter(pl.col("kind") == "dictionary").select("architecture", "method").iter_rows())
        if "topk_sae" not in names or "itda" not in names:
            continue
        s, i = summary.get(names["topk_sae"]), summary.get(names["itda"])
        if s is None or i is None:
            continue
        ratio = i["fit_seconds"] / s["fit_seconds"]
        verdicts.append(ratio <= 0.1)
        table.append(
            [
                pair,
                f"{s['fit_seconds']:.1f} s ({s['tokens']:,} tokens, {'flat' if s['plateaued'] else 'still falling'})",
                f"{i['fit_seconds']:.1f} s ({i['tokens']:,} tokens, {'flat' if i['plateaued'] else 'still falling'})",
                f"{ratio:.2f}",
            ]
        )
    body = (
        "Wall time of each fit on this machine's CPU (the dictionary's own steps; reading the store is "
        "shared and not counted), each trained until its FVU curve flattened (less than 5% change over the "
        "last tenth).\n\n"
        + markdown_table(["pair", "SAE", "ITDA", "ITDA / SAE"], table)
        + "\n\nHolds when ITDA takes at most a tenth of the SAE's time (the paper's hundredth, within an order "
        "of magnitude); partly when it is faster but not that much."
    )
    verdict = combine(verdicts)
    if verdict == FAILS and table and any(float(r[-1]) < 1 for r in table):
        verdict = PARTLY
    return Finding("leask-time", LEASK, claim, body, verdict)
