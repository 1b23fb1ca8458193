"""A model family and a dictionary architecture are each one file: declared in a module of its own (written
here to a temporary folder; nothing in diffdict is edited), imported, and from then on `diffdict check` accepts
a config that uses both, with the architecture's own option ranges."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest
import torch

from diffdict import adapters
from diffdict.adapters import families
from diffdict.dictionaries import registry
from diffdict.dictionaries.base import load
from diffdict.studies.cli import main

FAMILY_MODULE = '''
"""Pixel: a made-up family, an SDXL-style U-Net pipeline of its own width, with a tiny random model."""
import dataclasses

from diffdict.adapters.base import ProtocolDefaults
from diffdict.adapters.families import register
from diffdict.adapters.family_spec import RealModel, TinyModel
from diffdict.adapters.sdxl import SDXL, SDXLAdapter
from diffdict.adapters.tiny import TINY_UNET, build_tiny_sdxl

PIXEL_UNET = {**TINY_UNET, "block_out_channels": (16, 32, 48), "attention_head_dim": (2, 4, 6)}


class PixelAdapter(SDXLAdapter):
    family = "pixel"


def build_tiny_pixel():
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    pipe = build_tiny_sdxl(seed=7)
    return StableDiffusionXLPipeline(**{**pipe.components, "unet": UNet2DConditionModel(**PIXEL_UNET).eval()})


PIXEL = register(dataclasses.replace(
    SDXL, name="pixel", title="Pixel", adapter=PixelAdapter, pipeline_class="PixelDiffusionPipeline",
    real_models=(RealModel("example/pixel-1", "Pixel 1, 12 steps", ProtocolDefaults(12, 4.0, 512, 512),
                           scheduler={"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing"}),),
    reference_model=lambda denoiser_config: "example/pixel-1",
    tiny=TinyModel("tiny/pixel", "random tiny Pixel pipeline (tests)", build=build_tiny_pixel,
                   denoiser_config=PIXEL_UNET, vae_factor=SDXL.tiny.vae_factor,
                   defaults=ProtocolDefaults(2, 0.0, 64, 64), scheduler=SDXL.tiny.scheduler),
))
'''

ARCHITECTURE_MODULE = '''
"""JumpSAE: a made-up JumpReLU-style SAE whose `threshold` has its own range, (0, 10)."""
import math
from dataclasses import dataclass

import torch

from diffdict.dictionaries.base import Dictionary, SparseCode, batch_rows, register, sparse_decode
from diffdict.dictionaries.options import check_ranges, option


@dataclass
class JumpConfig:
    d: int
    n: int
    k: int
    threshold: float = option(0.5, "()", 0.0, 10.0, doc="a latent fires only above this pre-activation")
    lr: float = option(0.05, "(]", 0.0, math.inf, doc="step size")

    def __post_init__(self):
        check_ranges(self, "jump_sae")


@register
class JumpSAE(Dictionary):
    """Saves nothing about resuming: the base class keeps `initialized`."""

    architecture = "jump_sae"
    config_class = JumpConfig
    init_from_sample = True

    def __init__(self, config):
        super().__init__(config)
        self.weight = torch.randn(config.n, config.d, generator=torch.Generator().manual_seed(0))
        self.initialized = False

    n = property(lambda self: self.config.n)
    atoms = property(lambda self: self.weight)
    device = property(lambda self: self.weight.device)

    def to(self, device):
        self.weight = self.weight.to(device)
        return self

    def initialize(self, sample):
        self.weight = torch.nn.functional.normalize(sample[: self.n].float(), dim=1)
        self.initialized = True

    def encode(self, x):
        values, indices = (x.float() @ self.weight.t()).topk(self.config.k, dim=1)
        return SparseCode(torch.where(values > self.config.threshold, values, 0.0), indices)

    def decode(self, code):
        return sparse_decode(code, self.weight)

    def partial_fit(self, batch):
        x = batch_rows(batch).float()
        fvu = float((self.reconstruct(x) - x).pow(2).sum() / x.pow(2).sum())
        return {"fvu": fvu, "loss": fvu}

    def tensors(self):
        return {"weight": self.weight}

    def load_tensors(self, tensors):
        self.weight = tensors["weight"].float()
'''

CONFIG = """
name = "extensions"
out = "{out}"

[prompts]
source = "list"
list = ["a red square", "a blue circle", "a green star"]
count = 3
eval_fraction = 0.34

[[models]]
name = "pix"
id = "tiny/pixel"

[harvest]
hooks = ["down.2.1"]

[[dictionaries]]
name = "jump"
architecture = "jump_sae"
model = "pix"
hook = "down.2.1"
n = 96
k = 4
tokens = 256
batch = 64
options = {{ threshold = {threshold} }}
"""


@pytest.fixture
def extensions(tmp_path, monkeypatch):
    """The two modules written to a folder of their own and imported (as a user's `import` would); every
    registration is undone afterwards."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "pixel_family.py").write_text(textwrap.dedent(FAMILY_MODULE))
    (folder / "jump_sae.py").write_text(textwrap.dedent(ARCHITECTURE_MODULE))
    monkeypatch.syspath_prepend(str(folder))
    try:
        yield importlib.import_module("pixel_family"), importlib.import_module("jump_sae")
    finally:
        families.unregister("pixel")
        registry.REGISTRY.pop("jump_sae", None)
        for name in ("pixel_family", "jump_sae"):
            sys.modules.pop(name, None)


def _config(tmp_path, threshold: str, architecture: str = "jump_sae"):
    path = tmp_path / "extensions.toml"
    path.write_text(
        CONFIG.format(out=tmp_path / "run", threshold=threshold).replace(
            'architecture = "jump_sae"', f'architecture = "{architecture}"'
        )
    )
    return path


def test_check_accepts_a_family_and_an_architecture_each_declared_in_one_module(extensions, tmp_path, capsys):
    assert main(["check", str(_config(tmp_path, "2.0"))]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "tiny/pixel (pixel): 2 steps, guidance 0.0, 64x64 px" in out
    assert "d=   48 grid 8x8" in out  # the family's own U-Net width, not SDXL's tiny one (32)
    assert "jump_sae  on pix down.2.1: d=48 n=96 k=4" in out
    # its own range decides: 20 is outside (0, 10), and ITDA's `threshold` keeps its (0, 1)
    assert main(["check", str(_config(tmp_path, "20.0"))]) == 2
    error = capsys.readouterr().err
    assert "options.threshold: 20.0 is out of range; allowed: (0.0, 10.0) (a latent fires only" in error
    assert main(["check", str(_config(tmp_path, "2.0", architecture="itda"))]) == 2
    assert "options.threshold: 2.0 is out of range; allowed: (0.0, 1.0)" in capsys.readouterr().err


def test_the_family_is_known_everywhere_from_its_one_declaration(extensions):
    """Its models load by id (its tiny model on the CPU, its real one on the meta device), and the times
    `check` places windows with match those the hooks see."""
    from diffdict.adapters.registry import REAL_MODELS, TINY_MODELS, known_models
    from diffdict.adapters.schedules import step_times

    assert TINY_MODELS["tiny/pixel"].family == "pixel" and REAL_MODELS["example/pixel-1"].defaults.steps == 12
    assert {"tiny/pixel", "example/pixel-1"} <= set(known_models())
    real = adapters.load("example/pixel-1", device="meta")  # the published config: here SDXL's, inherited
    assert type(real) is extensions[0].PixelAdapter and real.hook_point("down.2.1").d == 1280
    pixel = adapters.load("tiny/pixel", device="cpu")
    generation = pixel.generate(["a red square"], hooks=["down.2.1"], steps=1)
    assert [m.value.shape for m in generation.captures] == [torch.Size([1, 8, 8, 48])]
    assert step_times(pixel, 2, 64, 64) == [
        m.t for m in pixel.generate(["a red square"], hooks=["mid.0"], steps=2).captures
    ]


def test_the_base_class_saves_what_resuming_needs(extensions, tmp_path):
    """JumpSAE writes no resume code of its own, yet a checkpoint taken before its initialisation is
    initialised on resume, and one taken after is not initialised again."""
    jump = registry.architecture_class("jump_sae")(extensions[1].JumpConfig(d=8, n=16, k=2))
    jump.save(tmp_path / "before")
    assert load(tmp_path / "before").initialized is False
    jump.initialize(torch.randn(32, 8))
    jump.save(tmp_path / "after")
    resumed = load(tmp_path / "after")
    assert resumed.initialized is True and torch.equal(resumed.atoms, jump.atoms)  # JumpSAE's atoms: its weight
    # checkpoints written before the base class kept it (the built-ins had it under "extra") still resume
    document = json.loads((tmp_path / "before" / "config.json").read_text())
    document["extra"] = {"initialized": document.pop("resume")["initialized"]}
    (tmp_path / "before" / "config.json").write_text(json.dumps(document))
    assert load(tmp_path / "before").initialized is False
