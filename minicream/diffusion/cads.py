"""Condition-annealed diffusion sampling (CADS; Sadat et al., ICLR 2024, "CADS: Unleashing the Diversity of
Diffusion Models through Condition-Annealed Sampling").

At high guidance every seed is pushed to the same mode of p(image | prompt): for an emoji name, to one design drawn
one way. CADS adds Gaussian noise to the conditioning early in sampling and anneals it away:

    y_hat = sqrt(gamma(t)) * y + s * sqrt(1 - gamma(t)) * n,        n ~ N(0, I), fresh at every step

with gamma(t) = 1 for t <= tau1, 0 for t >= tau2 and linear between (t in [0, 1], 1 = pure noise), then
y_hat is rescaled to the mean and standard deviation of y and mixed back: psi * rescaled + (1 - psi) * y_hat.
Only the conditional branch of guidance is perturbed. Here `s` is relative to y's own standard deviation (per row),
so one scale fits the token states and the pooled sentence vector alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CADS:
    scale: float = 0.0  # s; 0 = off
    tau1: float = 0.6   # below this noise level the condition is clean
    tau2: float = 0.9   # above it the condition is all noise (rescaled)
    psi: float = 1.0    # 1 = fully rescaled to y's statistics

    def gamma(self, t_frac: float) -> float:
        if t_frac <= self.tau1:
            return 1.0
        if t_frac >= self.tau2:
            return 0.0
        return (self.tau2 - t_frac) / (self.tau2 - self.tau1)

    def perturb(self, y: torch.Tensor, t_frac: float, noise: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """y (B, ..., D) at noise level t_frac, with `noise` like y; `mask` (B, T) marks the real tokens of (B, T, D)
        states (statistics over them only; padding stays zero)."""
        g = self.gamma(t_frac)
        if self.scale <= 0 or g >= 1.0:
            return y
        yf = y.float()
        keep = torch.ones(yf.shape[:-1], dtype=torch.bool, device=y.device) if mask is None else mask.bool()
        w = keep[..., None].float()
        dims = tuple(range(1, yf.dim()))
        count = (w.sum(dims, keepdim=True) * yf.shape[-1]).clamp_min(1)
        mean = (yf * w).sum(dims, keepdim=True) / count
        std = (((yf - mean) ** 2 * w).sum(dims, keepdim=True) / count).sqrt().clamp_min(1e-8)
        y_hat = g ** 0.5 * yf + self.scale * (1 - g) ** 0.5 * std * noise.float()
        h_mean = (y_hat * w).sum(dims, keepdim=True) / count
        h_std = (((y_hat - h_mean) ** 2 * w).sum(dims, keepdim=True) / count).sqrt().clamp_min(1e-8)
        rescaled = (y_hat - h_mean) / h_std * std + mean
        out = self.psi * rescaled + (1 - self.psi) * y_hat
        return (out * w).to(y.dtype)
