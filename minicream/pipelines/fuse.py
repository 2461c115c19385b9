"""Fusion: images and texts mixed in the image-embedding space and drawn from the mix (Kandinsky's "mix images").

Each part becomes a unit image embedding: an image by the evaluator's image tower, a text by the prior (one draw per
image, by its seed; without a prior, the evaluator's text tower, which maps into the same space). The parts are mixed
by their weights (a weighted sum, renormalised) and the mix steers the image-prompt adapter; an optional prompt is
drawn as text beside it.
"""
from __future__ import annotations

import math
from pathlib import Path
import torch
from PIL import Image

from ..errors import MinicreamError
from ..image_prompt.use import MAX_SCALE, ImagePrompt, image_embeddings, load_adapter, read_image
from ..io.imagefile import pixels_sha
from .blend import is_image
from .modes import PROMPT, SAMPLING, Mode, Option, Text

MAX_PARTS = 4


def _part(part, i: int):
    """("image", PIL image or path) or ("text", str) of one part: a dict {"image": ...} / {"text": ...}, an image, an
    existing image file, or a text (a client's Text is never a file name)."""
    if isinstance(part, dict):
        if set(part) - {"image", "text", "weight"} or ("image" in part) == ("text" in part):
            raise MinicreamError(f"parts[{i}]: give one of image or text")
        return ("image", part["image"]) if "image" in part else _part(Text(part["text"]), i)
    if isinstance(part, (Image.Image, str, Path)) and is_image(part, f"parts[{i}]"):
        return "image", part
    if isinstance(part, str):
        if not part.strip():
            raise MinicreamError(f"parts[{i}]: empty text")
        if len(part) > PROMPT["max_length"]:
            raise MinicreamError(f"parts[{i}]: text longer than {PROMPT['max_length']} characters")
        return "text", str(part)
    raise MinicreamError(f"parts[{i}]: a part is an image, an image path or a text, got {type(part).__name__}")


def check_weights(weights, n: int) -> list[float]:
    """One finite weight per part (default: equal), summing to a positive value."""
    if weights is None:
        return [1.0 / n] * n
    if not isinstance(weights, (list, tuple)) or len(weights) != n:
        raise MinicreamError(f"weights: give one per part ({n}), got {weights!r}"[:200])
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) for w in weights):
        raise MinicreamError(f"weights must be finite numbers, got {weights!r}"[:200])
    if sum(weights) <= 0:
        raise MinicreamError(f"weights must sum to a positive value, got {weights!r}"[:200])
    return [float(w) for w in weights]


def fused_prompt(pipe, parts, weights, seeds: list[int], scale: float) -> ImagePrompt:
    """The ImagePrompt of the weighted mix: (1, N, E) embeddings, one mix per image (a text's prior draw is the
    image's)."""
    from ..image_prompt.prior import PRIOR_GUIDANCE, PRIOR_STEPS, has_prior, prior_embeddings
    from ..image_prompt.use import _check_scale

    if not isinstance(parts, (list, tuple)) or not 1 <= len(parts) <= MAX_PARTS:
        raise MinicreamError(f"give 1 to {MAX_PARTS} parts (images or texts), got "
                             f"{len(parts) if isinstance(parts, (list, tuple)) else type(parts).__name__}")
    kinds = [_part(p, i) for i, p in enumerate(parts)]
    weights = check_weights(weights, len(kinds))
    scale = _check_scale(scale)
    adapter = load_adapter(pipe)
    n, mix, records = len(seeds), 0, []
    for (kind, value), w in zip(kinds, weights):
        if kind == "image":
            pixels = read_image(value, pipe.image_size)
            e = image_embeddings(pipe, pixels[None]).expand(n, -1)
            records.append({"image_sha256": pixels_sha(pixels), "weight": w})
        elif has_prior(pipe):
            e = prior_embeddings(pipe, [value] * n, seeds, PRIOR_STEPS, PRIOR_GUIDANCE)
            records.append({"text": value, "weight": w, "by": "prior"})
        else:
            e = pipe.evaluator.text_features([value]).expand(n, -1)
            records.append({"text": value, "weight": w, "by": "evaluator"})
        mix = mix + w * e
    mix = torch.nn.functional.normalize(mix.float(), dim=-1)
    return ImagePrompt(adapter, mix[None], [scale], [{"fused": records, "scale": scale}])


def fuse(pipe, settings, parts, weights, prompt, image_scale):
    from .text2img import text2img

    image = fused_prompt(pipe, parts, weights, list(settings.seeds), image_scale)
    images = text2img(pipe, settings, prompt, "offline", None, None, None, num_candidates=1, keep_top=1, layout="none",
                      canvas="model", harmonize=0.0, image_prompt=image)
    for im in images:
        im.info["minicream"]["mode"] = "fuse"
    return images


MODE = Mode("fuse", "mix images and texts in the image-embedding space and draw the mix (Kandinsky's fusion)", (
    Option("parts", "parts", None, f"1 to {MAX_PARTS} images and texts to mix (over HTTP: objects {{\"image\": base64}} "
                                   "or {\"text\": \"...\"})", cli=False, required=True),
    Option("weights", "floats", None, "one weight per part, summing to a positive value (default: equal)"),
    Option("prompt", "str", None, "a text drawn beside the mix (optional)", limits={"max_length": PROMPT["max_length"]}),
    Option("image_scale", "float", 1.0, "how strongly the mix steers (0 = not at all)", limits={"ge": 0.0, "le": MAX_SCALE}),
    *SAMPLING,
), fuse)
