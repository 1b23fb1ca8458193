"""The text stage: caption targets are exact, the readout can learn them, and the denoiser
stages keep the pre-trained encoders frozen."""

import json

import torch

from diffdict.toyworld.scenes import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    STYLES,
    Scene,
    SceneObject,
)
from diffdict.toyworld.training.text_pretrain import (
    AttributeReadout,
    caption_targets,
    readout_accuracy,
    readout_loss,
)


def _scene() -> Scene:
    red_circle = SceneObject("circle", "red", "large", "left", 14, 32, 12)
    blue_square = SceneObject("square", "blue", "small", "right", 50, 32, 7)
    return Scene((red_circle, blue_square), background="black", style="striped", seed=0)


def test_caption_targets_put_each_object_in_its_position_slot():
    targets = caption_targets([_scene()])
    left, right, top = POSITIONS.index("left"), POSITIONS.index("right"), POSITIONS.index("top")
    assert targets["colour"][0, left] == list(COLOURS).index("red")
    assert targets["colour"][0, right] == list(COLOURS).index("blue")
    assert targets["shape"][0, right] == SHAPES.index("square")
    assert targets["size"][0, left] == SIZES.index("large")
    # An empty position is the extra class.
    assert targets["colour"][0, top] == len(COLOURS) and targets["shape"][0, top] == len(SHAPES)
    assert targets["background"][0] == list(BACKGROUNDS).index("black")
    assert targets["style"][0] == STYLES.index("striped")


def test_the_readout_learns_what_the_captions_say():
    from diffdict.toyworld.training import models
    from diffdict.toyworld.training.data import training_scene

    torch.manual_seed(0)
    scenes = [training_scene(0, i) for i in range(64)]
    ids = models.token_ids(models.tokenizer(), [s.caption for s in scenes])
    targets = caption_targets(scenes)
    encoders = models.text_encoders("sdxl")
    readout = AttributeReadout(2 * models.TEXT_WIDTH, models.TEXT_WIDTH)
    params = [p for m in (*encoders.values(), readout) for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    before = None
    for _ in range(150):
        logits = readout(*models.encode_sdxl(encoders["text_encoder"], encoders["text_encoder_2"], ids))
        loss = readout_loss(logits, targets)
        before = before if before is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = readout_accuracy(logits, targets)
    assert before is not None
    assert loss.item() < 0.1 * before
    assert min(accuracy.values()) > 0.9, accuracy


def test_denoiser_stages_keep_the_pretrained_text_encoders(tmp_path):
    from safetensors.torch import load_file

    from diffdict.studies.cli import main
    from diffdict.toyworld.training.config import STAGES

    trained = [s for s in STAGES if s not in ("turbo", "flux_distill", "export")]
    args = [
        "--n-scenes",
        "8",
        "--steps",
        *(f"{s}=2" for s in trained),
        "--batch",
        *(f"{s}=2" for s in trained),
        "--no-progress",
    ]
    assert (
        main(["toy", "train", "--work-dir", str(tmp_path), "--stages", ",".join(trained), "--text-pretrain", *args])
        == 0
    )
    text = load_file(str(tmp_path / "text.safetensors"))
    for stage, family in (("base", "sdxl"), ("flux", "flux")):
        saved = load_file(str(tmp_path / f"{stage}.safetensors"))
        encoder_keys = [k for k in saved if k.startswith("text_encoder")]
        assert encoder_keys
        for key in encoder_keys:
            assert torch.equal(saved[key], text[f"{family}_{key}"]), key
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["text_pretrain"] == ["sdxl", "flux"]


def test_a_denoiser_stage_without_the_text_stage_says_what_to_do(tmp_path):
    from safetensors.torch import load_file

    from diffdict.studies.cli import main

    args = [
        "--n-scenes",
        "4",
        "--steps",
        "vae_sdxl=1",
        "text=1",
        "base=1",
        "--batch",
        "vae_sdxl=2",
        "text=2",
        "base=2",
        "--no-progress",
    ]
    assert (
        main(["toy", "train", "--work-dir", str(tmp_path), "--stages", "vae_sdxl,base", "--text-pretrain", *args]) == 2
    )
    # By default only Flux's encoders are pre-trained: SDXL's train with the U-Net.
    assert main(["toy", "train", "--work-dir", str(tmp_path), "--stages", "vae_sdxl,text,base", *args]) == 0
    text = load_file(str(tmp_path / "text.safetensors"))
    assert any(k.startswith("flux_text_encoder_2.") for k in text) and not any(k.startswith("sdxl_") for k in text)
    base = load_file(str(tmp_path / "base.safetensors"))
    assert any(k.startswith("text_encoder.") for k in base)
    # With none, the text stage does not run.
    other = tmp_path / "none"
    assert (
        main(
            [
                "toy",
                "train",
                "--work-dir",
                str(other),
                "--stages",
                "vae_sdxl,text,base",
                "--text-pretrain",
                "none",
                *args,
            ]
        )
        == 0
    )
    assert (other / "base.safetensors").exists() and not (other / "text.safetensors").exists()
    assert main(["toy", "train", "--work-dir", str(other), "--stages", "text", "--text-pretrain", "clip", *args]) == 2
