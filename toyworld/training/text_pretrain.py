"""Pre-training the toy text encoders on what a caption says, before any denoiser sees them.

Real SDXL and Flux condition on text encoders that were trained first (CLIP, T5) and stay
frozen while the denoiser trains. The toy encoders have no such prior: trained jointly with
a denoiser from scratch, they learn which colour belongs to which object only as fast as
the denoiser's gradient teaches them. Here they learn it directly from the scene's labels.

A readout asks, for each of the five positions, what object the caption puts there (colour,
shape, size, or none), attending over the token states the denoiser will cross-attend to
(one learned query per position, as a cross-attention layer would), and reads the
background, its pattern and the style from the pooled embedding the denoiser also receives. The readouts
are thrown away after training; only the encoders are kept.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from diffdict.toyworld.scenes import (
    BACKGROUNDS,
    COLOURS,
    PATTERNS,
    POSITIONS,
    SHAPES,
    SIZES,
    STYLES,
    Scene,
)

# Per-position attributes; each gets one extra class, "no object here".
SLOT_ATTRIBUTES: dict[str, tuple[str, ...]] = {"colour": tuple(COLOURS), "shape": SHAPES, "size": SIZES}
GLOBAL_ATTRIBUTES: dict[str, tuple[str, ...]] = {"background": tuple(BACKGROUNDS), "pattern": PATTERNS, "style": STYLES}


def caption_targets(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    """Class indices of what each caption says: slot attributes (N, 5) with len(values)
    meaning 'no object at this position', global attributes (N,)."""
    targets = {
        name: torch.full((len(scenes), len(POSITIONS)), len(values), dtype=torch.long)
        for name, values in SLOT_ATTRIBUTES.items()
    }
    targets |= {name: torch.empty(len(scenes), dtype=torch.long) for name in GLOBAL_ATTRIBUTES}
    for row, scene in enumerate(scenes):
        for obj in scene.objects:
            slot = POSITIONS.index(obj.position)
            for name, values in SLOT_ATTRIBUTES.items():
                targets[name][row, slot] = values.index(getattr(obj, name))
        for name, values in GLOBAL_ATTRIBUTES.items():
            targets[name][row] = values.index(getattr(scene, name))
    return targets


class AttributeReadout(nn.Module):
    """Logits of every caption attribute from token states (B, T, width) and a pooled
    embedding (B, pooled_width)."""

    def __init__(self, width: int, pooled_width: int, heads: int = 4):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(len(POSITIONS), width) / width**0.5)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.slot_heads = nn.ModuleDict(
            {
                name: nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, len(values) + 1))
                for name, values in SLOT_ATTRIBUTES.items()
            }
        )
        self.global_heads = nn.ModuleDict(
            {name: nn.Linear(pooled_width, len(values)) for name, values in GLOBAL_ATTRIBUTES.items()}
        )

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """-> slot logits (B, 5, classes) and global logits (B, classes)."""
        queries = self.queries[None].expand(len(tokens), -1, -1)
        slots, _ = self.attention(queries, tokens, tokens, need_weights=False)
        logits = {name: head(slots) for name, head in self.slot_heads.items()}
        return logits | {name: head(pooled) for name, head in self.global_heads.items()}


def total_loss(losses: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of one or more loss tensors: sum() without its start of 0 (which types the result int | Tensor)."""
    return functools.reduce(operator.add, losses)


def readout_loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over attributes of the mean cross-entropy."""
    return total_loss(F.cross_entropy(logits[name].flatten(0, -2), targets[name].flatten()) for name in targets)


@torch.no_grad()
def readout_accuracy(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, float]:
    """Share of captions whose every slot (or the global attribute) is read right."""
    out = {}
    for name, target in targets.items():
        right = logits[name].argmax(-1) == target
        out[name] = float(right.all(dim=-1).float().mean() if right.ndim > 1 else right.float().mean())
    return out
