"""Uploaded images (multipart `/v1/images/edits`, `/v1/images/variations`; base64 in `/api/edit`): validated by content.

A route only reads the upload's bytes; `read_image` decodes them later, in the generation worker after the job was
admitted to the queue (so a full queue answers 429 before any decoding, and no decode ever runs on the event loop):
    type          read from the bytes (PNG, JPEG or WebP), never from the filename or the declared content type
    pixels        checked from the header before decoding: at most MAX_PIXELS (a decompression bomb is refused)
    scans         a JPEG's scans are counted before Pillow reads it: each costs a pass over every pixel, so a
                  progressive file repeating one scan thousands of times would hold a worker for minutes
    time          decoding stops with an error once it has taken DECODE_SECONDS
    as displayed  EXIF orientation applied, 16-bit grey scaled to 8 bits (io/imagefile.py)
A mask must have the image's size, as OpenAI requires.
"""
from __future__ import annotations

import io
import re
import time

from PIL import Image

from ..errors import MinicreamError
from ..io.imagefile import as_displayed

UPLOAD_BYTES = 4 * 1024 * 1024  # per request body on the upload routes (the others keep the 64 KiB limit)
# The models draw 64 px (256 px with an upscaler); the editor squares and resizes every input to that at once.
# 2048x2048 leaves photos plenty of detail and bounds a decode to 16 MB of RGBA.
MAX_PIXELS = 2048 * 2048
MAX_SCANS = 100         # a progressive JPEG has about 10 (libjpeg's default script); 100 bounds a decode to ~0.5 s
DECODE_SECONDS = 10.0   # a decode that runs longer is stopped (between blocks of input) with a 400
DECODE_BLOCK = 8192     # bytes Pillow hands its decoder at a time: how often the time limit is looked at
FORMATS = ("PNG", "JPEG", "WEBP")


class UploadError(MinicreamError):
    """A bad upload: the route answers 400 with this message."""


# A JPEG marker: 0xFF (fill bytes may repeat it), then a code that is neither 0x00 (a stuffed 0xFF inside entropy-coded
# data) nor a restart marker (D0-D7, inside a scan).
_MARKER = re.compile(rb"\xff+([^\x00\xff\xd0-\xd7])")
_STANDALONE = frozenset({0x01, 0xD8})  # TEM, SOI: no length field
SOS, EOI = 0xDA, 0xD9
JPEG_SIGNATURE = b"\xff\xd8"


def jpeg_scans(data: bytes, stop_after: int = MAX_SCANS) -> int:
    """Start-of-scan markers of a JPEG, counted by walking its segments (bytes inside an APPn segment, such as an
    EXIF thumbnail, are skipped by length); stops counting past `stop_after` (a file of more segments than scans
    could ever need counts as past it too, so the walk itself stays short)."""
    count, pos, n, segments = 0, 2, len(data), 0
    while pos < n and count <= stop_after:
        m = _MARKER.match(data, pos) or _MARKER.search(data, pos)  # at the next segment, or past a scan's data
        if m is None:
            break
        segments += 1
        if segments > 20 * stop_after:
            return stop_after + 1
        marker, pos = m.group(1)[0], m.end()
        if marker == EOI:
            break
        if marker in _STANDALONE:
            continue
        count += marker == SOS
        pos += int.from_bytes(data[pos:pos + 2], "big")  # the segment's length (for SOS: its header; data follows)
    return count


class _TimedReader(io.BytesIO):
    """The upload's bytes, readable until a deadline: Pillow reads its input block by block as it decodes, so a
    decode that runs out of time stops at its next block."""

    def __init__(self, data: bytes, field: str, seconds: float):
        super().__init__(data)
        self.field, self.seconds, self.deadline = field, seconds, time.monotonic() + seconds

    def read(self, size: int | None = -1) -> bytes:
        if time.monotonic() > self.deadline:
            raise UploadError(f"{self.field}: decoding took longer than {self.seconds:g} s; send a smaller or plainer image")
        return super().read(size)


def read_image(data: bytes, field: str, seconds: float = DECODE_SECONDS) -> Image.Image:
    """Uploaded bytes -> a PIL image as displayed, or UploadError (one line, for a 400). Runs in a worker."""
    if not data:
        raise UploadError(f"{field}: the file is empty")
    if data[:2] == JPEG_SIGNATURE and jpeg_scans(data) > MAX_SCANS:  # before Pillow walks the segments itself
        raise UploadError(f"{field}: a JPEG with more than {MAX_SCANS} scans (or thousands of segments) is refused "
                          "(a progressive one has about 10); save it again or send a PNG")
    try:
        with Image.open(_TimedReader(data, field, seconds)) as im:
            if im.format not in FORMATS:
                raise UploadError(f"{field}: {im.format or 'unknown'} images are not accepted; send PNG, JPEG or WebP")
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise UploadError(f"{field}: {w}x{h} is too many pixels (at most {MAX_PIXELS}, e.g. 2048x2048; the "
                                  "model works at a fraction of that): downscale it first")
            im.decodermaxblock = DECODE_BLOCK
            im.load()
            return as_displayed(im)
    except UploadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"{field}: not a readable PNG, JPEG or WebP image") from None


def has_transparency(im: Image.Image) -> bool:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return im.convert("RGBA").getchannel("A").getextrema()[0] < 255
    return False
