"""What a generation with capture returns: one map per hook point per denoiser call per CFG branch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

from .errors import UnknownNameError

BRANCHES = ("cond", "uncond")


@dataclass(frozen=True)
class CapturedMap:
    """One hook point's activation at one denoiser call, for one CFG branch.

    value: (batch, h, w, d) on the CPU; row i belongs to prompts[i] / seeds[i] of the call.
    Image-stream hooks use the hook's spatial grid; text-stream hooks (Flux `.txt`) use
    h = 1 and w = number of text tokens.
    """

    hook: str
    step: int  # index of the denoising step, 0-based
    timestep: float  # the scheduler's own timestep value at that step
    t: float  # normalised time in [0, 1]; 1 = pure noise
    branch: str  # "cond" or "uncond"
    value: torch.Tensor


@dataclass
class Generation:
    """Images plus every captured map, in call order."""

    images: list[Image.Image]
    prompts: list[str]
    seeds: list[int]
    captures: list[CapturedMap] = field(default_factory=list)

    def maps(self, hook: str | None = None, branch: str | None = None, step: int | None = None) -> list[CapturedMap]:
        """The captured maps that match every given filter, in call order."""
        return [
            m
            for m in self.captures
            if (hook is None or m.hook == hook)
            and (branch is None or m.branch == branch)
            and (step is None or m.step == step)
        ]

    def stacked(self, hook: str, branch: str = "cond") -> torch.Tensor:
        """All steps of one hook and branch as (steps, batch, h, w, d)."""
        maps = self.maps(hook=hook, branch=branch)
        if not maps:
            raise UnknownNameError(
                f"nothing captured for hook {hook!r}, branch {branch!r}; captured: "
                f"{sorted({(m.hook, m.branch) for m in self.captures})}"
            )
        return torch.stack([m.value for m in maps])
