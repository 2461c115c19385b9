"""Inference with a trained mini-CLIP: image/text features, prompt scores and zero-shot class probabilities."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import MinicreamError
from ..models.base import WEIGHTS_NAME
from ..text.encoder import TextEncoder
from .model import MiniCLIP

EVALUATOR_DIR = "evaluator"  # subfolder of a model directory


def to_uint8(images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
    """PIL images (all one size) or a (B, 3, H, W) tensor -> uint8 (B, 3, H, W)."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
        return images
    images = list(images)
    if not images:
        raise MinicreamError("no images to score")
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise MinicreamError(f"images have different sizes {sorted(sizes)}; give images of one size")
    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


class Evaluator:
    """A MiniCLIP plus the frozen MiniLM that feeds its text tower."""

    def __init__(self, model: MiniCLIP, text_encoder: TextEncoder):
        self.model, self.text_encoder = model.float().eval(), text_encoder
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_pretrained(cls, directory: str | Path, text_encoder: TextEncoder | None = None) -> "Evaluator":
        directory = Path(directory)
        if not (directory / WEIGHTS_NAME).is_file():
            raise MinicreamError(f"{directory}: no evaluator weights ({WEIGHTS_NAME}); train one with `minicream train-evaluator`")
        model = MiniCLIP.from_pretrained(directory)
        return cls(model, text_encoder or TextEncoder.load(None, max_length=24))

    @torch.no_grad()
    def image_features(self, images, batch_size: int = 256) -> torch.Tensor:
        """L2-normalised image embeddings (N, E), float32."""
        x = to_uint8(images)
        m = self.model
        return torch.cat([m.encode_image(m.preprocess(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def image_grid(self, images, batch_size: int = 256) -> torch.Tensor:
        """The image tower's last feature map per image, (N, cells, C) float32 (4x4 cells at 64 px): where things are,
        which the pooled embedding averages away (the image-prompt adapter's detail tokens)."""
        x = to_uint8(images)
        m = self.model
        return torch.cat([m.image_tower.grid(m.preprocess(x[i:i + batch_size])).float() for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N, E); each distinct text is encoded once per Evaluator."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            pooled = self.text_encoder.encode(missing).pooled.float().cpu()
            for t, f in zip(missing, self.model.encode_text(pooled)):
                self._text_cache[t] = f
        return torch.stack([self._text_cache[t] for t in texts])

    def score(self, images, prompts: str | Sequence[str]) -> torch.Tensor:
        """Cosine similarity of each image with its prompt (one prompt for all, or one per image): (N,)."""
        img = self.image_features(images)
        prompts = [prompts] * len(img) if isinstance(prompts, str) else list(prompts)
        if len(prompts) != len(img):
            raise MinicreamError(f"got {len(prompts)} prompts for {len(img)} images")
        return (img * self.text_features(prompts)).sum(dim=-1)

    def class_probs(self, images, labels: Sequence[str], features: torch.Tensor | None = None) -> torch.Tensor:
        """Zero-shot softmax over `labels` (the learnt temperature): (N, len(labels))."""
        img = features if features is not None else self.image_features(images)
        logits = self.model.scale().detach() * img @ self.text_features(list(labels)).t()
        return logits.softmax(dim=-1)
