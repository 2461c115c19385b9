"""Layout-grounded scenes, training-free (LLM-grounded Diffusion's way): each object of the layout is drawn on its own
with its own caption and seed, cut out of its white background and fitted into its box, and the composed picture
is then redrawn lightly as one image with the whole prompt (img2img at `harmonize`; 0 keeps the composition).

By default the canvas is sized from the layout (layout.native_layout: each object's box the model's native size,
e.g. 136x64 for two side by side), so every object is pasted at the size it was drawn, pixel for pixel, and the joint
redraw runs over the larger canvas with MultiDiffusion windows (diffusion/tiling.py). `canvas="model"` lays the
scene out on the model's own square canvas instead (objects shrunk into their boxes, as before issue 28).

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
from ..errors import MinicreamError
from .layout import Layout
from .layout_plan import scene_layout
from .modes import FILTER, PROMPT, SAMPLING, Mode, Option

WHITE_THRESHOLD = 235  # generated backgrounds are near white, not exactly white
CANVASES = ("scene", "model")  # sized from the layout (objects at native size) | the model's own square
# The scene options text2img shares (a several-object prompt is drawn as a scene)
CANVAS = Option("canvas", "str", "scene", "a scene without a layout: \"scene\" sizes the canvas so every object is "
                "drawn at the model's size (136x64 for two), \"model\" uses the model's own canvas", choices=CANVASES)
HARMONIZE = Option("harmonize", "float", 0.0, "with a layout: img2img strength of the final joint redraw (0 = the "
                   "composition as drawn)", limits={"ge": 0.0, "lt": 1.0})


def check_canvas(canvas) -> None:
    if canvas not in CANVASES:
        raise MinicreamError(f"canvas must be one of {', '.join(CANVASES)}, got {canvas!r}")


def layout_for(pipe, filtered, layout, seed: int, canvas: str = "scene") -> Layout | None:
    """The layout to draw: the one given (its canvas as given), else the filter's scene laid out by the rules
    (seeded) on the canvas `canvas` asks for, with the LLM's planned boxes where it gave valid ones, else None."""
    if layout is not None:
        return Layout.from_dict(layout, pipe.image_size, pipe.image_size)
    if not filtered.scene:
        return None
    return scene_layout(filtered.scene, filtered.plan, pipe.image_size, pipe.image_size // pipe.latent_shape[-1], seed,
                        canvas)


def paste_object(canvas: Image.Image, drawn: Image.Image, box) -> None:
    """An object drawn on white into its box: unscaled when the box is the drawn image's size (its white
    background made transparent, so neighbours may overlap it), else cut to its content and fitted."""
    x0, y0, x1, y1 = box
    if (x1 - x0, y1 - y0) == drawn.size:
        cut = cutout_from_white(drawn, WHITE_THRESHOLD, crop=False)
        canvas.paste(cut, (x0, y0), cut)
    else:
        paste_fitted(canvas, cutout_from_white(drawn, WHITE_THRESHOLD), box)


def draw_scene(pipe, settings, filtered, layout: Layout, seed: int, harmonize: float) -> Image.Image:
    """One scene image: objects drawn (object k with a seed derived from (seed, k)), composed, harmonised."""
    captions = [o.caption for o in layout.objects]
    cond = pipe.encode_prompt(captions)
    uncond = pipe.encode_prompt(settings.negative_prompt)
    obj_seeds = [candidate_seed(seed, k + 1) for k in range(len(captions))]
    latents = pipe.denoise(obj_seeds, cond, uncond, **settings.denoise_args)
    canvas = Image.new("RGB", (layout.width, layout.height), "white")
    for obj, pixels in zip(layout.objects, pipe.decode(latents)):
        drawn = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
        paste_object(canvas, drawn, obj.box)
    if harmonize > 0:  # one picture: the whole prompt redraws the composition lightly
        source = torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)
        scene_cond = pipe.encode_prompt(filtered.rewritten)
        out = pipe.denoise([seed], scene_cond, uncond, **settings.denoise_args,
                           init=pipe.encode_image(source[None]), strength=harmonize,
                           canvas=pipe.latent_size(layout.height, layout.width))
        return Image.fromarray(pipe.decode(out)[0].permute(1, 2, 0).numpy(), "RGB")
    return canvas


def scene(pipe, settings, prompt, layout, canvas, harmonize, filter, style, llm):
    pipe.check_prompt(prompt)
    filtered = pipe.filter_prompt(prompt, filter, style=style, llm=llm)
    return render(pipe, settings, filtered, prompt, layout, harmonize, canvas)


def render(pipe, settings, filtered, prompt, layout, harmonize, canvas: str = "scene") -> list[Image.Image]:
    """Scene images, one per seed of `settings` (the layout is the given one, or the filter's laid out with each
    image's seed)."""
    check_canvas(canvas)
    if isinstance(harmonize, bool) or not isinstance(harmonize, numbers.Real) or not 0.0 <= harmonize < 1.0:
        raise MinicreamError(f"harmonize must be a number in [0, 1), got {harmonize!r}")
    if layout is not None and harmonize > 0:  # a given canvas is checked before anything is drawn
        Layout.from_dict(layout, pipe.image_size, pipe.image_size).check_harmonizable(
            pipe.image_size, pipe.image_size // pipe.latent_shape[-1])
    images = []
    for s in settings.seeds:
        lay = layout_for(pipe, filtered, layout, s, canvas)
        if lay is None:
            raise MinicreamError(f"no layout for {prompt!r}: the filter found a single object; pass layout= or use text2img")
        im = draw_scene(pipe, settings, filtered, lay, s, float(harmonize))
        pixels = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None]
        images += pipe.attach(pixels, [s], prompt, settings, filtered,
                              {"mode": "scene", "layout": lay.to_dict(), "harmonize": float(harmonize)})
    return images


MODE = Mode("scene", "several objects placed by a layout (from the prompt, or given), drawn one by one and composed", (
    Option("prompt", "str", None, "the scene, e.g. \"a dog face to the left of a red apple\"", cli=False, required=True,
           limits=PROMPT),
    Option("layout", "json", None, "a layout {\"objects\": [{\"caption\", \"box\": [x0, y0, x1, y1]}]} (default: from the prompt)"),
    CANVAS, HARMONIZE,
    *SAMPLING, *FILTER,
), scene)
