"""Structure images for ControlNet: edge maps (OpenCV's Canny), hand-like scribbles made from them for training,
and a user's drawing or picture turned into the hint the network reads.

A hint is a float tensor (N, 1, S, S) in [0, 1] at the model's image size, 1 where a line is. Edge maps are
white lines on black (ControlNet's convention); a drawing on paper (dark lines on a light background) is inverted.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CANNY = (100, 200)  # Canny's low and high thresholds on 0-255 images (ControlNet's canny annotator's defaults)
PREPROCESS = ("none", "edges")  # a control image is a drawing / edge map as it is, or a picture to take edges from


def edges_uint8(image_rgb: np.ndarray, thresholds: tuple[int, int] = CANNY) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint8 edges (255 = edge): Canny on each colour channel, combined, so that a border
    between two colours of equal brightness is found too."""
    import cv2

    out = np.zeros(image_rgb.shape[:2], np.uint8)
    for c in range(3):
        out |= cv2.Canny(np.ascontiguousarray(image_rgb[..., c]), *thresholds)
    return out


def edge_maps(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 1, H, W) uint8 edge maps."""
    arr = images_uint8.permute(0, 2, 3, 1).numpy()
    return torch.from_numpy(np.stack([edges_uint8(a) for a in arr]))[:, None]


def scribbles(edges: torch.Tensor, gen: torch.Generator, jitter: float = 1.0, erase: float = 0.15) -> torch.Tensor:
    """Hand-like scribbles from (N, 1, S, S) edge maps in [0, 1]: lines displaced by a smooth random field (up to
    `jitter` px), thickened to 2-3 px, and partly erased (each cell of a 8x8 grid with probability `erase`)."""
    n, _, h, w = edges.shape
    flow = (torch.rand(n, 2, 4, 4, generator=gen) * 2 - 1) * jitter
    flow = F.interpolate(flow, size=(h, w), mode="bicubic", align_corners=False)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack([xs, ys], -1)[None] + flow.permute(0, 2, 3, 1) * torch.tensor([2 / w, 2 / h])
    out = F.grid_sample(edges.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    thick = F.max_pool2d(out, 3, stride=1, padding=1)
    wide = (torch.rand(n, 1, 1, 1, generator=gen) < 0.7).float()  # most strokes 3 px, some thinner
    out = wide * thick + (1 - wide) * torch.maximum(out, F.max_pool2d(out, (1, 2), stride=1, padding=(0, 1))[..., :w])
    keep = (torch.rand(n, 1, 8, 8, generator=gen) >= erase).float()
    out = out * F.interpolate(keep, size=(h, w), mode="nearest")
    return (out > 0.2).float()


def to_hint(image: Image.Image, size: int, preprocess: str = "none") -> torch.Tensor:
    """A control image -> (1, S, S) float hint. "none": a drawing or an edge map as it is (light lines on dark, or
    dark lines on light, which is inverted), resized; "edges": a picture whose Canny edges become the hint."""
    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS)}")
    from ..data.images import center_square, on_white, to_square_rgb

    if preprocess == "edges":  # a picture, squared on white as the training images were, then its edges
        return torch.from_numpy(edges_uint8(np.asarray(to_square_rgb(image, size)))).float()[None] / 255
    rgb = center_square(on_white(image)).resize((size, size), Image.BOX)  # BOX: thin strokes fade, never vanish
    gray = torch.from_numpy(np.asarray(rgb.convert("L")).copy()).float() / 255
    if gray.median() > 0.5:  # a drawing on paper: the lines are the dark strokes
        gray = 1 - gray
    lo, hi = gray.min(), gray.max()
    return ((gray - lo) / (hi - lo) if hi - lo > 1e-3 else torch.zeros_like(gray))[None]


__all__ = ["CANNY", "PREPROCESS", "edge_maps", "edges_uint8", "scribbles", "to_hint"]
