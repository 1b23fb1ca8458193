"""diffusers calls whose annotations are narrower than what they return or take, read through typed helpers.

- `AutoencoderKL.encode` / `.decode` are typed to return their output class or a tuple (the tuple only with
  return_dict=False, which this code never passes);
- a pipeline call's `.images` is typed as PIL images or an array, whatever output_type asks for (latents here);
- `ModelMixin.to` is wrapped in functools.wraps(torch.nn.Module.to), which a type checker reads as an unbound
  function (the device lands on `self`);
- Flux's pipeline and `AutoencoderKL.decode` name their tensor arguments torch.FloatTensor, which a
  torch.Tensor is not to a type checker.

Each helper does what the plain call does; only the types are said here, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import torch

if TYPE_CHECKING:
    from diffusers import AutoencoderKL
    from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
    from diffusers.models.modeling_outputs import AutoencoderKLOutput

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def posterior(vae: AutoencoderKL, pixels: torch.Tensor) -> DiagonalGaussianDistribution:
    """`vae.encode(pixels).latent_dist`."""
    return cast("AutoencoderKLOutput", vae.encode(pixels)).latent_dist


def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """`vae.decode(latents).sample`: pixels in [-1, 1] (unclamped)."""
    return cast("DecoderOutput", vae.decode(float_tensor(latents))).sample


def latent_images(output: object) -> torch.Tensor:
    """`.images` of a pipeline call with output_type="latent"."""
    images: torch.Tensor = cast(Any, output).images
    return images


def array_images(output: object) -> np.ndarray:
    """`.images` of a pipeline call with output_type="np": (N, H, W, 3) floats in [0, 1]."""
    images: np.ndarray = cast(Any, output).images
    return images


def on_device(module: ModuleT, device: str | torch.device) -> ModuleT:
    """`module.to(device)` (the module itself, moved), typed through torch.nn.Module.to."""
    base: torch.nn.Module = module
    return cast(ModuleT, base.to(device))


def float_tensor(x: torch.Tensor) -> torch.FloatTensor:
    """x as an argument annotated torch.FloatTensor (no conversion: the tensor itself)."""
    return cast(torch.FloatTensor, x)
