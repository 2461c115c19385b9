"""The images an adapter is taught from: a folder or files, any size and format the editor reads.

Each is read as displayed (EXIF orientation), its transparency composited on white, padded to a centred square
(an icon is never cropped) and resized to the model's size. Light augmentation: each image also in `variants - 1`
copies zoomed to 88-100% and moved a few pixels (and mirrored, with `flip`); every copy is encoded to latents once.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.images import on_white, zoom_shift
from ..editing import open_image
from ..errors import MinicreamError

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MAX_IMAGES = 200


def image_paths(sources) -> list[Path]:
    """A folder's images (sorted) or the files given; a one-line error when there are none."""
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources or [])
    paths: list[Path] = []
    for s in map(Path, sources):
        if s.is_dir():
            paths += sorted(p for p in s.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
        elif s.is_file():
            paths.append(s)
        else:
            raise MinicreamError(f"{s}: no such image or folder")
    if not paths:
        raise MinicreamError(f"no images found in {', '.join(map(str, sources)) or '(nothing given)'} "
                             f"(looked for {', '.join(sorted(SUFFIXES))})")
    if len(paths) > MAX_IMAGES:
        raise MinicreamError(f"{len(paths)} images; an adapter is taught from at most {MAX_IMAGES}")
    return paths


def square_on_white(image: Image.Image, size: int) -> Image.Image:
    rgb = on_white(image)
    side = max(rgb.size)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    return canvas.resize((size, size), Image.Resampling.LANCZOS) if side != size else canvas


def load_images(paths: list[Path], size: int) -> list[Image.Image]:
    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                if getattr(im, "is_animated", False) and getattr(im, "n_frames", 1) > 1:
                    raise MinicreamError(f"image {p}: animated ({im.n_frames} frames); give one still image")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise MinicreamError(f"image {p}: not a readable image ({type(e).__name__})") from None
        out.append(square_on_white(open_image(p, "image"), size))
    return out


def augmented(images: list[Image.Image], variants: int, seed: int, flip: bool = False) -> torch.Tensor:
    """uint8 (len(images) * variants, 3, H, W): each image, then its augmented copies."""
    rng = random.Random(seed)
    out = []
    for im in images:
        copies = [im]
        for _ in range(variants - 1):
            c = zoom_shift(im, rng.uniform(0.88, 1.0), rng.randint(-3, 3), rng.randint(-3, 3))
            copies.append(c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip and rng.random() < 0.5 else c)
        out += [torch.from_numpy(np.asarray(c, dtype=np.uint8).copy()).permute(2, 0, 1) for c in copies]
    return torch.stack(out)


def caption_name(path: Path) -> str:
    """A concept name from a file name, for style captions: "red_apple-2.png" -> "red apple"."""
    words = "".join(c if c.isalpha() else " " for c in path.stem).split()
    return " ".join(words).lower()
