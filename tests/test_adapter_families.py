"""Model families as data: loading, meta-device configs and checks read adapters.families, so a
family is one declaration (and its adapter module)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from diffdict import adapters
from diffdict.adapters import families
from diffdict.adapters.base import model_config
from diffdict.adapters.errors import AdapterInputError
from diffdict.adapters.family_spec import Guidance
from diffdict.adapters.sdxl import SDXL, SDXLAdapter


def test_every_family_names_itself_and_its_adapter():
    assert {"sdxl", "flux"} <= set(families.FAMILIES)  # the built-ins; a registered family may join them
    for name, family in families.FAMILIES.items():
        assert family.name == name and family.adapter.family == name
        assert families.family_of_pipeline(family.pipeline_class) is family
    assert "flux" in [f.name for f in families.nf4_families()]
    assert "sdxl" not in [f.name for f in families.nf4_families()]


def test_the_model_tables_are_derived_from_the_families():
    """REAL_MODELS and TINY_MODELS list exactly what the families declare, with their protocol defaults."""
    declared = {m.id: (f.name, m.defaults) for f in families.FAMILIES.values() for m in f.real_models}
    assert {i: (s.family, s.defaults) for i, s in adapters.registry.REAL_MODELS.items()} == declared
    assert {"stabilityai/sdxl-turbo", "black-forest-labs/FLUX.1-dev"} <= set(declared)
    assert dict(adapters.registry.TINY_MODELS)["tiny/sdxl"].family == "sdxl"
    assert set(adapters.registry.TINY_MODELS) == {f.tiny.id for f in families.FAMILIES.values()}


def test_real_models_meta_configs_come_from_their_family():
    dev = adapters.load("black-forest-labs/FLUX.1-dev", device="meta")
    schnell = adapters.load("black-forest-labs/FLUX.1-schnell", device="meta")
    assert model_config(dev.denoiser).guidance_embeds and not model_config(schnell.denoiser).guidance_embeds
    assert dev.hook_point("double.18").d == 3072


def _pipeline_folder(root, class_name: str, denoiser_config: dict, subfolder: str):
    (root / subfolder).mkdir(parents=True)
    (root / "vae").mkdir()
    (root / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    (root / subfolder / "config.json").write_text(json.dumps(denoiser_config))
    (root / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [8, 16]}))
    return root


def test_a_new_family_is_one_declaration(tmp_path, monkeypatch):
    """A made-up family (an SDXL-like pipeline under another class name) is found by its folder."""

    class VariantAdapter(SDXLAdapter):
        family = "sdxl-variant"

    variant = dataclasses.replace(
        SDXL,
        name="sdxl-variant",
        title="SDXL variant",
        adapter=VariantAdapter,
        pipeline_class="StableDiffusionXLVariantPipeline",
        real_models=(),
        tiny=dataclasses.replace(SDXL.tiny, id="tiny/sdxl-variant"),
    )
    monkeypatch.setitem(families.FAMILIES, variant.name, variant)
    folder = _pipeline_folder(tmp_path / "variant", variant.pipeline_class, dict(SDXL.tiny.denoiser_config), "unet")
    adapter = adapters.load(str(folder), device="meta")
    assert isinstance(adapter, VariantAdapter) and "down.2.1" in adapter.hook_points
    assert adapter.defaults == adapters.registry.REAL_MODELS["stabilityai/stable-diffusion-xl-base-1.0"].defaults
    with pytest.raises(AdapterInputError, match="supported for Flux models only"):
        adapters.load(str(folder), quantize="nf4", device="meta")


def test_a_family_s_guidance_rule_gives_its_branches_and_pipeline_arguments(monkeypatch):
    """Which CFG branches a guidance setting gives is the family's rule, not its adapter's: an SDXL-style family
    declared with another rule (the pipeline's guidance_scale is 1 + 2 x guidance, so any guidance above 0 runs
    CFG) gets its branches from that rule, and the pipeline runs what the rule says."""

    class ScaledAdapter(SDXLAdapter):
        family = "sdxl-scaled"

    def branches(guidance: float, denoiser_config) -> tuple[str, ...]:
        return ("uncond", "cond") if guidance > 0 else ("cond",)

    def pipeline_kwargs(guidance: float, negative_prompt) -> dict:
        return {"guidance_scale": 1.0 + 2.0 * guidance}

    scaled = dataclasses.replace(
        SDXL,
        name="sdxl-scaled",
        title="SDXL scaled",
        adapter=ScaledAdapter,
        pipeline_class="StableDiffusionXLScaledPipeline",
        real_models=(),
        tiny=dataclasses.replace(SDXL.tiny, id="tiny/sdxl-scaled"),
        guidance=Guidance(branches=branches, pipeline_kwargs=pipeline_kwargs),
    )
    monkeypatch.setitem(families.FAMILIES, scaled.name, scaled)
    sdxl, adapter = adapters.load("tiny/sdxl", device="meta"), adapters.load("tiny/sdxl-scaled", device="cpu")
    assert sdxl.branches(0.5) == ("cond",) and adapter.branches(0.5) == ("uncond", "cond")  # same U-Net, other rule
    assert adapter.branches(0.0) == ("cond",) and adapter.branches() == ("uncond", "cond")  # default: guidance 5
    assert adapter._pipeline_kwargs(1, 0.5, 64, 64, None) == {"guidance_scale": 2.0, "height": 64, "width": 64}
    guided = adapter.generate(["a red square"], hooks=["mid.0"], steps=1, guidance=0.5)
    assert [m.branch for m in guided.captures] == ["uncond", "cond"]  # the pipeline ran CFG, as the rule says
    plain = adapter.generate(["a red square"], hooks=["mid.0"], steps=1, guidance=0.0)
    assert [m.branch for m in plain.captures] == ["cond"]


def test_registration_refuses_what_would_clash():
    class Clash(SDXLAdapter):
        family = "clash"

    clash = dataclasses.replace(
        SDXL,
        name="clash",
        adapter=Clash,
        pipeline_class="ClashPipeline",
        real_models=(),
        tiny=dataclasses.replace(SDXL.tiny, id="tiny/clash"),
    )
    with pytest.raises(ValueError, match="already registered"):
        families.register(dataclasses.replace(clash, name="sdxl", adapter=SDXLAdapter))
    with pytest.raises(ValueError, match="its adapter SDXLAdapter says family = 'sdxl'"):
        families.register(dataclasses.replace(clash, adapter=SDXLAdapter))
    with pytest.raises(ValueError, match="'tiny/sdxl' is already declared by family 'sdxl'"):
        families.register(dataclasses.replace(clash, tiny=SDXL.tiny))
    with pytest.raises(ValueError, match="pipeline class 'StableDiffusionXLPipeline' is already family 'sdxl'"):
        families.register(dataclasses.replace(clash, pipeline_class=SDXL.pipeline_class))
    with pytest.raises(ValueError, match="built-in"):
        families.unregister("sdxl")
    assert "clash" not in families.FAMILIES


def test_an_unknown_pipeline_lists_the_families_pipelines(tmp_path):
    folder = _pipeline_folder(tmp_path / "other", "PixArtSigmaPipeline", {}, "transformer")
    with pytest.raises(AdapterInputError, match="StableDiffusionXLPipeline, FluxPipeline"):
        adapters.load(str(folder), device="meta")
