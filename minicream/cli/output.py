"""Where the drawing commands write their images: PROMPT_SEED.png, the parameters inside."""
from __future__ import annotations

from pathlib import Path


def stem_of(prompt: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in prompt)[:40].strip("_") or "image"


def save_images(images, out: Path, prompt: str, prefix: str = "") -> Path:
    """Each image as PROMPT_SEED.png in `out`, with its parameters in the PNG; prints the paths."""
    from ..io.pngmeta import save_png
    from ..pipelines import PARAMS_KEY

    out.mkdir(parents=True, exist_ok=True)
    stem = prefix + stem_of(prompt)
    for im in images:
        scene = im.info[PARAMS_KEY].get("scene")  # a story's scenes share their seed
        path = out / f"{stem}_{im.info[PARAMS_KEY]['seed']}{f'_scene{scene}' if isinstance(scene, int) else ''}.png"
        save_png(im, path, im.info[PARAMS_KEY])
        print(path)
    return out
