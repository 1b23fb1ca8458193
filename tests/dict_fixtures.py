"""Shared helpers for the dictionary/store tests: planted sparse data and a fake adapter."""

from __future__ import annotations

import socket
import zlib
from dataclasses import dataclass

import pytest
import torch

from diffdict.adapters.capture import CapturedMap, Generation


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a gloo rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=False)
def one_thread():
    """Run a test on one intra-op thread: on a shared 2-core machine, 2-thread OpenMP regions
    on tiny tensors wait for descheduled threads and run 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted_atoms(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """(n, d) random unit atoms."""
    atoms = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return atoms / atoms.norm(dim=1, keepdim=True)


def planted_data(atoms: torch.Tensor, tokens: int, active: int, seed: int = 1, noise: float = 0.0) -> torch.Tensor:
    """(tokens, d): each token a positive combination of `active` distinct planted atoms."""
    g = torch.Generator().manual_seed(seed)
    n = atoms.shape[0]
    idx = torch.rand(tokens, n, generator=g).argsort(1)[:, :active]
    weights = 0.5 + torch.rand(tokens, active, generator=g)
    x = torch.nn.functional.embedding_bag(idx, atoms, per_sample_weights=weights, mode="sum")
    return x + noise * torch.randn(x.shape, generator=g)


@dataclass
class FakeHook:
    name: str
    module_path: str
    d: int
    side: int = 4

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return self.side, self.side


class KilledHarvest(RuntimeError):
    """Raised by FakeAdapter to simulate a kill in the middle of a harvest."""


class FakeAdapter:
    """Duck-typed stand-in for adapters.load(...): deterministic maps per (prompt, seed, step, hook)."""

    def __init__(
        self,
        hooks: dict[str, int] | None = None,
        side: int = 4,
        default_steps: int = 2,
        die_after_calls: int | None = None,
        nan_for_prompt: str | None = None,
        lie_about_d: dict[str, int] | None = None,
    ) -> None:
        hooks = hooks or {"down.2.1": 16, "mid.0": 8}
        self.model_id = "fake/model"
        declared = dict(hooks, **(lie_about_d or {}))
        self.hook_points = {h: FakeHook(h, f"unet.{h}", declared[h], side) for h in hooks}
        self.true_d = hooks
        self.side = side
        self.default_steps = default_steps
        self.die_after_calls = die_after_calls
        self.nan_for_prompt = nan_for_prompt
        self.calls = 0

    def _map(self, prompt: str, seed: int, step: int, hook: str, branch: str) -> torch.Tensor:
        key = zlib.crc32(f"{prompt}|{seed}|{step}|{hook}|{branch}".encode())
        value = torch.randn(self.side, self.side, self.true_d[hook], generator=torch.Generator().manual_seed(key))
        if prompt == self.nan_for_prompt:
            value[1, 2, 0] = float("nan")
        return value

    def generate(
        self,
        prompts,
        seeds=0,
        hooks=("down.2.1",),
        capture="update",
        steps=None,
        guidance=None,
        height=None,
        width=None,
    ) -> Generation:
        if self.die_after_calls is not None and self.calls >= self.die_after_calls:
            raise KilledHarvest(f"killed after {self.calls} calls")
        self.calls += 1
        seeds = [seeds] * len(prompts) if isinstance(seeds, int) else list(seeds)
        steps = steps or self.default_steps
        branches = ("uncond", "cond") if guidance and guidance > 1 else ("cond",)
        captures = []
        for step in range(steps):
            t = 1.0 - step / steps
            for hook in hooks:
                for branch in branches:
                    value = torch.stack([self._map(p, s, step, hook, branch) for p, s in zip(prompts, seeds)])
                    captures.append(CapturedMap(hook, step, 999.0 * t, t, branch, value))
        return Generation(images=[], prompts=list(prompts), seeds=seeds, captures=captures)


PROMPTS = [
    f"a {colour} {shape}" for colour in ("red", "green", "blue", "white") for shape in ("square", "circle", "triangle")
]
