"""Images that users give (files for the CLI, uploads for the server), turned into the picture they see.

    orientation   a phone photo is often stored sideways with an EXIF Orientation tag: it is turned upright, so
                  the model edits what the user saw and a mask drawn over the displayed photo has the image's size
    16-bit grey   PNG's 16-bit greyscale opens as Pillow mode I;16 (or I), whose conversion to RGB clips every
                  value above 255 to white: it is scaled to 8 bits instead
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np
from PIL import Image, ImageOps

WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def as_displayed(im: Image.Image) -> Image.Image:
    """`im` upright (EXIF orientation applied) and in an 8-bit mode; a new image, `im` is left as it is."""
    try:
        im = ImageOps.exif_transpose(im)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, struct.error):  # a broken EXIF block: as stored
        im = im.copy()
    if im.mode in WIDE_GREY:  # 16-bit samples (PNG's I;16, or I holding 0..65535) -> 0..255
        grey = np.asarray(im).astype(np.float64)
        im = Image.fromarray(np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8), "L")
    return im


def pixels_sha(t) -> str:
    """A short hash of an image's pixels (a tensor: an input image, a mask, an image prompt), as PNGs record them
    (init_image_sha256, mask_sha256, an image prompt's sha256) and `--from` checks them."""
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]
