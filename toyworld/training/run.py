"""`diffdict toy train`: run the stage table in order; a finished stage is skipped, so a rerun resumes."""

from __future__ import annotations

import json
from dataclasses import asdict

import torch

from diffdict.toyworld.training.config import STAGES, TrainConfig
from diffdict.toyworld.training.context import Context
from diffdict.toyworld.training.stages import STAGE_TABLE
from diffdict.toyworld.training.user_errors import ToyInputError


def train(cfg: TrainConfig) -> None:
    """Run the configured stages in order; finished stages are skipped."""
    unknown = set(cfg.stages) - set(STAGES)
    if unknown:
        raise ToyInputError(f"unknown stage(s) {sorted(unknown)}: choose from {', '.join(STAGES)}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ToyInputError("--device cuda was asked for but no CUDA device is visible: use --device cpu")
    if "export" in cfg.stages:  # before hours of training, not at the last stage
        from diffdict.toyworld.training.export import check_export_target

        check_export_target(cfg.out_dir, cfg.replace_export)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg.work.mkdir(parents=True, exist_ok=True)
    (cfg.work / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    context = Context(cfg)
    for stage in STAGE_TABLE:
        if stage.name not in cfg.stages or not stage.wanted(cfg):
            continue
        final = cfg.work / f"{stage.name}.safetensors"
        if stage.checkpointed and final.exists():
            print(f"[{stage.name}] done already ({final})")
            continue
        stage.run(context)
