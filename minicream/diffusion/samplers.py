"""Samplers behind one signature.

`sample(model_fn, x, sampler, steps, objective_config, generators)` runs any of the diffusers schedulers
below; callers never branch on the scheduler. It can start part-way from an image (`init`, `strength`: img2img)
and lets a hook replace the latents after every step (`step_fn`: inpainting); `invert` runs the deterministic
path backwards, from an image to its noise. `model_fn(x, t) -> model output` (classifier-free guidance
is applied by a wrapper, see `cfg_model_fn`). Noise is drawn from one CPU generator per image, so an
image depends only on its own seed, never on the batch it was drawn in.
"""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
)
from tqdm.auto import tqdm

from ..errors import MinicreamError

# name -> (scheduler class, extra config). "trailing" spacing starts sampling at the last training timestep,
# where the latents really are pure noise (Lin et al. 2023).
DDPM_SAMPLERS = {
    "ddpm": (DDPMScheduler, {"clip_sample": False}),  # latents are not bounded to [-1, 1]
    "ddim": (DDIMScheduler, {"set_alpha_to_one": False, "clip_sample": False}),
    "plms": (PNDMScheduler, {"skip_prk_steps": True}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
}
FLOW_SAMPLERS = {
    "euler": (FlowMatchEulerDiscreteScheduler, {}),
    "heun": (FlowMatchHeunDiscreteScheduler, {}),
    # DPM-Solver++ on flow sigmas: its "flow_prediction" is our target (noise - x0), x0 = x - sigma * output.
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"use_flow_sigmas": True, "prediction_type": "flow_prediction",
                                               "algorithm_type": "dpmsolver++", "solver_order": 2}),
}


def available_samplers(prediction: str) -> list[str]:
    return sorted(FLOW_SAMPLERS if prediction == "flow" else DDPM_SAMPLERS)


def make_scheduler(sampler: str, objective_config: dict):
    """objective_config: {"prediction_type", "beta_schedule", "num_train_timesteps"} saved with the model."""
    flow = objective_config["prediction_type"] == "flow"
    table = FLOW_SAMPLERS if flow else DDPM_SAMPLERS
    if sampler not in table:
        raise MinicreamError(f"unknown sampler {sampler!r} for this model; choose one of: {', '.join(sorted(table))}")
    cls, extra = table[sampler]
    if objective_config.get("rescale_betas_zero_snr"):
        if "rescale_betas_zero_snr" not in inspect.signature(cls.__init__).parameters:
            raise MinicreamError(f"sampler {sampler!r} cannot sample a zero-terminal-SNR model; choose one of: "
                                 + ", ".join(n for n, (c, _) in sorted(table.items()) if "rescale_betas_zero_snr" in inspect.signature(c.__init__).parameters))
        extra = {**extra, "rescale_betas_zero_snr": True}
    if flow:
        shift = {"flow_shift" if "use_flow_sigmas" in extra else "shift": objective_config.get("shift", 1.0)}
        return cls(num_train_timesteps=objective_config["num_train_timesteps"], **shift, **extra)
    return cls(
        num_train_timesteps=objective_config["num_train_timesteps"],
        beta_schedule=objective_config["beta_schedule"],
        prediction_type=objective_config["prediction_type"],
        timestep_spacing="trailing",
        **extra,
    )


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


def _noise_to(scheduler, init: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`init` noised to timestep `t` the way this scheduler's own state expects (VP, VE or flow)."""
    if hasattr(scheduler, "scale_noise"):  # flow-matching schedulers
        return scheduler.scale_noise(init, t, noise)
    return scheduler.add_noise(init, noise, t)


@torch.no_grad()
def sample(model_fn: Callable, x: torch.Tensor, sampler: str, steps: int, objective_config: dict,
           generators: Sequence[torch.Generator] | None = None, progress: bool = True,
           callback: Callable[[int, int], None] | None = None, init: torch.Tensor | None = None,
           strength: float = 1.0, step_fn: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
           known: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Integrate from unit-variance noise `x` (B,C,H,W) to clean latents.

    init, strength: start from clean latents `init` noised with `x` to where the last `strength` of the
        schedule begins, and run only those steps (img2img, variations; strength 1 starts from pure noise).
    step_fn(i, t, x) -> x: sees the latents after step i (1-based) at timestep t and may replace them.
    known: (latents, keep) for inpainting: where `keep` is 1 the latents are replaced after every step by the
        known latents noised (with this call's own noise `x`) to the level the sampler has reached, and by the
        known latents themselves at the end, as diffusers' inpainting pipeline blends them.
    callback(i, n): progress only.
    """
    noise = x
    scheduler = make_scheduler(sampler, objective_config)
    scheduler.set_timesteps(steps, device=x.device)
    if isinstance(scheduler, EulerAncestralDiscreteScheduler):
        scheduler.sigmas = scheduler.sigmas.double()  # float32 rounding gives sqrt(<0) = NaN at some step counts
    timesteps = scheduler.timesteps
    if init is None and strength != 1.0:
        raise MinicreamError("strength < 1 needs an initial image (init latents)")
    if init is None:
        x = x * getattr(scheduler, "init_noise_sigma", 1.0)  # flow schedulers start from unit noise
    else:
        first = start_index(steps, strength) * scheduler.order
        timesteps = timesteps[first:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)
        x = _noise_to(scheduler, init.to(x.dtype), x, timesteps[:1].repeat(x.shape[0]))
    gens = list(generators) if generators is not None else None
    # Only stochastic schedulers take a generator (deterministic ones such as Heun refuse the argument).
    step_kwargs = {"generator": gens} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for i, t in enumerate(tqdm(timesteps, desc=f"sampling ({sampler})", disable=not progress, leave=False)):
        inp = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        out = model_fn(inp, t.expand(x.shape[0]).float())
        x = scheduler.step(out, t, x, **step_kwargs).prev_sample
        if known is not None:
            latents, keep = known
            there = _noise_to(scheduler, latents, noise, timesteps[i + 1:i + 2].repeat(x.shape[0])) \
                if i + 1 < len(timesteps) else latents
            x = keep * there.to(x.dtype) + (1 - keep) * x
        if step_fn is not None:
            x = step_fn(i + 1, t, x)
        if callback is not None:
            callback(i + 1, len(timesteps))
    return x


@torch.no_grad()
def invert(model_fn: Callable, x0: torch.Tensor, steps: int, objective_config: dict, progress: bool = True) -> torch.Tensor:
    """Deterministic inversion: clean latents -> the unit-variance noise that the deterministic samplers
    ("ddim"; "euler" for flow models) map back to them, with `steps` steps. DDIM inversion for epsilon/v models
    (each step predicts x0 and eps at the current level and moves them to the next, noisier one); the flow ODE
    run backwards (Euler) for flow models."""
    x = x0.double()
    if objective_config["prediction_type"] == "flow":
        sched = make_scheduler("euler", objective_config)
        sched.set_timesteps(steps, device=x0.device)
        sigmas = sched.sigmas.double().flip(0)  # 0 -> 1
        for s, s_next in tqdm(list(zip(sigmas[:-1], sigmas[1:])), desc="inverting", disable=not progress, leave=False):
            v = model_fn(x.to(x0.dtype), (s * 1000).expand(x.shape[0]).float()).double()
            x = x + (s_next - s) * v
        return x.to(x0.dtype)
    sched = make_scheduler("ddim", objective_config)
    sched.set_timesteps(steps, device=x0.device)
    alphas = sched.alphas_cumprod.double()
    levels = [0] + sorted(int(t) for t in sched.timesteps)  # DDIM's path backwards: from its final level up to T
    v_pred = objective_config["prediction_type"] == "v_prediction"
    for t, t_next in tqdm(list(zip(levels[:-1], levels[1:])), desc="inverting", disable=not progress, leave=False):
        a, a_next = alphas[t], alphas[t_next]
        out = model_fn(x.to(x0.dtype), torch.full((x.shape[0],), float(t))).double()
        if v_pred:
            pred_x0, eps = a.sqrt() * x - (1 - a).sqrt() * out, (1 - a).sqrt() * x + a.sqrt() * out
        else:
            eps = out
            pred_x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_next.sqrt() * pred_x0 + (1 - a_next).sqrt() * eps
    return x.to(x0.dtype)
