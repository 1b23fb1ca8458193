"""`diffdict toy train` runs end to end for a few steps, resumes, and exports loadable pipelines."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffdict.studies.cli import main
from diffdict.studies.commands.toy import TRAIN_STAGES
from diffdict.toyworld.training.config import STAGES

TRAINED = STAGES[:-1]  # every stage but export
TINY = [
    "--n-scenes",
    "8",
    "--steps",
    *(f"{s}=1" for s in TRAINED),
    "--batch",
    *(f"{s}=2" for s in TRAINED),
    "--teacher-samples",
    "2",
    "--turbo-distill-weight",
    "0.5",
    "--object-loss-weight",
    "2",
    "--no-progress",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_train")
    work, out = root / "work", root / "weights"
    torch.manual_seed(0)
    assert main(["toy", "train", "--work-dir", str(work), "--out-dir", str(out), *TINY]) == 0
    return work, out


def test_the_cli_lists_the_stages_the_trainer_runs():
    assert TRAIN_STAGES == STAGES


def test_every_stage_leaves_a_final_checkpoint(trained):
    work, _ = trained
    for stage in TRAINED:
        assert (work / f"{stage}.safetensors").exists()
        assert not (work / f"{stage}.partial.safetensors").exists()


def test_turbo_regresses_on_the_base_sample_of_the_same_noise(trained):
    from diffdict.toyworld.training.config import TrainConfig
    from diffdict.toyworld.training.context import Context
    from diffdict.toyworld.training.data import training_scene
    from diffdict.toyworld.training.diffusers_calls import latent_images
    from diffdict.toyworld.training.export import export_sdxl
    from diffdict.toyworld.training.teachers import teacher_samples

    work, _ = trained
    cfg = TrainConfig(**json.loads((work / "config.json").read_text()))
    ctx = Context(cfg)
    noise, index, targets = teacher_samples(ctx)  # read back from the cache the turbo stage wrote
    assert noise.shape == targets.shape == (2, 4, 32, 32) and index.shape == (2,)
    pipe = export_sdxl(ctx, turbo=False, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    caption = training_scene(cfg.seed, int(index[1])).caption
    again = latent_images(
        pipe(
            [caption],
            latents=noise[1:2],
            num_inference_steps=cfg.base_steps,
            guidance_scale=cfg.base_guidance,
            height=64,
            width=64,
            output_type="latent",
        )
    )
    torch.testing.assert_close(again[0], targets[1], rtol=1e-3, atol=1e-3)


def test_flux_distill_regresses_on_the_guided_teacher_sample_of_the_same_noise(trained):
    from diffdict.toyworld.training.config import TrainConfig
    from diffdict.toyworld.training.context import Context
    from diffdict.toyworld.training.data import training_scene
    from diffdict.toyworld.training.diffusers_calls import float_tensor, latent_images
    from diffdict.toyworld.training.export import export_flux
    from diffdict.toyworld.training.teachers import flux_teacher_samples

    work, _ = trained
    cfg = TrainConfig(**json.loads((work / "config.json").read_text()))
    ctx = Context(cfg)
    noise, index, targets = flux_teacher_samples(ctx)  # read back from the stage's cache
    assert noise.shape == targets.shape == (2, 8 * 8, 4 * 16) and index.shape == (2,)  # 8x8 tokens of 2x2x16 latents
    teacher = export_flux(ctx, dtype=torch.float32, distilled=False)
    teacher.set_progress_bar_config(disable=True)
    caption = training_scene(cfg.seed, int(index[1])).caption
    again = latent_images(
        teacher(
            [caption],
            negative_prompt=[""],
            true_cfg_scale=cfg.flux_teacher_guidance,
            latents=float_tensor(noise[1:2]),
            num_inference_steps=cfg.flux_teacher_steps,
            height=64,
            width=64,
            max_sequence_length=32,
            output_type="latent",
        )
    )
    torch.testing.assert_close(again[0], targets[1], rtol=1e-3, atol=1e-3)
    # The shipped transformer is the student, not the teacher.
    student = export_flux(ctx, dtype=torch.float32)
    assert not torch.equal(student.transformer.proj_out.weight, teacher.transformer.proj_out.weight)


def test_frozen_flux_encoders_are_looked_up_as_they_would_have_encoded(trained):
    from diffdict.toyworld.training import models
    from diffdict.toyworld.training.config import TrainConfig
    from diffdict.toyworld.training.context import Context
    from diffdict.toyworld.training.stages import _flux_caption_encoder, _flux_parts

    work, _ = trained
    ctx = Context(TrainConfig(**json.loads((work / "config.json").read_text())))
    parts = _flux_parts(ctx, trained=True)
    cached, direct = _flux_caption_encoder(ctx, parts, frozen=True), _flux_caption_encoder(ctx, parts, frozen=False)
    index, drop = torch.tensor([5, 0, 5, 7]), torch.tensor([False, True, True, False])
    for got, want in zip(cached(index, drop), direct(index, drop)):
        torch.testing.assert_close(got, want)
    embeds, pooled = cached(index, None)
    assert embeds.shape == (4, models.MAX_TOKENS, models.TEXT_WIDTH) and pooled.shape == (4, models.TEXT_WIDTH)
    torch.testing.assert_close(embeds[1], direct(index[1:2], None)[0][0])
    dropped = cached(index, drop)[0]
    assert torch.equal(dropped[1], dropped[2]) and not torch.equal(dropped[1], embeds[1])  # the empty caption


def test_a_larger_teacher_sample_count_extends_the_cache(trained):
    from safetensors.torch import load_file

    from diffdict.toyworld.training.config import TrainConfig
    from diffdict.toyworld.training.context import Context
    from diffdict.toyworld.training.teachers import flux_teacher_samples

    work, _ = trained
    cfg = TrainConfig(**json.loads((work / "config.json").read_text()))
    noise, index, targets = flux_teacher_samples(Context(cfg))
    cfg.teacher_samples = 3
    more_noise, more_index, more_targets = flux_teacher_samples(Context(cfg))
    assert torch.equal(more_noise[:2], noise) and torch.equal(more_index[:2], index)
    assert torch.equal(more_targets[:2], targets) and more_targets[2].abs().sum() > 0
    assert len(load_file(str(work / f"flux_teacher_{cfg.seed}_{cfg.n_scenes}.safetensors"))["targets"]) == 3


def test_rerun_skips_finished_stages(trained, capsys):
    work, out = trained
    assert (
        main(["toy", "train", "--work-dir", str(work), "--out-dir", str(out), "--stages", "vae_sdxl,base", *TINY]) == 0
    )
    printed = capsys.readouterr().out
    assert "[vae_sdxl] done already" in printed and "[base] done already" in printed


def test_exported_pipelines_load_and_generate(trained):
    from diffusers import FluxPipeline, StableDiffusionXLPipeline

    from diffdict.toyworld.training.diffusers_calls import array_images

    _, out = trained
    for name, cls in (
        ("sdxl-base", StableDiffusionXLPipeline),
        ("sdxl-turbo", StableDiffusionXLPipeline),
        ("flux", FluxPipeline),
    ):
        folder = out / name
        defaults = json.loads((folder / "diffdict.json").read_text())
        assert defaults["height"] == defaults["width"] == 64
        pipe = cls.from_pretrained(str(folder), dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        extra = {"max_sequence_length": defaults["max_sequence_length"]} if name == "flux" else {}
        images = array_images(
            pipe(
                ["a small red circle on the left, flat, on a black background"],
                num_inference_steps=1,
                guidance_scale=defaults["guidance"],
                height=64,
                width=64,
                output_type="np",
                **extra,
            )
        )
        assert images.shape == (1, 64, 64, 3)


def test_bad_stage_names_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="--stages"):
        import argparse

        from diffdict.studies.commands import toy
        from diffdict.studies.commands.toy import run_train  # noqa: F401

        parser = argparse.ArgumentParser()
        toy.register(parser.add_subparsers())
        args = parser.parse_args(["toy", "train", "--stages", "vae,unet", "--work-dir", str(tmp_path)])
        args.func(args)
    assert main(["toy", "train", "--steps", "unet=3", "--work-dir", str(tmp_path)]) == 2


def test_base_loss_weight_gives_every_step_an_x0_weight_between_1_and_gamma():
    from diffdict.toyworld.training import models
    from diffdict.toyworld.training.stages import MIN_SNR_GAMMA, epsilon_loss_weight

    alpha_bar = models.EulerDiscreteScheduler(**models.SDXL_SCHEDULER).alphas_cumprod
    snr = alpha_bar / (1 - alpha_bar)
    x0_weight = epsilon_loss_weight(alpha_bar) * snr  # the epsilon loss is x0 error * SNR
    assert torch.all(x0_weight >= 1 - 1e-4) and torch.all(x0_weight <= MIN_SNR_GAMMA + 1e-4)
    assert float(epsilon_loss_weight(alpha_bar[-1:])) > 100  # t=999: SNR ~ 0.005
    low_noise = snr > MIN_SNR_GAMMA
    assert torch.allclose(x0_weight[low_noise], torch.full_like(x0_weight[low_noise], MIN_SNR_GAMMA))


def test_the_object_mask_marks_exactly_the_latent_cells_an_object_or_the_pattern_touches():
    import torch.nn.functional as F

    from diffdict.toyworld.render import pattern_mask, render
    from diffdict.toyworld.training.data import build_scene_data, training_scene

    def marked(scene) -> np.ndarray:
        """Object pixels, and the background pixels unlike the top-left one: the pattern's blocks, or the
        plain pixels between them when the top-left pixel lies in a block."""
        pattern = pattern_mask(scene.pattern)
        return render(scene).masks.any(axis=0) | (~pattern if pattern[0, 0] else pattern)

    data = build_scene_data(32, seed=3, progress=False)
    mask = data.object_mask(torch.arange(32), 32)
    truth = torch.stack([torch.from_numpy(marked(training_scene(3, i))) for i in range(32)])
    assert 0 < float(truth.float().mean()) < 1
    expected = F.max_pool2d(truth[:, None].float(), 2)
    assert mask.shape == (32, 1, 32, 32)
    assert torch.equal(mask, expected)
    # Flux's image tokens: 4x4 pixel patches, packed row-major (the weights follow that order).
    assert torch.equal(data.object_mask(torch.arange(32), 16), F.max_pool2d(truth[:, None].float(), 4))
    from diffusers import FluxPipeline

    grid = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32)
    packed = FluxPipeline._pack_latents(grid, 1, 1, 32, 32)  # (1, 256, 4)
    assert torch.equal(packed[0, :, 0].view(16, 16), grid[0, 0, ::2, ::2])


def test_the_object_weight_moves_the_loss_towards_the_objects_cells():
    from diffdict.toyworld.training.data import build_scene_data
    from diffdict.toyworld.training.stages import _pixel_weighted_mse

    data = build_scene_data(4, seed=0, progress=False)
    mask = data.object_mask(torch.arange(4), 32)
    on_objects = mask.expand(4, 4, 32, 32)
    target = torch.zeros(4, 4, 32, 32)
    plain = _pixel_weighted_mse(on_objects, target, mask, 0.0)
    weighted = _pixel_weighted_mse(on_objects, target, mask, 4.0)
    share = on_objects[:, 0].mean(dim=(1, 2))  # error 1 on object cells, 0 elsewhere
    assert torch.allclose(plain, share)
    assert torch.allclose(weighted, 5 * share / (1 + 4 * share))
    # A uniform error is unchanged by the weights (they are normalised per sample).
    assert torch.allclose(_pixel_weighted_mse(torch.ones(4, 4, 32, 32), target, mask, 4.0), torch.ones(4))


def test_the_cpu_preset_caps_every_stage_within_four_hours():
    from diffdict.toyworld.training.config import PRESETS

    cpu = PRESETS["cpu"]
    for key in ("steps", "batch", "minutes"):
        assert set(cpu[key]) == set(TRAINED), key
    # Sampling teachers, encoding latents, rendering and exporting take about 50 more minutes.
    assert sum(cpu["minutes"].values()) + 50 <= 240


def test_distillation_finds_the_objects_in_decoded_samples(tmp_path):
    import torch.nn.functional as F

    from diffdict.toyworld.render import pattern_mask, render
    from diffdict.toyworld.training.config import TrainConfig
    from diffdict.toyworld.training.context import Context
    from diffdict.toyworld.training.data import training_scene
    from diffdict.toyworld.training.diffusers_calls import posterior
    from diffdict.toyworld.training.stages import _teacher_object_masks
    from diffdict.toyworld.training.warm_start import import_weights

    import_weights(Path(__file__).resolve().parents[1] / "toyworld" / "weights", tmp_path)
    ctx = Context(TrainConfig(work_dir=str(tmp_path), n_scenes=16, progress=False))
    index = torch.arange(16)
    scenes = [training_scene(ctx.cfg.seed, i) for i in range(16)]
    # what the teacher mask claims to find: the objects and the pattern's blocks (pixels unlike the plain background)
    pixels = torch.stack(
        [torch.from_numpy(render(scene).masks.any(axis=0) | pattern_mask(scene.pattern)) for scene in scenes]
    )[:, None].float()
    for family, side in (("sdxl", 32), ("flux", 16)):
        truth = F.adaptive_max_pool2d(pixels, side)
        stats = json.loads((tmp_path / f"vae_{family}_stats.json").read_text())
        with torch.no_grad():  # the shipped VAE's latents of the true images stand in for a teacher's samples
            mean = posterior(ctx.trained_vae(family), ctx.data.pixels(index)).mean
        samples = (mean - stats["shift_factor"]) * stats["scaling_factor"]
        found = _teacher_object_masks(ctx, family, samples, index)
        assert found.shape == truth.shape == (16, 1, side, side)
        overlap = (found * truth).sum() / torch.clamp(found + truth, max=1).sum()
        assert overlap > 0.8, (family, float(overlap))
