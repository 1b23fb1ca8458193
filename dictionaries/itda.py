"""ITDA (Leask et al.): a dictionary made of real activations, grown from a stream.

For each batch: code every sample with the current atoms (L atoms, Gram-based pursuit); a
sample whose normalised error ||x - x_hat||^2 / ||x||^2 exceeds `threshold` is a candidate.
Candidates are then considered in stream order against the dictionary as it grows: one is
admitted as a new unit-norm atom only if the atoms admitted before it in the batch do not
code it within the threshold either. An empty dictionary thus takes one of a set of
near-duplicates, not all of them, and `threshold` sets the size from the first batch on; with
`max_size` the dictionary fills with the samples the threshold selects, then stops. No
gradients. Each atom keeps its provenance (prompt id, seed, step, position, ...) when the
stream provides it: a free label for every feature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffdict.dictionaries import distributed
from diffdict.dictionaries.base import Dictionary, SparseCode, batch_rows, check_activations, register, sparse_decode
from diffdict.dictionaries.distributed import World
from diffdict.dictionaries.normalize import KINDS, InputNorm
from diffdict.dictionaries.options import check_ranges, option
from diffdict.dictionaries.pursuit import METHODS, pursuit

PROVENANCE_FIELDS = ("map_row", "prompt_id", "seed", "step", "position")
ENCODE_CHUNK = 4096
MIN_WINDOW, MAX_WINDOW = 16, 4096  # candidates coded together while admitting (see ITDA._admit)


@dataclass
class ITDAConfig:
    """ITDA's options: their types, defaults, ranges and docs are its option schema (dictionaries/options.py)."""

    d: int
    L: int = option(32, "[]", 1, math.inf, doc="atoms per code (the k of ITDA)")
    threshold: float = option(
        0.3, "()", 0.0, 1.0, doc="a token whose normalised coding error exceeds this is added as an atom"
    )
    max_size: int = option(0, "[]", 0, math.inf, doc="the most atoms the dictionary grows to; 0 = unbounded")
    pursuit: str = option("matching", choices=METHODS, doc="how tokens are coded: matching or gradient pursuit")
    refit: bool = option(True, doc="least-squares refit of the chosen atoms' values (matching pursuit)")
    input_norm: str = option("none", choices=KINDS, doc="standardise or whiten the input (folded back into the atoms)")

    def __post_init__(self) -> None:
        if not isinstance(self.d, int) or self.d < 1:
            raise ValueError(f"itda: d must be a positive integer, got {self.d!r}")
        if not isinstance(self.L, int) or self.L < 1:
            raise ValueError(f"itda: L must be a positive integer, got {self.L!r}")
        if self.max_size and self.L > self.max_size:
            raise ValueError(f"itda: L={self.L} is larger than max_size={self.max_size}; choose L <= max_size")
        if self.pursuit not in METHODS:
            raise ValueError(f"itda: pursuit must be one of {METHODS}, got {self.pursuit!r}")
        if self.input_norm not in KINDS:
            raise ValueError(f"itda: input_norm must be one of {KINDS}, got {self.input_norm!r}")
        check_ranges(self, "itda")


def _labels(column: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """column[chosen] as int64 on chosen's device: a stream's provenance may sit on the CPU."""
    return column[chosen.to(column.device)].long().to(chosen.device)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b^T for unit rows, summed in float64 and rounded to float32: the same bits whether the
    Gram matrix is grown one atom at a time or computed whole on load (pursuit picks depend on them)."""
    return (a.double() @ b.double().t()).float()


def _label_rows(provenance: dict | None, chosen: torch.Tensor) -> torch.Tensor:
    """(len(chosen), fields) provenance of the stream rows `chosen`; -1 where the stream has none."""
    return torch.stack(
        [
            _labels(provenance[name], chosen)
            if provenance and name in provenance
            else torch.full((chosen.numel(),), -1, dtype=torch.long, device=chosen.device)
            for name in PROVENANCE_FIELDS
        ],
        dim=1,
    )


@register
class ITDA(Dictionary):
    architecture = "itda"
    config_class = ITDAConfig
    size_keys = ("max_size", "L")
    resume_state = ("initialized", "tokens_seen")  # saved and restored by the base class
    reads_provenance = True  # each admitted atom keeps its token's provenance
    provenance: dict[str, torch.Tensor]  # always kept (the base class allows None)
    supports_distributed = True  # partial_fit(batch, world): candidates gathered rank-major

    @classmethod
    def training_memory(cls, n: int, d: int, batch: int) -> tuple[int, str]:
        return 2 * n * d * 4 + batch * n * 4, "n x d x 4 bytes x 2 (atoms and their Gram products) + batch x n x 4"

    def __init__(self, config: ITDAConfig) -> None:
        super().__init__(config)
        self.norm = InputNorm(config.input_norm, config.d)
        self.initialized = config.input_norm == "none"
        self._buffer = torch.zeros(0, config.d)  # (capacity, d); the first n rows are the atoms
        self._size = 0
        self._gram = torch.zeros(0, 0)  # (capacity, capacity); the top-left (n, n) block is live
        self.provenance = {name: torch.zeros(0, dtype=torch.long) for name in PROVENANCE_FIELDS}
        self.tokens_seen = 0

    @property
    def n(self) -> int:
        return self._size

    @property
    def _atoms(self) -> torch.Tensor:
        """(n, d) unit rows in normalised space (a view of the buffer)."""
        return self._buffer[: self._size]

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
        return self._buffer.device

    def to(self, device: str | torch.device) -> ITDA:
        """Move atoms and Gram matrix (their whole capacity), provenance and normaliser to `device`."""
        self._buffer, self._gram = self._buffer.to(device), self._gram.to(device)
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
            v, i = self._code_normalised(x[start : start + ENCODE_CHUNK])
            values.append(v)
            indices.append(i)
        return SparseCode(torch.cat(values), torch.cat(indices))

    @torch.no_grad()
    def decode(self, code: SparseCode) -> torch.Tensor:
        return sparse_decode(code, self.atoms, self.decoder_bias)

    # --- growing ---
    @torch.no_grad()
    def partial_fit(self, batch, world: World | None = None) -> dict[str, float]:
        """Grow from one batch (N, d): code it against the current atoms; the tokens they fail to
        code (normalised error > threshold) are candidates, admitted in stream order unless the
        atoms admitted before them in this batch already code them (see `_admit`).

        With a World, `batch` is this rank's contiguous slice of the global batch: every rank
        codes its slice, the candidates of all ranks are gathered rank-major (the order of the
        whole batch) and every rank admits from the same list, so the atoms come out identical."""
        world = world or World()
        x = batch_rows(batch)
        check_activations(x, self.d, "itda.partial_fit", self.device)
        x = x.float()
        if not self.initialized:
            self.norm.fit(distributed.gather_rows(x, world))
            self.initialized = True
        xn = self.norm.apply(x)
        error = self._errors(xn)
        chosen = ((error > self.config.threshold) & (xn.pow(2).sum(1) > 0)).nonzero().flatten()
        provenance = getattr(batch, "provenance", None)
        labels = _label_rows(provenance, chosen)
        rows = xn[chosen]
        if world.distributed:
            rows = distributed.gather_rows(rows, world)
            labels = distributed.gather_rows(labels, world)
        added = self._admit(rows, labels)
        self.tokens_seen += x.shape[0] * world.size
        history = self.meta.setdefault("added_per_batch", [])
        history.append(added)
        self.meta.update({"threshold": self.config.threshold, "size": self.n})
        return {
            "fvu": self._fvu(xn, error, world),
            "candidates": float(rows.shape[0]),
            "added": float(added),
            "size": float(self.n),
            "threshold": float(self.config.threshold),
        }

    def _errors(self, xn: torch.Tensor) -> torch.Tensor:
        """(N,) normalised error ||x - x_hat||^2 / ||x||^2 of coding xn (N, d) with the current atoms."""
        if self.n == 0:
            return torch.ones(xn.shape[0], device=xn.device)
        values, indices = self._code_normalised(xn)
        recon = sparse_decode(SparseCode(values, indices), self._atoms)
        return (xn - recon).pow(2).sum(1) / xn.pow(2).sum(1).clamp_min(1e-30)

    def _errors_after_window(self, part: torch.Tensor) -> torch.Tensor:
        """(w,) errors of candidates part (w, d) if every earlier one in the window were admitted:
        row i is coded by the atoms plus part[:i] (a pursuit over both, masked per row)."""
        width, total = part.shape[0], self.n + part.shape[0]
        self._stage(part)  # written after the atoms, not counted in n: an admitted prefix stays
        atoms, gram = self._buffer[:total], self._gram[:total, :total]
        allowed = torch.ones(width, total, dtype=torch.bool, device=part.device)
        allowed[:, self.n :] = torch.ones(width, width, dtype=torch.bool, device=part.device).tril(-1)
        cfg = self.config
        values, indices = pursuit(part, atoms, gram, cfg.L, cfg.pursuit, cfg.refit, allowed=allowed)
        recon = sparse_decode(SparseCode(values, indices), atoms)
        return (part - recon).pow(2).sum(1) / part.pow(2).sum(1).clamp_min(1e-30)

    def _admit(self, rows: torch.Tensor, labels: torch.Tensor) -> int:
        """Admit candidates (C, d) in order; returns how many were appended.

        The rule, one candidate at a time: it fails the atoms the batch started with (that is what
        made it a candidate); it is admitted unless the atoms as they stand when its turn comes
        (those plus the candidates admitted before it in this batch) code it within the threshold.
        So near-duplicates within a batch enter once, and the threshold sets the size from the
        first batch on.

        Batched by speculating on a window of candidates, in one of two ways: "all rejected"
        codes the window with the atoms as they stand (its decisions hold up to its first
        admission); "all admitted" codes row i with the atoms plus the window's rows before i
        (they hold up to its first rejection). The guess follows the last decision and the
        window widens while it holds, so a batch costs a few codings of its candidates whether
        most of them are admitted (an empty or young dictionary) or few are.
        """
        room = self.config.max_size - self.n if self.config.max_size else rows.shape[0]
        admitted: list[int] = []
        position, window, guess_admit = 0, MIN_WINDOW, True
        while position < rows.shape[0] and len(admitted) < room:
            if guess_admit:
                part = rows[position : position + min(window, room - len(admitted))]
                rejected = (self._errors_after_window(part) <= self.config.threshold).nonzero().flatten()
                held = int(rejected[0]) if rejected.numel() else part.shape[0]
                admitted.extend(range(position, position + held))
                self._size += held  # those rows were staged by _errors_after_window
                position += held + (1 if held < part.shape[0] else 0)
                guess_admit = held == part.shape[0]
            else:
                part = rows[position : position + window]
                over = (self._errors(part) > self.config.threshold).nonzero().flatten()
                held = int(over[0]) if over.numel() else part.shape[0]
                if held < part.shape[0]:
                    admitted.append(position + held)
                    self._append_rows(part[held : held + 1])
                position += held + (1 if held < part.shape[0] else 0)
                guess_admit = held < part.shape[0]
            window = min(2 * window, MAX_WINDOW) if held == part.shape[0] else MIN_WINDOW
        picked = torch.tensor(admitted, dtype=torch.long, device=labels.device)
        for i, name in enumerate(PROVENANCE_FIELDS):
            self.provenance[name] = torch.cat(
                [self.provenance[name], labels[picked, i].to(self.provenance[name].device)]
            )
        return len(admitted)

    @staticmethod
    def _fvu(xn: torch.Tensor, error: torch.Tensor, world: World) -> float:
        """Unexplained over total variance of the (global) batch."""
        if not world.distributed:
            total = (xn - xn.mean(0)).pow(2).sum()
            return float((error * xn.pow(2).sum(1)).sum() / total.clamp_min(1e-30))
        sums = torch.cat(
            [
                (error * xn.pow(2).sum(1)).sum().reshape(1),
                xn.pow(2).sum().reshape(1),
                torch.tensor([float(xn.shape[0])], device=xn.device),
                xn.sum(0),
            ]
        ).double()
        distributed.all_reduce_sum([sums], world)
        total = sums[1] - sums[3:].pow(2).sum() / sums[2]
        return float(sums[0] / total.clamp_min(1e-30))

    def _append(self, new: torch.Tensor, provenance: dict | None, chosen: torch.Tensor) -> None:
        """Append rows `new` (b, d) as atoms unconditionally (no admission test), with the
        provenance of the stream rows `chosen` (b,): for building a dictionary by hand."""
        if new.shape[0] == 0:
            return
        self._append_rows(new)
        labels = _label_rows(provenance, chosen)
        for i, name in enumerate(PROVENANCE_FIELDS):
            self.provenance[name] = torch.cat([self.provenance[name], labels[:, i].to(self.provenance[name].device)])

    def _append_rows(self, new: torch.Tensor) -> None:
        """Append unit-normed copies of `new` (b, d) to the atoms and extend the Gram matrix."""
        self._stage(new)
        self._size += new.shape[0]

    def _stage(self, new: torch.Tensor) -> None:
        """Write unit-normed `new` (b, d) and their Gram entries just after the n atoms, without
        counting them. Atoms and Gram live in buffers that grow geometrically, so admitting one
        atom at a time costs one (n, d) @ (d, b) product, not a copy of the dictionary."""
        new = new / new.norm(dim=1, keepdim=True)
        n_old, n_new = self.n, self.n + new.shape[0]
        if n_new > self._gram.shape[0]:  # grow capacity geometrically; old blocks copied once
            capacity = max(n_new, 2 * self._gram.shape[0], 256)
            grown = torch.zeros(capacity, capacity, device=self._gram.device)
            grown[:n_old, :n_old] = self.gram
            self._gram = grown
        if n_new > self._buffer.shape[0]:
            capacity = max(n_new, 2 * self._buffer.shape[0], 256)
            grown = torch.zeros(capacity, self.d, device=self._buffer.device)
            grown[:n_old] = self._atoms
            self._buffer = grown
        cross = _inner(self._atoms, new)  # (n_old, b)
        self._gram[:n_old, n_old:n_new] = cross
        self._gram[n_old:n_new, :n_old] = cross.t()
        self._gram[n_old:n_new, n_old:n_new] = _inner(new, new)
        self._buffer[n_old:n_new] = new

    # --- persistence ---
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"atoms": self._atoms.clone() if self._buffer.shape[0] > self.n else self._atoms}
        out.update({f"provenance.{k}": v for k, v in self.provenance.items()})
        out.update(self.norm.tensors())
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        atoms = tensors["atoms"].float()
        if atoms.shape[1] != self.d:
            raise ValueError(f"itda: saved atoms have d={atoms.shape[1]}, config says d={self.d}")
        self._buffer, self._size = atoms.contiguous(), atoms.shape[0]
        self._gram = _inner(self._atoms, self._atoms)
        self.provenance = {k: tensors[f"provenance.{k}"].long() for k in PROVENANCE_FIELDS}
        self.norm.load_tensors(tensors)

    def training_tensors(self) -> dict[str, torch.Tensor]:
        # The Gram matrix as built incrementally; recomputing it on load could differ in the last
        # bits and change pursuit picks, so a resumed fit would drift from an uninterrupted one.
        return {"gram": self.gram.contiguous()}

    def load_training_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "gram" in tensors and tensors["gram"].shape[0] == self.n:
            self._gram = tensors["gram"].to(self.device, copy=True)
