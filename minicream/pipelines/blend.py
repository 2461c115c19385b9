"""Interpolation and fusion: a row of frames between two prompts, two images, or an image and a prompt.

A prompt end is its text embedding and the noise of `seed`; an image end is the embedding of its name (the
evaluator's, or `prompt`) and its latents inverted to noise (DDIM inversion; the flow ODE backwards for flow
models), so the first and last frames redraw the images. Frame k mixes the ends with weight k / (frames - 1):
text embeddings linearly, noises by spherical interpolation (slerp keeps them unit-variance).
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ..diffusion.samplers import invert
from ..editing import load_image
from ..errors import MinicreamError
from ..text.encoder import TextEmbeddings
from .metadata import sha
from .modes import PROMPT, SAMPLING, Mode, Option, Text

MAX_FRAMES = 32


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation of two noise tensors (linear when they are nearly parallel)."""
    af, bf = a.flatten().double(), b.flatten().double()
    cos = torch.dot(af, bf) / (af.norm() * bf.norm())
    theta = torch.arccos(cos.clamp(-1, 1))
    if theta.abs() < 1e-4:
        return (1 - w) * a + w * b
    s = torch.sin(theta)
    return ((torch.sin((1 - w) * theta) / s) * a.double() + (torch.sin(w * theta) / s) * b.double()).to(a.dtype)


def mix(a: TextEmbeddings, b: TextEmbeddings, w: float) -> TextEmbeddings:
    """Text embeddings mixed linearly; a token counts where either end has one (the ends are the ends' own)."""
    if w in (0.0, 1.0):
        return a if w == 0.0 else b
    return TextEmbeddings((1 - w) * a.hidden.float() + w * b.hidden.float(), a.mask | b.mask,
                          (1 - w) * a.pooled + w * b.pooled, a.truncated | b.truncated)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


Prompt = Text  # a blend end that is text, never a file name (the server's prompts: no client may name a server file)


def looks_like_path(text: str) -> bool:
    """One word that names an image file or starts like a path ("phot.png", "./cat", "/tmp/x"): a mistyped path."""
    word = text.strip()
    return bool(word) and not any(c.isspace() for c in word) and (
        word.lower().endswith(IMAGE_SUFFIXES) or word.startswith(("/", "./", "../", "~")) or "\\" in word)


def is_image(end, name: str = "blend end") -> bool:
    """Whether a blend end or a fusion part is an image (a PIL image or an existing file) rather than a prompt; a
    path-like word naming no file is refused."""
    if isinstance(end, Image.Image):
        return True
    if isinstance(end, Prompt):
        return False
    if isinstance(end, (str, Path)):
        try:
            if Path(end).is_file():
                return True
        except (OSError, ValueError):  # a long prompt is not a path
            return False
        if isinstance(end, Path) or looks_like_path(end):
            raise MinicreamError(f"{name}: {str(end)[:200]!r} looks like an image path, but no such file exists; "
                                 "give an existing image or a prompt")
        return False
    raise MinicreamError(f"{name}: must be a prompt, an image or an image path, got {type(end).__name__}")


def check_frames(frames) -> None:
    if isinstance(frames, bool) or not isinstance(frames, int) or not 2 <= frames <= MAX_FRAMES:
        raise MinicreamError(f"frames must be in 2..{MAX_FRAMES}, got {frames!r}")


def sampling_defaults(pipe, own: dict) -> dict:
    """With an image end, inversion is exact for the deterministic sampler without guidance: the ends redraw the
    images. So the sampler and guidance not given are those, not the model's defaults."""
    check_frames(own["frames"])
    if not (is_image(own["a"], "blend a") or is_image(own["b"], "blend b")):
        return {}
    return {"sampler": "euler" if pipe.index["objective"]["prediction_type"] == "flow" else "ddim", "guidance": 1.0}


def blend(pipe, settings, a, b, frames, prompt):
    check_frames(frames)
    if len(settings.seeds) != 1:
        raise MinicreamError("blend draws one row of frames; use frames=N for more pictures")
    images = [is_image(a, "blend a"), is_image(b, "blend b")]
    [s] = settings.seeds
    steps = settings.steps
    uncond = pipe.encode_prompt(settings.negative_prompt)
    ends, record = [], {}
    for key, end, an_image in (("a", a, images[0]), ("b", b, images[1])):
        if an_image:
            source = load_image(end, pipe.image_size)
            name = prompt or pipe.name_image(source)
            cond = pipe.encode_prompt(pipe.filter_prompt(name).rewritten)
            noise = invert(pipe.model_fn(cond, uncond, 1.0), pipe.encode_image(source[None]), steps, pipe.index["objective"],
                           progress=settings.progress)
            record[key] = {"image_sha256": sha(source), "prompt": name}
        else:
            pipe.check_prompt(end)
            cond = pipe.encode_prompt(pipe.filter_prompt(end).rewritten)
            noise = pipe.noise([s], pipe.latent_shape)[0]
            record[key] = {"prompt": end}
        ends.append((cond, noise))
    (ca, na), (cb, nb) = ends
    weights = [k / (frames - 1) for k in range(frames)]
    conds = [mix(ca, cb, w) for w in weights]
    cond = TextEmbeddings(*(torch.cat([getattr(c, f) for c in conds]) for f in ("hidden", "mask", "pooled", "truncated")))
    noise = torch.cat([slerp(na, nb, w) for w in weights])
    latents = pipe.denoise([s] * frames, cond, uncond, **settings.denoise_args, noise=noise)
    label = f"{record['a']['prompt']} -> {record['b']['prompt']}"
    out = pipe.attach(pipe.decode(latents), [s] * frames, label, settings, None, {"mode": "blend", "ends": record})
    for im, w in zip(out, weights):
        im.info["minicream"]["weight"] = round(w, 4)
    return out


MODE = Mode("blend", "frames between two prompts, two images, or an image and a prompt", (
    # Over HTTP the first end is the uploaded image and the last a prompt (text, never a server's file name).
    Option("a", "image", None, "first end: an image (path or PIL image), or a prompt", cli=False, required=True,
           field="image"),
    Option("b", "str", None, "last end: a prompt, or an image", cli=False, required=True, field="prompt", limits=PROMPT),
    Option("frames", "int", 8, f"frames in the row, ends included (2..{MAX_FRAMES})", limits={"ge": 2, "le": MAX_FRAMES}),
    Option("prompt", "str", None, "the name an image end is drawn as (default: the evaluator names it)", http=False),
    *(o for o in SAMPLING if o.name != "num_images"),
    Option("num_images", "int", 1, "one row of frames (frames sets how many pictures)", cli=False, http=False),
), blend, sampling_defaults)
