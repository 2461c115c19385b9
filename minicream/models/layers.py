"""Building blocks of the denoiser: ResNet block, attention, transformer block, timestep embedding.

Written for a CPU with bf16 matrix units: everything is a conv or a matmul, attention is only used at
8x8 and 4x4 (64 and 16 tokens, where an explicit softmax(QK^T)V beats the flash kernel on CPU), and
output projections are zero-initialised so each block starts as the identity.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .conv import Conv3x3


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps in [0, 1000). (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm that normalises channels-last CPU tensors in the contiguous layout when groups are narrow.

    PyTorch's CPU GroupNorm kernel for channels-last input is several times slower than for contiguous input when a
    group holds few channels (measured at the UNet's shapes: 128 channels in 32 groups, bf16, batch 48 at 8x8:
    2.6 ms channels-last vs 0.6 ms contiguous forward, copies included); with 16 or more channels per group the
    channels-last kernel is the faster one. Same parameters, same result up to summation order.
    """

    contiguous_below = 16  # channels per group under which the contiguous layout is used; 0 = never (for A/B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dim() == 4 and self.num_channels // self.num_groups < self.contiguous_below
                and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


def group_norm(channels: int) -> nn.GroupNorm:
    return GroupNorm(min(32, channels // 4), channels, eps=1e-6)


class ResBlock(nn.Module):
    """GN-SiLU-conv, scale-shift by the conditioning vector, GN-SiLU-conv, plus a (1x1) skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = Conv3x3(cin, cout)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = group_norm(cout)
        self.conv2 = zero_init(Conv3x3(cout, cout))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over (B, heads, T, d); mask (B, S) True = attend.

    Explicit matmuls: for the 16-64 query tokens used here this runs on the AMX GEMM path in both
    directions, where PyTorch's CPU flash kernel spent ~40% of a training step in its backward.
    """
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1) @ v


class Attention(nn.Module):
    def __init__(self, dim: int, context_dim: int | None = None, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.to_out = zero_init(nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                extra: list | None = None):
        """extra: (k, v, weight, mask) per further set of keys and values (image prompts' tokens, models/image_adapter.py),
        each attended by the same queries and added, times weight, before the output projection (decoupled attention)."""
        B, T, C = x.shape
        context = x if context is None else context
        q = self.to_q(x).view(B, T, self.heads, -1).transpose(1, 2)  # (B, h, T, d)
        k, v = self.to_kv(context).view(B, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, mask)
        for k2, v2, weight, mask2 in extra or ():
            out = out + weight.to(out.dtype) * attention(q, k2.to(q.dtype), v2.to(q.dtype), mask2)
        return self.to_out(out.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    """GELU MLP; the dense counterpart of one mixture-of-experts expert."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), zero_init(nn.Linear(hidden, dim)))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, stats: list | None = None) -> torch.Tensor:
        return self.net(x)  # a dense layer has nothing to report in `stats`


class TransformerBlock(nn.Module):
    """Spatial transformer: self-attention, cross-attention to the text tokens, feed-forward (dense or MoE)."""

    def __init__(self, channels: int, context_dim: int, heads: int, ff: nn.Module):
        super().__init__()
        self.norm_in = group_norm(channels)
        self.proj_in = nn.Linear(channels, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.attn1 = Attention(channels, heads=heads)
        self.norm2 = nn.LayerNorm(channels)
        self.attn2 = Attention(channels, context_dim, heads=heads)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = ff
        self.proj_out = zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, cond: dict) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.proj_in(self.norm_in(x).flatten(2).transpose(1, 2))  # (B, HW, C)
        h = h + self.attn1(self.norm1(h))
        image = cond.get("image")  # an image prompt's keys and values for this block (models/image_adapter.py)
        h = h + self.attn2(self.norm2(h), cond["context"], cond["mask"], None if image is None else image.kv.get(self))
        h = h + self.ff(self.norm3(h), cond["emb"], cond.get("moe_stats"))
        h = self.proj_out(h).transpose(1, 2).reshape(B, C, H, W)
        return x + h


class Downsample(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = Conv3x3(cin, cout)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
