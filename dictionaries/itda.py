"""ITDA (Leask et al.): a dictionary made of real activations, grown from a stream.

For each batch: code every sample with the current atoms (L atoms, Gram-based pursuit);
every sample whose normalised error ||x - x_hat||^2 / ||x||^2 exceeds `threshold` becomes a
new unit-norm atom. No gradients. Each atom keeps its provenance (prompt id, seed, step,
position, ...) when the stream provides it: a free label for every feature.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dictionaries import distributed
from dictionaries.base import Dictionary, SparseCode, check_activations, register, sparse_decode
from dictionaries.distributed import World
from dictionaries.normalize import KINDS, InputNorm
from dictionaries.pursuit import METHODS, pursuit

PROVENANCE_FIELDS = ("map_row", "prompt_id", "seed", "step", "position")
ENCODE_CHUNK = 4096


@dataclass
class ITDAConfig:
    d: int
    L: int = 32  # atoms per code (the "k" of ITDA)
    threshold: float = 0.3  # add a sample when its normalised error exceeds this
    max_size: int = 0  # 0 = unbounded
    pursuit: str = "matching"
    refit: bool = True
    input_norm: str = "none"

    def __post_init__(self) -> None:
        if not isinstance(self.d, int) or self.d < 1:
            raise ValueError(f"itda: d must be a positive integer, got {self.d!r}")
        if not isinstance(self.L, int) or self.L < 1:
            raise ValueError(f"itda: L must be a positive integer, got {self.L!r}")
        if self.max_size and self.L > self.max_size:
            raise ValueError(f"itda: L={self.L} is larger than max_size={self.max_size}; choose L <= max_size")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"itda: threshold must be in (0, 1), got {self.threshold}")
        if self.pursuit not in METHODS:
            raise ValueError(f"itda: pursuit must be one of {METHODS}, got {self.pursuit!r}")
        if self.input_norm not in KINDS:
            raise ValueError(f"itda: input_norm must be one of {KINDS}, got {self.input_norm!r}")


def _labels(column: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """column[chosen] as int64 on chosen's device: a stream's provenance may sit on the CPU."""
    return column[chosen.to(column.device)].long().to(chosen.device)


@register
class ITDA(Dictionary):
    architecture = "itda"
    config_class = ITDAConfig
    supports_distributed = True  # partial_fit(batch, world): candidates gathered rank-major

    def __init__(self, config: ITDAConfig) -> None:
        super().__init__(config)
        self.norm = InputNorm(config.input_norm, config.d)
        self.initialized = config.input_norm == "none"
        self._atoms = torch.zeros(0, config.d)  # (n, d) unit rows, normalised space
        self._gram = torch.zeros(0, 0)  # (capacity, capacity); the top-left (n, n) block is live
        self.provenance = {name: torch.zeros(0, dtype=torch.long) for name in PROVENANCE_FIELDS}
        self.tokens_seen = 0

    @property
    def n(self) -> int:
        return self._atoms.shape[0]

    @property
    def k(self) -> int:
        return min(self.config.L, self.n)

    @property
    def atoms(self) -> torch.Tensor:
        return self.norm.invert_directions(self._atoms)

    @property
    def decoder_bias(self) -> torch.Tensor:
        return self.norm.invert(torch.zeros(self.d, device=self.device))

    @property
    def gram(self) -> torch.Tensor:
        return self._gram[: self.n, : self.n]

    # --- device ---
    @property
    def device(self) -> torch.device:
        return self._atoms.device

    def to(self, device: str | torch.device) -> "ITDA":
        """Move atoms, the Gram matrix (its whole capacity), provenance and normaliser to `device`."""
        self._atoms, self._gram = self._atoms.to(device), self._gram.to(device)
        self.provenance = {name: column.to(device) for name, column in self.provenance.items()}
        self.norm.to(device)
        return self

    # --- coding ---
    def _code_normalised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n == 0:
            empty = torch.zeros(x.shape[0], 0, device=x.device)
            return empty, empty.long()
        return pursuit(x, self._atoms, self.gram, self.config.L, self.config.pursuit, self.config.refit)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> SparseCode:
        x = self.norm.apply(check_activations(x, self.d, "itda.encode", self.device).float())
        values, indices = [], []
        for start in range(0, max(1, x.shape[0]), ENCODE_CHUNK):
            v, i = self._code_normalised(x[start:start + ENCODE_CHUNK])
            values.append(v)
            indices.append(i)
        return SparseCode(torch.cat(values), torch.cat(indices))

    @torch.no_grad()
    def decode(self, code: SparseCode) -> torch.Tensor:
        return sparse_decode(code, self.atoms, self.decoder_bias)

    # --- growing ---
    @torch.no_grad()
    def partial_fit(self, batch, world: World | None = None) -> dict[str, float]:
        """Grow from one batch (N, d). With a World, `batch` is this rank's contiguous slice of
        the global batch: the candidates of all ranks are appended rank-major, i.e. in the order
        one process would append them from the whole batch, so the atoms come out identical."""
        world = world or World()
        x = getattr(batch, "x", batch)
        check_activations(x, self.d, "itda.partial_fit", self.device)
        x = x.float()
        if not self.initialized:
            self.norm.fit(distributed.gather_rows(x, world))
            self.initialized = True
        xn = self.norm.apply(x)
        values, indices = self._code_normalised(xn)
        if self.n:
            recon = sparse_decode(SparseCode(values, indices), self._atoms)
            error = (xn - recon).pow(2).sum(1) / xn.pow(2).sum(1).clamp_min(1e-30)
        else:
            error = torch.ones(x.shape[0], device=x.device)
        add = (error > self.config.threshold) & (xn.norm(dim=1) > 0)
        chosen = add.nonzero().flatten()
        provenance = getattr(batch, "provenance", None)
        if world.distributed:
            new, provenance = self._gather_candidates(xn[chosen], provenance, chosen, world)
            chosen = torch.arange(new.shape[0], device=new.device)
        else:
            new = xn[chosen]
        if self.config.max_size:
            chosen = chosen[: max(0, self.config.max_size - self.n)]
        self._append(new[: chosen.numel()], provenance, chosen)
        self.tokens_seen += x.shape[0] * world.size
        return {"fvu": self._fvu(xn, error, world), "added": float(chosen.numel()), "size": float(self.n)}

    @staticmethod
    def _fvu(xn: torch.Tensor, error: torch.Tensor, world: World) -> float:
        """Unexplained over total variance of the (global) batch."""
        if not world.distributed:
            total = (xn - xn.mean(0)).pow(2).sum()
            return float((error * xn.pow(2).sum(1)).sum() / total.clamp_min(1e-30))
        sums = torch.cat([(error * xn.pow(2).sum(1)).sum().reshape(1), xn.pow(2).sum().reshape(1),
                          torch.tensor([float(xn.shape[0])], device=xn.device), xn.sum(0)]).double()
        distributed.all_reduce_sum([sums], world)
        total = sums[1] - sums[3:].pow(2).sum() / sums[2]
        return float(sums[0] / total.clamp_min(1e-30))

    @staticmethod
    def _gather_candidates(rows: torch.Tensor, provenance: dict | None, chosen: torch.Tensor,
                           world: World) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Every rank's candidate rows (c_i, d) and their provenance, concatenated rank 0 first."""
        labels = torch.stack([_labels(provenance[name], chosen) if provenance and name in provenance
                              else torch.full((chosen.numel(),), -1, dtype=torch.long, device=chosen.device)
                              for name in PROVENANCE_FIELDS], dim=1)  # (c_i, fields)
        all_rows = distributed.gather_rows(rows, world)
        all_labels = distributed.gather_rows(labels, world)
        return all_rows, {name: all_labels[:, i] for i, name in enumerate(PROVENANCE_FIELDS)}

    def _append(self, new: torch.Tensor, provenance: dict | None, chosen: torch.Tensor) -> None:
        if new.shape[0] == 0:
            return
        new = new / new.norm(dim=1, keepdim=True)
        n_old, n_new = self.n, self.n + new.shape[0]
        if n_new > self._gram.shape[0]:  # grow capacity geometrically; old block copied once
            capacity = max(n_new, 2 * self._gram.shape[0], 256)
            grown = torch.zeros(capacity, capacity, device=self._gram.device)
            grown[:n_old, :n_old] = self.gram
            self._gram = grown
        cross = self._atoms @ new.t()  # (n_old, b)
        self._gram[:n_old, n_old:n_new] = cross
        self._gram[n_old:n_new, :n_old] = cross.t()
        self._gram[n_old:n_new, n_old:n_new] = new @ new.t()
        self._atoms = torch.cat([self._atoms, new])
        for name in PROVENANCE_FIELDS:
            column = provenance.get(name) if provenance else None
            values = (_labels(column, chosen) if column is not None
                      else torch.full((new.shape[0],), -1, dtype=torch.long, device=new.device))
            self.provenance[name] = torch.cat([self.provenance[name], values])

    # --- persistence ---
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"atoms": self._atoms}
        out.update({f"provenance.{k}": v for k, v in self.provenance.items()})
        out.update(self.norm.tensors())
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        atoms = tensors["atoms"].float()
        if atoms.shape[1] != self.d:
            raise ValueError(f"itda: saved atoms have d={atoms.shape[1]}, config says d={self.d}")
        self._atoms = atoms.contiguous()
        self._gram = self._atoms @ self._atoms.t()
        self.provenance = {k: tensors[f"provenance.{k}"].long() for k in PROVENANCE_FIELDS}
        self.norm.load_tensors(tensors)

    def training_tensors(self) -> dict[str, torch.Tensor]:
        # The Gram matrix as built incrementally; recomputing it on load could differ in the last
        # bits and change pursuit picks, so a resumed fit would drift from an uninterrupted one.
        return {"gram": self.gram.contiguous()}

    def load_training_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "gram" in tensors and tensors["gram"].shape[0] == self.n:
            self._gram = tensors["gram"].to(self.device, copy=True)

    def extra_config(self) -> dict:
        return {"initialized": self.initialized, "tokens_seen": self.tokens_seen}

    def load_extra_config(self, extra: dict) -> None:
        self.initialized = bool(extra.get("initialized", True))
        self.tokens_seen = int(extra.get("tokens_seen", 0))
