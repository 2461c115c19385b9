"""The UNet as the samplers' model_fn(x, t): classifier-free guidance (in an interval of noise levels), condition
annealing (CADS), a distilled flow model's velocity, and MultiDiffusion windows on a canvas larger than the model's.

Every setting arrives as an argument (from the call's SamplingSettings); nothing here reads the pipeline's
defaults or any other state of the call.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..diffusion.cads import CADS
from ..diffusion.reflow import velocity_from_v
from ..diffusion.samplers import cfg_model_fn
from ..diffusion.tiling import tiled_model_fn
from ..errors import MinicreamError
from ..precision import fast_bf16
from ..text.encoder import TextEmbeddings

CADS_SEED_OFFSET = 0xCAD5  # CADS noise comes from a generator of its own per image (seed + this), not the latents'


def cads_generators(seeds: Sequence[int], cads: float) -> list[torch.Generator] | None:
    """One CPU generator per image for the condition-annealing noise (None when CADS is off)."""
    if cads <= 0:
        return None
    return [torch.Generator("cpu").manual_seed((int(s) + CADS_SEED_OFFSET) % 2 ** 63) for s in seeds]


def unet_fn(pipe, control=None, image=None) -> Callable:
    """unet_fn(x, t, emb, skip=0): the pipeline's network, in its dtype (under bf16 autocast for fp32 weights where bf16
    is fast), as the flow's velocity for a distilled model whose network predicts v (minicream distill); with `control`
    (control/use.py's Control) its ControlNets' residuals added to the UNet's skips; with `image` (image_prompt/use.py's
    ImagePrompt) the image prompts attended by every row but the first `skip` (guidance's unconditional rows)."""
    half = pipe.unet_dtype != torch.float32

    def fn(x, t, emb, skip=0):
        x = x.to(pipe.unet_dtype).contiguous(memory_format=torch.channels_last)
        hidden = emb.hidden.to(pipe.unet_dtype)
        with torch.autocast(pipe.device.type, dtype=torch.bfloat16, enabled=not half and fast_bf16(pipe.device)):
            extra = {}  # the stock UNet (models/stock_unet.py) takes neither
            if control is not None:
                extra["control"] = control.residuals(x, t, hidden, emb.mask, emb.pooled)
            if image is not None:
                extra["image"] = image.condition(pipe.unet, len(x), skip)
            return pipe.unet(x, t, hidden, emb.mask, emb.pooled, **extra).float()

    if not pipe.index["objective"].get("network"):
        return fn
    return lambda x, t, emb, skip=0: velocity_from_v(lambda xv, tv: fn(xv, tv, emb, skip), pipe.network_alphas)(x, t)


def annealed(fn: Callable, cads: CADS, n: int, generators: Sequence[torch.Generator], T: int) -> Callable:
    """`fn` with its last `n` (conditional) rows' embeddings noised at high noise levels (CADS), with noise from
    `generators` (one per row)."""

    def noised(x, t, emb, skip=0):
        t_frac = float(t.max()) / T
        if cads.gamma(t_frac) >= 1.0:
            return fn(x, t, emb, skip)
        rows = slice(len(emb) - n, None)  # the conditional rows: all of them, or the second half with uncond
        draw = lambda like: torch.stack([torch.randn(like.shape[1:], generator=g) for g in generators])
        hidden, pooled = emb.hidden.clone(), emb.pooled.clone()
        hidden[rows] = cads.perturb(hidden[rows], t_frac, draw(hidden[rows]).to(hidden.device), emb.mask[rows])
        pooled[rows] = cads.perturb(pooled[rows], t_frac, draw(pooled[rows]).to(pooled.device))
        return fn(x, t, TextEmbeddings(hidden, emb.mask, pooled, emb.truncated), skip)

    return noised


def guided_model_fn(pipe, cond: TextEmbeddings, uncond: TextEmbeddings, guidance: float,
                    generators: Sequence[torch.Generator] | None = None, max_noise: float = 1.0,
                    cads: float = 0.0, control=None, image=None) -> Callable:
    """The UNet as model_fn(x, t) with classifier-free guidance at scale `guidance`, applied only at noise levels
    t/T <= `max_noise` (1 = every step); cond/uncond have x's batch. With `cads` > 0 the conditional rows are
    noised at high noise levels (condition annealing), with noise from `generators` (one per row). `image`: the call's
    image prompts, attended by the conditional rows only (IP-Adapter's guidance: the unconditional rows have none)."""
    T = pipe.index["objective"].get("num_train_timesteps", 1000)
    fn = unet_fn(pipe, control, image)
    if cads > 0:
        if generators is None or len(generators) != len(cond):
            raise MinicreamError("condition annealing needs one generator per image")
        fn = annealed(fn, CADS(cads), len(cond), generators, T)
    if guidance == 1.0:
        return lambda x, t: fn(x, t, cond)
    both = cat_embeddings(uncond, cond)
    return cfg_model_fn(lambda x, t: fn(x, t, both, len(uncond)), guidance, max_noise,
                        cond_fn=lambda x, t: fn(x, t, cond), num_train_timesteps=T)


def canvas_model_fn(pipe, cond: TextEmbeddings, uncond: TextEmbeddings, guidance: float, canvas: tuple[int, int],
                    generators: Sequence[torch.Generator] | None = None, max_noise: float = 1.0,
                    cads: float = 0.0, control=None, image=None) -> Callable:
    """guided_model_fn over latents of size `canvas`: the UNet itself at its native size, MultiDiffusion windows
    of the native size on a larger canvas. cond/uncond: one row per image; control: ControlNets (native size only);
    image: image prompts (every window attends them)."""
    native = tuple(pipe.latent_shape[-2:])
    if tuple(canvas) == native:
        return guided_model_fn(pipe, cond, uncond, guidance, generators, max_noise, cads, control, image)
    if control is not None:
        raise MinicreamError("a control image steers the model's own canvas size; draw it without a wider canvas")
    probe = tiled_model_fn(lambda x, t: x, canvas, native)
    rows = [i for i in range(len(cond)) for _ in range(probe.n_windows)]
    gens = None if generators is None else [generators[i] for i in rows]  # a window's noise from its image's
    return tiled_model_fn(guided_model_fn(pipe, cond[rows], uncond[rows], guidance, gens, max_noise, cads, image=image),
                          canvas, native)


def cat_embeddings(*parts: TextEmbeddings) -> TextEmbeddings:
    return TextEmbeddings(*(torch.cat([getattr(p, f) for p in parts]) for f in ("hidden", "mask", "pooled", "truncated")))
