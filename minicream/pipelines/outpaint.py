"""Outpainting: extend the canvas past the image's border (e.g. 64 -> 128 px wide).

The image sits on a larger white canvas; the new area is sampled conditioned on the old by the inpainting blend
(the known latents replace the sampler's after every step), and since the model was trained at one size, the
canvas is denoised in overlapping windows of that size whose predictions are averaged (MultiDiffusion). The
input's own pixels are kept outside a feathered seam.
"""
from __future__ import annotations

import torch

from ..editing import load_image, paste_back
from ..errors import MinicreamError
from .inpaint import keep_latents
from .metadata import sha
from .modes import FILTER, PROMPT, SAMPLING, Mode, Option

MAX_EXTEND = 192  # pixels per side


def place_on_canvas(source: torch.Tensor, left: int, right: int, top: int, bottom: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (3, h, w) -> the white canvas with the image at (top, left), and the bool mask of the new area."""
    _, h, w = source.shape
    canvas = torch.full((3, top + h + bottom, left + w + right), 255, dtype=torch.uint8)
    canvas[:, top:top + h, left:left + w] = source
    repaint = torch.ones(canvas.shape[1:], dtype=torch.bool)
    repaint[top:top + h, left:left + w] = False
    return canvas, repaint


def outpaint(pipe, settings, image, prompt, left, right, top, bottom, filter, style, llm):
    pipe.check_prompt(prompt)
    sides = {"left": left, "right": right, "top": top, "bottom": bottom}
    f = pipe.image_size // pipe.latent_shape[-1]
    for name, v in sides.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_EXTEND or v % f:
            raise MinicreamError(f"{name} must be a multiple of {f} pixels in 0..{MAX_EXTEND}, got {v!r}")
    if not any(sides.values()):
        raise MinicreamError("outpaint needs at least one of left, right, top, bottom > 0 (pixels to add on that side)")
    source = load_image(image, pipe.image_size)
    canvas, repaint = place_on_canvas(source, left, right, top, bottom)
    filtered = pipe.filter_prompt(prompt, filter, style=style, llm=llm)
    seeds = settings.seeds
    cond, uncond = pipe.encode_prompt(filtered.rewritten), pipe.encode_prompt(settings.negative_prompt)
    latents = pipe.denoise(seeds, cond, uncond, **settings.denoise_args, init=pipe.encode_image(canvas[None]),
                           keep=keep_latents(repaint, f), canvas=pipe.latent_size(*canvas.shape[1:]))
    pixels = paste_back(canvas, pipe.decode(latents), repaint)
    extra = {"mode": "outpaint", "extend": sides, "init_image_sha256": sha(source)}
    return pipe.attach(pixels, seeds, prompt, settings, filtered, extra)


MODE = Mode("outpaint", "extend an image past its border (MultiDiffusion windows at the model's size)", (
    Option("image", "image", None, "the input image (squared and resized to the model's size first)", cli=False,
           required=True),
    Option("prompt", "str", None, "what the whole picture should show", cli=False, required=True, limits=PROMPT),
    *(Option(side, "int", 0, f"pixels to add {where}", limits={"ge": 0, "le": MAX_EXTEND})
      for side, where in (("left", "on the left"), ("right", "on the right"), ("top", "at the top"), ("bottom", "at the bottom"))),
    *SAMPLING, *FILTER,
), outpaint)
