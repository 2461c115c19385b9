"""Prompt adherence, GenEval-style, on emoji concepts.

GenEval (Ghosh et al. 2023) detects objects and checks them against the prompt. Emoji sit on a white
background, so "detection" here is foreground segmentation (non-white connected components), and each
object crop is classified by the *judge*: a mini-CLIP with a different architecture and seed from the
reranking evaluator, so best-of-N is never graded by the model that picked the image.

Tasks: single_object, two_objects, counting, colors, position, color_attr (plus size, from our scenes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

WHITE_TOLERANCE = 48  # a pixel is foreground when some channel is this far below 255
MIN_AREA = 0.02  # components smaller than this fraction of the image are noise


@dataclass
class Blob:
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    area: int

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return (x0 + x1) / 2, (y0 + y1) / 2


def find_objects(image: torch.Tensor, min_area: float = MIN_AREA) -> list[Blob]:
    """Connected non-white regions of a uint8 (3, H, W) image, largest first."""
    fg = (255 - image.int()).amax(dim=0).numpy() > WHITE_TOLERANCE
    fg = ndimage.binary_closing(fg, iterations=1)  # join thin outlines (OpenMoji) into one object
    labels, n = ndimage.label(fg, structure=np.ones((3, 3)))
    blobs = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        area = int((labels[sl] == i).sum())
        if area >= min_area * fg.size:
            blobs.append(Blob((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop), area))
    return sorted(blobs, key=lambda b: -b.area)


def crop(image: torch.Tensor, bbox, out: int, margin: float = 0.1) -> torch.Tensor:
    """Square crop around bbox (white padded), resized to out x out: uint8 (3, out, out)."""
    x0, y0, x1, y1 = bbox
    side = max(x1 - x0, y1 - y0)
    side = int(round(side * (1 + 2 * margin))) + 1
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    h, w = image.shape[-2:]
    canvas = torch.full((3, side, side), 255, dtype=torch.uint8)
    sx0, sy0 = cx - side // 2, cy - side // 2
    ax0, ay0, ax1, ay1 = max(0, sx0), max(0, sy0), min(w, sx0 + side), min(h, sy0 + side)
    canvas[:, ay0 - sy0:ay1 - sy0, ax0 - sx0:ax1 - sx0] = image[:, ay0:ay1, ax0:ax1]
    return F.interpolate(canvas[None].float(), size=(out, out), mode="bilinear", antialias=True, align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)


def square_view(image: torch.Tensor, out: int) -> torch.Tensor:
    """A uint8 (3, H, W) image padded with white to a centred square, resized to out x out (a wide scene as a
    whole, for the metrics that compare images of one size)."""
    h, w = image.shape[-2:]
    if (h, w) == (out, out):
        return image
    return crop(image, (0, 0, w, h), out, margin=0.0)


def _labels_of(judge, crops: list[torch.Tensor], pool: list[str]) -> list[str]:
    if not crops:
        return []
    probs = judge.class_probs(torch.stack(crops), pool)
    return [pool[i] for i in probs.argmax(dim=1).tolist()]


def check_prompt(judge, image: torch.Tensor, spec: dict, pool: list[str], size: int | None = None) -> bool:
    """Does `image` satisfy the structured prompt `spec`? (see benchmarks.scene_specs for the kinds).

    `image` may be wider or taller than square (a scene on a canvas sized from its layout): each object found is
    cropped square around its own box and judged at `size` px (default: the image's shorter side, the model's
    native size for such a canvas), so an object is graded at the size it was drawn."""
    kind = spec["kind"]
    size = size or min(image.shape[-2:])
    if kind in ("single_object", "colors"):
        candidates = spec.get("choices", pool)
        probs = judge.class_probs(square_view(image, size)[None], candidates)
        return candidates[int(probs.argmax())] == spec["objects"][0]
    blobs = find_objects(image)
    if kind == "counting":
        if len(blobs) != spec["count"]:
            return False
        labels = _labels_of(judge, [crop(image, b.bbox, size) for b in blobs], pool)
        return all(label == spec["objects"][0] for label in labels)
    if len(blobs) < 2:
        return False
    blobs = blobs[:4]
    labels = _labels_of(judge, [crop(image, b.bbox, size) for b in blobs], spec.get("choices", pool))
    a, b = spec["objects"]
    ia = next((i for i, l in enumerate(labels) if l == a), None)
    ib = next((i for i, l in enumerate(labels) if l == b and i != ia), None)
    if ia is None or ib is None:
        return False
    if kind in ("two_objects", "color_attr"):
        return True
    if kind == "size":  # objects are (big, small)
        return blobs[ia].area > blobs[ib].area
    (ax, ay), (bx, by) = blobs[ia].center, blobs[ib].center
    return {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}[spec["relation"]]
