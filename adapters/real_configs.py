"""Denoisers on the meta device, so hook points can be listed without downloading weights.

Each family declares its published denoiser config (family_spec.Family.meta_config); the
builders here make the module from it (or from a local folder's config.json) with meta tensors:
every shape is real, no memory is used.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import MissingFileError
from .family_spec import Family


def meta_denoiser(family: Family, config: dict | None = None, overrides: dict | None = None) -> torch.nn.Module:
    """The family's real denoiser (or one built from `config`), `overrides` applied, with meta tensors."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return family.denoiser_type()(**dict(config or family.meta_config, **(overrides or {})))


def meta_denoiser_from_folder(family: Family, folder: Path) -> tuple[torch.nn.Module, int]:
    """(denoiser on the meta device, VAE scale factor) from a diffusers folder's configs."""
    from accelerate import init_empty_weights

    config_path = folder / family.denoiser_subfolder / "config.json"
    if not config_path.exists():
        raise MissingFileError(
            f"{config_path} is missing: a {family.name} pipeline folder needs {family.denoiser_subfolder}/config.json"
        )
    config = json.loads(config_path.read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    with init_empty_weights():
        denoiser = family.denoiser_type().from_config(config)
    return denoiser, 2 ** (len(vae_config["block_out_channels"]) - 1)
