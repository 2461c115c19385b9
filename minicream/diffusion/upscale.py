"""The diffusion upscaler's objective and sampler: rectified flow on the residual over bicubic upsampling.

The target is r0 = residual_scale * (high - bicubic(low)); training noises it along the straight path
x_t = (1 - t) r0 + t eps and regresses the velocity eps - r0 (minRF), with the low-resolution condition noise-augmented
at a random level that the network is told (SD x4 upscaler, Imagen SR). Sampling integrates from pure noise with a few
steps and adds the result back to bicubic: "euler" follows the flow's ODE; "euler_a" (ancestral, as diffusers'
FlowMatchEulerDiscreteScheduler with stochastic_sampling) moves each step to the predicted clean residual and noises it
afresh to the next level, which keeps more fine detail over a soft input. Images are float tensors in [-1, 1],
(N, 3, H, W).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SAMPLERS = ("euler", "euler_a")


@dataclass(frozen=True)
class UpscaleSettings:
    """How one upscale samples (sample_upscale's steps, noise_level, sampler, consistent), as one value: an upscaler
    folder's defaults (upscaler.json), a pipeline call's (pipelines/upscale.py fills in the folder's for what the call
    leaves out) and the recipe's report."""
    steps: int = 4
    noise_level: float = 0.0
    sampler: str = "euler"
    consistent: bool = False

    def record(self) -> dict:
        """The PNG's parameters for these settings (the pipeline options' names)."""
        return {"upscale_steps": self.steps, "upscale_noise": self.noise_level, "upscale_sampler": self.sampler,
                "upscale_consistent": self.consistent}


def downsample(high: torch.Tensor, scale: int) -> torch.Tensor:
    """The low-resolution image the upscaler learns to invert (antialiased bicubic, like a resize of a render)."""
    return F.interpolate(high.float(), scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)


def upsample(low: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling, clamped: the baseline and the condition."""
    return F.interpolate(low.float(), scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)


def back_project(high: torch.Tensor, low: torch.Tensor, scale: int, iterations: int = 2) -> torch.Tensor:
    """Iterative back-projection (Irani & Peleg): push `high` towards the images whose downsample is `low`, by adding
    the bicubic upsampling of what its own downsample misses. Only the low frequencies move: detail above the
    low-resolution grid's Nyquist frequency is kept, and what the picture shows at the input's size stays the input's."""
    for _ in range(iterations):
        miss = low - downsample(high, scale)
        high = high + F.interpolate(miss, scale_factor=scale, mode="bicubic", align_corners=False)
    return high


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel (sigma in pixels; 0 = unchanged)."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(images.device)
    c = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def flow_loss(model, high: torch.Tensor, low: torch.Tensor, levels: torch.Tensor, gen: torch.Generator,
              crop: int = 0) -> torch.Tensor:
    """Mean squared velocity error on a batch; `low` is the (possibly degraded) low-resolution image, `levels` the
    condition noise per image. With `crop`, each image is cut to one random crop x crop window (the network is fully
    convolutional; the condition and baseline are computed on the whole image first, so crops have no borders)."""
    scale, rs = model.config.scale, model.config.residual_scale
    n = len(high)
    base = upsample(low, scale)
    cond = upsample(low + levels.view(-1, 1, 1, 1) * torch.randn(low.shape, generator=gen), scale)
    r0 = (high.float() - base) * rs
    if crop and crop < high.shape[-1]:
        side = high.shape[-1]
        ys = torch.randint(0, side - crop + 1, (n,), generator=gen).tolist()
        xs = torch.randint(0, side - crop + 1, (n,), generator=gen).tolist()
        r0 = torch.stack([r0[i, :, y:y + crop, x:x + crop] for i, (y, x) in enumerate(zip(ys, xs))])
        cond = torch.stack([cond[i, :, y:y + crop, x:x + crop] for i, (y, x) in enumerate(zip(ys, xs))])
    t = torch.sigmoid(torch.randn(n, generator=gen))  # logit-normal times (SD3), as the base model's objective
    eps = torch.randn(r0.shape, generator=gen)
    xt = (1 - t.view(-1, 1, 1, 1)) * r0 + t.view(-1, 1, 1, 1) * eps
    pred = model(xt, t, cond, levels)
    return F.mse_loss(pred.float(), eps - r0)


@torch.no_grad()
def sample_upscale(model, low: torch.Tensor, noise: torch.Tensor, steps: int = 4, noise_level: float = 0.0,
                   level_noise: torch.Tensor | None = None, bf16: bool = False, sampler: str = "euler",
                   generator: torch.Generator | list[torch.Generator] | None = None,
                   consistent: bool = False) -> torch.Tensor:
    """Upscale `low` (N, 3, h, w) in [-1, 1] to (N, 3, h*scale, w*scale): `steps` steps of the flow from `noise`
    (the residual's starting noise, that shape). `noise_level`: the condition's augmentation at sampling time (SD's
    noise_level; more lets the network invent more detail over a soft input), drawn from `level_noise` (low's shape).
    `sampler`: one of SAMPLERS; "euler_a" draws each step's fresh noise from `generator` (or image i's from
    generator[i], so an image does not depend on its batch).
    `consistent`: each step's predicted clean image is back-projected onto the input (its downsample is `low`), so
    the upscaler adds detail without changing what the picture shows at its own size.
    `bf16`: run the fp32 network under bf16 autocast (twice as fast where the CPU has bf16 units)."""
    cfg = model.config
    if steps < 1:
        raise ValueError("upscaler steps must be >= 1")
    if sampler not in SAMPLERS:
        raise ValueError(f"upscaler sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if noise_level < 0 or noise_level > cfg.max_noise_level:
        raise ValueError(f"upscaler noise level must be in [0, {cfg.max_noise_level}], got {noise_level}")
    clean = low.float()
    base = upsample(clean, cfg.scale)
    low = clean
    if noise_level > 0:
        low = low + noise_level * (level_noise if level_noise is not None else torch.randn_like(low))
    cond = upsample(low, cfg.scale)
    rs = cfg.residual_scale
    levels = torch.full((len(low),), float(noise_level))
    cond = cond.contiguous(memory_format=torch.channels_last)
    x = noise.float()
    ts = torch.linspace(1.0, 0.0, steps + 1)
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            v = model(x.contiguous(memory_format=torch.channels_last), t.expand(len(x)), cond, levels).float()
        if sampler == "euler" and not consistent:
            x = x + (t_next - t) * v
            continue
        # x_t = (1 - t) r0 + t eps and v = eps - r0: the predicted clean residual and noise
        r0, eps = x - t * v, x + (1 - t) * v
        if consistent:
            r0 = (back_project(base + r0 / rs, clean, cfg.scale) - base) * rs
        if sampler == "euler_a":  # the clean residual, noised afresh to t_next
            eps = _fresh_noise(x, generator) if t_next > 0 else 0
        x = (1 - t_next) * r0 + t_next * eps
    return (base + x / rs).clamp(-1, 1)


def start_noise(generator: torch.Generator, low_shape, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's noise for sample_upscale, drawn in this order from its own generator: the residual's starting
    noise (3, h*scale, w*scale) and the condition's augmentation noise (3, h, w), for a low image of `low_shape`."""
    c, h, w = low_shape[-3:]
    return torch.randn((c, h * scale, w * scale), generator=generator), torch.randn((c, h, w), generator=generator)


def _fresh_noise(x: torch.Tensor, generator) -> torch.Tensor:
    if isinstance(generator, (list, tuple)):
        if len(generator) != len(x):
            raise ValueError(f"{len(generator)} generators for {len(x)} images")
        return torch.stack([torch.randn(x.shape[1:], generator=g) for g in generator]).to(x.device)
    return torch.randn(x.shape, generator=generator).to(x.device)


__all__ = ["SAMPLERS", "UpscaleSettings", "back_project", "downsample", "flow_loss", "gaussian_blur", "sample_upscale", "start_noise", "upsample"]
