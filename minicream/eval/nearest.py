"""A nearest-neighbour judge: which real emoji does a picture look most like?

The independent check behind the issues grades a generated image by its nearest neighbour among every real
image of the dataset. This judge does the same, so the project's coverage figures measure the same thing:
each image is centred on its ink (the bounding box of its non-white pixels, so a drawing a few pixels off
centre or a little smaller still matches), shrunk to 24 x 24, and compared by cosine similarity of its
mean-free ink map with every real image; a concept's score is its best-matching real image's similarity.

On clean training images it names the concept at top-1 0.991 / top-5 0.999; blurred (Gaussian, sigma 1.2 px),
shifted up to 3 px and shrunk to 0.8: 0.957 / 0.993 (1,500 images among 1,927 concepts, four designs;
`python bench/judge_nearest.py`). It rewards drawing a concept recognisably as some design draws it, not a
novel drawing: variety is measured separately (pairwise SSIM).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

FEATURE_SIZE = 24
INK = 0.2  # a pixel is ink when some channel is this far below white (after a 3x3 blur: noise is not ink)
TEMPERATURE = 0.02  # softmax temperature over per-concept similarities (class_probs)


def _as_unit(images) -> torch.Tensor:
    from ..evaluator.scorer import to_uint8

    x = images if isinstance(images, torch.Tensor) else to_uint8(images)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def center_on_ink(x: torch.Tensor, margin: int = 4) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> each image cropped to a square around its ink (white padded), resized back."""
    b, _, h, w = x.shape
    ink = F.avg_pool2d((1 - x).amax(dim=1, keepdim=True), 3, stride=1, padding=1, count_include_pad=False)[:, 0] > INK
    out = torch.ones_like(x)
    for i in range(b):
        ys, xs = torch.where(ink[i])
        if len(ys) == 0:
            out[i] = x[i]
            continue
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        side = max(y1 - y0, x1 - x0) + 2 * margin
        sy0, sx0 = (y0 + y1) // 2 - side // 2, (x0 + x1) // 2 - side // 2
        canvas = torch.ones(3, side, side)
        a0, b0, a1, b1 = max(0, sy0), max(0, sx0), min(h, sy0 + side), min(w, sx0 + side)
        canvas[:, a0 - sy0:a1 - sy0, b0 - sx0:b1 - sx0] = x[i, :, a0:a1, b0:b1]
        out[i] = F.interpolate(canvas[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    return out


def features(images) -> torch.Tensor:
    """Unit-norm (B, 3 * 24 * 24) features of uint8 or [0, 1] images."""
    x = center_on_ink(_as_unit(images))
    f = 1 - F.interpolate(x, size=(FEATURE_SIZE, FEATURE_SIZE), mode="bilinear", antialias=True, align_corners=False)
    f = f.flatten(1)
    return F.normalize(f - f.mean(dim=1, keepdim=True), dim=1)


def real_images(root, splits: Sequence[str] = ("train", "test"), size: int = 64) -> tuple[torch.Tensor, list[str]]:
    """uint8 (N, 3, size, size) real images of the dataset that show a concept (no skin-tone variants), and
    their concepts."""
    from pathlib import Path

    from ..data.folder import Example, _load_image, _resolve, images_to_tensor
    from ..errors import MinicreamError

    examples = []
    for split in splits:
        try:
            entries, _ = _resolve(Path(root), split)
        except MinicreamError:
            continue
        for e in entries:
            if e.meta.get("concept") and e.meta.get("skin_tone") is None:
                image = _load_image(e.path, size)
                if image is not None:
                    examples.append(Example(image=image, text=e.text, meta=dict(e.meta)))
    if not examples:
        raise MinicreamError(f"no real images with concepts in {root}; build the dataset with `minicream data emoji {root}`")
    return images_to_tensor(examples), [e.meta["concept"] for e in examples]


class NearestJudge:
    """`class_probs(images, labels)` like the learned judge's, from the nearest real image of each label."""

    name = "nearest"

    def __init__(self, real_images: torch.Tensor, concepts: Sequence[str], batch_size: int = 512):
        if len(real_images) != len(concepts) or not len(concepts):
            raise ValueError("one concept per real image, and at least one image")
        self.db = torch.cat([features(real_images[i:i + batch_size]) for i in range(0, len(real_images), batch_size)])
        self.concepts = list(concepts)

    @classmethod
    def from_dataset(cls, root, splits: Sequence[str] = ("train", "test"), size: int = 64) -> "NearestJudge":
        """Every real image of the dataset with a concept (skin-tone variants left out)."""
        return cls(*real_images(root, splits, size))

    def similarities(self, images, labels: Sequence[str]) -> torch.Tensor:
        """(B, len(labels)): each label's best cosine similarity over its real images (-1 for a label with none)."""
        index = {c: i for i, c in enumerate(labels)}
        cols = torch.tensor([index.get(c, -1) for c in self.concepts])
        keep = cols >= 0
        q = features(images)
        sim = q @ self.db[keep].t()
        out = torch.full((len(q), len(labels)), -1.0)
        return out.scatter_reduce(1, cols[keep][None].expand(len(q), -1), sim, "amax")

    def class_probs(self, images, labels: Sequence[str], image_features=None) -> torch.Tensor:
        return torch.softmax(self.similarities(images, labels) / TEMPERATURE, dim=1)
