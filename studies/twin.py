"""A planted positive control: a synthetic twin of a real hook, with sparse additive concepts.

The twin keeps the real hook's labels (which token is which cell of which scene, with which concepts)
and its proportions, and replaces its activations by a sum whose parts are known:

    x = mean + cell[location] + sum over the token's concepts of concept[c] + noise

Each part is measured on the real tokens (selection split) by one least-squares fit of the centred
tokens on the cells and the concepts (one-hot), and the residual variance. The twin keeps every part's
norm and gives it a random direction; the noise is isotropic with the residual's variance. In the
twin the concepts are sparse, additive directions by construction, so a dictionary trained on the
twin as the real one is trained (same architecture, size, sparsity, options, tokens) must recover
them, and every alignment method's score on the twin says what the metric can detect at this hook.
A verdict whose twin shows no margin is not testable there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .labelled import HookTokens


@dataclass
class Proportions:
    """Measured parts of a hook's activations (all on the selection split)."""

    mean: torch.Tensor  # (d,)
    cell_norms: torch.Tensor  # (cells,) norm of each cell's mean offset
    concept_norms: torch.Tensor  # (C,) norm of each concept's least-squares effect
    noise_std: float  # per channel
    shares: dict[str, float]  # sum of squares of the "cell" and "concepts" parts and the "noise", over the total


def measure(tokens: HookTokens) -> Proportions:
    """The cell, concept and noise parts of `tokens` (N, d) with their labels."""
    x = tokens.x.double()
    mean = x.mean(0)
    centred = x - mean
    cells = tokens.grid[0] * tokens.grid[1]
    location = torch.as_tensor(tokens.location)
    cell_design = torch.nn.functional.one_hot(location, cells).double()
    concept_design = torch.as_tensor(tokens.targets, dtype=torch.float64)
    # one joint least-squares fit (minimum norm: a cell's offset and its concepts' share what they explain
    # together), so that concepts sitting more often in some cells do not leak into the cells' part
    effects = torch.linalg.lstsq(torch.cat([cell_design, concept_design], 1), centred, driver="gelsd").solution
    cell_effects, concept_effects = effects[:cells], effects[cells:]
    cell_part, concept_part = cell_design @ cell_effects, concept_design @ concept_effects
    noise = centred - cell_part - concept_part
    total = float((centred**2).sum())
    shares = {
        "cell": float((cell_part**2).sum()) / total,
        "concepts": float((concept_part**2).sum()) / total,
        "noise": float((noise**2).sum()) / total,
    }
    return Proportions(
        mean.float(),
        cell_effects.norm(dim=1).float(),
        concept_effects.norm(dim=1).float(),
        float(noise.pow(2).mean().sqrt()),
        shares,
    )


@dataclass
class Twin:
    """The planted directions of one twin: unit rows scaled by the measured norms."""

    proportions: Proportions
    cells: torch.Tensor  # (cells, d)
    concepts: torch.Tensor  # (C, d)

    def activations(self, targets: np.ndarray, location: np.ndarray, seed: int) -> torch.Tensor:
        """(N, d) twin tokens for labels targets (N, C) and location (N,), with seeded noise."""
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(len(location), self.cells.shape[1], generator=generator) * self.proportions.noise_std
        planted = torch.as_tensor(targets, dtype=torch.float32) @ self.concepts
        return self.proportions.mean + self.cells[torch.as_tensor(location)] + planted + noise

    def tokens(self, real: HookTokens, seed: int) -> HookTokens:
        """A twin of `real`: the same labels and rows, planted activations."""
        return HookTokens(
            self.activations(real.targets, real.location, seed),
            real.targets,
            real.concepts,
            real.prompt_index,
            real.location,
            real.step,
            real.t,
            real.grid,
        )

    def training_batches(self, labels: HookTokens, tokens: int, batch: int, seed: int):
        """Batches (batch, d) of twin tokens whose labels are drawn from `labels` with replacement."""
        rng = np.random.default_rng(seed)
        for i in range(max(1, tokens // batch)):
            rows = rng.integers(0, len(labels.location), batch)
            yield self.activations(labels.targets[rows], labels.location[rows], seed + 1 + i)


def _directions(norms: torch.Tensor, d: int, generator: torch.Generator) -> torch.Tensor:
    unit = torch.nn.functional.normalize(torch.randn(len(norms), d, generator=generator), dim=1)
    return unit * norms[:, None]


def build(real: HookTokens, seed: int) -> Twin:
    """The twin of a hook, measured on `real` (its selection tokens), directions seeded."""
    proportions = measure(real)
    generator = torch.Generator().manual_seed(seed)
    d = real.x.shape[1]
    return Twin(
        proportions,
        _directions(proportions.cell_norms, d, generator),
        _directions(proportions.concept_norms, d, generator),
    )


def train_twin_dictionary(
    spec, twin: Twin, labels: HookTokens, tokens: int, batch: int, seed: int, init_tokens: int = 16_384
):
    """A fresh dictionary of `spec` (the real one's settings) trained on twin tokens, as the trainer does."""
    from diffdict.dictionaries.train_common import new_dictionary

    dictionary = new_dictionary(spec, twin.cells.shape[1])
    if dictionary.init_from_sample:
        dictionary.initialize(next(twin.training_batches(labels, init_tokens, init_tokens, seed + 10_000)))
    for x in twin.training_batches(labels, tokens, batch, seed):
        dictionary.partial_fit(x)
    return dictionary
