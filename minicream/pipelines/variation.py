"""Variations of an image, by one of two methods:

"embedding" (the default for a model with an image-prompt adapter): steered by the image's embedding through the
adapter (Kandinsky's and unCLIP's variations), from the image's latents noised to `image_strength` (0.6: its layout
and colours are a starting point; 1: from pure noise, the embedding alone) with new seeds. With a prompt, the text
steers too.

"renoise": re-noised to `strength` and redrawn with new seeds. Without a prompt the evaluator names the image (the
most likely of the model's concepts) and that name is the prompt. Under style "vary" (the default) each variation is
drawn in another of the concept's designs, chosen by its seed (filter/variety.py), so variations differ visibly
(issue 28: at one design they were near copies) while the concept stays the named one."""
from __future__ import annotations

from ..editing import load_image
from ..errors import MinicreamError
from ..image_prompt.use import MAX_SCALE, has_image_prompt
from .img2img import img2img
from .metadata import sha
from .modes import PROMPT, SAMPLING, Mode, Option

SAMPLING_LIMITS = {o.name: dict(o.limits) for o in SAMPLING}
METHODS = ("auto", "embedding", "renoise")


def variation(pipe, settings, image, prompt, strength, style, method="auto", image_scale=1.0, image_detail=True,
              image_strength=0.6):
    if method not in METHODS:
        raise MinicreamError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "embedding" or (method == "auto" and has_image_prompt(pipe)):
        from .text2img import text2img

        source = load_image(image, pipe.image_size)  # a bad image is refused as the image, before the adapter loads
        images = text2img(pipe, settings, prompt, "offline", style, None, None, num_candidates=1, keep_top=1,
                          layout="none", canvas="model", harmonize=0.0, image_prompt=image, image_scale=image_scale, image_detail=image_detail,
                          image_strength=image_strength)
        for im in images:
            im.info["minicream"].update(mode="variation", method="embedding", init_image_sha256=sha(source))
        return images
    if prompt is None:
        prompt = pipe.name_image(load_image(image, pipe.image_size))
    images = img2img(pipe, settings, image=image, prompt=prompt, strength=strength, filter="offline", style=style, llm=None)
    for im in images:
        im.info["minicream"]["mode"] = "variation"
    return images


MODE = Mode("variation", "variations of an image: the same concept, redrawn with new seeds", (
    Option("image", "image", None, "the input image", cli=False, required=True),
    Option("prompt", "str", None, "what the variations show (default: the evaluator names the image)",
           limits={"max_length": PROMPT["max_length"]}),
    Option("strength", "float", 0.6, "share of the schedule that runs (more = freer; default: the model's "
                                     "variation_strength, measured per model, else 0.6)", model_key="variation_strength",
           limits={"gt": 0.0, "le": 1.0}),
    Option("style", "str", "vary", "\"vary\": each variation in another of the concept's designs, by its seed; "
                                   "\"model\" or a design name: all in one design", limits={"max_length": 200}),
    *(o for o in SAMPLING if o.name != "num_images"),
    Option("num_images", "int", 4, "number of variations", limits=SAMPLING_LIMITS["num_images"]),
    Option("method", "str", "auto", "embedding: drawn afresh from the image's embedding (the image-prompt adapter); "
                                    "renoise: the image re-noised to strength and redrawn; auto: embedding where the "
                                    "model has an adapter", choices=METHODS),
    Option("image_scale", "float", 1.0, "with method embedding: how strongly the image steers",
           limits={"ge": 0.0, "le": MAX_SCALE}),
    Option("image_strength", "float", 0.6, "with method embedding: share of the schedule that runs from the image's "
                                           "noised latents (1: from pure noise, only the embedding carries the image)",
           limits={"gt": 0.0, "le": 1.0}),
    Option("image_detail", "bool", True, "with method embedding: also read where things are in the image (its feature "
                                         "map), not only what it shows"),
), variation)
