"""Teacher samples for the distillation stages: (noise, caption, the teacher's sample from
that noise), drawn reproducibly and cached in the work dir so that a larger count extends
the cache and a killed run resumes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tqdm.auto import tqdm

from diffdict.toyworld.training import models
from diffdict.toyworld.training.checkpoints import save_tensors_atomic
from diffdict.toyworld.training.context import Context
from diffdict.toyworld.training.diffusers_calls import float_tensor, latent_images
from diffdict.toyworld.training.export import export_flux, export_sdxl

DRAW_BLOCK = 64  # teacher draws come in blocks of this many rows, each from its own seed


def _teacher_draws(ctx: Context, name: str, n: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise (n, *shape), training-caption index (n,)), drawn block by block from
    (seed, name, block) so that the first n rows are the same whatever the total asked for."""
    noises, indices = [], []
    for block in range(-(-n // DRAW_BLOCK)):
        generator = ctx.generator(name, block)
        noises.append(torch.randn((DRAW_BLOCK, *shape), generator=generator, device=ctx.cfg.device))
        indices.append(torch.randint(len(ctx.data), (DRAW_BLOCK,), generator=generator, device=ctx.cfg.device))
    return torch.cat(noises)[:n], torch.cat(indices)[:n]


def _cached_samples(
    ctx: Context,
    name: str,
    teacher: Path,
    settings: str,
    noise: torch.Tensor,
    make_sampler: Callable[[], Callable[[slice], torch.Tensor]],
) -> torch.Tensor:
    """sample(rows) for every row of `noise`, where sample = make_sampler() is built only if
    something is left to sample (it loads the teacher); cached in the work dir as
    `<name>_<seed>_<n_scenes>` with the digest of the teacher checkpoint and the sampling
    `settings` (a cache from another teacher or other settings is sampled afresh).

    The cache keeps rows in draw order (`_teacher_draws`), so asking for more samples later
    extends it and asking for fewer reads a prefix; it is saved every cfg.checkpoint_minutes,
    so a killed run resumes chunk by chunk.
    """
    cfg, n = ctx.cfg, len(noise)
    key = f"{hashlib.sha256(teacher.read_bytes()).hexdigest()[:16]} {settings}"
    path = cfg.work / f"{name}_{cfg.seed}_{cfg.n_scenes}.safetensors"
    cached, done = None, 0
    if path.exists():
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        if meta.get("teacher") == key:
            cached = load_file(str(path))["targets"].to(cfg.device)
            done = len(cached)
    if done >= n:
        assert cached is not None  # n > 0 rows: the cache held them
        return cached[:n]
    targets = torch.zeros_like(noise)
    if cached is not None:
        targets[:done] = cached
    chunk = 2048 if cfg.device.startswith("cuda") else 64
    sample, last_save = make_sampler(), time.time()
    with (
        torch.no_grad(),
        tqdm(total=n, initial=done, desc=f"{name} samples", disable=not cfg.progress, mininterval=5) as bar,
    ):
        while done < n:
            rows = slice(done, min(done + chunk, n))
            targets[rows] = sample(rows).float()
            done = rows.stop
            bar.update(rows.stop - rows.start)
            if done == n or time.time() - last_save > cfg.checkpoint_minutes * 60:
                save_tensors_atomic({"targets": targets[:done]}, path, {"teacher": key})
                last_save = time.time()
    return targets


def teacher_samples(ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noise (n, 4, 32, 32), caption index (n,), the base's latents (n, 4, 32, 32)) for
    n = cfg.teacher_samples draws, each sampled the base's way (Euler, cfg.base_steps, CFG).

    Euler sampling is deterministic, so each target is a function of its noise: a one-step
    student regressing on these pairs learns a map, not the blurred mean of the many images a
    caption allows (Luhman & Luhman 2021). Sampling is the slow part on a CPU (about 0.7 s
    per sample on 2 cores), hence the cache (`_cached_samples`).
    """
    cfg = ctx.cfg
    noise, index = _teacher_draws(ctx, "teacher", cfg.teacher_samples, (4, 32, 32))

    def make_sampler() -> Callable[[slice], torch.Tensor]:
        pipe = export_sdxl(ctx, turbo=False, dtype=torch.float32).to(cfg.device)
        pipe.set_progress_bar_config(disable=True)

        def sample(rows: slice) -> torch.Tensor:
            embeds, added = models.sdxl_conditioning(pipe.text_encoder, pipe.text_encoder_2, ctx.data.ids[index[rows]])
            output = pipe(
                prompt_embeds=embeds,
                pooled_prompt_embeds=added["text_embeds"],
                latents=noise[rows],
                num_inference_steps=cfg.base_steps,
                guidance_scale=cfg.base_guidance,
                height=models.IMAGE_SIZE,
                width=models.IMAGE_SIZE,
                output_type="latent",
            )
            return latent_images(output)

        return sample

    return (
        noise,
        index,
        _cached_samples(
            ctx,
            "teacher",
            cfg.work / "base.safetensors",
            f"steps {cfg.base_steps} cfg {cfg.base_guidance}",
            noise,
            make_sampler,
        ),
    )


def flux_teacher_samples(ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noise, caption index (n,), flux's sample from that noise) for n = cfg.teacher_samples,
    noise and samples packed as the pipeline packs them: (n, FLUX_TOKEN_GRID ** 2, 4 * FLUX_LATENT_CHANNELS).

    The teacher is the `flux` stage sampled with true classifier-free guidance
    (cfg.flux_teacher_guidance, empty negative prompt) over cfg.flux_teacher_steps Euler steps.
    """
    cfg, n = ctx.cfg, ctx.cfg.teacher_samples
    side = models.FLUX_LATENT_SIZE
    noise, index = _teacher_draws(ctx, "flux_teacher", n, (models.FLUX_LATENT_CHANNELS, side, side))
    noise = models.pack_latents(noise)

    def make_sampler() -> Callable[[slice], torch.Tensor]:
        pipe = export_flux(ctx, dtype=torch.float32, distilled=False).to(cfg.device)
        pipe.set_progress_bar_config(disable=True)
        with torch.no_grad():
            empty, empty_pooled = models.encode_flux(pipe.text_encoder, pipe.text_encoder_2, ctx.data.empty_ids[None])

        def sample(rows: slice) -> torch.Tensor:
            count = rows.stop - rows.start
            embeds, pooled = models.encode_flux(pipe.text_encoder, pipe.text_encoder_2, ctx.data.ids[index[rows]])
            output = pipe(
                prompt_embeds=float_tensor(embeds),
                pooled_prompt_embeds=float_tensor(pooled),
                negative_prompt_embeds=float_tensor(empty.expand(count, -1, -1)),
                negative_pooled_prompt_embeds=float_tensor(empty_pooled.expand(count, -1)),
                true_cfg_scale=cfg.flux_teacher_guidance,
                latents=float_tensor(noise[rows]),
                num_inference_steps=cfg.flux_teacher_steps,
                height=models.IMAGE_SIZE,
                width=models.IMAGE_SIZE,
                max_sequence_length=models.MAX_TOKENS,
                output_type="latent",
            )
            return latent_images(output)

        return sample

    return (
        noise,
        index,
        _cached_samples(
            ctx,
            "flux_teacher",
            cfg.work / "flux.safetensors",
            f"steps {cfg.flux_teacher_steps} true_cfg {cfg.flux_teacher_guidance}",
            noise,
            make_sampler,
        ),
    )
