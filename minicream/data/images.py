"""Small image helpers shared by the dataset builders and loaders.

They live in one place so every path into the model (emoji build, user folders,
scenes) normalises images identically: RGB, white background, square, LANCZOS.
"""

from __future__ import annotations

from PIL import Image, ImageChops, ImageDraw

WHITE = (255, 255, 255)


def on_white(image: Image.Image) -> Image.Image:
    """Return an RGB copy of `image` with any transparency composited on white.

    Emoji and user PNGs often carry alpha; dropping it naively turns the
    transparent background black (or garbage), which the model would then learn.
    """
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def center_square(image: Image.Image) -> Image.Image:
    """Crop the largest centred square, so resizing never distorts aspect ratio."""
    width, height = image.size
    if width == height:
        return image
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def to_square_rgb(image: Image.Image, size: int) -> Image.Image:
    """Normalise any PIL image to an RGB `size` x `size` image on white."""
    square = center_square(on_white(image))
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.LANCZOS)
    return square


def zoom_shift(image: Image.Image, zoom: float, dx: int, dy: int) -> Image.Image:
    """An RGB image on white, scaled by `zoom` (<= 1) about its centre, then moved by (dx, dy) px; the move is
    clamped so that the scaled image stays inside the canvas."""
    w, h = image.size
    sw, sh = max(1, round(w * zoom)), max(1, round(h * zoom))
    small = image.resize((sw, sh), Image.Resampling.LANCZOS) if (sw, sh) != (w, h) else image
    x = min(max((w - sw) // 2 + dx, 0), w - sw)
    y = min(max((h - sh) // 2 + dy, 0), h - sh)
    out = Image.new("RGB", (w, h), (255, 255, 255))
    out.paste(small.convert("RGB"), (x, y))
    return out


def cutout_from_white(image: Image.Image, threshold: int = 245, crop: bool = True) -> Image.Image:
    """RGBA cut-out of an object drawn on white, cropped to its content (crop=False: the image's own size).

    Only near-white pixels connected to the border become transparent, so white
    parts inside the object (eyes, highlights) stay opaque when objects overlap.
    Returns the full image, opaque, if it is entirely white.
    """
    rgb = image.convert("RGB")
    width, height = rgb.size
    channels = [c.point(lambda v: 255 if v >= threshold else 0) for c in rgb.split()]
    near_white = ImageChops.multiply(ImageChops.multiply(channels[0], channels[1]), channels[2])
    padded = Image.new("L", (width + 2, height + 2), 255)
    padded.paste(near_white, (1, 1))
    ImageDraw.floodfill(padded, (0, 0), 128, thresh=0)
    background = padded.crop((1, 1, width + 1, height + 1)).point(lambda v: 255 if v == 128 else 0)
    alpha = ImageChops.invert(background)
    cut = rgb.convert("RGBA")
    cut.putalpha(alpha)
    bbox = alpha.getbbox()
    if not crop:
        return cut if bbox else rgb.convert("RGBA")
    return cut.crop(bbox) if bbox else rgb.convert("RGBA")


def paste_fitted(canvas: Image.Image, cutout: Image.Image, bbox: tuple[int, int, int, int]) -> None:
    """Fit an RGBA cut-out inside `bbox` (x0, y0, x1, y1; x1/y1 exclusive) keeping its aspect ratio, centred."""
    x0, y0, x1, y1 = bbox
    scale = min((x1 - x0) / cutout.width, (y1 - y0) / cutout.height)
    width, height = max(1, round(cutout.width * scale)), max(1, round(cutout.height * scale))
    resized = cutout.resize((width, height), Image.Resampling.LANCZOS)
    left = x0 + (x1 - x0 - width) // 2
    top = y0 + (y1 - y0 - height) // 2
    canvas.paste(resized, (left, top), resized)
