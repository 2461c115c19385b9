"""The diffusion upscaler's network: a fully convolutional diffusers `UNet2DModel` in pixel space.

As Stable Diffusion's x4 upscaler and Imagen's super-resolution stages: the low-resolution image, upsampled
(bicubic) to the output size, is concatenated to the noisy sample, and the level of Gaussian noise added to that
condition ("noise augmentation") is a second input, embedded like the timestep (`class_embed_type="timestep"`).
The network predicts the flow velocity of the *residual* over the bicubic upsampling (minicream/diffusion/upscale.py),
so that a network that has learned nothing returns bicubic. No attention anywhere: it trains on crops and runs on any
size that is a multiple of 2 ** (levels - 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import PretrainedMixin


@dataclass
class UpscalerConfig:
    scale: int = 4  # output side / input side
    channels: tuple[int, ...] = (32, 64, 128)  # per level, from the output resolution down
    layers_per_block: int = 1
    residual_scale: float = 8.0  # the residual (target minus bicubic, in [-1, 1] units) is multiplied by this
    max_noise_level: float = 0.3  # the largest condition noise (std, in [-1, 1] units) seen in training

    @property
    def multiple(self) -> int:
        """Output sides must be multiples of this."""
        return 2 ** (len(self.channels) - 1)


class Upscaler(nn.Module, PretrainedMixin):
    config_class = UpscalerConfig

    def __init__(self, config: UpscalerConfig):
        super().__init__()
        from diffusers import UNet2DModel

        if config.scale < 2 or any(c <= 0 or c % 8 for c in config.channels) or config.layers_per_block < 1:
            raise ValueError(f"scale >= 2, channels multiples of 8 and layers_per_block >= 1 (got {config})")
        self.config = cfg = config
        n = len(cfg.channels)
        self.net = UNet2DModel(
            in_channels=6, out_channels=3, block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
            down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n, add_attention=False,
            class_embed_type="timestep", norm_num_groups=min(32, min(cfg.channels) // 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """x: noisy residual (N, 3, H, W); t in [0, 1] (1 = pure noise); condition: the noise-augmented low-resolution
        image upsampled to (H, W), in [-1, 1]; noise_level: that augmentation's std (N,). Returns the velocity."""
        t = t.reshape(-1).expand(len(x)).float() * 1000
        level = noise_level.reshape(-1).expand(len(x)).float() * 1000
        return self.net(torch.cat([x, condition.to(x.dtype)], dim=1), t, class_labels=level).sample
