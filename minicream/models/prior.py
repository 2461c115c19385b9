"""The prior: text -> image embedding (DALL-E 2's and Kandinsky 2.2's prior), a small flow-matching network over the
evaluator's joint space.

    noised embedding x_t (B, E), t in [0, 1], the prompt's pooled MiniLM vector (B, 384)
        --> linear to `width` --> `depth` residual MLP blocks, each modulated (scale, shift, gate: adaLN, as DiT) by
            the timestep's and the text's embedding --> LayerNorm --> zero-initialised linear --> velocity (B, E)

Trained with the rectified-flow objective (x_t = (1 - t) x0 + t noise, target noise - x0) on the dataset's (caption,
image embedding) pairs, with a share of captions dropped for classifier-free guidance; sampled with Euler steps from
t = 1 to 0. Its output, renormalised, is an image embedding the image-prompt adapter draws from.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import PretrainedMixin
from .layers import timestep_embedding, zero_init


@dataclass
class PriorConfig:
    embed_dim: int = 192  # the image embedding (the evaluator's joint space)
    text_dim: int = 384  # the text encoder's pooled vector
    width: int = 256
    depth: int = 4

    def __post_init__(self):
        if min(self.embed_dim, self.text_dim, self.width, self.depth) < 1:
            raise ValueError("embed_dim, text_dim, width and depth must be positive")


class PriorBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mod = zero_init(nn.Linear(width, 3 * width))  # scale, shift, gate: the block starts as the identity
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift, gate = self.mod(c).chunk(3, dim=-1)
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class EmbeddingPrior(nn.Module, PretrainedMixin):
    config_class = PriorConfig

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = cfg = config
        self.in_proj = nn.Linear(cfg.embed_dim, cfg.width)
        self.time_mlp = nn.Sequential(nn.Linear(cfg.width, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width))
        self.text_mlp = nn.Sequential(nn.Linear(cfg.text_dim, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width))
        self.blocks = nn.ModuleList(PriorBlock(cfg.width) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.width)
        self.out = zero_init(nn.Linear(cfg.width, cfg.embed_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """x (B, E) noised embeddings (unit variance per element at t = 1); t (B,) in [0, 1]; pooled (B, text_dim)."""
        dtype = self.in_proj.weight.dtype
        pooled = F.normalize(pooled.float(), dim=-1) * pooled.shape[-1] ** 0.5  # unit variance per element
        c = F.silu(self.time_mlp(timestep_embedding(t * 1000, self.config.width).to(dtype)) + self.text_mlp(pooled.to(dtype)))
        h = self.in_proj(x.to(dtype))
        for block in self.blocks:
            h = block(h, c)
        return self.out(self.norm_out(h))


def to_prior_space(embeds: torch.Tensor) -> torch.Tensor:
    """Unit-norm image embeddings -> the prior's targets (unit variance per element, as its noise)."""
    return F.normalize(embeds.float(), dim=-1) * embeds.shape[-1] ** 0.5


def flow_loss(prior: EmbeddingPrior, embeds: torch.Tensor, pooled: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rectified flow: x_t = (1 - t) x0 + t noise, the network's velocity against noise - x0 (mean squared error)."""
    x0 = to_prior_space(embeds)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    t = torch.rand(len(x0), generator=gen).to(x0.device)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * noise
    return F.mse_loss(prior(x_t, t, pooled).float(), noise - x0)


@torch.no_grad()
def sample_prior(prior: EmbeddingPrior, pooled: torch.Tensor, null_pooled: torch.Tensor, generators: list[torch.Generator],
                 steps: int = 25, guidance: float = 4.0) -> torch.Tensor:
    """Unit-norm image embeddings (B, E) for the prompts' pooled vectors (B, text_dim): Euler steps from t = 1 to 0 with
    classifier-free guidance against `null_pooled` (the empty prompt's, (1, text_dim)); one generator per row."""
    E = prior.config.embed_dim
    x = torch.stack([torch.randn(E, generator=g) for g in generators]).to(pooled.device)
    both = torch.cat([null_pooled.expand(len(x), -1), pooled])
    ts = torch.linspace(1.0, 0.0, steps + 1)
    for t0, t1 in zip(ts[:-1], ts[1:]):
        v_uncond, v_cond = prior(torch.cat([x, x]), torch.full((2 * len(x),), float(t0)), both).float().chunk(2)
        x = x + (t1 - t0) * (v_uncond + guidance * (v_cond - v_uncond))
    return F.normalize(x, dim=-1)


__all__ = ["EmbeddingPrior", "PriorConfig", "flow_loss", "sample_prior", "to_prior_space"]
