"""Noise levels and the parameterisations the samplers integrate in (k-diffusion's `get_sigmas_*` and `Denoiser`s).

A sampler (diffusion/sampling.py) sees a denoiser `model(x, sigma) -> x0` and a decreasing vector of levels `sigmas`
ending where its result is taken. A model's objective decides the coordinates:

- epsilon / v (the DDPM family): x = x0 + sigma eps, sigma = sqrt((1 - a) / a) with a = alpha-bar of the training
  schedule (k-diffusion's DiscreteEpsDDPMDenoiser / DiscreteVDDPMDenoiser). The network sees x / sqrt(1 + sigma^2)
  = sqrt(a) x0 + sqrt(1 - a) eps at the integer timestep of that level, as in training.
- flow: x = (1 - s) x0 + s eps with sigma = s; the network sees x itself at timestep s * 1000 and predicts eps - x0.

Either way the latents a caller hands in and gets back are the network's own (`input_scale`): unit noise at the
start, clean latents at the end. The samplers keep their state in float64 and the network gets `dtype` (float32):
in VE coordinates a step from sigma ~4096 (a zero-terminal-SNR or cosine schedule's start) subtracts two numbers
that size, and float32's rounding of them, times the step, was ~0.1 of error in a second-order or multistep
sampler's next state.
"""
from __future__ import annotations

import math

import torch

from .objectives import NUM_TRAIN_TIMESTEPS, ddpm_alphas_cumprod

# A zero-terminal-SNR schedule has sigma = inf at its last timestep (the cosine one ~2e4): like diffusers' Euler and
# DPM-Solver we stop at alpha-bar 2^-24 there (sigma ~4096), where the network's input is the noise to float32 precision.
ZERO_SNR_ALPHA = 2.0 ** -24


def sigma_table(objective_config: dict) -> torch.Tensor:
    """sigma of each training timestep (float64, increasing), from the schedule the model was trained with."""
    a = ddpm_alphas_cumprod(objective_config.get("beta_schedule", "scaled_linear"),
                            bool(objective_config.get("rescale_betas_zero_snr", False))).double()
    a = a.clamp(min=ZERO_SNR_ALPHA)
    return ((1 - a) / a).sqrt()


def trailing_timesteps(steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """`steps` integer timesteps, "trailing" spacing (Lin et al. 2023): from T-1, the level where the latents really
    are pure noise, down in equal strides of T/steps, rounded half to even as numpy's (and diffusers') arange does."""
    i = torch.arange(steps, dtype=torch.float64)
    return (num_train_timesteps - i * (num_train_timesteps / steps)).round().long() - 1


def get_sigmas_trailing(table: torch.Tensor, steps: int, end_at_first: bool = False) -> torch.Tensor:
    """The noise levels of `trailing_timesteps`, then the end: zero noise, or with `end_at_first` the level of
    timestep 0 (DDIM and PLMS as Stable Diffusion runs them stop there, a last ~3% of noise left in)."""
    end = table[:1] if end_at_first else table.new_zeros(1)
    return torch.cat([table[trailing_timesteps(steps, len(table))], end])


def get_sigmas_flow(steps: int, shift: float = 1.0, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
                    uniform: bool = False) -> torch.Tensor:
    """Flow times from 1 (pure noise) to 1/T in `steps` equal steps, then 0 (diffusers' FlowMatchEulerDiscrete
    schedule, whose last step is a short one); `uniform`: `steps` equal steps from 1 to 0 (the schedule of diffusers'
    DPM-Solver on flow sigmas, which starts at 1 - 1/T). SD3's shift s' = shift s / (1 + (shift - 1) s) (1 = none)."""
    if uniform:
        s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
    else:
        s = torch.linspace(1.0, 1.0 / num_train_timesteps, steps, dtype=torch.float64)
    s = shift * s / (1 + (shift - 1) * s)
    return torch.cat([s, s.new_zeros(1)])


class VPDenoiser:
    """An epsilon or v network (model_fn(x_vp, t)) as a denoiser in variance-exploding coordinates."""

    def __init__(self, model_fn, table: torch.Tensor, prediction: str, dtype: torch.dtype = torch.float32):
        self.model_fn, self.table, self.v, self.dtype = model_fn, table, prediction == "v_prediction", dtype
        self.log_table = table.log()

    def timestep(self, sigma: float) -> int:
        """The training timestep whose level is nearest in log-sigma (k-diffusion's quantised sigma_to_t): the
        network knows only integer timesteps, and every level a sampler evaluates is one of them."""
        return int((self.log_table - math.log(sigma)).abs().argmin())

    @staticmethod
    def alpha(sigma: float) -> float:
        return 1.0  # no signal scale in VE coordinates

    @staticmethod
    def input_scale(sigma: float) -> float:
        return 1.0 / math.sqrt(1.0 + sigma * sigma)

    @staticmethod
    def noised(x0: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        return x0 + sigma * noise

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        c_in = self.input_scale(sigma)
        t = torch.full((x.shape[0],), float(self.timestep(sigma)), device=x.device)
        out = self.model_fn((x * c_in).to(self.dtype), t).to(x.dtype)
        if self.v:  # x0 = sqrt(a) x_vp - sqrt(1 - a) v, with sqrt(a) = c_in and sqrt(1 - a) = sigma c_in
            return x * (c_in * c_in) - out * (sigma * c_in)
        return x - out * sigma


class FlowDenoiser:
    """A flow network (model_fn(x, s * 1000) -> eps - x0) as a denoiser: x0 = x - s u."""

    def __init__(self, model_fn, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, dtype: torch.dtype = torch.float32):
        self.model_fn, self.T, self.dtype = model_fn, num_train_timesteps, dtype

    def timestep(self, sigma: float) -> float:
        return sigma * self.T

    @staticmethod
    def alpha(sigma: float) -> float:
        return 1.0 - sigma

    @staticmethod
    def input_scale(sigma: float) -> float:
        return 1.0

    @staticmethod
    def noised(x0: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        return (1 - sigma) * x0 + sigma * noise

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        t = torch.full((x.shape[0],), self.timestep(sigma), device=x.device)
        return x - self.model_fn(x.to(self.dtype), t).to(x.dtype) * sigma


def make_denoiser(model_fn, objective_config: dict, dtype: torch.dtype = torch.float32):
    """The denoiser of a network with this objective config (model_index.json "objective"), called with `dtype`."""
    if objective_config["prediction_type"] == "flow":
        return FlowDenoiser(model_fn, objective_config.get("num_train_timesteps", NUM_TRAIN_TIMESTEPS), dtype)
    return VPDenoiser(model_fn, sigma_table(objective_config), objective_config["prediction_type"], dtype)
