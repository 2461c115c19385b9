"""mini-CLIP: a small contrastive image-text model trained with locked-text tuning (LiT, Zhai et al. 2022).

Text tower: the frozen MiniLM the generator uses (its pooled sentence vector, computed once and cached)
plus a trainable MLP projection. Image tower: a small CNN trained from scratch on 64 px RGB. Both map
into one L2-normalised space; a learnable temperature scales the cosine logits of the InfoNCE loss.

Two image towers exist so that prompt adherence can be judged by a model that did not do the
reranking: "resnet" (the evaluator: residual stages, GroupNorm, strided convs) and "plain" (the judge:
VGG-style conv-conv-maxpool stacks without residuals, different widths and seed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MinicreamError
from ..models.base import PretrainedMixin

ARCHS = ("resnet", "plain")


@dataclass
class EvaluatorConfig:
    arch: str = "resnet"  # image tower: "resnet" (evaluator) or "plain" (VGG-style; the separate judge)
    channels: tuple = (32, 64, 128, 192)  # one stage per entry; each halves the resolution
    image_size: int = 64  # input resolution; other sizes are resized to it
    text_dim: int = 384  # MiniLM pooled size
    text_hidden: int = 512  # hidden width of the text projection MLP
    embed_dim: int = 192  # joint embedding size
    init_temperature: float = 0.07  # CLIP's initial softmax temperature

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if not self.channels or any(int(c) < 1 for c in self.channels):
            raise ValueError(f"channels must be positive integers, got {self.channels!r}")


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class ResStage(nn.Module):
    """Strided conv (downsample) followed by one pre-activation residual block."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.down = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.block = nn.Sequential(_norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1),
                                   _norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))

    def forward(self, x):
        x = self.down(x)
        return x + self.block(x)


class PlainStage(nn.Module):
    """(conv-norm-ReLU) x 2, then max-pool: VGG style, no residuals."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), _norm(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, padding=1), _norm(cout), nn.ReLU(), nn.MaxPool2d(2))

    def forward(self, x):
        return self.body(x)


class ImageTower(nn.Module):
    def __init__(self, cfg: EvaluatorConfig):
        super().__init__()
        stage = ResStage if cfg.arch == "resnet" else PlainStage
        chans = [int(c) for c in cfg.channels]
        # plain: a strided 4x4 stem (32 px), since its stages convolve before pooling; resnet strides in its stages
        self.stem = nn.Conv2d(3, chans[0], 3, padding=1) if cfg.arch == "resnet" else nn.Conv2d(3, chans[0], 4, stride=2, padding=1)
        self.stages = nn.Sequential(*[stage(a, b) for a, b in zip([chans[0]] + chans[:-1], chans)])
        self.head_norm = nn.LayerNorm(chans[-1])
        self.proj = nn.Linear(chans[-1], cfg.embed_dim)

    def forward(self, x):  # x: (B, 3, S, S) in [-1, 1]
        h = self.stages(F.silu(self.stem(x)))  # (B, C, S/2^k, S/2^k)
        h = h.mean(dim=(2, 3))  # global average pool -> (B, C)
        return self.proj(self.head_norm(h))

    def grid(self, x):
        """The last stage's map before pooling, each cell normalised as the pooled vector is: (B, cells, C)."""
        return self.head_norm(self.stages(F.silu(self.stem(x))).flatten(2).transpose(1, 2))


class MiniCLIP(nn.Module, PretrainedMixin):
    config_class = EvaluatorConfig

    def __init__(self, config: EvaluatorConfig):
        super().__init__()
        self.config = config
        self.image_tower = ImageTower(config)
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, config.text_hidden), nn.GELU(),
                                       nn.Linear(config.text_hidden, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) in 0..255, or float in [0, 1] -> float in [-1, 1] at the tower's resolution."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise MinicreamError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        s = self.config.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return x * 2 - 1

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed images -> L2-normalised embeddings (B, E)."""
        return F.normalize(self.image_tower(x).float(), dim=-1)

    def encode_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """MiniLM pooled vectors (B, 384) -> L2-normalised embeddings (B, E)."""
        return F.normalize(self.text_proj(pooled.to(self.text_proj[0].weight.dtype)).float(), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.float().clamp(max=math.log(100.0)).exp()  # CLIP clamps the scale at 100
