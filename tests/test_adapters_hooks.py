"""Hook points: names, module paths, channels and grids, for the real models (meta device) and tiny ones."""

from __future__ import annotations

import pytest

from diffdict import adapters
from diffdict.studies.cli import main

PAPER_HOOKS = ["down.2.1", "mid.0", "up.0.0", "up.0.1"]


@pytest.fixture(scope="module")
def sdxl_meta():
    return adapters.load("stabilityai/sdxl-turbo", device="meta")


@pytest.fixture(scope="module")
def flux_meta():
    return adapters.load("black-forest-labs/FLUX.1-dev", device="meta")


def test_sdxl_paper_hooks_have_1280_channels_on_a_16x16_grid_at_512px(sdxl_meta):
    for name in PAPER_HOOKS:
        hook = sdxl_meta.hook_point(name)
        assert hook.d == 1280
        assert hook.grid(512, 512) == (16, 16)
        assert hook.grid(1024, 1024) == (32, 32)
    assert sdxl_meta.hook_point("down.2.1").module_path == "down_blocks.2.attentions.1"
    assert sdxl_meta.hook_point("up.0.1").module_path == "up_blocks.0.attentions.1"
    assert sdxl_meta.hook_point("down.1.0").d == 640
    assert sdxl_meta.defaults.steps == 1 and sdxl_meta.defaults.guidance == 0.0 and sdxl_meta.defaults.height == 512


def test_flux_blocks_have_3072_channels_on_a_64x64_token_grid_at_1024px(flux_meta):
    names = list(flux_meta.hook_points)
    assert sum(n.startswith("double.") and not n.endswith(".txt") for n in names) == 19
    assert sum(n.startswith("single.") and not n.endswith(".txt") for n in names) == 38
    for name in ("double.18", "double.9", "single.9", "single.18"):
        hook = flux_meta.hook_point(name)
        assert hook.d == 3072 and hook.grid(1024, 1024) == (64, 64) and hook.stream == "image"
    text = flux_meta.hook_point("double.18.txt")
    assert text.stream == "text" and text.module_path == "transformer_blocks.18"
    assert flux_meta.hook_point("single.37").module_path == "single_transformer_blocks.37"
    assert flux_meta.defaults.steps == 28 and flux_meta.defaults.guidance == 3.5


def test_real_model_defaults_follow_the_protocols():
    base = adapters.load("stabilityai/stable-diffusion-xl-base-1.0", device="meta").defaults
    schnell = adapters.load("black-forest-labs/FLUX.1-schnell", device="meta").defaults
    assert (base.steps, base.guidance, base.height) == (25, 8.0, 1024)
    assert (schnell.steps, schnell.guidance, schnell.height) == (4, 0.0, 1024)


def test_tiny_sdxl_has_attention_where_sdxl_has_it(tiny_sdxl):
    prefixes = {name.rsplit(".", 1)[0] for name in tiny_sdxl.hook_points}
    assert prefixes == {"down.1", "down.2", "mid", "up.0", "up.1"}
    for name in PAPER_HOOKS:
        assert tiny_sdxl.hook_point(name).grid(64, 64) == (8, 8)


def test_unknown_hook_lists_valid_hooks_and_suggests(tiny_sdxl):
    with pytest.raises(KeyError) as error:
        tiny_sdxl.hook_point("down.2.7")
    message = str(error.value)
    assert "down.2.1" in message and "mid.0" in message and "Did you mean" in message


def test_unknown_model_lists_known_models():
    with pytest.raises(ValueError) as error:
        adapters.load("someone/unknown-model")
    assert "stabilityai/sdxl-turbo" in str(error.value) and "tiny/flux" in str(error.value)


def test_nf4_refused_for_sdxl():
    with pytest.raises(ValueError, match="Flux models only"):
        adapters.load("tiny/sdxl", quantize="nf4")


def test_meta_adapter_cannot_generate(sdxl_meta):
    with pytest.raises(ValueError, match="meta device"):
        sdxl_meta.generate("a cat")


def test_cli_hooks_lists_real_sdxl_without_download(capsys):
    assert main(["hooks", "stabilityai/sdxl-turbo"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("down.2.1 "))
    assert "down_blocks.2.attentions.1" in line and "1280" in line and "16x16" in line


def test_cli_bad_model_and_bad_size_exit_2(capsys):
    assert main(["hooks", "nobody/nothing"]) == 2
    assert "Known models" in capsys.readouterr().err
    assert main(["hooks", "tiny/sdxl", "--height", "60"]) == 2
    err = capsys.readouterr().err
    assert "not a multiple of its stride" in err
