"""Shared fixtures: the tiny models are built once per test session (they are seeded)."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores: keep torch from oversubscribing when pytest runs alongside other work.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_sdxl():
    from diffdict import adapters

    return adapters.load("tiny/sdxl", device="cpu")


@pytest.fixture(scope="session")
def tiny_flux():
    from diffdict import adapters

    return adapters.load("tiny/flux", device="cpu")
