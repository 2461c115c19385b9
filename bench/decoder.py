"""Autoencoders side by side on held-out images (issue 32 item 1): each model's round trip (encode, decode) of the
dataset's test split at 64 px, with `minicream.training.decoder.reconstruction_report`'s figures (PSNR overall and per
design, the share of clearly green pixels kept green, Laplacian sharpness relative to the real images), and a grid:
a row of real images, then a row per model's round trip, the images drawn (seeded) evenly from every design.

    python bench/decoder.py --models full runs/dec/model --out bench/last_decoder.json --grid docs/decoder_grid.png

Models with the same encoder differ only in their decoders (the fine-tune keeps the latent space).
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from PIL import Image

from minicream.config import load_config
from minicream.io.grid import image_grid
from minicream.io.model_dir import resolve_model
from minicream.models.autoencoder import decode, encode, load_autoencoder
from minicream.training.decoder import heldout_split, reconstruction_report


def _short(model: str) -> str:
    p = Path(model)
    return (p.parent.name if p.name == "model" else p.name)[:14]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True, help="shipped names or model folders")
    ap.add_argument("--data", default="data/emoji", help="dataset root (its test split)")
    ap.add_argument("--out", help="JSON of the figures")
    ap.add_argument("--grid", help="PNG: real | each model's round trip")
    ap.add_argument("--labels", help="comma-separated grid labels, one per model (default: the folder names)")
    ap.add_argument("--images", type=int, default=8, help="grid columns (images), spread over the designs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompts", help="comma-separated prompts: drawn by the first model's UNet (seed --seed), decoded "
                                      "by each model's decoder, into --generated-grid")
    ap.add_argument("--generated-grid", help="PNG: a row per model of the prompts' pictures")
    args = ap.parse_args()

    cfg = load_config("full", [f"data.root={args.data!r}"])
    images, designs = heldout_split(cfg)
    results, rounds = {}, []
    names = ["real"] + (args.labels.split(",") if args.labels else [_short(m) for m in args.models])
    for name in args.models:
        path = resolve_model(name)
        vae = load_autoencoder(path / "vae")
        t0 = time.time()
        results[name] = {"path": str(path), **reconstruction_report(vae, images, designs),
                         "seconds": round(time.time() - t0, 1)}
        rounds.append(decode(vae, encode(vae, images)))
        print(name, json.dumps(results[name]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"images": len(images), "designs": sorted(set(designs)),
                                              "models": results}, indent=1) + "\n")
    if args.grid:
        rng = random.Random(args.seed)
        by_design = {d: [i for i, x in enumerate(designs) if x == d] for d in sorted(set(designs))}
        picks = []
        while len(picks) < args.images and any(by_design.values()):
            for d, pool in by_design.items():
                if pool and len(picks) < args.images:
                    picks.append(pool.pop(rng.randrange(len(pool))))
        tiles, labels = [], []
        for name, batch in zip(names, [images] + rounds):  # one row per source, one column per image
            for i in picks:
                tiles.append(Image.fromarray(batch[i].permute(1, 2, 0).numpy()))
                labels.append(f"{name} {designs[i]}" if name == "real" else name)
        image_grid(tiles, cols=len(picks), labels=labels, scale=2).save(args.grid)
        print("grid:", args.grid)
    if args.prompts and args.generated_grid:
        generated_grid(args, [p.strip() for p in args.prompts.split(",")], names[1:])


def generated_grid(args, prompts: list[str], names: list[str]) -> None:
    """The same latents (the first model's UNet, one seed) through every model's decoder: what a user sees change."""
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(resolve_model(args.models[0]))
    tiles, labels = [], []
    for name, model in zip(names, args.models):
        pipe.vae = load_autoencoder(resolve_model(model) / "vae")
        for p in prompts:
            tiles.append(pipe(p, seed=args.seed)[0])
            labels.append(f"{name}: {p}"[:24])
    image_grid(tiles, cols=len(prompts), labels=labels, scale=2).save(args.generated_grid)
    print("generated grid:", args.generated_grid)


if __name__ == "__main__":
    with torch.no_grad():
        main()
