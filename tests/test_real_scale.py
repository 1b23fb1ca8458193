"""The real SDXL and Flux architectures at full width, random weights, through the adapters.

Opt-in (`pytest -m real_scale`, about a minute and ~5 GiB): benchmarks/real_scale.py in its
reduced mode, every width as published but few layers and a small image. The full-size numbers
are in docs/scale.md ("Full width on a CPU").
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from diffdict import adapters

pytestmark = pytest.mark.real_scale

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_scale.py"


@pytest.fixture(scope="module")
def real_scale():
    spec = importlib.util.spec_from_file_location("real_scale", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_shape(model_id: str, hook: str, size: int) -> tuple[int, ...]:
    """(1, h, w, d) from the real model's hook table, as `diffdict hooks` lists it."""
    point = adapters.load(model_id, device="meta").hook_point(hook)
    return (1, *point.grid(size, size), point.d)


def test_hook_table_at_the_benchmark_sizes():
    for hook in ("down.2.1", "mid.0", "up.0.0", "up.0.1"):
        assert _table_shape("stabilityai/sdxl-turbo", hook, 512) == (1, 16, 16, 1280)
    for hook in ("double.0", "single.1", "double.18", "single.37"):
        assert _table_shape("black-forest-labs/FLUX.1-schnell", hook, 256) == (1, 16, 16, 3072)


@pytest.mark.parametrize(
    "model, model_id, size, d",
    [
        ("sdxl", "stabilityai/sdxl-turbo", 128, 1280),
        ("flux", "black-forest-labs/FLUX.1-schnell", 64, 3072),
    ],
)
def test_reduced_real_width_generation(real_scale, model, model_id, size, d):
    result = real_scale.run(model, reduced=True)
    assert result["size"] == size and result["model_id"] == model_id
    expected = (1, size // 32, size // 32, d) if model == "sdxl" else (1, size // 16, size // 16, d)
    assert set(result["shapes"]) == set(result["hooks"]) and len(result["hooks"]) == (4 if model == "sdxl" else 2)
    for hook, shape in result["shapes"].items():
        assert tuple(shape) == expected == _table_shape(model_id, hook, size)
    edit = result["edit"]
    assert edit["edit_error"] < 1e-3  # the edited hook moved by exactly strength * direction
    assert all(change > 1e-3 for change in edit["downstream_relative_change"].values())
    assert edit["image_mean_abs_change"] > 0
    for name in ("build", "generate_capture", "generate_edit"):
        assert result["phases"][name]["wall_s"] > 0 and result["phases"][name]["peak_rss_gib"] > 0
    assert result["component_seconds"]["capture"]["denoiser"] > 0
    if model == "flux":
        assert (result["double"], result["single"]) == (1, 2)
