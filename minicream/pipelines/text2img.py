"""Text to image: noise -> denoise -> decode, with best-of-N reranking by the model's evaluator."""
from __future__ import annotations

from ..control.use import MAX_SCALE, build_control
from ..errors import MinicreamError
from ..evaluator.rerank import MAX_CANDIDATES, candidate_seeds, check_candidates
from ..filter.variety import record_designs, varied_cond
from ..image_prompt.prior import prior_prompt
from ..image_prompt.use import MAX_SCALE as MAX_IMAGE_SCALE, build_image_prompt
from .metadata import PARAMS_KEY
from .modes import FILTER, PROMPT, SAMPLING, Mode, Option
from .scene import CANVAS, HARMONIZE, render
from .upscale import UPSCALE, check_size


def text2img(pipe, settings, prompt, filter, style, llm, size, num_candidates, keep_top, layout, canvas, harmonize,
             control=None, control_kind=None, control_scale=1.0, control_preprocess="none", control_start=0.0,
             control_end=1.0, image_prompt=None, image_scale=1.0, prior=False, image_detail=True, image_strength=0.6,
             **upscale):
    """`upscale`: the UPSCALE options (pipelines/upscale.py)."""
    image = build_image_prompt(pipe, image_prompt, image_scale, image_detail, image_strength)
    if prior and image is not None:
        raise MinicreamError("prior draws the image embedding from the text; give it or an image prompt, not both")
    if image is None or (prompt is not None and str(prompt).strip()):
        pipe.check_prompt(prompt)
    control = build_control(pipe, control, control_kind, control_scale, control_preprocess, control_start,
                            control_end)
    for given, what in ((control, "a control image gives the picture's structure"), (image, "an image prompt draws one picture")):
        if given is not None:  # the prompt is drawn as one caption
            if layout not in (None, "none"):
                raise MinicreamError(f"{what}; it does not take a layout")
            layout = "none"
    # what was typed -> the model's captions; with an image prompt the text is optional
    filtered = pipe.filter_prompt(prompt, filter, style=style, llm=llm) if prompt and str(prompt).strip() else None
    size = check_size(pipe, size)
    if size != pipe.image_size:
        pipe.upscaler.settings(**upscale)  # refuse bad settings before any work
    check_candidates(num_candidates, keep_top)
    if prior:  # text -> the prior's image embedding (one per image, by its seed) -> the adapter, with the text too
        if filtered is None:
            pipe.check_prompt(prompt)
        if layout not in (None, "none"):
            raise MinicreamError("prior draws one picture from the text; it does not take a layout")
        layout = "none"
        image = prior_prompt(pipe, filtered.rewritten, candidate_seeds(list(settings.seeds), num_candidates), image_scale)
    images = _draw(pipe, settings, prompt or "", filtered, style, num_candidates, keep_top, layout, canvas, harmonize,
                   control, image)
    # the evaluator ranks at the native size, before the upscaler: only the kept images are upscaled
    return pipe.upscale(images, size, **upscale)


def _draw(pipe, settings, prompt, filtered, style, num_candidates, keep_top, layout, canvas, harmonize, control=None,
          image=None):
    if num_candidates > 1:
        pipe.evaluator  # fail before any work if the model has no evaluator
    gen_seeds = candidate_seeds(list(settings.seeds), num_candidates)  # == the seeds when num_candidates == 1
    if filtered is None:  # an image prompt alone: no text, the candidates ranked by their likeness to the image
        return _draw_from_image(pipe, settings, gen_seeds, num_candidates, keep_top, control, image)
    if layout != "none" and (layout is not None or filtered.scene):  # several objects: a layout places them
        images = render(pipe, settings.with_seeds(gen_seeds), filtered, prompt, layout, harmonize, canvas)
        return pipe.rerank(images, filtered.rewritten, num_candidates, keep_top) if num_candidates > 1 else images
    # A prompt naming no design, under style "vary": each image its own design, by its seed (filter/variety.py).
    # By the generation seed, best-of-N candidates too: a PNG's seed alone, re-run, gives the same image.
    cond, designs = varied_cond(pipe, filtered, style, gen_seeds)
    uncond = pipe.encode_prompt(settings.negative_prompt)
    latents = pipe.denoise(gen_seeds, cond, uncond, **settings.denoise_args, control=control, image=image,
                           **(image.start if image is not None else {}))
    images = pipe.attach(pipe.decode(latents), gen_seeds, prompt, settings, filtered, _records(control, image))
    record_designs(images, filtered, designs, PARAMS_KEY)
    return pipe.rerank(images, filtered.rewritten, num_candidates, keep_top) if num_candidates > 1 else images


def _records(control, image) -> dict | None:
    extra = {}
    if control is not None:
        extra["control"] = control.records
    if image is not None:
        extra["image_prompt"] = image.records
    return extra or None


def _draw_from_image(pipe, settings, gen_seeds, num_candidates, keep_top, control, image):
    cond, uncond = pipe.encode_prompt(""), pipe.encode_prompt(settings.negative_prompt)
    latents = pipe.denoise(gen_seeds, cond, uncond, **settings.denoise_args, control=control, image=image, **image.start)
    images = pipe.attach(pipe.decode(latents), gen_seeds, "", settings, None, _records(control, image))
    if num_candidates == 1:
        return images
    return pipe.rerank(images, None, num_candidates, keep_top, target=image.embeds.mean(0))


MODE = Mode("text2img", "draw images from a prompt", (
    Option("prompt", "str", None, "what to draw (optional with an image prompt)", cli=False, limits=PROMPT),
    *SAMPLING, *FILTER,
    *UPSCALE,
    Option("num_candidates", "int", 1, "best-of-N: draw N candidates per image, keep the one the evaluator scores highest",
           limits={"ge": 1, "le": MAX_CANDIDATES}),
    Option("keep_top", "int", 1, "with best-of-N: return this many best candidates per image, best first",
           limits={"ge": 1, "le": MAX_CANDIDATES}),
    Option("layout", "json", None, "a scene layout {\"objects\": [{\"caption\": \"red apple\", \"box\": [x0, y0, x1, y1]}]} "
                                   "(pixels of the model's canvas); \"none\" draws a several-object prompt as one caption; "
                                   "default: the layout the filter finds in the prompt", choices=("none",)),
    CANVAS, HARMONIZE,
    Option("control", "image", None, "a structure to follow (ControlNet): a drawing, a scribble or an edge map (lines on "
                                     "a plain background); several (a list) stack in the Python API"),
    Option("control_kind", "str", None, "the ControlNet that reads it: edges or scribble (default: the model's first)",
           choices=("edges", "scribble")),
    Option("control_scale", "float", 1.0, "how strongly the control steers (0 = not at all)",
           limits={"ge": 0.0, "le": MAX_SCALE}),
    Option("control_preprocess", "str", "none", "none: the control image is lines already; edges: take a picture's "
                                                "edges (Canny) as the control", choices=("none", "edges")),
    Option("control_start", "float", 0.0, "the share of the schedule (from pure noise, by noise level) before the "
                                           "control starts to steer", limits={"ge": 0.0, "lt": 1.0}),
    Option("control_end", "float", 1.0, "the share of the schedule (from pure noise, by noise level) after which the "
                                        "control stops steering and the text alone draws the details",
           limits={"gt": 0.0, "le": 1.0}),
    Option("image_prompt", "image", None, "an image as the prompt (the model's image-prompt adapter): draw more like it, "
                                          "with or without text; several (a list) stack in the Python API"),
    Option("image_scale", "float", 1.0, "how strongly the image prompt (or the prior's embedding) steers (0 = not at all)",
           limits={"ge": 0.0, "le": MAX_IMAGE_SCALE}),
    Option("image_detail", "bool", True, "with an image prompt: also read where things are in it (its feature map; "
                                         "closer to the picture) rather than only what it shows"),
    Option("image_strength", "float", 0.6, "with an image prompt: the share of the schedule that runs from the image's "
                                           "own noised latents (its layout and colours a starting point, as img2img); "
                                           "1 draws from pure noise (only the embedding carries the image)",
           limits={"gt": 0.0, "le": 1.0}),
    Option("prior", "bool", False, "draw through the prior: the text -> an image embedding (the model's prior) -> the "
                                   "image-prompt adapter, with the text too (Kandinsky's design)"),
), text2img)
