"""Draw docs/coverage_grid.png: 32 concepts drawn at random from the whole vocabulary, each in every design.

    .venv/bin/python docs/coverage_grid.py [--model DIR] [--data data/emoji] [--out docs/coverage_grid.png]

Concepts are sampled (fixed seed) among those that exist in all of the dataset's designs; one image per
(concept, design), prompt "name, design", seed 0, the model's default sampler and steps. Two concepts a row.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from minicream.eval.runner import _dataset_rows
from minicream.io.grid import image_grid
from minicream.pipelines import Pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model directory (default: the shipped model)")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--out", default="docs/coverage_grid.png")
    ap.add_argument("--concepts", type=int, default=32)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()

    rows = [r for r in _dataset_rows(Path(args.data)) if r.get("skin_tone") is None and r.get("concept")]
    styles = sorted({r["style"] for r in rows})
    by_concept: dict[str, set[str]] = {}
    for r in rows:
        by_concept.setdefault(r["concept"], set()).add(r["style"])
    full = sorted(c for c, s in by_concept.items() if s == set(styles))
    concepts = random.Random(args.seed).sample(full, min(args.concepts, len(full)))
    pipe = Pipeline.from_pretrained(args.model)
    images, labels = [], []
    for concept in concepts:
        for style in styles:
            images += pipe(f"{concept}, {style}", num_images=1, seed=0, filter="none")
            labels.append(f"{concept[:14]}/{style[:4]}")
    image_grid(images, cols=2 * len(styles), labels=labels).save(args.out, optimize=True)
    print(f"{args.out}: {len(concepts)} concepts x {len(styles)} designs ({', '.join(styles)})")


if __name__ == "__main__":
    main()
