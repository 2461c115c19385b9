"""Inpainting: repaint where the mask is white (or transparent), keep the rest.

The known latents replace the sampler's outside the mask after every step (noised to the level reached), and
the result keeps the input's own pixels outside a feathered seam around the mask, as A1111 pastes them back,
so the autoencoder's blur never touches what the user kept. At a larger `size` (a model with an upscaler) the
repainted image is upscaled and the input's pixels at that size are pasted back the same way.
"""
from __future__ import annotations

import torch

from ..editing import load_image, load_mask, open_image, paste_back
from .metadata import sha
from .modes import FILTER, PROMPT, SAMPLING, Mode, Option
from .upscale import UPSCALE, check_size, upscale_edit


def keep_latents(repaint: torch.Tensor, factor: int) -> torch.Tensor:
    """bool (H, W) pixels to repaint -> float (1, 1, H/f, W/f), 1 where the latent is kept: a latent is repainted
    when any pixel of its patch is."""
    return 1.0 - torch.nn.functional.max_pool2d(repaint[None, None].float(), factor)


def inpaint(pipe, settings, image, mask, prompt, strength, filter, style, llm, size=None, **upscale):
    pipe.check_prompt(prompt)
    size = check_size(pipe, size)
    picture = open_image(image, "image")
    source = load_image(picture, pipe.image_size)
    repaint = load_mask(mask, pipe.image_size, like=picture.size)  # cropped as the image is: the same pixels
    filtered = pipe.filter_prompt(prompt, filter, style=style, llm=llm)
    seeds = settings.seeds
    cond, uncond = pipe.encode_prompt(filtered.rewritten), pipe.encode_prompt(settings.negative_prompt)
    keep = keep_latents(repaint, pipe.image_size // pipe.latent_shape[-1])
    latents = pipe.denoise(seeds, cond, uncond, **settings.denoise_args, init=pipe.encode_image(source[None]),
                           strength=strength, keep=keep)
    pixels = paste_back(source, pipe.decode(latents), repaint)
    extra = {"mode": "inpaint", "strength": strength, "init_image_sha256": sha(source), "mask_sha256": sha(repaint)}
    images = pipe.attach(pixels, seeds, prompt, settings, filtered, extra)
    # at a larger size: drawn at the model's, upscaled, the input's own pixels pasted back outside the mask
    return upscale_edit(pipe, images, picture, open_image(mask, "mask"), size, **upscale)


MODE = Mode("inpaint", "repaint the masked part of an image (white or transparent = repaint)", (
    Option("image", "image", None, "the input image", cli=False, required=True),
    Option("mask", "image", None, "the mask, the image's size: white (or transparent) = repaint, black = keep",
           required=True),
    Option("prompt", "str", None, "what the repainted part should show", cli=False, required=True, limits=PROMPT),
    Option("strength", "float", 1.0, "share of the schedule that runs (1 = repaint from noise)",
           limits={"gt": 0.0, "le": 1.0}),
    *SAMPLING, *FILTER, *UPSCALE,
), inpaint)
