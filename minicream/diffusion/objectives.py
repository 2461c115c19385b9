"""Training objectives, separate from the network (EDM/k-diffusion style): each is a small class whose
`__call__(model_fn, x0, generator)` draws a noise level and noise, builds the noisy input (`noised`), and returns the
per-sample loss. `model_fn(x_t, t)` takes timesteps on the 0..1000 scale that diffusers schedulers use, so
the same network samples with every scheduler.

- "epsilon": DDPM noise prediction;  "v": v-prediction (Salimans & Ho 2022);
- "flow": rectified flow / flow matching (Liu et al. 2022, InstaFlow): x_t = (1-s) x0 + s eps, target eps - x0.
min-SNR-gamma weighting (Hang et al. 2023) is available for epsilon and v.

Noise levels ("timesteps" of epsilon/v): "uniform" draws t uniformly from the 1000 steps (DDPM); "logit_normal"
draws the flow-time s = sigmoid(N(logit_mean, logit_std)) of SD3 (Esser et al. 2024) and takes the timestep of the
same signal-to-noise ratio, log-SNR = -2 logit(s). So logit_mean 0 / std 1 is SD3's default (log-SNR ~ N(0, 2)),
a positive logit_mean spends more samples at high noise (SD3's resolution shift), and logit_mean -1.2 / std 1.2 is
EDM's log-normal sigma (ln sigma ~ N(-1.2, 1.2)). On the scaled-linear schedule uniform t has median log-SNR -1.3.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import MinicreamError

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NUM_TRAIN_TIMESTEPS = 1000


def ddpm_alphas_cumprod(beta_schedule: str = "scaled_linear", zero_snr: bool = False) -> torch.Tensor:
    """alpha-bar of the 1000-step schedule, taken from diffusers so training and samplers agree exactly.

    zero_snr: rescale the betas so the last timestep is pure noise (Lin et al. 2023). Without it the last
    step keeps ~7% of the signal's amplitude; on 16x16 latents the model learns to read the object's rough
    shape from that remnant, and at sampling time, starting from pure noise, takes its shape from the noise.
    """
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=beta_schedule,
                         rescale_betas_zero_snr=zero_snr).alphas_cumprod.float()


def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)


TIMESTEPS = ("uniform", "logit_normal")


class DDPMObjective:
    def __init__(self, prediction: str = "v", beta_schedule: str = "scaled_linear", min_snr_gamma: float | None = 5.0,
                 zero_snr: bool = False, timesteps: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0):
        if zero_snr and prediction != "v":
            raise MinicreamError("zero_terminal_snr needs the v objective (epsilon is undefined at pure noise)")
        if timesteps not in TIMESTEPS:
            raise MinicreamError(f"unknown timestep sampling {timesteps!r}; choose {' or '.join(TIMESTEPS)}")
        self.prediction, self.beta_schedule, self.min_snr_gamma = prediction, beta_schedule, min_snr_gamma
        self.zero_snr = zero_snr
        self.timesteps, self.logit_mean, self.logit_std = timesteps, logit_mean, logit_std
        self.alphas_cumprod = ddpm_alphas_cumprod(beta_schedule, zero_snr)
        a = self.alphas_cumprod.double()
        self.neg_log_snr = (torch.log1p(-a) - torch.log(a)).float()  # increasing in t (+inf at a zero-SNR end)

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.timesteps == "uniform":
            return torch.randint(0, NUM_TRAIN_TIMESTEPS, (n,), generator=generator, device="cpu")
        logit = self.logit_mean + self.logit_std * torch.randn(n, generator=generator)
        # flow time s has log-SNR = 2 log((1-s)/s) = -2 logit(s): the step whose -log-SNR is nearest 2 logit(s)
        t = torch.searchsorted(self.neg_log_snr, (2 * logit).contiguous()).clamp(1, NUM_TRAIN_TIMESTEPS - 1)
        below = self.neg_log_snr[t - 1]
        return torch.where((2 * logit - below).abs() < (self.neg_log_snr[t] - 2 * logit).abs(), t - 1, t)

    def scheduler_config(self) -> dict:
        cfg = {"num_train_timesteps": NUM_TRAIN_TIMESTEPS, "beta_schedule": self.beta_schedule,
               "prediction_type": "v_prediction" if self.prediction == "v" else "epsilon"}
        if self.zero_snr:
            cfg["rescale_betas_zero_snr"] = True
        return cfg

    def noised(self, x0: torch.Tensor, generator: torch.Generator | None = None):
        """(x_t, the network's timestep input, alpha-bar, noise) at a drawn noise level, as training draws them."""
        B = x0.shape[0]
        t = self.sample_timesteps(B, generator)
        noise = torch.randn(x0.shape, generator=generator, device="cpu").to(x0.device)
        a = self.alphas_cumprod[t].to(x0.device).view(B, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise, t.to(x0.device).float(), a, noise

    def __call__(self, model_fn: ModelFn, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x_t, t_in, a, noise = self.noised(x0, generator)
        B = x0.shape[0]
        pred = model_fn(x_t, t_in)
        snr = (a / (1 - a)).view(B)
        if self.prediction == "v":
            target, base = a.sqrt() * noise - (1 - a).sqrt() * x0, snr + 1
        else:
            target, base = noise, snr
        loss = _mse(pred, target)
        if self.min_snr_gamma:
            loss = loss * snr.clamp(max=self.min_snr_gamma) / base
        return loss


class FlowObjective:
    """Rectified flow with logit-normal noise levels (SD3's choice: more samples at mid noise)."""

    prediction = "flow"

    def __init__(self, logit_mean: float = 0.0, logit_std: float = 1.0):
        self.logit_mean, self.logit_std = logit_mean, logit_std

    def scheduler_config(self) -> dict:
        return {"num_train_timesteps": NUM_TRAIN_TIMESTEPS, "prediction_type": "flow"}

    def noised(self, x0: torch.Tensor, generator: torch.Generator | None = None):
        """(x_t, the network's timestep input, flow time s, noise) at a drawn noise level, as training draws them."""
        B = x0.shape[0]
        s = torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(B, generator=generator)).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, device="cpu").to(x0.device)
        return (1 - s.view(B, 1, 1, 1)) * x0 + s.view(B, 1, 1, 1) * noise, s * NUM_TRAIN_TIMESTEPS, s, noise

    def __call__(self, model_fn: ModelFn, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x_t, t_in, _, noise = self.noised(x0, generator)
        return _mse(model_fn(x_t, t_in), noise - x0)


def make_objective(name: str, min_snr_gamma: float | None = 5.0, beta_schedule: str = "scaled_linear",
                   zero_snr: bool = False, timesteps: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0):
    """timesteps/logit_mean/logit_std: the noise-level distribution of epsilon/v (see the module's docstring);
    flow always draws logit-normal levels and takes logit_mean/logit_std from them."""
    if name in ("epsilon", "v"):
        return DDPMObjective(name, beta_schedule, min_snr_gamma, zero_snr, timesteps, logit_mean, logit_std)
    if name == "flow":
        return FlowObjective(logit_mean, logit_std)
    raise MinicreamError(f"unknown objective {name!r}; choose epsilon, v or flow")
