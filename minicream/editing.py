"""Inputs and outputs of image editing: the image and mask a user gives, and the paste-back of kept pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from .data.images import center_square, to_square_rgb
from .errors import MinicreamError
from .io.imagefile import as_displayed

SEAM = 3  # pixels of feathering around a repainted region; kept pixels further away are the input's own


def open_image(image, what: str = "image") -> Image.Image:
    """A PIL image or a path -> the picture as displayed (io/imagefile.py: EXIF orientation, 16-bit grey)."""
    if not isinstance(image, Image.Image):
        path = Path(image)
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise MinicreamError(f"{what} {path}: not a readable image ({type(e).__name__})") from None
    return as_displayed(image)


def load_image(image, size: int) -> torch.Tensor:
    """A PIL image or a path -> uint8 (3, size, size), composited on white and squared as the training data was
    (the centred square, resized)."""
    rgb = to_square_rgb(open_image(image, "image"), size)
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)


def load_mask(mask, size: int, like: tuple[int, int] | None = None) -> torch.Tensor:
    """A PIL image or a path -> bool (size, size), True where to repaint (white; an image with transparent pixels
    repaints where it is transparent, as OpenAI's edits endpoint defines its mask). It is cropped and resized
    exactly as `load_image` squares the image (the centred square), so it marks the same pixels; `like`: the
    image's (width, height), which the mask must have, or at least its shape."""
    m = open_image(mask, "mask")
    if like is not None and m.size != tuple(like) and m.size[0] * like[1] != m.size[1] * like[0]:
        raise MinicreamError(f"mask: its size {m.size[0]}x{m.size[1]} does not match the image's {like[0]}x{like[1]}; "
                             "draw the mask over the image itself")
    if m.mode in ("RGBA", "LA", "PA") or (m.mode == "P" and "transparency" in m.info):
        alpha = np.asarray(m.convert("RGBA"))[..., 3]
        if alpha.min() < 255:  # transparency marks the area (OpenAI); a fully opaque RGBA mask is read by its brightness
            m = Image.fromarray((255 - alpha).astype(np.uint8), "L")
    shape = m.size
    m = center_square(m.convert("L")).resize((size, size), Image.BILINEAR)
    out = torch.from_numpy(np.asarray(m) >= 128)
    if not out.any():
        where = "" if shape[0] == shape[1] else \
            f" inside the image's centred square (a {shape[0]}x{shape[1]} image is edited as its middle square)"
        raise MinicreamError(f"the mask repaints nothing{where} (white, or transparent, marks the area to repaint)")
    return out


def paste_back(source: torch.Tensor, generated: torch.Tensor, repaint: torch.Tensor) -> torch.Tensor:
    """uint8 images (N,3,H,W): generated pixels inside the repainted region and a feathered seam around it,
    the source's own pixels everywhere else (the autoencoder's blur never touches what the user kept)."""
    grown = Image.fromarray(repaint.numpy().astype(np.uint8) * 255, "L").filter(ImageFilter.MaxFilter(2 * SEAM - 1))
    soft = np.asarray(grown.filter(ImageFilter.BoxBlur(SEAM - 1)), dtype=np.float32) / 255.0
    soft = np.maximum(soft, repaint.numpy().astype(np.float32))  # fully generated inside the mask
    w = torch.from_numpy(soft)[None, None]
    out = source[None].float() * (1 - w) + generated.float() * w
    return out.round().clamp(0, 255).to(torch.uint8)
