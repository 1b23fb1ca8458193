"""One training step of a top-k SAE with a hand-written sparse backward.

Why by hand: autograd through `topk` + a dense decoder makes every gradient a dense
(N, n) product. Here the encoder matmul pre = (x - b_dec) W_enc^T + b_enc is the only dense
product; everything a top-k code touches is sparse:

  forward   x_hat = sum_j z_j W_dec[idx_j] + b_dec        embedding_bag over (N, k)
  dz        g_e . W_dec[idx_j]                             sampled dense-dense product (N, k)
  dW_dec    sum over the tokens that fired latent j        embedding_bag over a sorted pattern
  dW_enc    same pattern, weights dpre, rows x - b_dec
AuxK only touches the dead latents: a dense product over the (few) dead columns, or the
same sparse path when many are dead. With no dead latent it still applies, as sdxl-unbox and
the top-k recipe do: the auxiliary reconstruction is then b_dec alone, which the term pulls
toward the mean residual. Adam is the fused kernel (2% of the matmul).

Shapes: x (N, d); W_enc, W_dec (n, d); b_enc (n,); b_dec (d,). Every tensor made here is made
on x's device (CPU or GPU); under torchrun with NCCL the reduced tensors are thus on the GPU.

Data-parallel (torchrun): each rank passes its equal slice of the global batch and a World.
Every term of the loss is a sum over tokens, so the global gradient is the mean of the
ranks' gradients once the batch-level quantities are global: which latents fired (dead
bookkeeping), and the AuxK normaliser Var(residual). Those are reduced first, then the four
gradients and the statistics in one message; every rank applies the same Adam update and
keeps bit-identical weights.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from diffdict.dictionaries import distributed


@dataclass
class SparsePattern:
    """Where a (N, m) code with k entries per row is nonzero, in row order and in column order.

    idx: (N, k) column per entry; by_column: entry positions sorted by column; offsets:
    (m,) start of each column's run in `by_column`; rows: (N*k,) row of each sorted entry.
    """

    idx: torch.Tensor
    by_column: torch.Tensor
    offsets: torch.Tensor
    rows: torch.Tensor
    m: int

    @classmethod
    def build(cls, idx: torch.Tensor, m: int) -> SparsePattern:
        flat = idx.reshape(-1)
        # torch.sort(stable) is ~100x faster than argsort(stable) on CPU for this size.
        _, by_column = torch.sort(flat, stable=True)
        counts = torch.bincount(flat, minlength=m)
        offsets = torch.zeros(m, dtype=torch.long, device=idx.device)
        offsets[1:] = counts.cumsum(0)[:-1]
        return cls(idx, by_column, offsets, torch.div(by_column, idx.shape[1], rounding_mode="floor"), m)

    def decode(self, values: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(N, k) values over rows of `table` (m, d) -> (N, d)."""
        return F.embedding_bag(self.idx, table, per_sample_weights=values, mode="sum")

    def transpose_product(self, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """C^T @ dense for the sparse code C (N, m) with these values: (m, d), zero rows untouched."""
        weights = values.reshape(-1)[self.by_column]
        return F.embedding_bag(self.rows, dense, self.offsets, per_sample_weights=weights, mode="sum")

    def sampled_dots(self, left: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(N, k): left[i] . table[idx[i, j]], i.e. (left @ table^T) only where the code is nonzero."""
        n_rows, k = self.idx.shape
        crow = torch.arange(0, n_rows * k + 1, k, dtype=torch.long, device=left.device)
        with warnings.catch_warnings():  # "CSR support is in beta": the op we use is stable
            warnings.simplefilter("ignore")
            pattern = torch.sparse_csr_tensor(
                crow,
                self.idx.reshape(-1),
                torch.zeros(n_rows * k, device=left.device),
                (n_rows, self.m),
                device=left.device,
                check_invariants=False,
            )
        out = torch.sparse.sampled_addmm(pattern, left, table.t(), beta=0.0)
        return out.values().reshape(n_rows, k)


@dataclass
class StepStats:
    loss: float
    mse: float
    fvu: float
    aux_loss: float
    l0: float
    dead_fraction: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def _aux_grads(
    pre: torch.Tensor,
    xc: torch.Tensor,
    residual: torch.Tensor,
    dead_idx: torch.Tensor,
    k_aux: int,
    W_dec: torch.Tensor,
    aux_coef: float,
    denom: torch.Tensor | None = None,
):
    """AuxK on the dead latents: reconstruct the main residual from the top-k_aux dead pre-activations.

    Returns (aux_loss, g_hat (N, d) grad w.r.t. the aux reconstruction, dpre (N, k') over
    `cols`, the grads dW_dec_rows / dW_enc_rows (k'-space, for `cols`), cols (global ids)).
    Matches sdxl-unbox: loss = mse(aux_hat + b_dec, residual + b_dec) / var(residual). With no
    dead latent aux_hat is 0 and only b_dec gets a gradient (through g_hat).
    `denom` (the residual's summed squared deviation) is passed in when it spans several ranks.
    """
    n_dead = dead_idx.numel()
    k_eff = min(k_aux, n_dead)
    if denom is None:
        denom = (residual - residual.mean(0)).pow(2).sum()
    if float(denom) == 0.0:
        return None
    pre_dead = pre.index_select(1, dead_idx)  # (N, n_dead)
    Wd = W_dec.index_select(0, dead_idx)  # (n_dead, d)
    # Few dead latents: dense products over the dead columns are GEMM-speed and cheap.
    # Many dead: keep only the top k_aux per row and go through the sparse path.
    if n_dead <= 8 * k_eff:
        if k_eff < n_dead:
            vals, pos = pre_dead.topk(k_eff, dim=1, sorted=False)
            z = torch.zeros_like(pre_dead).scatter_(1, pos, vals.clamp_min(0))
        else:
            z = pre_dead.clamp_min(0)
        diff = z @ Wd - residual
        loss = diff.pow(2).sum() / denom
        g_hat = diff.mul_(2.0 * aux_coef / denom)
        dz = (g_hat @ Wd.t()).mul_(z > 0)  # relu gate; zero outside the selected top-k
        dW_dec = z.t() @ g_hat
        dW_enc = dz.t() @ xc
        return loss, g_hat, dz.sum(0), dW_dec, dW_enc, dead_idx
    vals, pos = pre_dead.topk(k_eff, dim=1, sorted=False)
    z = vals.clamp_min(0)
    pattern = SparsePattern.build(pos, n_dead)
    diff = pattern.decode(z, Wd) - residual
    loss = diff.pow(2).sum() / denom
    g_hat = diff.mul_(2.0 * aux_coef / denom)
    dz = pattern.sampled_dots(g_hat, Wd).mul_(vals > 0)
    dW_dec = pattern.transpose_product(z, g_hat)
    dW_enc = pattern.transpose_product(dz, xc)
    db_enc = torch.zeros(n_dead, device=dz.device).index_add_(0, pos.reshape(-1), dz.reshape(-1))
    return loss, g_hat, db_enc, dW_dec, dW_enc, dead_idx


def _global_deviation(residual: torch.Tensor, world) -> torch.Tensor:
    """sum_i ||r_i - mean(r)||^2 over the rows of every rank: sum ||r||^2 - N ||mean||^2."""
    parts = torch.cat(
        [
            residual.double().sum(0),
            residual.double().pow(2).sum().reshape(1),
            torch.tensor([float(residual.shape[0])], dtype=torch.float64, device=residual.device),
        ]
    )
    distributed.all_reduce_sum([parts], world)
    total, squares, count = parts[:-2], parts[-2], parts[-1]
    return (squares - total.pow(2).sum() / count).float()


@torch.no_grad()
def sae_train_step(sae, x: torch.Tensor, world: distributed.World | None = None) -> StepStats:
    """Forward, loss (MSE/Var + AuxK), sparse backward, decoder upkeep and Adam for one batch.

    `sae` is a TopKSAE (params W_enc, b_enc, W_dec, b_dec in normalised space); x is already
    normalised (N, d) float32: the whole batch, or with `world` this rank's equal slice of it.
    """
    world = world or distributed.World()
    cfg = sae.config
    W_enc, b_enc, W_dec, b_dec = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec
    n_rows, d = x.shape
    n = W_enc.shape[0]

    xc = x - b_dec
    pre = torch.addmm(b_enc, xc, W_enc.t())  # (N, n): the one dense product
    top, idx = pre.topk(cfg.k, dim=1, sorted=False)
    z = top.clamp_min(0)
    pattern = SparsePattern.build(idx, n)
    e = pattern.decode(z, W_dec).add_(b_dec).sub_(x)  # x_hat - x
    flat_e = e.view(-1)
    sq = float(torch.dot(flat_e, flat_e))
    mse = sq / (n_rows * d)
    loss = sae.mse_scale * mse

    # Dead bookkeeping counts tokens since a latent last fired (OpenAI threshold 1e-3).
    fired = torch.zeros(n, dtype=torch.bool, device=x.device)
    fired[idx[top > cfg.fired_threshold]] = True
    if world.distributed:  # a latent is alive if it fired on any rank
        fired_anywhere = fired.to(torch.int32)
        distributed.all_reduce_max(fired_anywhere, world)
        fired = fired_anywhere.bool()
    sae.tokens_since_fired.add_(n_rows * world.size).masked_fill_(fired, 0)
    dead = sae.tokens_since_fired >= cfg.dead_tokens

    use_aux = cfg.k_aux > 0  # also with no dead latent (see the module docstring)
    residual = e.neg() if use_aux else None  # x - x_hat, the AuxK target
    g_e = e.mul_(2.0 * sae.mse_scale / (n_rows * d))  # dL/dx_hat, reuses e's storage
    dz = pattern.sampled_dots(g_e, W_dec).mul_(top > 0)  # (N, k) = dL/dpre at the selected entries
    grad_W_dec = pattern.transpose_product(z, g_e)
    grad_W_enc = pattern.transpose_product(dz, xc)
    grad_b_enc = torch.zeros(n, device=x.device).index_add_(0, idx.reshape(-1), dz.reshape(-1))
    grad_b_dec = g_e.sum(0)

    aux_loss = 0.0
    if use_aux:
        assert residual is not None
        # Each rank normalises by its share of the whole batch's Var (like 1/(N_rank d) above),
        # so that the mean over ranks, taken by the reduce, is the whole batch's AuxK gradient.
        denom = _global_deviation(residual, world) / world.size if world.distributed else None
        aux = _aux_grads(pre, xc, residual, dead.nonzero().flatten(), cfg.k_aux, W_dec, cfg.aux_coef, denom)
        if aux is not None:
            aux_l, g_hat, db_enc_aux, dW_dec_aux, dW_enc_aux, cols = aux
            aux_loss = float(aux_l)
            loss += cfg.aux_coef * aux_loss
            grad_W_dec.index_add_(0, cols, dW_dec_aux)
            grad_W_enc.index_add_(0, cols, dW_enc_aux)
            grad_b_enc.index_add_(0, cols, db_enc_aux)
            grad_b_dec += g_hat.sum(0)
    del pre
    if world.distributed:
        whole = _reduce_across_ranks(x, top, [grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec], sq, aux_loss, world)
        n_rows, sq, aux_loss = whole.rows, whole.sq, whole.aux_loss
        mse = sq / (n_rows * d)
        loss = sae.mse_scale * mse + cfg.aux_coef * aux_loss
    # pre = (x - b_dec) W_enc^T + b_enc, so b_dec also gets -colsum(dpre) @ W_enc.
    grad_b_dec -= grad_b_enc @ W_enc

    # Unit-norm decoder rows: remove the gradient component along each row (rows are unit).
    along = torch.bmm(grad_W_dec.unsqueeze(1), W_dec.unsqueeze(2)).reshape(n, 1)
    grad_W_dec.addcmul_(W_dec, along, value=-1.0)

    sae.adam_step([grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec])
    W_dec.div_(W_dec.norm(dim=1, keepdim=True).clamp_min_(1e-12))

    sae.tokens_seen += n_rows
    sae.steps += 1
    if world.distributed:
        total_var, l0_count = whole.total_var, whole.l0_count
    else:
        mean = x.mean(0)
        flat_x = x.reshape(-1)
        total_var = float(torch.dot(flat_x, flat_x)) - n_rows * float(torch.dot(mean, mean))
        l0_count = float((top > 0).sum())
    return StepStats(
        loss=loss,
        mse=mse,
        fvu=sq / max(total_var, 1e-30),
        aux_loss=aux_loss,
        l0=l0_count / n_rows,
        dead_fraction=float(dead.float().mean()),
    )


class BatchSums(NamedTuple):
    """Whole-batch quantities of a data-parallel step (summed over ranks)."""

    rows: int
    sq: float  # sum of squared reconstruction errors
    aux_loss: float
    l0_count: float  # active latents over all tokens
    total_var: float  # sum_i ||x_i - mean(x)||^2


def _reduce_across_ranks(
    x: torch.Tensor, top: torch.Tensor, grads: list[torch.Tensor], sq: float, aux_loss: float, world
) -> BatchSums:
    """Average the gradients over ranks in place and sum the batch statistics.

    Each rank's gradient carries 1/(N_rank d); the global one 1/(N d) with N = size * N_rank,
    so the mean of the ranks' gradients (and of their AuxK losses) is the whole batch's.
    """
    sums = torch.cat(
        [
            torch.tensor(
                [sq, aux_loss, float((top > 0).sum()), float(x.double().pow(2).sum())],
                dtype=torch.float64,
                device=x.device,
            ),
            x.double().sum(0),
        ]
    )
    distributed.all_reduce_sum(grads + [sums], world)
    for grad in grads:
        grad.div_(world.size)
    rows = x.shape[0] * world.size
    total_var = float(sums[3]) - float(sums[4:].pow(2).sum()) / rows
    return BatchSums(rows, float(sums[0]), float(sums[1]) / world.size, float(sums[2]), total_var)
