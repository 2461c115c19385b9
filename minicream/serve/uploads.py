"""Uploaded images (multipart `/v1/images/edits`, `/v1/images/variations`): validated by content before any work.

The type is read from the bytes (PNG, JPEG or WebP), never from the filename or the declared content type; the
pixel count is checked from the header before decoding (a decompression bomb is refused, not decoded); a mask
must have the image's size, as OpenAI requires.
"""
from __future__ import annotations

import io

from PIL import Image

from ..errors import MinicreamError

UPLOAD_BYTES = 4 * 1024 * 1024  # per request body on the upload routes (the others keep the 64 KiB limit)
MAX_PIXELS = 4096 * 4096
FORMATS = ("PNG", "JPEG", "WEBP")


class UploadError(MinicreamError):
    """A bad upload: the route answers 400 with this message."""


def read_image(data: bytes, field: str) -> Image.Image:
    if not data:
        raise UploadError(f"{field}: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in FORMATS:
                raise UploadError(f"{field}: {im.format or 'unknown'} images are not accepted; send PNG, JPEG or WebP")
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise UploadError(f"{field}: {w}x{h} is too many pixels (at most {MAX_PIXELS})")
            im.load()
            return im.copy()
    except UploadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"{field}: not a readable PNG, JPEG or WebP image") from None


def has_transparency(im: Image.Image) -> bool:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return im.convert("RGBA").getchannel("A").getextrema()[0] < 255
    return False
