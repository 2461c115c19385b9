"""The samplers: one plain function each, over one signature (k-diffusion's `k_diffusion/sampling.py` shape).

    sample_NAME(model, x, sigmas, callback=None, noise=None) -> x

model(x, sigma) -> x0: a denoiser from diffusion/schedules.py, with `model.alpha(sigma)` the signal scale of its
    coordinates (1 for the DDPM family's variance-exploding ones, 1 - s for flow);
x: the start, at noise level sigmas[0]; sigmas: decreasing levels (python floats are taken from it), the result is
    at sigmas[-1];
callback(i, x) -> x or None: called after step i (from 0) with the state at sigmas[i + 1]; what it returns replaces
    the state (inpainting, user hooks). Multistep samplers keep their history of past predictions;
noise(like) -> a standard normal tensor shaped like `like`: fresh noise for ancestral samplers, which the caller draws
    from one generator per image (so an image never depends on its batch). Deterministic samplers ignore it.

Every sampler is exact for a denoiser that is exact (a point mass, whose probability-flow ODE is a straight line):
the tests check it. Equalities worth knowing: in these coordinates Euler's method *is* DDIM (Karras et al. 2022,
sec. 4) and the rectified-flow Euler step; the ancestral Euler step *is* DDPM's posterior step with its "fixed small"
variance (its sigma_up is the posterior's standard deviation). samplers.py names them.
"""
from __future__ import annotations

import math

import torch


def _replace(callback, i: int, x: torch.Tensor) -> torch.Tensor:
    if callback is None:
        return x
    y = callback(i, x)
    return x if y is None else y


def _derivative(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE: the noise direction eps (VE) or the velocity eps - x0 (flow)."""
    return (x - denoised) / sigma


@torch.no_grad()
def sample_euler(model, x, sigmas, callback=None, noise=None):
    """Euler's method (Karras et al. 2022, Algorithm 1 without churn)."""
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        x = x + _derivative(x, model(x, s), s) * (s_next - s)
        x = _replace(callback, i, x)
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, callback=None, noise=None):
    """Ancestral Euler: step deterministically down to sigma_down, then add fresh noise of size sigma_up, with
    sigma_down^2 + sigma_up^2 = sigma_next^2 (k-diffusion's get_ancestral_step with eta 1). VE coordinates only."""
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        up = math.sqrt(max(0.0, s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2))
        down = math.sqrt(max(0.0, s_next ** 2 - up ** 2))
        x = x + _derivative(x, model(x, s), s) * (down - s)
        if s_next > 0:
            x = x + (noise(x) if noise is not None else torch.randn_like(x)) * up
        x = _replace(callback, i, x)
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, callback=None, noise=None):
    """Heun's second-order method (Karras et al. 2022, Algorithm 1); the last step, to zero noise, is an Euler step
    (the derivative there is 0/0)."""
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        d = _derivative(x, model(x, s), s)
        x_euler = x + d * (s_next - s)
        if s_next == 0:
            x = x_euler
        else:
            d_next = _derivative(x_euler, model(x_euler, s_next), s_next)
            x = x + (d + d_next) * ((s_next - s) / 2)
        x = _replace(callback, i, x)
    return x


def _half_log_snr(alpha: float, sigma: float) -> float:
    if alpha == 0:
        return -math.inf
    return math.inf if sigma == 0 else math.log(alpha / sigma)


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, callback=None, noise=None):
    """DPM-Solver++(2M) (Lu et al. 2022), the multistep second-order solver in data prediction, in the coordinates
    x = alpha x0 + sigma eps with lambda = log(alpha / sigma):
        x' = (sigma' / sigma) x + alpha' (1 - e^-h) D,   h = lambda' - lambda,
    D the denoised estimate, corrected with the previous one, D + (D - D_prev) / (2r), r = h_prev / h. The first step
    and the last (to zero noise) are first order, as diffusers and k-diffusion do."""
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        a, a_next = model.alpha(s), model.alpha(s_next)
        denoised = model(x, s)
        h = _half_log_snr(a_next, s_next) - _half_log_snr(a, s)
        d = denoised
        if old_denoised is not None and s_next > 0 and math.isfinite(h_last):
            c = 1 / (2 * (h_last / h))
            d = denoised * (1 + c) - old_denoised * c
        # e^-h as a ratio, finite where alpha = 0 (flow at s = 1: lambda = -inf) or sigma' = 0
        e_mh = (a * s_next) / (s * a_next) if s_next > 0 else 0.0
        x = x * (s_next / s) + d * (a_next * (1 - e_mh))
        old_denoised, h_last = denoised, h
        x = _replace(callback, i, x)
    return x


@torch.no_grad()
def sample_plms(model, x, sigmas, callback=None, noise=None):
    """Pseudo linear multistep (PLMS; Liu et al. 2022, PNDM without its Runge-Kutta warm-up, as Stable Diffusion
    ran it): the noise direction of each step extrapolated from the last four evaluations with the Adams-Bashforth
    coefficients, then a DDIM (Euler) step with it. The first step is a Heun step (unless it is also the last, where
    PNDM's schedule has no room for the second evaluation). VE coordinates."""
    past: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        d = _derivative(x, model(x, s), s)
        if not past:
            d_step = d
            if len(sigmas) > 2:
                x_euler = x + d * (s_next - s)
                d_step = (d + _derivative(x_euler, model(x_euler, s_next), s_next)) / 2
        elif len(past) == 1:
            d_step = (3 * d - past[-1]) / 2
        elif len(past) == 2:
            d_step = (23 * d - 16 * past[-1] + 5 * past[-2]) / 12
        else:
            d_step = (55 * d - 59 * past[-1] + 37 * past[-2] - 9 * past[-3]) / 24
        past = (past + [d])[-3:]
        x = x + d_step * (s_next - s)
        x = _replace(callback, i, x)
    return x
