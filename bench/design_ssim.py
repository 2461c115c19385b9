"""What the variety bar means in the data: the mean pairwise SSIM between the real designs of one concept.

The coverage benchmark's "pairwise SSIM, bare name" compares two samples of one prompt without a style word (issue 13's
bar: <= 0.5). This measures the same statistic on real images: for concepts drawn at random (seeded) from a built emoji
dataset, the mean SSIM over all pairs of that concept's designs (twemoji, openmoji, noto, fluent; skin-tone variants
left out), with the same SSIM as the benchmark (`minicream.eval.metrics.pairwise_ssim`). A model that picked a design
uniformly at random for each seed and drew it exactly would score about 1/k * 1 + (1 - 1/k) * this (k designs).

    python bench/design_ssim.py --data data/emoji --concepts 200 --seed 0
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/emoji", type=Path)
    ap.add_argument("--concepts", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    torch.set_num_threads(1)
    groups = {k: v for k, v in designs_by_concept(args.data).items() if len(v) >= 2}
    keys = random.Random(args.seed).sample(sorted(groups), min(args.concepts, len(groups)))
    per_k: dict[int, list[float]] = collections.defaultdict(list)
    for key in keys:
        per_k[len(groups[key])].append(pairwise_ssim(load(groups[key])))
    values = [v for vs in per_k.values() for v in vs]
    out = {"concepts_with_2plus_designs": len(groups), "drawn": len(keys), "seed": args.seed,
           "mean_pairwise_ssim": round(float(np.mean(values)), 4),
           "by_design_count": {k: {"n": len(v), "mean": round(float(np.mean(v)), 4)} for k, v in sorted(per_k.items())}}
    for k, row in out["by_design_count"].items():
        out["by_design_count"][k]["uniform_choice_exact_copy"] = round(1 / k + (1 - 1 / k) * row["mean"], 4)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
