"""Routed mixture-of-experts feed-forward for the UNet's mid block (Switch/GShard style).

E experts, each a GELU MLP; a router picks the top-k experts per token (router="token") or per
sample from the timestep/conditioning embedding (router="timestep": experts specialise by noise
level, as in eDiff-I/RAPHAEL). The forward stores the load-balancing loss (Switch Transformer,
E * sum_e f_e * P_e) and the router z-loss (ST-MoE, mean logsumexp^2) on the module, and
accumulates how many tokens each expert received, for logging.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FeedForward


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
        self.register_buffer("usage", torch.zeros(num_experts), persistent=False)
        self.aux_loss = torch.zeros(())
        self.z_loss = torch.zeros(())
        self.last_counts = torch.zeros(num_experts)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
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

        # Balancing: fraction of routed slots per expert times mean router probability.
        counts = F.one_hot(idx, self.num_experts).sum(dim=(0, 1)).float()
        frac = counts / counts.sum()
        self.aux_loss = self.num_experts * (frac * probs.mean(dim=0)).sum()
        self.z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean()
        self.last_counts = counts.detach()
        self.usage += self.last_counts
        return out.reshape(B, T, C)

    def pop_usage(self) -> list[float]:
        """Fraction of routed tokens per expert since the last call."""
        total = self.usage.sum().clamp(min=1)
        frac = (self.usage / total).tolist()
        self.usage.zero_()
        return frac
