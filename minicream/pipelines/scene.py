"""Layout-grounded scenes, training-free (LLM-grounded Diffusion's way): each object of the layout is drawn on its own
with its own caption and seed, cut out of its white background and fitted into its box, and the composed picture
is then redrawn lightly as one image with the whole prompt (img2img at `harmonize`; 0 keeps the composition).

The model was trained on exactly such pictures (the data builder composes emoji into boxes), so the composed
scene is in its distribution; counts and positions are the layout's, not left to the sampler.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch
from PIL import Image

from ..data.images import cutout_from_white, paste_fitted
from ..evaluator.rerank import candidate_seed
from ..layout import Layout, layout_from_scene
from .base import seeds_for
from .modes import FILTER, SAMPLING, Mode, Option

WHITE_THRESHOLD = 235  # generated backgrounds are near white, not exactly white


def layout_for(pipe, filtered, layout, seed: int) -> Layout | None:
    """The layout to draw: the one given, else the filter's scene laid out by the rules (seeded), else None."""
    if layout is not None:
        return Layout.from_dict(layout, pipe.image_size, pipe.image_size)
    if filtered.scene:
        return layout_from_scene(filtered.scene, pipe.image_size, seed=seed)
    return None


def draw_scene(pipe, filtered, layout: Layout, seed: int, harmonize: float, negative_prompt: str, steps: int,
               guidance: float, sampler: str, batch_size: int, progress: bool, callback, step_callback=None) -> Image.Image:
    """One scene image: objects drawn (object k with a seed derived from (seed, k)), composed, harmonised."""
    captions = [o.caption for o in layout.objects]
    cond = pipe.encode_prompt(captions)
    uncond = pipe.encode_prompt(negative_prompt or "")
    obj_seeds = [candidate_seed(seed, k + 1) for k in range(len(captions))]
    latents = pipe.denoise(obj_seeds, cond, uncond, guidance, sampler, steps, batch_size, progress, callback,
                           step_callback=step_callback)
    canvas = Image.new("RGB", (layout.width, layout.height), "white")
    for obj, pixels in zip(layout.objects, pipe.decode(latents)):
        drawn = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
        paste_fitted(canvas, cutout_from_white(drawn, WHITE_THRESHOLD), obj.box)
    if harmonize > 0:  # one picture: the whole prompt redraws the composition lightly
        source = torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)
        scene_cond = pipe.encode_prompt(filtered.rewritten)
        out = pipe.denoise([seed], scene_cond, uncond, guidance, sampler, steps, 1, progress, callback,
                           init=pipe.encode_image(source[None]), strength=harmonize,
                           canvas=pipe.latent_size(layout.height, layout.width), step_callback=step_callback)
        return Image.fromarray(pipe.decode(out)[0].permute(1, 2, 0).numpy(), "RGB")
    return canvas


def scene(pipe, prompt, layout, harmonize, negative_prompt, num_images, steps, guidance, sampler, seed, batch_size,
          progress, callback, step_callback, filter, style, llm):
    pipe.check_prompt(prompt)
    steps, guidance, sampler = pipe.settings(steps, guidance, sampler, num_images, batch_size)
    filtered = pipe.filter_prompt(prompt, filter, style=style, llm=llm)
    return render(pipe, filtered, prompt, layout, harmonize, negative_prompt, seeds_for(seed, num_images), steps,
                  guidance, sampler, batch_size, progress, callback, step_callback)


def render(pipe, filtered, prompt, layout, harmonize, negative_prompt, seeds, steps, guidance, sampler, batch_size,
           progress, callback, step_callback=None) -> list[Image.Image]:
    """Scene images for `seeds` (the layout is the given one, or the filter's laid out with each image's seed)."""
    from ..errors import MinicreamError

    if isinstance(harmonize, bool) or not isinstance(harmonize, numbers.Real) or not 0.0 <= harmonize < 1.0:
        raise MinicreamError(f"harmonize must be a number in [0, 1), got {harmonize!r}")
    if layout is not None and harmonize > 0:  # a given canvas is checked before anything is drawn
        Layout.from_dict(layout, pipe.image_size, pipe.image_size).check_harmonizable(
            pipe.image_size, pipe.image_size // pipe.latent_shape[-1])
    images = []
    for s in seeds:
        lay = layout_for(pipe, filtered, layout, s)
        if lay is None:
            raise MinicreamError(f"no layout for {prompt!r}: the filter found a single object; pass layout= or use text2img")
        im = draw_scene(pipe, filtered, lay, s, float(harmonize), negative_prompt, steps, guidance, sampler, batch_size,
                        progress, callback, step_callback)
        pixels = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None]
        images += pipe.attach(pixels, [s], prompt, negative_prompt, steps, sampler, guidance, filtered,
                              {"mode": "scene", "layout": lay.to_dict(), "harmonize": float(harmonize)})
    return images


MODE = Mode("scene", "several objects placed by a layout (from the prompt, or given), drawn one by one and composed", (
    Option("prompt", "str", None, "the scene, e.g. \"a dog face to the left of a red apple\"", cli=False),
    Option("layout", "object", None, "a layout {\"objects\": [{\"caption\", \"box\": [x0, y0, x1, y1]}]} (default: from the prompt)", cli=False),
    Option("harmonize", "float", 0.0, "img2img strength of the final joint redraw (0 = the composition as drawn)"),
    *SAMPLING, *FILTER,
), scene)
