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

from concurrent.futures import ThreadPoolExecutor

import torch

from diffdict.dictionaries.errors import InputError

METHODS = ("matching", "gradient")
CHUNK_BYTES = 4 * 2**20  # a (rows, m) block of correlations this size stays in L2/L3
# On a GPU a block is bounded by memory, not cache: large blocks mean few, full kernels per pick.
GPU_CHUNK_BYTES = 512 * 2**20
GROUP = 128  # argmax in two stages over groups of this many columns (see argmax_abs)


def argmax_abs(block: torch.Tensor) -> torch.Tensor:
    """Row-wise argmax of |block| for a (rows, G * groups) block; first index on ties.

    torch's argmax over a long row is scalar code; amax/amin over short groups vectorise.
    Stage 1 finds the group holding the largest |value| (amax and -amin, no abs pass, no
    temporary of the block's size), stage 2 the position inside that group: ~8x faster.
    """
    rows, width = block.shape
    groups = block.view(rows, width // GROUP, GROUP)
    best_group = torch.maximum(groups.amax(2), groups.amin(2).neg_()).argmax(1)
    inside = groups[torch.arange(rows, device=block.device), best_group].abs_().argmax(1)
    return best_group * GROUP + inside


def _padded_block(correlations: torch.Tensor, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero-padded copy of correlations[rows] whose width is a multiple of GROUP, and its live view."""
    part = correlations[rows]
    width = -(-part.shape[1] // GROUP) * GROUP
    block = torch.zeros(part.shape[0], width, device=part.device)
    block[:, : part.shape[1]] = part
    return block, block[:, : part.shape[1]]


def _chunk_rows(m: int, extra_per_row: int = 0, budget: int = CHUNK_BYTES) -> int:
    return max(8, budget // (4 * (m + extra_per_row)))


@torch.no_grad()
def pursuit(
    x: torch.Tensor,
    atoms: torch.Tensor,
    gram: torch.Tensor,
    L: int,
    method: str = "matching",
    refit: bool = True,
    ridge: float = 1e-6,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Code x (N, d) with L atoms each. Returns values (N, L) and indices (N, L) int64.

    Indices are distinct within a row when refit is on (a repeated pick is masked), so that
    the refit is a well-posed least-squares problem. `allowed` (N, m) bool restricts each row
    to some atoms: the code is the one that row gets from its allowed atoms alone (a pick
    outside them, made only when no allowed atom is left, carries the value 0).
    """
    if method not in METHODS:
        raise InputError(f"pursuit method must be one of {METHODS}, got {method!r}")
    m = atoms.shape[0]
    L = min(L, m)
    correlations = x @ atoms.t()  # (N, m): the one dense product
    keep = allowed.float() if allowed is not None else None
    # A row with fewer allowed atoms than L stops after that many picks, as it would on them alone.
    limit = allowed.sum(1) if allowed is not None else None
    values = torch.zeros(x.shape[0], L, device=x.device)
    indices = torch.zeros(x.shape[0], L, dtype=torch.long, device=x.device)
    sub_gram = torch.zeros(x.shape[0], L, L, device=x.device)  # G restricted to each row's support, filled as we go
    on_cpu = x.device.type == "cpu"
    budget = CHUNK_BYTES if on_cpu else GPU_CHUNK_BYTES
    step = _chunk_rows(m, budget=budget) if method == "matching" else _chunk_rows(m, L * m // 4, budget)

    def run(start: int) -> None:
        rows = slice(start, start + step)
        block, live = _padded_block(correlations, rows)
        mask = keep[rows] if keep is not None else None
        until = limit[rows] if limit is not None else None
        if mask is not None:
            live.mul_(mask)
        if method == "matching":
            _matching_block(
                block, live, gram, values[rows], indices[rows], sub_gram[rows], exclude=refit, mask=mask, limit=until
            )
        else:
            _gradient_block(block, live, gram, values[rows], indices[rows], sub_gram[rows], mask=mask, limit=until)

    # The per-iteration ops on one chunk are small: threading inside them spends more time in
    # barriers than in work. Instead one chunk per thread, each op single-threaded (ops
    # release the GIL), which keeps every core busy without synchronising per op.
    workers = torch.get_num_threads()
    starts = list(range(0, x.shape[0], step))
    if on_cpu and workers > 1 and len(starts) > 1:
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(run, starts))
        finally:
            torch.set_num_threads(workers)
    else:
        for start in starts:
            run(start)
    if refit:
        targets = correlations.gather(1, indices)
        if keep is not None and limit is not None:  # a pick outside the allowed atoms is decoupled and solved to 0
            inside = keep.gather(1, indices) * (torch.arange(L, device=x.device) < limit[:, None])
            targets = targets * inside
            sub_gram = sub_gram * inside[:, :, None] * inside[:, None, :]
        values = least_squares_refit(targets, sub_gram, ridge)
    return values, indices


def _matching_block(
    block: torch.Tensor,
    corr: torch.Tensor,
    gram: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    sub_gram: torch.Tensor,
    exclude: bool,
    mask: torch.Tensor | None = None,
    limit: torch.Tensor | None = None,
) -> None:
    """block: (rows, padded m) correlations, corr its live (rows, m) view; updated in place."""
    L, last = values.shape[1], corr.shape[1] - 1
    for t in range(L):
        pick = argmax_abs(block).clamp_max_(last)  # an all-zero row may point into the padding
        coef = corr.gather(1, pick[:, None])  # (rows, 1)
        if limit is not None:
            coef = coef * (t < limit)[:, None]
        rows_of_gram = gram.index_select(0, pick)  # (rows, m)
        indices[:, t] = pick
        values[:, t] = coef[:, 0]
        sub_gram[:, t, : t + 1] = rows_of_gram.gather(1, indices[:, : t + 1])
        sub_gram[:, :t, t] = sub_gram[:, t, :t]
        corr.addcmul_(rows_of_gram, coef, value=-1.0)
        if mask is not None:  # atoms a row may not use stay at correlation 0: never picked
            corr.mul_(mask)
        if exclude:  # keep the support distinct; the refit gives re-picks their weight anyway
            corr.scatter_(1, indices[:, : t + 1], 0.0)


def _gradient_block(
    block: torch.Tensor,
    corr: torch.Tensor,
    gram: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    sub_gram: torch.Tensor,
    mask: torch.Tensor | None = None,
    limit: torch.Tensor | None = None,
) -> None:
    rows, L = values.shape
    last = corr.shape[1] - 1
    support_rows = torch.empty(rows, L, gram.shape[1], device=gram.device)  # the support's Gram rows, cached per chunk
    for t in range(L):
        # Exclude the current support from the pick so the support grows by one atom each step.
        masked = block.clone()
        if t:
            masked.scatter_(1, indices[:, :t], 0.0)
        pick = argmax_abs(masked).clamp_max_(last)
        indices[:, t] = pick
        torch.index_select(gram, 0, pick, out=support_rows[:, t])
        sub_gram[:, t, : t + 1] = support_rows[:, t].gather(1, indices[:, : t + 1])
        sub_gram[:, :t, t] = sub_gram[:, t, :t]
        size = t + 1
        direction = corr.gather(1, indices[:, :size])  # gradient on the support, (rows, size)
        curvature = torch.bmm(sub_gram[:, :size, :size], direction[:, :, None])[:, :, 0]
        step = (direction * direction).sum(1) / (direction * curvature).sum(1).clamp_min(1e-30)
        update = direction * step[:, None]
        if limit is not None:
            update = update * (t < limit)[:, None]
        values[:, :size] += update
        corr.sub_(torch.bmm(update[:, None, :], support_rows[:, :size])[:, 0])
        if mask is not None:
            corr.mul_(mask)


def least_squares_refit(targets: torch.Tensor, sub_gram: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """Solve sub_gram w = targets per row: the best coefficients on a fixed support.

    targets (N, L) = <x, atom> for the support; sub_gram (N, L, L). A repeated atom (masked to
    zero gram entries) gets coefficient 0 through the ridge.
    """
    system = sub_gram.double()
    eye = torch.eye(system.shape[-1], dtype=torch.float64, device=system.device)
    scale = system.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)
    system = system + ridge * scale[:, None, None] * eye
    factor, info = torch.linalg.cholesky_ex(system)
    solution = torch.cholesky_solve(targets.double()[:, :, None], factor)[:, :, 0]
    if bool((info != 0).any()):  # numerically rank-deficient rows: fall back to lstsq
        bad = (info != 0).nonzero().flatten()
        solution[bad] = torch.linalg.lstsq(system[bad], targets.double()[bad][:, :, None]).solution[:, :, 0]
    return solution.float()
