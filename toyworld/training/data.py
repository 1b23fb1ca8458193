"""Training data for the toy models: rendered scenes and their caption token ids, in memory.

Everything is rebuilt deterministically from the seed (rendering 50k scenes takes about
half a minute), so checkpoints never need to carry data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from diffdict.toyworld.render import render
from diffdict.toyworld.scenes import train_scene
from diffdict.toyworld.training.models import token_ids, tokenizer


@dataclass
class SceneData:
    images: torch.Tensor  # (N, 3, 64, 64) uint8
    ids: torch.Tensor  # (N, MAX_TOKENS) int64, padded caption token ids
    empty_ids: torch.Tensor  # (MAX_TOKENS,) ids of the empty caption (for caption dropout)

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: str | torch.device) -> SceneData:
        return SceneData(self.images.to(device), self.ids.to(device), self.empty_ids.to(device))

    def pixels(self, index: torch.Tensor) -> torch.Tensor:
        """(B, 3, 64, 64) float in [-1, 1], the VAE's input range."""
        return self.images[index].float() / 127.5 - 1.0

    def object_mask(self, index: torch.Tensor, latent_side: int) -> torch.Tensor:
        """(B, 1, latent_side, latent_side) float: 1 where any pixel differs from the top-left one.

        No object reaches the top-left pixel (every anchor is at least 12 px from one of the two
        edges it would need to touch), so every object cell is marked. So are the background's
        pattern blocks (or, when the top-left pixel is in a block, the plain pixels between them):
        the pattern, a fine texture over most of the image, is weighted as objects are.
        """
        images = self.images[index]
        foreground = (images != images[:, :, :1, :1]).any(dim=1, keepdim=True).float()
        return torch.nn.functional.adaptive_max_pool2d(foreground, latent_side)


def training_scene(seed: int, index: int):
    """Row `index` of the training data of run `seed` (never a held-out caption)."""
    return train_scene(seed * 10**7 + index)


def build_scene_data(n_scenes: int, seed: int, progress: bool = True) -> SceneData:
    """Render training scenes 0..n-1 of run `seed` (see training_scene)."""
    tok = tokenizer()
    images = np.empty((n_scenes, 64, 64, 3), dtype=np.uint8)
    captions = []
    for i in tqdm(range(n_scenes), desc="render scenes", disable=not progress, mininterval=2):
        scene = training_scene(seed, i)
        images[i] = render(scene).image
        captions.append(scene.caption)
    ids = torch.cat([token_ids(tok, captions[i : i + 4096]) for i in range(0, n_scenes, 4096)])
    return SceneData(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        ids=ids,
        empty_ids=token_ids(tok, [""])[0],
    )


def step_generator(seed: int, stage: str, step: int, device: str | torch.device) -> torch.Generator:
    """The random stream of one training step: resuming at any step replays it exactly."""
    stage_code = sum(ord(c) * 31**i for i, c in enumerate(stage)) % 10**6
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 10**6 + stage_code) * 10**7 + step)
    return generator
