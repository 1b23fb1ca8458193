"""Sparse coding against a fixed dictionary with a precomputed Gram matrix.

The textbook loops recompute residual correlations D r (a full (N, d) @ (d, m) product) at
every iteration. With G = D D^T precomputed, correlations after a step on atom j change by
a multiple of G[j], so an iteration is a row update on the (rows, m) correlation block, which
is processed in row chunks that stay in cache. Shapes: x (N, d), D (m, d) unit rows, G (m, m).

methods:
  matching   classic matching pursuit (Mallat & Zhang): pick argmax |corr|, step along it.
  gradient   gradient pursuit (Blumensath & Davies): pick argmax |corr|, then a steepest-descent
             step on the whole support; the correlation update is a combination of the
             support's Gram rows, kept in a per-chunk cache.
Both optionally finish with a least-squares refit on the chosen support (never worse).
"""
from __future__ import annotations

import torch

METHODS = ("matching", "gradient")
CHUNK_BYTES = 4 * 2**20  # a (rows, m) block of correlations this size stays in L2/L3


def _chunk_rows(m: int, extra_per_row: int = 0) -> int:
    return max(8, CHUNK_BYTES // (4 * (m + extra_per_row)))


@torch.no_grad()
def pursuit(x: torch.Tensor, atoms: torch.Tensor, gram: torch.Tensor, L: int, method: str = "matching",
            refit: bool = True, ridge: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Code x (N, d) with L atoms each. Returns values (N, L) and indices (N, L) int64.

    Indices are distinct within a row when refit is on (a repeated pick is masked), so that
    the refit is a well-posed least-squares problem.
    """
    if method not in METHODS:
        raise ValueError(f"pursuit method must be one of {METHODS}, got {method!r}")
    m = atoms.shape[0]
    L = min(L, m)
    correlations = x @ atoms.t()  # (N, m): the one dense product
    values = torch.zeros(x.shape[0], L)
    indices = torch.zeros(x.shape[0], L, dtype=torch.long)
    sub_gram = torch.zeros(x.shape[0], L, L)  # G restricted to each row's support, filled as we go
    step = _chunk_rows(m) if method == "matching" else _chunk_rows(m, L * m // 4)
    for start in range(0, x.shape[0], step):
        rows = slice(start, start + step)
        block = correlations[rows].clone()
        if method == "matching":
            _matching_block(block, gram, values[rows], indices[rows], sub_gram[rows], exclude=refit)
        else:
            _gradient_block(block, gram, values[rows], indices[rows], sub_gram[rows])
    if refit:
        values = least_squares_refit(correlations.gather(1, indices), sub_gram, ridge)
    return values, indices


def _matching_block(corr: torch.Tensor, gram: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                    sub_gram: torch.Tensor, exclude: bool) -> None:
    L = values.shape[1]
    for t in range(L):
        pick = corr.abs().argmax(1)
        coef = corr.gather(1, pick[:, None])  # (rows, 1)
        rows_of_gram = gram.index_select(0, pick)  # (rows, m)
        indices[:, t] = pick
        values[:, t] = coef[:, 0]
        sub_gram[:, t, : t + 1] = rows_of_gram.gather(1, indices[:, : t + 1])
        sub_gram[:, : t, t] = sub_gram[:, t, : t]
        corr.addcmul_(rows_of_gram, coef, value=-1.0)
        if exclude:  # keep the support distinct; the refit gives re-picks their weight anyway
            corr.scatter_(1, indices[:, : t + 1], 0.0)


def _gradient_block(corr: torch.Tensor, gram: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                    sub_gram: torch.Tensor) -> None:
    rows, L = values.shape
    support_rows = torch.empty(rows, L, gram.shape[1])  # the support's Gram rows, cached per chunk
    for t in range(L):
        # Exclude the current support from the pick so the support grows by one atom each step.
        masked = corr.abs()
        if t:
            masked.scatter_(1, indices[:, :t], -1.0)
        pick = masked.argmax(1)
        indices[:, t] = pick
        torch.index_select(gram, 0, pick, out=support_rows[:, t])
        sub_gram[:, t, : t + 1] = support_rows[:, t].gather(1, indices[:, : t + 1])
        sub_gram[:, : t, t] = sub_gram[:, t, : t]
        size = t + 1
        direction = corr.gather(1, indices[:, :size])  # gradient on the support, (rows, size)
        curvature = torch.bmm(sub_gram[:, :size, :size], direction[:, :, None])[:, :, 0]
        step = (direction * direction).sum(1) / (direction * curvature).sum(1).clamp_min(1e-30)
        update = direction * step[:, None]
        values[:, :size] += update
        corr.sub_(torch.bmm(update[:, None, :], support_rows[:, :size])[:, 0])


def least_squares_refit(targets: torch.Tensor, sub_gram: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """Solve sub_gram w = targets per row: the best coefficients on a fixed support.

    targets (N, L) = <x, atom> for the support; sub_gram (N, L, L). A repeated atom (masked to
    zero gram entries) gets coefficient 0 through the ridge.
    """
    system = sub_gram.double()
    eye = torch.eye(system.shape[-1], dtype=torch.float64)
    scale = system.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)
    system = system + ridge * scale[:, None, None] * eye
    factor, info = torch.linalg.cholesky_ex(system)
    solution = torch.cholesky_solve(targets.double()[:, :, None], factor)[:, :, 0]
    if bool((info != 0).any()):  # numerically rank-deficient rows: fall back to lstsq
        bad = (info != 0).nonzero().flatten()
        solution[bad] = torch.linalg.lstsq(system[bad], targets.double()[bad][:, :, None]).solution[:, :, 0]
    return solution.float()
