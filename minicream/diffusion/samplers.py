"""Sampling a model by name: the samplers each model family offers, and `sample`, which runs one.

`sample(model_fn, x, sampler, steps, objective_config, generators)` builds the model's denoiser and noise levels
(diffusion/schedules.py) and runs the named sampler function (diffusion/sampling.py). It can start part-way from an
image (`init`, `strength`: img2img), keep known latents (`known`: inpainting), and calls `callback(step, t, x)` after
every step, which may replace the latents. `invert` runs the deterministic path backwards, from an image to its
noise. `model_fn(x, t) -> model output` (classifier-free guidance is applied by a wrapper, see `cfg_model_fn`).
Ancestral noise is drawn from one CPU generator per image, so an image depends only on its own seed, never on the
batch it was drawn in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import MinicreamError
from .objectives import ddpm_alphas_cumprod
from .sampling import sample_dpmpp_2m, sample_euler, sample_euler_ancestral, sample_heun, sample_plms
from .schedules import get_sigmas_flow, get_sigmas_trailing, make_denoiser, sigma_table, trailing_timesteps

StepCallback = Callable[[int, float, torch.Tensor], "torch.Tensor | None"]


def trailing(steps: int, cfg: dict) -> torch.Tensor:
    return get_sigmas_trailing(sigma_table(cfg), steps)


def trailing_to_first(steps: int, cfg: dict) -> torch.Tensor:
    return get_sigmas_trailing(sigma_table(cfg), steps, end_at_first=True)


def flow_match(steps: int, cfg: dict) -> torch.Tensor:
    return get_sigmas_flow(steps, cfg.get("shift", 1.0), cfg.get("num_train_timesteps", 1000))


def flow_uniform(steps: int, cfg: dict) -> torch.Tensor:
    return get_sigmas_flow(steps, cfg.get("shift", 1.0), cfg.get("num_train_timesteps", 1000), uniform=True)


@dataclass(frozen=True)
class Sampler:
    fn: Callable  # a function of sampling.py
    schedule: Callable[[int, dict], torch.Tensor]  # (steps, objective config) -> its noise levels

    @property
    def end_at_first(self) -> bool:
        """Stops at the level of timestep 0, not at zero noise (DDIM, PLMS as Stable Diffusion runs them)."""
        return self.schedule is trailing_to_first


# The names are public: PNG metadata stores them and `--from` re-runs them. The schedules are each sampler's own
# as it ran on diffusers' schedulers, so that its images stay what they were.
DDPM_SAMPLERS = {
    "ddim": Sampler(sample_euler, trailing_to_first),  # DDIM is Euler in these coordinates (sampling.py)
    "ddpm": Sampler(sample_euler_ancestral, trailing),  # DDPM's posterior step is the ancestral Euler step
    "dpmpp_2m": Sampler(sample_dpmpp_2m, trailing),
    "euler": Sampler(sample_euler, trailing),
    "euler_a": Sampler(sample_euler_ancestral, trailing),
    "heun": Sampler(sample_heun, trailing),
    "plms": Sampler(sample_plms, trailing_to_first),
}
FLOW_SAMPLERS = {
    "euler": Sampler(sample_euler, flow_match),  # the rectified-flow Euler step; one step with the true velocity is exact
    "heun": Sampler(sample_heun, flow_match),
    "dpmpp_2m": Sampler(sample_dpmpp_2m, flow_uniform),
}


def available_samplers(prediction: str) -> list[str]:
    return sorted(FLOW_SAMPLERS if prediction == "flow" else DDPM_SAMPLERS)


def get_sampler(name: str, objective_config: dict) -> Sampler:
    table = FLOW_SAMPLERS if objective_config["prediction_type"] == "flow" else DDPM_SAMPLERS
    if name not in table:
        raise MinicreamError(f"unknown sampler {name!r} for this model; choose one of: {', '.join(sorted(table))}")
    return table[name]


def get_sigmas(sampler: str, steps: int, objective_config: dict) -> torch.Tensor:
    """The noise levels `sampler` runs through in `steps` steps on a model with this objective config."""
    return get_sampler(sampler, objective_config).schedule(steps, objective_config)


def cfg_model_fn(model_fn: Callable, guidance: float, max_noise: float = 1.0, cond_fn: Callable | None = None,
                 num_train_timesteps: int = 1000) -> Callable:
    """Classifier-free guidance as a wrapper: `model_fn` sees the batch twice, [uncond; cond], and the outputs are mixed.

    max_noise < 1: guidance in a limited interval (Kynkäänniemi et al. 2024): where the noise level t / T of the
    step is above `max_noise`, the conditional prediction alone (`cond_fn(x, t)`, or the cond half of `model_fn`).
    Guidance at the highest noise levels pushes every seed to the same layout; without it there, seeds keep their
    variety while guidance still sharpens the object below."""

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if max_noise < 1.0 and float(t.max()) > max_noise * num_train_timesteps:
            return cond_fn(x, t) if cond_fn is not None else model_fn(torch.cat([x, x]), torch.cat([t, t])).chunk(2)[1]
        out_uncond, out_cond = model_fn(torch.cat([x, x]), torch.cat([t, t])).chunk(2)
        return out_uncond + guidance * (out_cond - out_uncond)

    return guided


def start_index(steps: int, strength: float) -> int:
    """First of `steps` schedule steps that img2img runs at `strength` (diffusers' rule: the last
    int(steps * strength) steps); strength 1 runs them all."""
    if not 0.0 < strength <= 1.0:
        raise MinicreamError(f"strength must be in (0, 1], got {strength}")
    run = min(int(steps * strength), steps)
    if run < 1:
        raise MinicreamError(f"strength {strength} with {steps} steps leaves no step to run; raise either")
    return steps - run


def per_image_noise(generators: Sequence[torch.Generator] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """noise(like): standard normal noise shaped like `like`, row i drawn from generators[i] (on the CPU, so the
    numbers do not depend on the device either); the global generator when there are none."""

    def draw(like: torch.Tensor) -> torch.Tensor:
        if generators is None:
            return torch.randn_like(like)
        if len(generators) != like.shape[0]:
            raise MinicreamError(f"{len(generators)} generators for a batch of {like.shape[0]}")
        return torch.stack([torch.randn(like.shape[1:], generator=g) for g in generators]).to(like.device, like.dtype)

    return draw


def chunk_callback(progress: Callable | None, step_callback: StepCallback | None, total: int,
                   n: int) -> StepCallback | None:
    """`sample`'s callback for a batch whose first `n` rows are images and the rest padding (copies of the last
    image, so every batch has one shape): progress(step, total), then step_callback on the images alone; what it
    returns replaces them, and the padding copies its last row again."""
    if progress is None and step_callback is None:
        return None

    def on_step(step: int, t: float, x: torch.Tensor) -> torch.Tensor | None:
        if progress is not None:
            progress(step, total)
        replaced = None if step_callback is None else step_callback(step, t, x[:n])
        if replaced is None:
            return None
        return torch.cat([replaced, replaced[-1:].expand(len(x) - n, *replaced.shape[1:])]).to(x.dtype)

    return on_step


@torch.no_grad()
def sample(model_fn: Callable, x: torch.Tensor, sampler: str, steps: int, objective_config: dict,
           generators: Sequence[torch.Generator] | None = None, progress: bool = True,
           callback: StepCallback | None = None, init: torch.Tensor | None = None, strength: float = 1.0,
           known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Integrate from unit-variance noise `x` (B,C,H,W) to clean latents.

    init, strength: start from clean latents `init` noised with `x` to where the last `strength` of the
        schedule begins, and run only those steps (img2img, variations; strength 1 starts from pure noise).
    known: (latents, keep) for inpainting: where `keep` is 1 the latents are replaced after every step by the
        known latents noised (with this call's own noise `x`) to the level the sampler has reached, and by the
        known latents themselves at the end, as diffusers' inpainting pipeline blends them.
    callback(step, t, x) -> x or None: after step `step` (from 1) that started at model timestep `t`, with the
        latents `x` as the model sees them (unit variance; clean at the end); a tensor it returns replaces them.
    """
    spec = get_sampler(sampler, objective_config)
    model = make_denoiser(model_fn, objective_config, x.dtype)
    sigmas = get_sigmas(sampler, steps, objective_config)
    if init is None and strength != 1.0:
        raise MinicreamError("strength < 1 needs an initial image (init latents)")
    dtype, noise = x.dtype, x.double()  # the state in float64 (schedules.py says why), the model's in x's dtype
    if init is None:
        x = noise / model.input_scale(float(sigmas[0]))
    else:
        sigmas = sigmas[start_index(steps, strength):]
        x = model.noised(init.double(), noise, float(sigmas[0]))
    timesteps = [model.timestep(float(s)) for s in sigmas[:-1]]
    bar = tqdm(total=len(timesteps), desc=f"sampling ({sampler})", disable=not progress, leave=False)

    def after_step(i: int, x: torch.Tensor) -> torch.Tensor:
        s_next = float(sigmas[i + 1])
        if known is not None:
            latents, keep = known
            x = keep * model.noised(latents.double(), noise, s_next) + (1 - keep) * x
        if callback is not None:
            scale = model.input_scale(s_next)
            replaced = callback(i + 1, timesteps[i], (x * scale).to(dtype))
            if replaced is not None:
                x = replaced.double() / scale
        bar.update(1)
        return x

    try:
        x = spec.fn(model, x, sigmas, callback=after_step, noise=per_image_noise(generators))
    finally:
        bar.close()
    x = (x * model.input_scale(float(sigmas[-1]))).to(dtype)  # the model's coordinates (a no-op at zero noise)
    if known is not None:
        latents, keep = known
        x = keep * latents.to(dtype) + (1 - keep) * x
    return x


@torch.no_grad()
def invert(model_fn: Callable, x0: torch.Tensor, steps: int, objective_config: dict, progress: bool = True) -> torch.Tensor:
    """Deterministic inversion: clean latents -> the unit-variance noise that the deterministic samplers
    ("ddim"; "euler" for flow models) map back to them, with `steps` steps. DDIM inversion for epsilon/v models
    (each step predicts x0 and eps at the current level and moves them to the next, noisier one); the flow ODE
    run backwards (Euler) for flow models."""
    x = x0.double()
    if objective_config["prediction_type"] == "flow":
        sigmas = get_sigmas("euler", steps, objective_config).flip(0)  # 0 -> 1
        T = objective_config.get("num_train_timesteps", 1000)
        for s, s_next in tqdm(list(zip(sigmas[:-1], sigmas[1:])), desc="inverting", disable=not progress, leave=False):
            v = model_fn(x.to(x0.dtype), torch.full((x.shape[0],), float(s) * T, device=x0.device)).double()
            x = x + (s_next - s) * v
        return x.to(x0.dtype)
    alphas = ddpm_alphas_cumprod(objective_config.get("beta_schedule", "scaled_linear"),
                                 bool(objective_config.get("rescale_betas_zero_snr", False))).double()
    levels = [0] + sorted(int(t) for t in trailing_timesteps(steps, len(alphas)))  # DDIM's path backwards, up to T
    v_pred = objective_config["prediction_type"] == "v_prediction"
    for t, t_next in tqdm(list(zip(levels[:-1], levels[1:])), desc="inverting", disable=not progress, leave=False):
        a, a_next = alphas[t], alphas[t_next]
        out = model_fn(x.to(x0.dtype), torch.full((x.shape[0],), float(t), device=x0.device)).double()
        if v_pred:
            pred_x0, eps = a.sqrt() * x - (1 - a).sqrt() * out, (1 - a).sqrt() * x + a.sqrt() * out
        else:
            eps = out
            pred_x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_next.sqrt() * pred_x0 + (1 - a_next).sqrt() * eps
    return x.to(x0.dtype)
