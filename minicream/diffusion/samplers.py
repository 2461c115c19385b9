"""Samplers behind one signature.

`sample(model_fn, x, sampler, steps, objective_config, generators)` runs any of the diffusers schedulers
below; callers never branch on the scheduler. `model_fn(x, t) -> model output` (classifier-free guidance
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


def cfg_model_fn(model_fn: Callable, guidance: float) -> Callable:
    """Classifier-free guidance as a wrapper: `model_fn` sees the batch twice, [uncond; cond], and the outputs are mixed."""

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out_uncond, out_cond = model_fn(torch.cat([x, x]), torch.cat([t, t])).chunk(2)
        return out_uncond + guidance * (out_cond - out_uncond)

    return guided


@torch.no_grad()
def sample(model_fn: Callable, x: torch.Tensor, sampler: str, steps: int, objective_config: dict,
           generators: Sequence[torch.Generator] | None = None, progress: bool = True,
           callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Integrate from unit-variance noise `x` (B,C,H,W) to clean latents."""
    scheduler = make_scheduler(sampler, objective_config)
    scheduler.set_timesteps(steps, device=x.device)
    if isinstance(scheduler, EulerAncestralDiscreteScheduler):
        scheduler.sigmas = scheduler.sigmas.double()  # float32 rounding gives sqrt(<0) = NaN at some step counts
    x = x * getattr(scheduler, "init_noise_sigma", 1.0)  # flow schedulers start from unit noise
    gens = list(generators) if generators is not None else None
    timesteps = scheduler.timesteps
    # Only stochastic schedulers take a generator (deterministic ones such as Heun refuse the argument).
    step_kwargs = {"generator": gens} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for i, t in enumerate(tqdm(timesteps, desc=f"sampling ({sampler})", disable=not progress, leave=False)):
        inp = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        out = model_fn(inp, t.expand(x.shape[0]).float())
        x = scheduler.step(out, t, x, **step_kwargs).prev_sample
        if callback is not None:
            callback(i + 1, len(timesteps))
    return x
