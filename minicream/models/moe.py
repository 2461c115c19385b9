"""Routed mixture-of-experts feed-forward for the UNet's mid block (Switch/GShard style).

E experts, each a GELU MLP; a router picks the top-k experts per token (router="token") or per
sample from the timestep/conditioning embedding (router="timestep": experts specialise by noise
level, as in eDiff-I/RAPHAEL). Given a list to collect into (training), the forward appends a `MoEStats`: the
load-balancing loss (Switch Transformer, E * sum_e f_e * P_e), the router z-loss (ST-MoE, mean logsumexp^2) and how
many tokens each expert received. Nothing is kept on the module, and without a list (inference) nothing is computed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FeedForward


@dataclass(frozen=True)
class MoEStats:
    """What one MoE layer measured in one forward."""
    aux_loss: torch.Tensor  # Switch balance loss, 1 when routing is uniform (differentiable)
    z_loss: torch.Tensor  # router z-loss (differentiable)
    counts: torch.Tensor  # (E,) routed token slots per expert (detached)


def summarize(stats: list[MoEStats]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The records of one forward pass (or of several, e.g. gradient accumulation): the mean balance loss, the mean
    z-loss, and the counts per layer and expert (L, E)."""
    n = len(stats)
    return (sum(s.aux_loss for s in stats) / n, sum(s.z_loss for s in stats) / n,
            torch.stack([s.counts for s in stats]))


class MoEFeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, num_experts: int = 4, top_k: int = 1, router: str = "token", emb_dim: int | None = None):
        super().__init__()
        if router not in ("token", "timestep"):
            raise ValueError(f"router must be 'token' or 'timestep', got {router!r}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in 1..{num_experts}, got {top_k}")
        self.num_experts, self.top_k, self.router_kind = num_experts, top_k, router
        self.router = nn.Linear(dim if router == "token" else emb_dim, num_experts, bias=False)
        nn.init.normal_(self.router.weight, std=0.02)
        self.experts = nn.ModuleList(FeedForward(dim, hidden) for _ in range(num_experts))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, stats: list | None = None) -> torch.Tensor:
        """x (B, T, C); emb (B, D) for the timestep router; stats: a list to append this call's MoEStats to."""
        B, T, C = x.shape
        if self.router_kind == "token":
            logits = self.router(x).float()  # (B, T, E)
        else:
            logits = self.router(emb).float()[:, None, :].expand(B, T, -1)
        logits = logits.reshape(B * T, -1)
        probs = logits.softmax(dim=-1)
        weights, idx = probs.topk(self.top_k, dim=-1)  # (N, k)
        if self.top_k > 1:
            weights = weights / weights.sum(dim=-1, keepdim=True)

        flat = x.reshape(B * T, C)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = (idx == e).nonzero(as_tuple=True)
            if token.numel() == 0:
                continue
            y = expert(flat[token]) * weights[token, slot, None].to(flat.dtype)
            out.index_add_(0, token, y.to(out.dtype))

        if stats is not None:
            # Balancing: fraction of routed slots per expert times mean router probability.
            counts = F.one_hot(idx, self.num_experts).sum(dim=(0, 1)).float()
            frac = counts / counts.sum()
            stats.append(MoEStats(aux_loss=self.num_experts * (frac * probs.mean(dim=0)).sum(),
                                  z_loss=torch.logsumexp(logits, dim=-1).pow(2).mean(), counts=counts.detach()))
        return out.reshape(B, T, C)
