"""The stock diffusers `UNet2DConditionModel` behind minicream's calling convention: the baseline that the
performance issue measures the reference UNet against ("quality per CPU-minute"), trainable by the same
recipe (`unet.model.arch = "diffusers"`) and loadable by the same Pipeline.

It has no pooled-text input (Stable Diffusion 1.x's UNet has none), no patching and no mixture of experts;
`channels`, `layers_per_block`, `attention` (cross-attention blocks per level), `head_dim` and
`context_dim` of UNetConfig map onto diffusers' arguments, the rest is ignored.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import PretrainedMixin
from .unet import UNetConfig


class StockUNet(nn.Module, PretrainedMixin):
    config_class = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.config = cfg = config
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
        self.net = UNet2DConditionModel(
            sample_size=cfg.sample_size, in_channels=cfg.in_channels, out_channels=cfg.in_channels,
            layers_per_block=cfg.layers_per_block, block_out_channels=cfg.channels, down_block_types=down,
            up_block_types=up, cross_attention_dim=cfg.context_dim, attention_head_dim=cfg.head_dim,
            norm_num_groups=min(32, min(cfg.channels)))

    @property
    def moe_layers(self) -> list:
        return []

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor,
                moe_stats: list | None = None) -> torch.Tensor:
        """As MoEUNet.forward; with no mixture of experts it adds nothing to `moe_stats`."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return self.net(x, t, encoder_hidden_states=context.to(x.dtype), encoder_attention_mask=mask).sample
