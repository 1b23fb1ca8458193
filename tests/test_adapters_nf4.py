"""NF4 on the CPU: bitsandbytes Linear4bit swapped in place into tiny/flux's transformer and T5."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffdict import adapters
from diffdict.adapters.quantize import weight_bytes

HOOKS = ["double.1", "single.1"]


@pytest.fixture(scope="module")
def nf4_flux():
    return adapters.load("tiny/flux", device="cpu", quantize="nf4")


def test_transformer_weight_bytes_fall_at_least_3x(tiny_flux, nf4_flux):
    import bitsandbytes as bnb

    ratio = weight_bytes(tiny_flux.denoiser) / weight_bytes(nf4_flux.denoiser)
    print(f"NF4 transformer weight bytes ratio: {ratio:.2f}x")
    assert ratio >= 3.0
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in nf4_flux.pipe.text_encoder_2.modules())
    assert not any(type(m) is torch.nn.Linear for m in nf4_flux.denoiser.modules())


def test_output_stays_close_to_the_full_precision_model(tiny_flux, nf4_flux):
    full = tiny_flux.generate(["a red circle"], hooks=HOOKS, steps=4)
    quant = nf4_flux.generate(["a red circle"], hooks=HOOKS, steps=4)
    for f, q in zip(full.captures, quant.captures):
        relative = ((f.value - q.value).norm() / f.value.norm()).item()
        assert relative < 0.35, (f.hook, f.step, relative)  # measured 0.19-0.26 on random tiny weights
    a, b = (np.asarray(g.images[0], dtype=np.float64) for g in (full, quant))
    image_error = np.linalg.norm(a - b) / np.linalg.norm(a)
    print(f"NF4 image relative error: {image_error:.4f}")
    assert image_error < 0.05


def test_capture_and_interventions_work_on_nf4(nf4_flux):
    base = nf4_flux.generate(["a red circle"], hooks=["double.0"], steps=2)
    direction = torch.randn(32)
    edited = nf4_flux.generate(
        ["a red circle"],
        hooks=["double.0"],
        steps=2,
        interventions=[adapters.AddDirection("double.0", direction=direction, steps=[0])],
    )
    diff = edited.maps(step=0)[0].value - base.maps(step=0)[0].value
    torch.testing.assert_close(diff[0, 5, 5], direction, atol=1e-4, rtol=1e-4)
