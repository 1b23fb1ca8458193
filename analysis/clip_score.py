"""CLIP scores for real models, which have no judge: image-text and image-image similarity.

Uses open-clip-torch. The default is the LAION ViT-B-32 checkpoint (downloaded by open-clip
on first use, on a machine that has the network); tests build a small open-clip model with
random weights (`ClipScorer.random`), which exercises the same code path without a download.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from PIL import Image

if TYPE_CHECKING:
    from open_clip import CLIP, CustomTextCLIP


class ClipScorer:
    """Cosine similarities in CLIP space. Images are PIL images; texts are strings."""

    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, device: str | torch.device = "cpu"):
        # open-clip's factory types its models as nn.Module; they are CLIP or CustomTextCLIP (encode_image/_text)
        self.model = cast("CLIP | CustomTextCLIP", model.eval().to(device))
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = torch.device(device)

    @classmethod
    def pretrained(
        cls, name: str = "ViT-B-32", pretrained: str | None = "laion2b_s34b_b79k", device: str = "cpu"
    ) -> ClipScorer:
        import open_clip

        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
        return cls(model, preprocess, open_clip.get_tokenizer(name), device)

    @classmethod
    def random(cls, seed: int = 0, width: int = 64, image_size: int = 64) -> ClipScorer:
        """A small open-clip model with random weights (no download): for tests and dry runs."""
        import open_clip

        name = f"diffdict-tiny-clip-{width}-{image_size}"
        config = {
            "embed_dim": width,
            "vision_cfg": {"image_size": image_size, "layers": 2, "width": width, "patch_size": 16, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": 2, "layers": 2},
        }
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{name}.json"
            path.write_text(json.dumps(config))
            open_clip.add_model_config(path)
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        return cls(model, preprocess, open_clip.get_tokenizer("ViT-B-32"))

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        """(N, e) unit-norm image embeddings."""
        batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_image(batch).float(), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """(N, e) unit-norm text embeddings."""
        tokens = self.tokenizer(texts).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def image_text(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        """(N,) cosine similarity of image i with text i: edit success on real models."""
        if len(images) != len(texts):
            raise ValueError(f"image_text needs one text per image, got {len(images)} images and {len(texts)} texts")
        return (self.image_embeddings(images) * self.text_embeddings(texts)).sum(-1)

    def image_image(self, images: list[Image.Image], references: list[Image.Image]) -> torch.Tensor:
        """(N,) cosine similarity of image i with reference i: preservation on real models."""
        if len(images) != len(references):
            raise ValueError(f"image_image needs one reference per image, got {len(images)} and {len(references)}")
        return (self.image_embeddings(images) * self.image_embeddings(references)).sum(-1)
