"""The settings of `diffdict toy train`: the stage names in order, TrainConfig and the presets.

Torch-free, so that the command line's `--help` and argument checks read the stage names from
here (the stage objects themselves are `toyworld.training.stages.STAGE_TABLE`).

Stages, each resumable and skipped once finished (see toyworld.training.checkpoints):
  vae_sdxl, vae_flux  autoencoders (MSE + a small KL), then their latent statistics
  text                the text encoders of the families in text_pretrain (default flux),
                      pre-trained to say what each caption puts where (toyworld.training.text_pretrain);
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

from dataclasses import dataclass, field
from pathlib import Path

STAGES = ("vae_sdxl", "vae_flux", "text", "base", "turbo", "flux", "flux_distill", "export")


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "cpu"
    work_dir: str = "runs/toy_train"
    out_dir: str = "toyworld/weights"
    stages: tuple[str, ...] = STAGES
    n_scenes: int = 50_000
    steps: dict[str, int] = field(
        default_factory=lambda: {
            "vae_sdxl": 4000,
            "vae_flux": 4000,
            "text": 3000,
            "base": 20000,
            "turbo": 6000,
            "flux": 20000,
            "flux_distill": 4000,
        }
    )
    batch: dict[str, int] = field(
        default_factory=lambda: {
            "vae_sdxl": 128,
            "vae_flux": 128,
            "text": 256,
            "base": 256,
            "turbo": 256,
            "flux": 256,
            "flux_distill": 256,
        }
    )
    lr: dict[str, float] = field(
        default_factory=lambda: {
            "vae_sdxl": 1e-3,
            "vae_flux": 1e-3,
            "text": 1e-3,
            "base": 1e-3,
            "turbo": 2e-4,
            "flux": 5e-4,
            "flux_distill": 2e-4,
        }
    )
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
    # export: replace pipeline folders that already exist in out_dir (`toy train --force`); without it the
    # export refuses them, so that a run never deletes shipped or earlier weights without being asked
    replace_export: bool = False
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
        "steps": {
            "vae_sdxl": 4000,
            "vae_flux": 4000,
            "text": 3000,
            "base": 20000,
            "turbo": 5000,
            "flux": 20000,
            "flux_distill": 4000,
        },
        "batch": {"vae_sdxl": 32, "vae_flux": 32, "text": 256, "base": 32, "turbo": 32, "flux": 32, "flux_distill": 32},
        "minutes": {"vae_sdxl": 15, "vae_flux": 15, "text": 5, "base": 65, "turbo": 20, "flux": 50, "flux_distill": 20},
        "teacher_samples": 2048,
    },
}
