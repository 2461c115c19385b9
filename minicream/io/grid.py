"""Sample grids with captions, for the README and run directories."""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont


def image_grid(images: list[Image.Image], cols: int, labels: list[str] | None = None, scale: int = 2, label_height: int = 14) -> Image.Image:
    """Images in a grid, each enlarged `scale`x (nearest) with an optional label below. Cells take the largest
    image's size; a smaller image (a square beside a wide scene) sits in its cell's top-left corner, unscaled."""
    if not images:
        raise ValueError("no images for the grid")
    w, h = max(im.width for im in images), max(im.height for im in images)
    W, H = w * scale, h * scale + (label_height if labels else 0)
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * W, rows * H), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, im in enumerate(images):
        x, y = (i % cols) * W, (i // cols) * H
        grid.paste(im.convert("RGB").resize((im.width * scale, im.height * scale), Image.NEAREST), (x, y))
        if labels:
            text = labels[i]
            while len(text) > 3 and draw.textlength(text, font=font) > W - 2:
                text = text[:-2]
            draw.text((x + 2, y + im.height * scale + 1), text, fill="black", font=font)  # right under its image
    return grid
