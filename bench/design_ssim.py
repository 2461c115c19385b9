"""What the variety bar means in the data: the mean pairwise SSIM between the real designs of one concept.

The coverage benchmark's "pairwise SSIM, bare name" compares two samples of one prompt without a style word (issue 13's
bar: <= 0.5). This measures the same statistic on real images: for concepts drawn at random (seeded) from a built emoji
dataset, the mean SSIM over all pairs of that concept's designs (twemoji, openmoji, noto, fluent; skin-tone variants
left out), with the same SSIM as the benchmark (`minicream.eval.metrics.pairwise_ssim`). A model that picked a design
uniformly at random for each seed and drew it exactly would score about 1/k * 1 + (1 - 1/k) * this (k designs).

    python bench/design_ssim.py --data data/emoji --concepts 200 --seed 0
    python bench/design_ssim.py --concepts 80 --blur 1.2 --autoencoder runs/full5/model   # does softness raise it?

--blur S: the same after a Gaussian blur of S px (a soft drawing); --autoencoder MODEL: the same after a round trip
through MODEL's autoencoder (what a perfect UNet on its latents could give at best).
"""
from __future__ import annotations

import argparse
import collections
import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from minicream.data.emoji_names import names_for_stem
from minicream.eval.metrics import pairwise_ssim


def designs_by_concept(root: Path) -> dict[str, list[Path]]:
    """Image files of a built emoji dataset grouped by emoji (both splits), skin-tone variants left out."""
    groups: dict[str, list[Path]] = collections.defaultdict(list)
    for path in sorted(root.glob("*/*.png")):
        style, _, stem = path.stem.partition("_")
        names = names_for_stem(stem)
        if names is None or names.skin_tone:
            continue
        groups[names.emoji].append(path)
    return groups


def load(paths: list[Path]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> the same, Gaussian-blurred (separable, 7 taps, edges replicated)."""
    k = torch.exp(-torch.arange(-3, 4).float() ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).view(1, 1, 1, 7).repeat(3, 1, 1, 1)
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(x.float(), (3, 3, 0, 0), mode="replicate"), k, groups=3)
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(y, (0, 0, 3, 3), mode="replicate"), k.transpose(2, 3), groups=3)
    return y.round().clamp(0, 255).to(torch.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/emoji", type=Path)
    ap.add_argument("--concepts", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument("--blur", type=float, help="blur every image by this many px (Gaussian sigma) first")
    ap.add_argument("--autoencoder", help="round-trip every image through this model's autoencoder first")
    args = ap.parse_args()
    transform = lambda x: x  # noqa: E731
    if args.autoencoder:
        from minicream.evaluator.scorer import to_uint8
        from minicream.pipelines import Pipeline

        pipe = Pipeline.from_pretrained(args.autoencoder)
        transform = lambda x: to_uint8(pipe.decode(pipe.encode_image(x)))  # noqa: E731
    if args.blur:
        inner, sigma = transform, args.blur
        transform = lambda x: blur(inner(x), sigma)  # noqa: E731
    torch.set_num_threads(1)
    groups = {k: v for k, v in designs_by_concept(args.data).items() if len(v) >= 2}
    keys = random.Random(args.seed).sample(sorted(groups), min(args.concepts, len(groups)))
    per_k: dict[int, list[float]] = collections.defaultdict(list)
    for key in keys:
        with torch.no_grad():
            per_k[len(groups[key])].append(pairwise_ssim(transform(load(groups[key]))))
    values = [v for vs in per_k.values() for v in vs]
    out = {"concepts_with_2plus_designs": len(groups), "drawn": len(keys), "seed": args.seed,
           "blur": args.blur, "autoencoder": args.autoencoder,
           "mean_pairwise_ssim": round(float(np.mean(values)), 4),
           "by_design_count": {k: {"n": len(v), "mean": round(float(np.mean(v)), 4)} for k, v in sorted(per_k.items())}}
    for k, row in out["by_design_count"].items():
        out["by_design_count"][k]["uniform_choice_exact_copy"] = round(1 / k + (1 - 1 / k) * row["mean"], 4)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
