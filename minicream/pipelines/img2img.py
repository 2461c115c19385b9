"""Image to image (SDEdit): the image's latents noised to `strength` of the schedule, then denoised with the prompt."""
from __future__ import annotations

from ..editing import load_image
from ..filter.variety import VARY, record_designs, varied_cond
from .metadata import sha
from .modes import FILTER, PROMPT, SAMPLING, Mode, Option
from .upscale import UPSCALE, check_size, upscale_edit


def img2img(pipe, settings, image, prompt, strength, filter, style, llm, size=None, **upscale):
    """`strength` was checked with the settings (SamplingSettings.build); `upscale`: the UPSCALE options."""
    pipe.check_prompt(prompt)
    size = check_size(pipe, size)
    source = load_image(image, pipe.image_size)
    filtered = pipe.filter_prompt(prompt, filter, style=style, llm=llm)
    seeds = settings.seeds
    # Only an explicit style "vary" draws each image in another design (by its seed): a redraw keeps the input's
    # design otherwise, whatever the model's default style for text2img.
    cond, designs = varied_cond(pipe, filtered, VARY, seeds) if style == VARY else (pipe.encode_prompt(filtered.rewritten), None)
    uncond = pipe.encode_prompt(settings.negative_prompt)
    latents = pipe.denoise(seeds, cond, uncond, **settings.denoise_args, init=pipe.encode_image(source[None]),
                           strength=strength)
    extra = {"mode": "img2img", "strength": strength, "init_image_sha256": sha(source),
             **({"style": style} if style is not None else {})}
    images = pipe.attach(pipe.decode(latents), seeds, prompt, settings, filtered, extra)
    record_designs(images, filtered, designs)
    return upscale_edit(pipe, images, None, None, size, **upscale)


MODE = Mode("img2img", "redraw an image after a prompt, keeping its layout (SDEdit)", (
    Option("image", "image", None, "the input image (squared and resized to the model's size)", cli=False, required=True),
    Option("prompt", "str", None, "what the new image should show", cli=False, required=True, limits=PROMPT),
    Option("strength", "float", 0.6, "share of the schedule that runs: 0 keeps the image, 1 ignores it",
           limits={"gt": 0.0, "le": 1.0}),
    *SAMPLING, *FILTER, *UPSCALE,
), img2img)
