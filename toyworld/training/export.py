"""Training checkpoints -> the fp16 diffusers pipeline folders that ship (the export stage)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffdict.dictionaries.atomic import write_dir_atomic
from diffdict.toyworld.training import models
from diffdict.toyworld.training.checkpoints import load_final
from diffdict.toyworld.training.context import Context
from diffdict.toyworld.training.user_errors import ToyInputError


def vae_stats(ctx: Context, family: str) -> dict:
    path = ctx.cfg.work / f"vae_{family}_stats.json"
    if not path.exists():
        ctx.latents(family)
    return json.loads(path.read_text())


def export_sdxl(ctx: Context, turbo: bool, dtype: torch.dtype = torch.float16):
    pipe = models.sdxl_pipeline(turbo=turbo)
    load_final(ctx.cfg.work / "vae_sdxl.safetensors", {"vae": pipe.vae})
    parts = {"unet": pipe.unet, "text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2}
    load_final(ctx.cfg.work / "base.safetensors", parts)
    if turbo:
        load_final(ctx.cfg.work / "turbo.safetensors", {"unet": pipe.unet})
    pipe.vae.register_to_config(scaling_factor=vae_stats(ctx, "sdxl")["scaling_factor"])
    return pipe.to(dtype=dtype)


def export_flux(ctx: Context, dtype: torch.dtype = torch.float16, distilled: bool = True):
    """The toy Flux pipeline; its transformer from the flux_distill stage when that has run
    (unless distilled=False, which gives the guided teacher)."""
    pipe = models.flux_pipeline()
    load_final(ctx.cfg.work / "vae_flux.safetensors", {"vae": pipe.vae})
    load_final(
        ctx.cfg.work / "flux.safetensors",
        {"transformer": pipe.transformer, "text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2},
    )
    if distilled and (ctx.cfg.work / "flux_distill.safetensors").exists():
        load_final(ctx.cfg.work / "flux_distill.safetensors", {"transformer": pipe.transformer})
    pipe.vae.register_to_config(**vae_stats(ctx, "flux"))
    return pipe.to(dtype=dtype)


PIPELINES = ("sdxl-base", "sdxl-turbo", "flux")  # the folders the export writes into out_dir


def occupied_pipelines(out_dir: str | Path) -> list[Path]:
    """The pipeline folders of `out_dir` that exist and hold files (an export would replace them)."""
    folders = [Path(out_dir) / name for name in PIPELINES]
    return [f for f in folders if f.exists() and (not f.is_dir() or any(f.iterdir()))]


def check_export_target(out_dir: str | Path, replace: bool) -> None:
    """Refuse to replace existing pipeline folders unless asked (`--force`); called before training starts,
    so a long run is not refused at its last stage, and again by the export itself."""
    occupied = occupied_pipelines(out_dir)
    if occupied and not replace:
        raise ToyInputError(
            f"--out-dir {out_dir} already holds {', '.join(f.name for f in occupied)}, which the "
            f"export stage would replace (shipped or earlier weights); choose another --out-dir, or "
            f"pass --force to replace them"
        )


def _save(pipe, folder: Path, defaults: dict) -> None:
    """Write the pipeline into a temporary folder and swap it in: a killed export leaves the old folder."""

    def write(tmp: Path) -> None:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "diffdict.json").write_text(json.dumps(defaults, indent=2) + "\n")

    if folder.exists() and not folder.is_dir():
        raise ToyInputError(f"{folder} is a file where the export writes a pipeline folder; move it away")
    write_dir_atomic(folder, write)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"[export] {folder}: {size / 2**20:.1f} MiB")


def run_export(ctx: Context) -> None:
    cfg, out = ctx.cfg, Path(ctx.cfg.out_dir)
    check_export_target(out, cfg.replace_export)
    size = {"height": 64, "width": 64}
    if (cfg.work / "base.safetensors").exists():
        _save(
            export_sdxl(ctx, turbo=False),
            out / "sdxl-base",
            {"steps": cfg.base_steps, "guidance": cfg.base_guidance, **size},
        )
    if (cfg.work / "turbo.safetensors").exists():
        _save(export_sdxl(ctx, turbo=True), out / "sdxl-turbo", {"steps": 1, "guidance": 0.0, **size})
    if (cfg.work / "flux.safetensors").exists():
        _save(
            export_flux(ctx),
            out / "flux",
            {"steps": cfg.flux_steps, "guidance": 0.0, **size, "max_sequence_length": models.MAX_TOKENS},
        )
