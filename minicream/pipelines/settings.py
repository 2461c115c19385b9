"""The sampling settings of one call, as one frozen value.

`Pipeline.run` builds a `SamplingSettings` once from the mode's declared sampling options (modes.SAMPLING), the
model's defaults ("sample" in model_index.json) filling in what was not given, and every value range-checked
before any work. A mode function receives it next to its own, image-specific options, and passes it down to
`Pipeline.denoise` (`settings.denoise_args`) and `attach`; nothing else decides how an image is sampled.

    settings = SamplingSettings.build(pipe.defaults, pipe.samplers, steps=4, seed=7, num_images=2)
    settings.seeds        # (7, 8)
"""
from __future__ import annotations

import numbers
import random
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from ..diffusion.samplers import start_index
from ..errors import MinicreamError

MAX_STEPS, MAX_GUIDANCE, MAX_IMAGES, MAX_BATCH = 500, 50.0, 256, 256


@dataclass(frozen=True)
class SamplingSettings:
    steps: int
    guidance: float
    sampler: str
    seeds: tuple[int, ...]  # one per image
    batch_size: int = 8  # images denoised together (results do not depend on it)
    negative_prompt: str = ""
    guidance_max_noise: float = 1.0  # guidance only at noise levels t/T up to this; 1 = every step
    cads: float = 0.0  # condition annealing's noise scale; 0 = off
    progress: bool = False
    callback: Callable | None = None  # callback(step, total)
    step_callback: Callable | None = None  # step_callback(step, t, x) -> x or None

    @classmethod
    def build(cls, defaults: dict, samplers: Sequence[str], *, steps=None, guidance=None, sampler=None, seed=None,
              num_images=1, batch_size=8, negative_prompt="", guidance_max_noise=None, cads=None, progress=False,
              callback=None, step_callback=None, strength=None) -> "SamplingSettings":
        """The settings of one call: None takes the model's default (`defaults`, model_index.json "sample"), else
        the built-in one; every value is checked here, once. `strength` (img2img, inpaint, variation): the share
        of the schedule that runs; with the model's default steps too few for any step to run at that strength
        (a one-step model at 0.6), the schedule gets as many steps as make one run; steps given explicitly are
        kept (and refused with a clear message if none would run)."""
        if strength is not None and (isinstance(strength, bool) or not isinstance(strength, numbers.Real)
                                     or not 0.0 < strength <= 1.0):
            raise MinicreamError(f"strength must be in (0, 1] (a number), got {strength!r}")
        given = steps is not None
        steps = steps if steps is not None else defaults.get("steps", 20)
        guidance = guidance if guidance is not None else defaults.get("guidance", 4.0)
        sampler = sampler or defaults.get("sampler", "dpmpp_2m")
        for name, value, kind in (("steps", steps, numbers.Integral), ("num_images", num_images, numbers.Integral),
                                  ("batch_size", batch_size, numbers.Integral), ("guidance", guidance, numbers.Real)):
            if isinstance(value, bool) or not isinstance(value, kind):
                raise MinicreamError(f"{name} must be a number, got {value!r}")
        if not 1 <= num_images <= MAX_IMAGES:
            raise MinicreamError(f"num_images must be in 1..{MAX_IMAGES}, got {num_images}")
        if not 1 <= steps <= MAX_STEPS:
            raise MinicreamError(f"steps must be in 1..{MAX_STEPS}, got {steps}")
        if not 0.0 <= guidance <= MAX_GUIDANCE:
            raise MinicreamError(f"guidance must be in 0..{MAX_GUIDANCE}, got {guidance}")
        if sampler not in samplers:
            raise MinicreamError(f"unknown sampler {sampler!r}; choose one of: {', '.join(samplers)}")
        if not 1 <= batch_size <= MAX_BATCH:
            raise MinicreamError(f"batch_size must be in 1..{MAX_BATCH}, got {batch_size}")
        steps = int(steps)
        if strength is not None:
            while not given and int(steps * strength) < 1 and steps < MAX_STEPS:
                steps += 1
            start_index(steps, strength)  # a clear error before any work
        return cls(steps, float(guidance), sampler, tuple(seeds_for(seed, num_images)), int(batch_size),
                   negative_prompt or "",
                   _number("guidance_max_noise", guidance_max_noise, defaults, 1.0, lambda v: 0.0 < v <= 1.0, "(0, 1]"),
                   _number("cads", cads, defaults, 0.0, lambda v: 0.0 <= v <= 10.0, "[0, 10]"),
                   bool(progress), callback, step_callback)

    def with_seeds(self, seeds: Sequence[int]) -> "SamplingSettings":
        """The same settings for other seeds (best-of-N candidates, a scene's objects, a blend's frames)."""
        return replace(self, seeds=tuple(int(s) for s in seeds))

    @property
    def denoise_args(self) -> dict:
        """`Pipeline.denoise`'s sampling arguments: pipe.denoise(seeds, cond, uncond, **settings.denoise_args, ...)."""
        return {"guidance": self.guidance, "sampler": self.sampler, "steps": self.steps, "batch_size": self.batch_size,
                "progress": self.progress, "callback": self.callback, "step_callback": self.step_callback,
                "guidance_max_noise": self.guidance_max_noise, "cads": self.cads}

    @property
    def recorded(self) -> dict:
        """What a PNG records of these settings (the guidance interval and CADS only when on)."""
        return {"negative_prompt": self.negative_prompt, "steps": self.steps, "sampler": self.sampler,
                "cfg_scale": self.guidance,
                **({"guidance_max_noise": self.guidance_max_noise} if self.guidance_max_noise < 1.0 else {}),
                **({"cads": self.cads} if self.cads > 0 else {})}


def _number(name: str, value, defaults: dict, default: float, ok, interval: str) -> float:
    """`value`, else the model's default (`name` in model_index.json "sample"), else `default`; a number with ok()."""
    if value is None:
        value = defaults.get(name, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not ok(value):
        raise MinicreamError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def seeds_for(seed, n: int) -> list[int]:
    """Per-image seeds: `seed`, seed+1, ... (random when None), or one given seed per image."""
    if seed is None:
        base = random.randrange(2**31)
        return [base + i for i in range(n)]
    # A string is iterable too: seed="12" must not become the seeds [1, 2].
    single = isinstance(seed, numbers.Integral)
    if isinstance(seed, (bool, str, bytes, float)) or not (single or isinstance(seed, Sequence)):
        raise MinicreamError(f"seed must be an integer or a list of integers, got {seed!r}")
    if not single and any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in seed):
        raise MinicreamError(f"seeds must be integers, got {list(seed)!r}")
    seeds = [int(seed) + i for i in range(n)] if single else [int(s) for s in seed]
    if any(not 0 <= s < 2**63 for s in seeds):
        raise MinicreamError(f"seeds must be in 0..2**63-1, got {seeds[0] if single else seeds}")
    if not single and len(seeds) != n:
        raise MinicreamError(f"got {len(seeds)} seeds for {n} images")
    return seeds
