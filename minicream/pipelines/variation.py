"""Variations of an image: re-noised to `strength` and redrawn with new seeds.

Without a prompt the evaluator names the image (the most likely of the model's concepts) and that name is the
prompt, so the variations keep the concept, as Kandinsky's image-embedding variations do. Under style "vary" (the
default) each variation is drawn in another of the concept's designs, chosen by its seed (filter/variety.py), so
variations differ visibly (issue 28: at one design they were near copies) while the concept stays the named one."""
from __future__ import annotations

from ..editing import load_image
from .img2img import img2img
from .modes import PROMPT, SAMPLING, Mode, Option

SAMPLING_LIMITS = {o.name: dict(o.limits) for o in SAMPLING}


def variation(pipe, settings, image, prompt, strength, style):
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
), variation)
