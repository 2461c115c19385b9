"""Inputs and outputs of image editing: the image and mask a user gives, and the paste-back of kept pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from .data.images import to_square_rgb
from .errors import MinicreamError

SEAM = 3  # pixels of feathering around a repainted region; kept pixels further away are the input's own


def _open(image, what: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    path = Path(image)
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise MinicreamError(f"{what} {path}: not a readable image ({type(e).__name__})") from None


def load_image(image, size: int) -> torch.Tensor:
    """A PIL image or a path -> uint8 (3, size, size), composited on white and squared as the training data was."""
    rgb = to_square_rgb(_open(image, "image"), size)
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)


def load_mask(mask, size: int) -> torch.Tensor:
    """A PIL image or a path -> bool (size, size), True where to repaint (white; an image with transparent pixels
    repaints where it is transparent, as OpenAI's edits endpoint defines its mask)."""
    m = _open(mask, "mask")
    if m.mode in ("RGBA", "LA", "PA") or (m.mode == "P" and "transparency" in m.info):
        alpha = np.asarray(m.convert("RGBA"))[..., 3]
        if alpha.min() < 255:  # transparency marks the area (OpenAI); a fully opaque RGBA mask is read by its brightness
            m = Image.fromarray((255 - alpha).astype(np.uint8), "L")
    m = m.convert("L").resize((size, size), Image.BILINEAR)
    out = torch.from_numpy(np.asarray(m) >= 128)
    if not out.any():
        raise MinicreamError("the mask repaints nothing (white, or transparent, marks the area to repaint)")
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
