"""Sample grids with captions, for the README and run directories."""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont


def image_grid(images: list[Image.Image], cols: int, labels: list[str] | None = None, scale: int = 2, label_height: int = 14) -> Image.Image:
    """Images (all the same size) in a grid, each enlarged `scale`x (nearest) with an optional label below."""
    if not images:
        raise ValueError("no images for the grid")
    w, h = images[0].size
    W, H = w * scale, h * scale + (label_height if labels else 0)
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * W, rows * H), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, im in enumerate(images):
        x, y = (i % cols) * W, (i // cols) * H
        grid.paste(im.convert("RGB").resize((W, h * scale), Image.NEAREST), (x, y))
        if labels:
            text = labels[i]
            while len(text) > 3 and draw.textlength(text, font=font) > W - 2:
                text = text[:-2]
            draw.text((x + 2, y + h * scale + 1), text, fill="black", font=font)
    return grid
