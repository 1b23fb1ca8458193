"""What the training stages share: the config, the rendered data and the encoded latents."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from diffdict.dictionaries.atomic import write_json_atomic
from diffdict.toyworld.training import models
from diffdict.toyworld.training.checkpoints import load_final, save_tensors_atomic
from diffdict.toyworld.training.config import TrainConfig
from diffdict.toyworld.training.data import SceneData, build_scene_data, step_generator
from diffdict.toyworld.training.diffusers_calls import on_device, posterior


@dataclass
class LatentStore:
    """Posterior mean/std of every training image; samples normalised latents."""

    mean: torch.Tensor  # (N, C, h, w): sdxl (N, 4, 32, 32), flux (N, 16, 16, 16)
    std: torch.Tensor  # (N, C, h, w)
    scale: float
    shift: float

    def sample(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mean, std = self.mean[index], self.std[index]
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        return (mean + std * noise - self.shift) * self.scale


class Context:
    """What the stages share: config, data and latents, each built once on first use."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self._data: SceneData | None = None
        self._latents: dict[str, LatentStore] = {}

    @property
    def data(self) -> SceneData:
        if self._data is None:
            self._data = build_scene_data(self.cfg.n_scenes, self.cfg.seed, self.cfg.progress).to(self.cfg.device)
        return self._data

    def generator(self, stage: str, step: int) -> torch.Generator:
        return step_generator(self.cfg.seed, stage, step, self.cfg.device)

    def batch_index(self, stage: str, generator: torch.Generator, n: int | None = None) -> torch.Tensor:
        return torch.randint(n or len(self.data), (self.cfg.batch[stage],), generator=generator, device=self.cfg.device)

    def trained_vae(self, family: str):
        vae = models.family_vae(family)
        load_final(self.cfg.work / f"vae_{family}.safetensors", {"vae": vae})
        return on_device(vae, self.cfg.device).eval().requires_grad_(False)

    def latents(self, family: str) -> LatentStore:
        """Encode the data once with the trained VAE (cached in the work dir); SDXL gets a
        scale, Flux a shift too."""
        if family not in self._latents:
            cached = self.cfg.work / f"latents_{family}_{self.cfg.seed}_{self.cfg.n_scenes}.safetensors"
            stats_path = self.cfg.work / f"vae_{family}_stats.json"
            if cached.exists():  # written after its stats, from the finished VAE: both are final
                tensors = load_file(str(cached))
                mean, std = tensors["mean"].to(self.cfg.device), tensors["std"].to(self.cfg.device)
                stats = json.loads(stats_path.read_text())
            else:
                mean, std = self._encode(family)
                shift = float(mean.mean()) if family == "flux" else 0.0
                spread = float(((mean - shift) ** 2 + std**2).mean().sqrt())
                stats = {"scaling_factor": 1.0 / spread, "shift_factor": shift}
                write_json_atomic(stats_path, stats)
                save_tensors_atomic({"mean": mean, "std": std}, cached)
            self._latents[family] = LatentStore(mean, std, scale=stats["scaling_factor"], shift=stats["shift_factor"])
        return self._latents[family]

    def _encode(self, family: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean, std) of every training image, each (N, C, h, w)."""
        vae, means, stds = self.trained_vae(family), [], []
        with torch.no_grad():
            for start in tqdm(
                range(0, len(self.data), 512),
                desc=f"encode latents ({family})",
                disable=not self.cfg.progress,
                mininterval=5,
            ):
                rows = torch.arange(start, min(start + 512, len(self.data)), device=self.cfg.device)
                latent_dist = posterior(vae, self.data.pixels(rows))
                means.append(latent_dist.mean)
                stds.append(latent_dist.std)
        return torch.cat(means), torch.cat(stds)
