"""Rectified flow from a diffusion teacher: the velocity view of a v-prediction network, reflow and one-step
distillation losses, and InstaFlow's straightness metric.

Flow time s runs from data (s=0) to noise (s=1): x_s = (1-s) x0 + s x1, velocity u = dx/ds = x1 - x0; model_fn's
timestep is s * 1000, as the flow samplers call it. A v-prediction network of the DDPM family sees the same
point in its own (variance-preserving) coordinates: x_vp = x_s / r with r = sqrt((1-s)^2 + s^2), at the timestep
whose alpha-bar is ((1-s)/r)^2; its v = a x1 - b x0 (a = (1-s)/r, b = s/r) gives x0 = a x_vp - b v and
x1 = b x_vp + a v, so u = x1 - x0 = (b - a) x_vp + (a + b) v exactly. `velocity_from_v` wraps the network that
way, so a 2-rectified flow starts as its teacher's own velocity field (Liu et al. 2022; InstaFlow, Liu et al. 2023).
"""
from __future__ import annotations

from typing import Callable

import torch

from .objectives import NUM_TRAIN_TIMESTEPS, ddpm_alphas_cumprod

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def network_alphas(network: dict) -> torch.Tensor:
    """alpha-bar of the network's own schedule, from the `network` entry of a flow model's objective config."""
    return ddpm_alphas_cumprod(network.get("beta_schedule", "scaled_linear"),
                               bool(network.get("rescale_betas_zero_snr", False)))


def vp_timestep(s: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The (fractional) DDPM timestep whose log-SNR equals that of flow time s, clamped to the trained range."""
    lsnr_table = (alphas_cumprod / (1 - alphas_cumprod)).log().double()  # decreasing in t
    s = s.double().clamp(1e-7, 1 - 1e-7)
    lsnr = 2 * ((1 - s) / s).log()
    inc = lsnr_table.flip(0)  # increasing; index k is timestep T-1-k
    k = torch.searchsorted(inc, lsnr).clamp(1, len(inc) - 1)
    lo, hi = inc[k - 1], inc[k]
    frac = ((lsnr - lo) / (hi - lo)).clamp(0, 1)
    t_rev = (k - 1) + frac  # fractional index into the flipped table
    return ((len(inc) - 1) - t_rev).clamp(0, len(inc) - 1).float()


def velocity_from_v(net_fn: ModelFn, alphas_cumprod: torch.Tensor) -> ModelFn:
    """model_fn(x_s, s*1000) -> flow velocity, from a v-prediction net_fn(x_vp, t) (exact; see the module doc)."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = (t.float() / NUM_TRAIN_TIMESTEPS).clamp(0, 1).to(x.device)
        r = ((1 - s) ** 2 + s ** 2).sqrt()
        a, b = ((1 - s) / r).view(-1, 1, 1, 1), (s / r).view(-1, 1, 1, 1)
        x_vp = x / r.view(-1, 1, 1, 1)
        v = net_fn(x_vp.to(x.dtype), vp_timestep(s, alphas_cumprod).to(x.device)).float()
        return (b - a) * x_vp.float() + (a + b) * v

    return fn


def flow_point(x0: torch.Tensor, x1: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    s = s.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - s) * x0 + s * x1


def reflow_loss(u_fn: ModelFn, x0: torch.Tensor, x1: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample rectified-flow loss on coupled pairs (x1: the noise the teacher started from, x0: its image):
    uniform s, as InstaFlow's reflow. The target x1 - x0 is the straight line between the pair."""
    s = torch.rand(x0.shape[0], generator=generator).to(x0.device)
    pred = u_fn(flow_point(x0, x1, s), s * NUM_TRAIN_TIMESTEPS)
    return (pred.float() - (x1 - x0).float()).pow(2).flatten(1).mean(1)


def one_step(u_fn: ModelFn, x1: torch.Tensor) -> torch.Tensor:
    """One Euler step of the flow from s=1 to s=0: the image a one-step sampler draws from noise x1."""
    return x1 - u_fn(x1, torch.full((x1.shape[0],), float(NUM_TRAIN_TIMESTEPS), device=x1.device)).to(x1.dtype)


@torch.no_grad()
def euler_path(u_fn: ModelFn, x1: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Integrate the flow ODE from noise x1 (s=1) to s=0 with `steps` uniform Euler steps; returns the end
    point and the velocity at each step."""
    x, vs = x1.float(), []
    s_grid = torch.linspace(1.0, 0.0, steps + 1)
    for s, s_next in zip(s_grid[:-1], s_grid[1:]):
        u = u_fn(x, torch.full((x.shape[0],), float(s) * NUM_TRAIN_TIMESTEPS)).float()
        vs.append(u)
        x = x + (s_next - s) * u
    return x, vs


@torch.no_grad()
def straightness(u_fn: ModelFn, x1: torch.Tensor, steps: int = 16) -> float:
    """InstaFlow's straightness S = E_s ||(x1 - x0) - u(x_s, s)||^2 along the flow's own path from x1, per latent
    element (0 for a straight flow: every velocity on the path equals the end-to-end displacement)."""
    x0, vs = euler_path(u_fn, x1, steps)
    line = x1.float() - x0
    return float(torch.stack([(u - line).pow(2).flatten(1).mean(1) for u in vs]).mean())
