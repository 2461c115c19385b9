"""How well does the nearest-neighbour judge name a concept, on real images and on degraded copies of them?

Draws --n training images (fixed seed), degrades them the way a small generator's drawings differ from the
real ones (Gaussian blur, a shift of up to 3 px, a smaller drawing), and reports top-1 / top-5 among every
concept of the dataset, judged against every real image (the query image itself included, as a generated image
that reproduces a training image would be).

    python bench/judge_nearest.py [--data data/emoji] [--n 1500]
"""
from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from minicream.eval.nearest import NearestJudge, real_images


def blur(x: torch.Tensor, sigma: float = 1.2, k: int = 5) -> torch.Tensor:
    ax = torch.arange(k) - k // 2
    w = torch.exp(-ax ** 2 / (2 * sigma ** 2))
    w = w / w.sum()
    x = F.conv2d(F.pad(x, (k // 2, k // 2, 0, 0), mode="replicate"), w.view(1, 1, 1, k).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, k // 2, k // 2), mode="replicate"), w.view(1, 1, k, 1).repeat(3, 1, 1, 1), groups=3)


def shift(x: torch.Tensor, rng: random.Random, d: int = 3) -> torch.Tensor:
    out = torch.ones_like(x)
    for i in range(len(x)):
        dy, dx = rng.randint(-d, d), rng.randint(-d, d)
        out[i] = torch.roll(x[i], shifts=(dy, dx), dims=(1, 2))
    return out


def shrink(x: torch.Tensor, scale: float = 0.8) -> torch.Tensor:
    s = int(round(x.shape[-1] * scale))
    small = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
    out = torch.ones_like(x)
    o = (x.shape[-1] - s) // 2
    out[:, :, o:o + s, o:o + s] = small
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--n", type=int, default=1500)
    args = ap.parse_args()
    t0 = time.time()
    images, labels = real_images(args.data, splits=("train",))
    judge = NearestJudge(images, labels)
    concepts = sorted(set(labels))
    index = {c: i for i, c in enumerate(concepts)}
    rng = random.Random(0)
    rows = rng.sample(range(len(labels)), min(args.n, len(labels)))
    x = images[rows].float() / 255
    target = torch.tensor([index[labels[r]] for r in rows])
    print(f"# nearest judge: {len(judge.concepts)} real images, {len(concepts)} concepts, {len(rows)} queries ({time.time() - t0:.0f} s to index)")
    for name, q in [("clean", x), ("blur", blur(x)), ("blur + shift 3 px", shift(blur(x), rng)),
                    ("blur + shrink 0.8", shrink(blur(x))), ("blur + shift + shrink", shift(shrink(blur(x)), rng))]:
        top = judge.similarities(q, concepts).topk(5, dim=1).indices
        print(f"{name:24s} top-1 {(top[:, 0] == target).float().mean():.3f}  top-5 {(top == target[:, None]).any(1).float().mean():.3f}")


if __name__ == "__main__":
    main()
