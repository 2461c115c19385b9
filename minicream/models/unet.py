"""The denoiser: a text-conditioned UNet with a routed mixture-of-experts feed-forward in its mid block.

    latents (B,4,16,16) --2x2 patches--> level 0 (8x8, ResBlock + transformer)
        --down--> level 1 (4x4, ResBlock + transformer)
        --> mid (ResBlock, transformer whose FF is the MoE, ResBlock) --> mirrored up path with skips
        --> conv_out + pixel shuffle back to (B,4,16,16)

Conditioning is one dict: `emb` (timestep embedding + projected pooled text embedding, drives every
ResBlock's scale/shift and the timestep router), `context`/`mask` (per-token text states for
cross-attention). The pooled path gives every block the prompt from step one, which is what makes a
small model learn *which* object to draw within a CPU-sized budget.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import PretrainedMixin
from .conv import Conv3x3
from .layers import Downsample, FeedForward, ResBlock, TransformerBlock, Upsample, group_norm, timestep_embedding, zero_init
from .moe import MoEFeedForward


@dataclass
class UNetConfig:
    in_channels: int = 4
    sample_size: int = 16
    patch_size: int = 2  # 2x2 latent patches -> the UNet's top level is 8x8 (as DiT's patch 2); 1 = none
    channels: tuple[int, ...] = (128, 256)
    layers_per_block: int = 2
    attention: tuple[bool, ...] = (True, True)  # per level; attention is only worth it at low resolution
    head_dim: int = 64
    context_dim: int = 384  # text encoder hidden size
    pooled_dim: int = 384
    ff_mult: int = 4
    moe: str = "token"  # "token" | "timestep" | "none" (dense FF with the same active parameters)
    num_experts: int = 4
    top_k: int = 1
    arch: str = "minicream"  # "minicream" (this module) | "diffusers" (stock UNet2DConditionModel, models/stock_unet.py)

    def __post_init__(self):
        self.channels, self.attention = tuple(self.channels), tuple(self.attention)
        if len(self.channels) != len(self.attention):
            raise ValueError("channels and attention must have one entry per level")
        if self.moe not in ("token", "timestep", "none"):
            raise ValueError(f"moe must be 'token', 'timestep' or 'none', got {self.moe!r}")
        if self.arch not in ("minicream", "diffusers"):
            raise ValueError(f"arch must be 'minicream' or 'diffusers', got {self.arch!r}")


class Stage(nn.Module):
    """One ResBlock optionally followed by a transformer block."""

    def __init__(self, cin: int, cout: int, emb_dim: int, cfg: UNetConfig, attn: bool):
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim)
        ff = FeedForward(cout, cfg.ff_mult * cout)
        self.attn = TransformerBlock(cout, cfg.context_dim, cout // cfg.head_dim, ff) if attn else None

    def forward(self, x, cond):
        x = self.res(x, cond["emb"])
        return self.attn(x, cond) if self.attn is not None else x


class MoEUNet(nn.Module, PretrainedMixin):
    config_class = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        ch = cfg.channels
        emb_dim = 4 * ch[0]
        self.time_mlp = nn.Sequential(nn.Linear(ch[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.text_mlp = nn.Sequential(nn.Linear(cfg.pooled_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        p = cfg.patch_size
        self.context_norm = nn.LayerNorm(cfg.context_dim)
        self.conv_in = Conv3x3(cfg.in_channels, ch[0]) if p == 1 else nn.Conv2d(cfg.in_channels, ch[0], p, stride=p)

        self.down, skip_ch, c = nn.ModuleList(), [ch[0]], ch[0]
        for i, (cout, attn) in enumerate(zip(ch, cfg.attention)):
            for _ in range(cfg.layers_per_block):
                self.down.append(Stage(c, cout, emb_dim, cfg, attn))
                c = cout
                skip_ch.append(c)
            if i < len(ch) - 1:
                self.down.append(Downsample(c, c))
                skip_ch.append(c)
        self.skip_channels = tuple(skip_ch)  # what each skip connection carries (a ControlNet adds to each)

        c_mid = ch[-1]
        self.mid_res1 = ResBlock(c_mid, c_mid, emb_dim)
        hidden = cfg.ff_mult * c_mid
        if cfg.moe == "none":
            mid_ff = FeedForward(c_mid, cfg.top_k * hidden)  # dense twin: same active parameters per token
        else:
            mid_ff = MoEFeedForward(c_mid, hidden, cfg.num_experts, cfg.top_k, cfg.moe, emb_dim)
        self.mid_attn = TransformerBlock(c_mid, cfg.context_dim, c_mid // cfg.head_dim, mid_ff)
        self.mid_res2 = ResBlock(c_mid, c_mid, emb_dim)

        self.up = nn.ModuleList()
        for i in reversed(range(len(ch))):
            for _ in range(cfg.layers_per_block + 1):
                self.up.append(Stage(c + skip_ch.pop(), ch[i], emb_dim, cfg, cfg.attention[i]))
                c = ch[i]
            if i > 0:
                self.up.append(Upsample(c, c))
        self.norm_out = group_norm(c)
        self.conv_out = zero_init(Conv3x3(c, cfg.in_channels * p * p))

    @property
    def moe_layers(self) -> list[MoEFeedForward]:
        return [m for m in self.modules() if isinstance(m, MoEFeedForward)]

    def conditioning(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, mask: torch.Tensor,
                     pooled: torch.Tensor, moe_stats: list | None = None) -> dict:
        """The blocks' conditioning dict (see the module docstring); a ControlNet computes its own with its copies of
        time_mlp, text_mlp and context_norm (models/controlnet.py)."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        # The pooled sentence embedding has unit norm, i.e. ~0.05 per element: rescale it to unit variance per
        # element, or the prompt is a whisper next to the timestep signal and the model learns to ignore it.
        pooled = F.normalize(pooled.float(), dim=-1) * pooled.shape[-1] ** 0.5
        emb = self.time_mlp(timestep_embedding(t, self.config.channels[0]).to(x.dtype)) + self.text_mlp(pooled.to(x.dtype))
        return {"emb": emb, "context": self.context_norm(context.to(x.dtype)), "mask": mask, "moe_stats": moe_stats}

    def encode(self, x: torch.Tensor, cond: dict, hint: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The down path and the mid block: (the skip activations, the mid block's output). `hint`: a ControlNet's
        encoded structure image, added after conv_in."""
        h = self.conv_in(x)
        if hint is not None:
            h = h + hint
        skips = [h]
        for block in self.down:
            h = block(h) if isinstance(block, Downsample) else block(h, cond)
            skips.append(h)
        emb = cond["emb"]
        return skips, self.mid_res2(self.mid_attn(self.mid_res1(h, emb), cond), emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor,
                moe_stats: list | None = None, control: tuple[list[torch.Tensor], torch.Tensor] | None = None,
                image=None) -> torch.Tensor:
        """x (B,C,H,W) noisy latents; t (B,) timesteps in [0,1000); context (B,T,D); mask (B,T) bool; pooled (B,D).
        moe_stats: a list that receives one `MoEStats` per MoE layer (the training loss's balance terms and the
        expert usage it logs); None, as at inference, measures nothing.
        control: a ControlNet's residuals (one per skip, one for the mid block), added to them (models/controlnet.py).
        image: an image prompt's ImageCondition (models/image_adapter.py): added to the conditioning vector, and
        attended by every transformer block beside the text."""
        cond = self.conditioning(x, t, context, mask, pooled, moe_stats)
        if image is not None:
            cond["emb"] = cond["emb"] + image.emb.to(cond["emb"].dtype)
            cond["image"] = image
        skips, h = self.encode(x, cond)
        if control is not None:
            residuals, mid = control
            skips = [s + r.to(s.dtype) for s, r in zip(skips, residuals)]
            h = h + mid.to(h.dtype)
        for block in self.up:
            h = block(h) if isinstance(block, Upsample) else block(torch.cat([h, skips.pop()], dim=1), cond)
        return F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(h))), self.config.patch_size)
