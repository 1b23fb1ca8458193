"""`diffdict toy train`: reproduce the three toy models from scratch with a seed.

Stages, each resumable and skipped once finished (see toyworld.checkpoints):
  vae_sdxl, vae_flux  autoencoders (MSE + a small KL), then their latent statistics
  text                the text encoders of the families in text_pretrain (default flux),
                      pre-trained to say what each caption puts where (toyworld.text_pretrain);
                      frozen from then on
  base                toy/sdxl-base: text encoders + U-Net, epsilon loss, caption dropout
  turbo               toy/sdxl-turbo: base distilled to one step (trailing spacing, no CFG):
                      regression on the base's own samples (ADD's distillation term optional)
  flux                toy/flux's teacher: CLIP + T5 + Flux transformer, flow matching
  flux_distill        toy/flux: the teacher distilled to few guidance-free steps (reflow on
                      its own true-CFG samples, as schnell is a distilled model)
  export              fp16 diffusers folders + diffdict.json under the output folder
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from toyworld.checkpoints import load_final, load_partial, save_final, save_partial
from toyworld.user_errors import ToyInputError

STAGES = ("vae_sdxl", "vae_flux", "text", "base", "turbo", "flux", "flux_distill", "export")


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "cpu"
    work_dir: str = "runs/toy_train"
    out_dir: str = "toyworld/weights"
    stages: tuple[str, ...] = STAGES
    n_scenes: int = 50_000
    steps: dict[str, int] = field(default_factory=lambda: {
        "vae_sdxl": 4000, "vae_flux": 4000, "text": 3000, "base": 20000, "turbo": 6000, "flux": 20000, "flux_distill": 4000})
    batch: dict[str, int] = field(default_factory=lambda: {
        "vae_sdxl": 128, "vae_flux": 128, "text": 256, "base": 256, "turbo": 256, "flux": 256, "flux_distill": 256})
    lr: dict[str, float] = field(default_factory=lambda: {
        "vae_sdxl": 1e-3, "vae_flux": 1e-3, "text": 1e-3, "base": 1e-3, "turbo": 2e-4, "flux": 5e-4, "flux_distill": 2e-4})
    # Wall-clock caps (minutes per stage, counted across resumes) that shorten a stage's schedule.
    minutes: dict[str, float] = field(default_factory=dict)
    caption_dropout: float = 0.1
    # Families whose denoiser starts from the text stage's encoders, kept frozen (as SDXL and
    # Flux keep theirs). Flux by default: with encoders trained jointly it gave an object the
    # other object's colour on a third of two-object captions, and with pre-trained ones on
    # almost none (toyworld/README.md). Not sdxl: its shipped base trains them jointly, and a
    # 30-minute from-scratch base was no better with them.
    text_pretrain: tuple[str, ...] = ("flux",)
    base_guidance: float = 3.0  # the teacher's CFG scale, also base's default
    base_steps: int = 25
    flux_steps: int = 4
    # flux_distill: true-CFG scale of the teacher's samples. An earlier checkpoint of the shipped
    # Flux's teacher, sampled over 8 steps, drew shapes 68.7% right guidance-free, 84.7 with
    # CFG 2, 89.5 with 3, 89.7 with 4 (256 captions).
    flux_teacher_guidance: float = 3.0
    flux_teacher_steps: int = 8  # flux_distill: Euler steps of the teacher's samples
    offset_noise: float = 0.1  # base: std of a per-image, per-channel constant added to the noise
    # base, turbo and flux: extra loss weight on the latent cells (Flux: image tokens) an object
    # covers (0: plain mean). Objects cover about 7% of the cells, so a plain mean spends most
    # of the loss on the background (toyworld/README.md has the measured effect). Turbo finds
    # the objects in the base's decoded samples.
    object_loss_weight: float = 4.0
    # turbo and flux_distill: (noise, teacher sample) pairs to regress on; 0: turbo regresses on
    # training images (flux_distill needs pairs)
    teacher_samples: int = 16384
    # turbo: weight of ADD's re-noised teacher term; off by default, since regressing on the
    # pairs alone is what was measured (and each step is 3x cheaper without the teacher calls)
    turbo_distill_weight: float = 0.0
    threads: int | None = None  # torch CPU threads (None: torch's default)
    ema_decay: float = 0.999
    checkpoint_minutes: float = 5.0
    progress: bool = True

    @property
    def work(self) -> Path:
        return Path(self.work_dir)


# Presets. "gpu": the step counts of a CUDA run. "cpu": a from-scratch run that fits the
# 4-hour budget of this 2-core machine by wall-clock caps (190 min of optimisation; measured
# end to end with the earlier width-128 Flux: 225 min with the teachers' samples, latents,
# rendering and export, base running 10 min over its cap before caps were refitted); each stage runs as
# many steps as its cap allows, fitted at its 80th step and refitted every checkpoint
# interval from the recent rate (only ever shortened; the cosine schedule follows).
PRESETS: dict[str, dict] = {
    "gpu": {},
    "cpu": {
        "n_scenes": 20_000,
        "steps": {"vae_sdxl": 4000, "vae_flux": 4000, "text": 3000, "base": 20000, "turbo": 5000, "flux": 20000,
                  "flux_distill": 4000},
        "batch": {"vae_sdxl": 32, "vae_flux": 32, "text": 256, "base": 32, "turbo": 32, "flux": 32,
                  "flux_distill": 32},
        "minutes": {"vae_sdxl": 15, "vae_flux": 15, "text": 5, "base": 65, "turbo": 20, "flux": 50,
                    "flux_distill": 20},
        "teacher_samples": 2048,
    },
}


def lr_at(step: int, total: int, peak: float, warmup: int = 200) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    warmup = min(warmup, max(total // 10, 1))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def steps_within_cap(step: int, total: int, rate: float, seconds_left: float) -> int:
    """The stage's new total: `total`, or fewer so that the steps left at `rate` (steps/s)
    fit in `seconds_left`; never below step + 1 (a stage always ends with a step)."""
    fitted = step + int(rate * max(seconds_left, 0.0))
    return max(min(total, fitted), step + 1)


def train_loop(
    cfg: TrainConfig,
    stage: str,
    modules: dict[str, torch.nn.Module],
    loss_fn: Callable[[int], torch.Tensor],
    trainable: list[str] | None = None,
) -> dict[str, torch.nn.Module]:
    """Optimise `modules[trainable]` with AdamW on loss_fn(step); returns the EMA copies.

    Checkpoints every `cfg.checkpoint_minutes` to `<stage>.partial.safetensors` and resumes
    from it; the EMA weights are saved as `<stage>.safetensors` at the end.
    """
    trainable = trainable or list(modules)
    train_modules = {name: modules[name] for name in trainable}
    for module in train_modules.values():
        module.train().requires_grad_(True)
    for name, module in modules.items():
        if name not in train_modules:
            module.eval().requires_grad_(False)
    init = cfg.work / f"{stage}.init.safetensors"
    partial = cfg.work / f"{stage}.partial.safetensors"
    if init.exists() and not partial.exists():
        # Warm start (e.g. continuing shipped weights); the schedule starts afresh.
        load_final(init, train_modules)
        print(f"[{stage}] warm start from {init}")
    params = [p for m in train_modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr[stage], weight_decay=0.01, betas=(0.9, 0.99))
    ema = {name: copy.deepcopy(m).eval().requires_grad_(False) for name, m in train_modules.items()}
    step, total, seconds_before = 0, cfg.steps[stage], 0.0
    if partial.exists():
        step, total, seconds_before = load_partial(partial, train_modules, ema, optimizer)
        print(f"[{stage}] resuming at step {step}/{total}")
    cap = cfg.minutes.get(stage)
    bar = tqdm(total=total, initial=step, desc=f"train {stage}", disable=not cfg.progress, mininterval=5)
    started = last_save = time.time()
    timed_steps = 0
    window_start, window_step = started, step  # where the rate used for the cap is measured from

    def seconds_run() -> float:
        return seconds_before + time.time() - started

    while step < total:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, cfg.lr[stage])
        loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, module in train_modules.items():
                torch._foreach_lerp_(list(ema[name].parameters()), list(module.parameters()), 1 - decay)
        step += 1
        timed_steps += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        now = time.time()
        if timed_steps == 20:
            window_start, window_step = now, step  # the first steps include CUDA/allocator warm-up
        refit_due = timed_steps == 80 or (timed_steps > 80 and now - window_start > cfg.checkpoint_minutes * 60)
        if cap and refit_due and step < total:
            # Fit the rest of the stage into its wall-clock cap: first from the rate of its first
            # steps, then every few minutes from the recent rate, since rates drift (the from-scratch
            # base slowed from 2.6 to 1.9 steps/s, which a single early fit let overrun 65 min by 10).
            rate = (step - window_step) / max(now - window_start, 1e-9)
            fitted = steps_within_cap(step, total, rate, cap * 60 - seconds_run())
            if fitted < total:
                total = fitted
                bar.total = total
                print(f"[{stage}] {rate:.2f} steps/s: shortened to {total} steps to fit {cap:g} min")
            window_start, window_step = now, step
        if now - last_save > cfg.checkpoint_minutes * 60 and step < total:
            save_partial(partial, train_modules, ema, optimizer, step, total, seconds_run())
            last_save = time.time()
    bar.close()
    elapsed = time.time() - started
    print(f"[{stage}] {step} steps in {seconds_run() / 60:.1f} min "
          f"({timed_steps / max(elapsed, 1e-9):.2f} steps/s in this run)")
    # Frozen modules are saved as they are, so a stage's checkpoint holds every part it used.
    final = {name: ema.get(name, module) for name, module in modules.items()}
    save_final(cfg.work / f"{stage}.safetensors", final, {"steps": step, "config": asdict(cfg)})
    partial.unlink(missing_ok=True)
    return final


def train(cfg: TrainConfig) -> None:
    """Run the configured stages in order; finished stages are skipped."""
    from toyworld import stages as stage_impl

    unknown = set(cfg.stages) - set(STAGES)
    if unknown:
        raise ToyInputError(f"unknown stage(s) {sorted(unknown)}: choose from {', '.join(STAGES)}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ToyInputError("--device cuda was asked for but no CUDA device is visible: use --device cpu")
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg.work.mkdir(parents=True, exist_ok=True)
    (cfg.work / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    context = stage_impl.Context(cfg)
    for stage in STAGES:
        if stage not in cfg.stages:
            continue
        if stage == "text" and not cfg.text_pretrain:
            continue  # nothing reads its encoders
        if stage != "export" and (cfg.work / f"{stage}.safetensors").exists():
            print(f"[{stage}] done already ({cfg.work / f'{stage}.safetensors'})")
            continue
        getattr(stage_impl, f"run_{stage}")(context)
