"""The training stages of `diffdict toy train` and STAGE_TABLE, the order they run in.

Shared state lives in toyworld.training.context, teacher sampling for the distillation stages in
toyworld.training.teachers, and the export stage in toyworld.training.export; run.py walks the
table.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import EulerAncestralDiscreteScheduler

from diffdict.toyworld.judge import FOREGROUND_DISTANCE
from diffdict.toyworld.scenes import BACKGROUNDS, eval_scenes
from diffdict.toyworld.training import models
from diffdict.toyworld.training.checkpoints import load_final
from diffdict.toyworld.training.config import STAGES, TrainConfig
from diffdict.toyworld.training.context import Context
from diffdict.toyworld.training.data import training_scene
from diffdict.toyworld.training.diffusers_calls import decode, on_device, posterior
from diffdict.toyworld.training.export import run_export, vae_stats
from diffdict.toyworld.training.loop import train_loop
from diffdict.toyworld.training.teachers import flux_teacher_samples, teacher_samples
from diffdict.toyworld.training.text_pretrain import (
    AttributeReadout,
    caption_targets,
    readout_accuracy,
    readout_loss,
    total_loss,
)
from diffdict.toyworld.training.user_errors import ToyInputError, ToyMissingFileError

VAE_KL_WEIGHT = 1e-6
MIN_SNR_GAMMA = 5.0  # min-SNR loss weighting (x0 weight capped at gamma): trains faster than plain epsilon MSE


def epsilon_loss_weight(alpha_bar: torch.Tensor) -> torch.Tensor:
    """Per-sample weight of the epsilon MSE at alpha_bar (batch,) -> (batch,).

    In x0 terms the epsilon loss weighs each t by its SNR, which is ~0.005 at t=999: the
    noisiest steps, where the caption decides colour, background and layout, would learn
    almost nothing. Clamping the x0 weight to [1, gamma] (truncated SNR below, min-SNR above)
    trains them as v-prediction would while keeping SDXL's epsilon output.
    """
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(min=1.0, max=MIN_SNR_GAMMA) / snr


def _train_vae(ctx: Context, family: str) -> None:
    stage = f"vae_{family}"
    vae = on_device(models.family_vae(family), ctx.cfg.device)

    def loss(step: int) -> torch.Tensor:
        generator = ctx.generator(stage, step)
        pixels = ctx.data.pixels(ctx.batch_index(stage, generator))
        latent_dist = posterior(vae, pixels)
        recon = decode(vae, latent_dist.sample(generator=generator))
        return F.mse_loss(recon, pixels) + VAE_KL_WEIGHT * latent_dist.kl().mean()

    train_loop(ctx.cfg, stage, {"vae": vae}, loss)


def run_vae_sdxl(ctx: Context) -> None:
    _train_vae(ctx, "sdxl")


def run_vae_flux(ctx: Context) -> None:
    _train_vae(ctx, "flux")


def _base_parts(ctx: Context, trained: bool) -> dict[str, torch.nn.Module]:
    """U-Net and text encoders: from the base stage (trained=True), else a fresh U-Net with
    the text stage's encoders ("sdxl" in cfg.text_pretrain) or fresh ones."""
    parts = {"unet": models.unet(), **models.text_encoders("sdxl")}
    if trained:
        load_final(ctx.cfg.work / "base.safetensors", parts)
    elif "sdxl" in ctx.cfg.text_pretrain:
        _load_pretrained_text(ctx, "sdxl", parts)
    return {name: part.to(ctx.cfg.device) for name, part in parts.items()}


def _load_pretrained_text(ctx: Context, family: str, parts: dict[str, torch.nn.Module]) -> None:
    path = ctx.cfg.work / "text.safetensors"
    if not path.exists():
        raise ToyMissingFileError(
            f"{path} is missing: run the text stage first (--stages text,...), or train "
            f"{family}'s text encoders with the denoiser (--text-pretrain without {family})"
        )
    load_final(path, {f"{family}_{name}": parts[name] for name in ("text_encoder", "text_encoder_2")})


def _denoiser_trainable(ctx: Context, family: str, denoiser: str) -> list[str]:
    """Pre-trained text encoders stay frozen, as SDXL's and Flux's do; otherwise they train
    with the denoiser."""
    return [denoiser] if family in ctx.cfg.text_pretrain else [denoiser, "text_encoder", "text_encoder_2"]


def run_text(ctx: Context) -> None:
    """Pre-train the text encoders of the families in cfg.text_pretrain to say what each
    caption puts where (toyworld.training.text_pretrain); prints the readout's accuracy on the
    held-out captions."""
    stage, cfg = "text", ctx.cfg
    families = tuple(cfg.text_pretrain)
    width = models.TEXT_WIDTH
    readout_width = {"sdxl": 2 * width, "flux": width}  # SDXL concatenates its two encoders' states
    encode = {"sdxl": models.encode_sdxl, "flux": models.encode_flux}
    parts = {f"{family}_{name}": module for family in families for name, module in models.text_encoders(family).items()}
    parts |= {f"{family}_readout": AttributeReadout(readout_width[family], width) for family in families}
    parts = {name: module.to(cfg.device) for name, module in parts.items()}
    targets = {
        k: v.to(cfg.device)
        for k, v in caption_targets([training_scene(cfg.seed, i) for i in range(len(ctx.data))]).items()
    }

    def readouts(ids: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        return {
            family: parts[f"{family}_readout"](
                *encode[family](parts[f"{family}_text_encoder"], parts[f"{family}_text_encoder_2"], ids)
            )
            for family in families
        }

    def loss(step: int) -> torch.Tensor:
        index = ctx.batch_index(stage, ctx.generator(stage, step))
        batch_targets = {name: value[index] for name, value in targets.items()}
        return total_loss(readout_loss(logits, batch_targets) for logits in readouts(ctx.data.ids[index]).values())

    final = train_loop(cfg, stage, parts, loss)
    parts.update(final)
    held_out = list(eval_scenes(256))
    ids = models.token_ids(models.tokenizer(), [scene.caption for scene in held_out]).to(cfg.device)
    with torch.no_grad():
        for family, logits in readouts(ids).items():
            accuracy = readout_accuracy(logits, {k: v.to(cfg.device) for k, v in caption_targets(held_out).items()})
            print(
                f"[text] {family} readout on the 256 held-out captions: "
                + ", ".join(f"{name} {100 * value:.1f}%" for name, value in accuracy.items())
            )


def run_base(ctx: Context) -> None:
    stage, cfg = "base", ctx.cfg
    latents = ctx.latents("sdxl")
    parts = _base_parts(ctx, trained=False)
    trainable = _denoiser_trainable(ctx, "sdxl", "unet")
    alphas = models.EulerDiscreteScheduler(**models.SDXL_SCHEDULER).alphas_cumprod.to(cfg.device)

    def loss(step: int) -> torch.Tensor:
        generator = ctx.generator(stage, step)
        index = ctx.batch_index(stage, generator)
        clean = latents.sample(index, generator)
        # Offset noise (as SDXL was trained): without it the model cannot move an image's mean
        # colour away from the noise's, and flat black or white backgrounds come out gray.
        noise = torch.randn(clean.shape, generator=generator, device=cfg.device) + cfg.offset_noise * torch.randn(
            clean.shape[:2] + (1, 1), generator=generator, device=cfg.device
        )
        t = torch.randint(0, len(alphas), (len(index),), generator=generator, device=cfg.device)
        a = alphas[t][:, None, None, None]
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
        drop = torch.rand(len(index), generator=generator, device=cfg.device) < cfg.caption_dropout
        with torch.set_grad_enabled("text_encoder" in trainable):
            embeds, added = models.sdxl_conditioning(
                parts["text_encoder"], parts["text_encoder_2"], ctx.data.ids[index], drop
            )
        predicted = parts["unet"](noisy, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
        weight = epsilon_loss_weight(a.flatten())
        mask = ctx.data.object_mask(index, clean.shape[-1])
        return (weight * _pixel_weighted_mse(predicted, noise, mask, cfg.object_loss_weight)).mean()

    train_loop(cfg, stage, parts, loss, trainable=trainable)


def _pixel_weighted_mse(
    predicted: torch.Tensor, target: torch.Tensor, object_mask: torch.Tensor, object_weight: float
) -> torch.Tensor:
    """Per-sample MSE (B,) of (B, C, h, w) tensors; see _object_weighted_mean."""
    error = ((predicted - target) ** 2).mean(dim=1, keepdim=True)
    return _object_weighted_mean(error, object_mask, object_weight)


def _object_weighted_mean(error: torch.Tensor, object_mask: torch.Tensor | None, object_weight: float) -> torch.Tensor:
    """(B, 1, h, w) per-cell errors -> (B,) means, with the cells where object_mask (B, 1, h, w)
    is 1 weighted 1 + object_weight and the weights normalised per sample (so the loss scale
    stays put when the weight changes)."""
    if object_weight == 0:
        return error.mean(dim=(1, 2, 3))
    assert object_mask is not None, "an object weight needs object masks"
    weights = 1 + object_weight * object_mask
    return (weights * error).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3))


def _cfg_x0(
    unet, noisy: torch.Tensor, t: torch.Tensor, a: torch.Tensor, embeds: torch.Tensor, added: dict, guidance: float
) -> torch.Tensor:
    """The teacher's classifier-free-guided clean estimate of `noisy` at timesteps t (alpha_bar a)."""
    zeros = {key: torch.zeros_like(value) if key == "text_embeds" else value for key, value in added.items()}
    eps_cond = unet(noisy, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
    eps_uncond = unet(noisy, t, encoder_hidden_states=torch.zeros_like(embeds), added_cond_kwargs=zeros).sample
    eps = eps_uncond + guidance * (eps_cond - eps_uncond)
    return (noisy - (1 - a).sqrt() * eps) / a.sqrt()


def _teacher_object_masks(ctx: Context, family: str, samples: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(n, 1, h, w): 1 on the latent cells where a teacher's decoded sample (n, C, h, w)
    differs from its caption's background colour as much as the judge's foreground does: the
    objects, and the pattern's blocks (every pattern tone lies 81-111 RGB units from its plain
    background), as in `SceneData.object_mask`."""
    vae, stats = ctx.trained_vae(family), vae_stats(ctx, family)
    backgrounds = torch.tensor(
        [BACKGROUNDS[training_scene(ctx.cfg.seed, int(i)).background] for i in index],
        dtype=torch.float32,
        device=samples.device,
    )
    masks = []
    with torch.no_grad():
        for start in range(0, len(samples), 256):
            rows = slice(start, start + 256)
            latents = samples[rows] / stats["scaling_factor"] + stats["shift_factor"]
            pixels = (decode(vae, latents).clamp(-1, 1) + 1) * 127.5  # (b, 3, 64, 64)
            distance = (pixels - backgrounds[rows, :, None, None]).norm(dim=1, keepdim=True)
            masks.append(F.adaptive_max_pool2d((distance > FOREGROUND_DISTANCE).float(), samples.shape[-1]))
    return torch.cat(masks)


def run_turbo(ctx: Context) -> None:
    """Distil the base to one step, as SDXL Turbo was distilled from SDXL Base.

    The student (initialised as the base) takes one Euler step from pure noise at the
    trailing t=999. Its sample is pulled towards (1) the base's own sample from the same
    noise (`teacher_samples`; with cfg.teacher_samples = 0, the training image of the
    caption instead, whose mean over images is a blur) and, with weight
    cfg.turbo_distill_weight, (2) the frozen base's CFG estimate of that sample re-noised
    at a random t: ADD's distillation term, weighted by alpha_bar as in the paper so that
    the noisiest estimates count least. ADD's critic is left out.
    """
    stage, cfg = "turbo", ctx.cfg
    pairs = teacher_samples(ctx) if cfg.teacher_samples else None
    masks = (
        _teacher_object_masks(ctx, "sdxl", pairs[2], pairs[1]) if pairs is not None and cfg.object_loss_weight else None
    )
    latents = None if pairs is not None else ctx.latents("sdxl")
    parts = _base_parts(ctx, trained=True)  # the student starts as the base
    teacher = copy.deepcopy(parts["unet"]).eval().requires_grad_(False) if cfg.turbo_distill_weight else None
    alphas = models.EulerDiscreteScheduler(**models.SDXL_SCHEDULER).alphas_cumprod.to(cfg.device)
    scheduler = EulerAncestralDiscreteScheduler(**models.SDXL_SCHEDULER, timestep_spacing="trailing")
    scheduler.set_timesteps(1)
    timestep, sigma = scheduler.timesteps[0].item(), scheduler.sigmas[0].item()
    init_sigma = float(scheduler.init_noise_sigma)

    def loss(step: int) -> torch.Tensor:
        generator = ctx.generator(stage, step)
        if pairs is not None:
            rows = ctx.batch_index(stage, generator, n=len(pairs[0]))
            noise, index, target = pairs[0][rows], pairs[1][rows], pairs[2][rows]
        else:
            assert latents is not None  # the training latents stand in when there are no teacher samples
            index = ctx.batch_index(stage, generator)
            target = latents.sample(index, generator)
            noise = torch.randn(target.shape, generator=generator, device=cfg.device)
        with torch.no_grad():
            embeds, added = models.sdxl_conditioning(
                parts["text_encoder"], parts["text_encoder_2"], ctx.data.ids[index]
            )
        start = noise * init_sigma
        t = torch.full((len(index),), timestep, device=cfg.device)
        predicted = parts["unet"](
            start / (sigma**2 + 1) ** 0.5, t, encoder_hidden_states=embeds, added_cond_kwargs=added
        ).sample
        sample = start - sigma * predicted  # one Euler step from sigma_max to 0
        if masks is not None:
            total = _pixel_weighted_mse(sample, target, masks[rows], cfg.object_loss_weight).mean()
        else:
            total = F.mse_loss(sample, target)
        if teacher is not None:
            t_teacher = torch.randint(20, len(alphas) - 20, (len(index),), generator=generator, device=cfg.device)
            a = alphas[t_teacher][:, None, None, None]
            renoised = a.sqrt() * sample.detach() + (1 - a).sqrt() * torch.randn(
                sample.shape, generator=generator, device=cfg.device
            )
            with torch.no_grad():
                guided = _cfg_x0(teacher, renoised, t_teacher, a, embeds, added, cfg.base_guidance)
            total = (
                total + cfg.turbo_distill_weight * (a.flatten() * ((sample - guided) ** 2).mean(dim=(1, 2, 3))).mean()
            )
        return total

    train_loop(cfg, stage, parts, loss, trainable=["unet"])


def _flux_parts(ctx: Context, trained: bool) -> dict[str, torch.nn.Module]:
    """Transformer and text encoders: from the flux stage (trained=True), else a fresh
    transformer with the text stage's encoders ("flux" in cfg.text_pretrain) or fresh ones."""
    parts = {"transformer": models.flux_transformer(), **models.text_encoders("flux")}
    if trained:
        load_final(ctx.cfg.work / "flux.safetensors", parts)
    elif "flux" in ctx.cfg.text_pretrain:
        _load_pretrained_text(ctx, "flux", parts)
    return {name: part.to(ctx.cfg.device) for name, part in parts.items()}


@functools.lru_cache
def _flux_position_ids(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(image ids (G * G, 3) of the G x G token grid (G = FLUX_TOKEN_GRID), text ids
    (MAX_TOKENS, 3)) for the RoPE."""
    grid = models.FLUX_TOKEN_GRID
    return (models.latent_image_ids(grid, grid, device), torch.zeros(models.MAX_TOKENS, 3, device=device))


FluxText = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


def _flux_caption_encoder(ctx: Context, parts: dict[str, torch.nn.Module], frozen: bool) -> FluxText:
    """encode(index (B,), drop (B,) bool or None) -> (embeds (B, MAX_TOKENS, TEXT_WIDTH),
    pooled (B, TEXT_WIDTH)) of training captions `index`, the empty caption where `drop`.

    Frozen encoders are run once over every caption and the outputs looked up (50,000
    captions: 410 MB); running them on each batch cost the toy Flux about 10% of its steps
    (1.65 against 1.8-1.9 steps/s on two threads). Trained encoders run on each batch.
    """
    # Every training caption, then the empty one: a dropped caption is that last row.
    ids = torch.cat([ctx.data.ids, ctx.data.empty_ids[None]])

    def rows(index: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        return index if drop is None else torch.where(drop, len(ids) - 1, index)

    def encode(some_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return models.encode_flux(parts["text_encoder"], parts["text_encoder_2"], some_ids)

    if not frozen:
        return lambda index, drop: encode(ids[rows(index, drop)])
    for name in ("text_encoder", "text_encoder_2"):
        parts[name].eval()  # as train_loop leaves frozen modules
    with torch.no_grad():
        chunks = [encode(ids[start : start + 1000]) for start in range(0, len(ids), 1000)]
    all_embeds, all_pooled = torch.cat([e for e, _ in chunks]), torch.cat([p for _, p in chunks])

    def lookup(index: torch.Tensor, drop: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = rows(index, drop)
        return all_embeds[chosen], all_pooled[chosen]

    return lookup


def _flux_flow_loss(
    parts: dict[str, torch.nn.Module],
    clean: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    embeds: torch.Tensor,
    pooled: torch.Tensor,
) -> torch.Tensor:
    """Flow-matching loss of the toy Flux: clean and noise packed (B, G * G, 4 * C) with
    G = FLUX_TOKEN_GRID, sigma (B,), the captions' embeds (B, MAX_TOKENS, TEXT_WIDTH) and
    pooled (B, TEXT_WIDTH) (from _flux_caption_encoder); the velocity target is noise -
    clean. Returns the squared error per image token, (B, 1, G, G) (tokens are packed
    row-major)."""
    img_ids, txt_ids = _flux_position_ids(str(clean.device))
    s = sigma[:, None, None]
    velocity = parts["transformer"](
        hidden_states=(1 - s) * clean + s * noise,
        timestep=sigma,
        guidance=None,
        pooled_projections=pooled,
        encoder_hidden_states=embeds,
        txt_ids=txt_ids,
        img_ids=img_ids,
        return_dict=False,
    )[0]
    error = ((velocity - (noise - clean)) ** 2).mean(dim=-1)
    return error.view(len(error), 1, models.FLUX_TOKEN_GRID, models.FLUX_TOKEN_GRID)


def _logit_normal(n: int, generator: torch.Generator, device: str) -> torch.Tensor:
    """(n,) sigmas in (0, 1). Logit-normal sigmas (as SD3 and Flux were trained) weight the
    middle of the path, where an object's shape is decided; uniform sigmas left toy/flux
    drawing blobs."""
    return torch.sigmoid(torch.randn(n, generator=generator, device=device))


def run_flux(ctx: Context) -> None:
    stage, cfg = "flux", ctx.cfg
    latents = ctx.latents("flux")
    parts = _flux_parts(ctx, trained=False)
    trainable = _denoiser_trainable(ctx, "flux", "transformer")
    encode = _flux_caption_encoder(ctx, parts, frozen="text_encoder" not in trainable)

    def loss(step: int) -> torch.Tensor:
        generator = ctx.generator(stage, step)
        index = ctx.batch_index(stage, generator)
        clean = latents.sample(index, generator)
        b, c, h, w = clean.shape
        noise = torch.randn(clean.shape, generator=generator, device=cfg.device)
        sigma = _logit_normal(b, generator, cfg.device)
        drop = torch.rand(b, generator=generator, device=cfg.device) < cfg.caption_dropout
        error = _flux_flow_loss(
            parts, models.pack_latents(clean), models.pack_latents(noise), sigma, *encode(index, drop)
        )
        return _object_weighted_mean(error, ctx.data.object_mask(index, error.shape[-1]), cfg.object_loss_weight).mean()

    train_loop(cfg, stage, parts, loss, trainable=trainable)


def run_flux_distill(ctx: Context) -> None:
    """Distil toy/flux to few guidance-free steps, as FLUX.1 [schnell] is a distilled model.

    The student (initialised as the `flux` stage) learns flow matching on pairs of noise and
    the guided teacher's sample from that noise ("reflow", Liu et al. 2022) instead of
    independent pairs: the paths it learns are the teacher's, so they are nearly straight
    (few steps suffice) and carry the guidance (no unconditional branch is needed).
    """
    stage, cfg = "flux_distill", ctx.cfg
    if cfg.teacher_samples < 1:
        raise ToyInputError("the flux_distill stage regresses on teacher samples: give --teacher-samples N with N >= 1")
    noise_all, index_all, target_all = flux_teacher_samples(ctx)
    masks = None
    if cfg.object_loss_weight:  # image tokens that show an object in the teacher's sample
        unpacked = models.unpack_latents(target_all, models.FLUX_LATENT_SIZE, models.FLUX_LATENT_SIZE)
        masks = F.max_pool2d(_teacher_object_masks(ctx, "flux", unpacked, index_all), 2)  # 2x2 latent cells per token
    parts = _flux_parts(ctx, trained=True)
    encode = _flux_caption_encoder(ctx, parts, frozen=True)  # train_loop trains the transformer only

    def loss(step: int) -> torch.Tensor:
        generator = ctx.generator(stage, step)
        rows = ctx.batch_index(stage, generator, n=len(noise_all))
        sigma = _logit_normal(len(rows), generator, cfg.device)
        error = _flux_flow_loss(parts, target_all[rows], noise_all[rows], sigma, *encode(index_all[rows], None))
        return _object_weighted_mean(error, None if masks is None else masks[rows], cfg.object_loss_weight).mean()

    train_loop(cfg, stage, parts, loss, trainable=["transformer"])


@dataclass(frozen=True)
class Stage:
    """One step of `diffdict toy train`.

    run: trains (or writes) it from the shared Context.
    checkpointed: finished once WORK/<name>.safetensors exists, and then skipped (export is not:
        it always rewrites the folders from whatever stages have finished).
    wanted: whether a config needs it at all, beside being listed in cfg.stages.
    """

    name: str
    run: Callable[[Context], None]
    checkpointed: bool = True
    wanted: Callable[[TrainConfig], bool] = lambda cfg: True


STAGE_TABLE: tuple[Stage, ...] = (
    Stage("vae_sdxl", run_vae_sdxl),
    Stage("vae_flux", run_vae_flux),
    Stage("text", run_text, wanted=lambda cfg: bool(cfg.text_pretrain)),  # else nothing reads its encoders
    Stage("base", run_base),
    Stage("turbo", run_turbo),
    Stage("flux", run_flux),
    Stage("flux_distill", run_flux_distill),
    Stage("export", run_export, checkpointed=False),
)
if tuple(stage.name for stage in STAGE_TABLE) != STAGES:  # config.STAGES names this table for the CLI
    raise RuntimeError(f"toyworld.training: STAGE_TABLE {[s.name for s in STAGE_TABLE]} != config.STAGES {STAGES}")
