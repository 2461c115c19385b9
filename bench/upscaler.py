"""The diffusion upscaler (issue 32), side by side with bicubic and Lanczos, in one run:

  held-out   the 256-px dataset's test images (never trained on), downsampled to 64 px (8-bit): PSNR / SSIM against
             the real 256-px render, sharpness (Laplacian variance over the real images'), seconds per image, for
             bicubic, Lanczos and the upscaler at each step count
  generated  the model draws bare concept names (drawn at random from its vocabulary, seed 0) at 64 px; the
             nearest-real-image judge grades the 64-px image and the 256-px one downsampled back to 64 (top-1 /
             top-5 among every concept: the upscaler must not change what the picture shows), and sharpness of the
             256-px images (bicubic, upscaler) over the real 256-px renders'
  grid       (--grid) the first prompts at 64 px (shown enlarged, nearest), bicubic 256 and the upscaler's 256

    .venv/bin/python bench/upscaler.py [--model full] [--steps 1,2,4,8] [--concepts 100] [--grid docs/upscaler_grid.png]
        [--out bench/last_upscaler.json]
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from PIL import Image

HERE = Path(__file__).parent


def main(argv=None) -> int:
    from minicream.diffusion.upscale import upsample
    from minicream.eval.nearest import NearestJudge
    from minicream.evaluator.scorer import to_uint8
    from minicream.models.autoencoder import to_uint8 as float_to_uint8, to_unit_range
    from minicream.pipelines import Pipeline
    from minicream.pipelines.upscale import resize
    from minicream.training.decoder import laplacian_variance
    from minicream.training.upscaler import load_images, load_upscaler_recipe, upscaler_report

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="full", help="a model with an upscaler/ folder")
    ap.add_argument("--data", default="data/emoji256", help="the 256-px dataset (held-out split)")
    ap.add_argument("--judge-data", default="data/emoji", help="the 64-px dataset the nearest judge compares with")
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--steps", default="1,2,4,8", help="upscaler step counts on the held-out images")
    ap.add_argument("--noise", type=float, default=None, help="the condition's noise level (default: the upscaler's)")
    ap.add_argument("--concepts", type=int, default=100, help="generated: concepts drawn from the vocabulary")
    ap.add_argument("--grid", help="write the side-by-side grid here (PNG)")
    ap.add_argument("--grid-rows", type=int, default=8)
    ap.add_argument("--out", default=str(HERE / "last_upscaler.json"))
    args = ap.parse_args(argv)

    pipe = Pipeline.from_pretrained(args.model)
    up = pipe.upscaler
    steps = [int(k) for k in args.steps.split(",")]
    cfg = load_upscaler_recipe("upscaler", [f"data={args.data!r}", f"heldout={args.heldout}"])
    cfg.model = up.net.config
    noise = up.noise_level if args.noise is None else args.noise
    t0 = time.time()
    heldout = upscaler_report(up.net, cfg, steps, noise)
    print(f"held-out ({heldout['n']} images, {time.time() - t0:.0f}s):")
    for name, m in heldout["methods"].items():
        print(f"  {name:12s} PSNR {m['psnr_db']:6.2f} dB  SSIM {m['ssim']:.4f}  sharpness {m['sharpness']:.3f}  "
              f"{m['seconds_per_image']:.3f} s/image  {m['psnr_by_design']}")

    # generated: the model's own pictures
    real, _ = load_images(cfg, "test", args.heldout)
    real_sharp = laplacian_variance(real)
    names = sorted(pipe.vocabulary.by_name)
    prompts = random.Random(0).sample(names, min(args.concepts, len(names)))
    judge = NearestJudge.from_dataset(args.judge_data)
    pool = sorted(set(judge.concepts))
    index = {c: i for i, c in enumerate(pool)}
    small = []
    t0 = time.time()
    for p in prompts:
        small += pipe(p, num_images=1, seed=0)
    t_draw = (time.time() - t0) / len(prompts)
    big_size = up.scale * pipe.image_size
    t0 = time.time()
    big = pipe.upscale(small, big_size)
    t_up = (time.time() - t0) / len(prompts)
    px_small, px_big = to_uint8(small), to_uint8(big)
    px_bicubic = float_to_uint8(upsample(to_unit_range(px_small).float(), up.scale))

    def grade(px: torch.Tensor) -> dict:
        top = judge.class_probs(px, pool).topk(5, dim=1).indices.tolist()
        hits = [[index.get(p, -1) in ranked[:k] for ranked, p in zip(top, prompts)] for k in (1, 5)]
        return {"top1": round(sum(hits[0]) / len(prompts), 3), "top5": round(sum(hits[1]) / len(prompts), 3)}

    generated = {
        "n": len(prompts), "seconds_per_image_base": round(t_draw, 3), "seconds_per_image_upscale": round(t_up, 3),
        "upscale_steps": up.steps, "noise_level": up.noise_level,
        "judge_64": grade(px_small),
        "judge_upscaled_then_64": grade(resize(px_big, pipe.image_size, pipe.image_size)),
        "judge_bicubic_then_64": grade(resize(px_bicubic, pipe.image_size, pipe.image_size)),
        "sharpness_upscaler": round(laplacian_variance(px_big) / real_sharp, 3),
        "sharpness_bicubic": round(laplacian_variance(px_bicubic) / real_sharp, 3),
    }
    print(f"generated ({len(prompts)} bare names, seed 0): {json.dumps(generated)}")
    result = {"model": args.model, "upscaler_hash": up.hash, "heldout": heldout, "generated": generated,
              "prompts": prompts}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"raw numbers in {args.out}")

    if args.grid:
        from minicream.io.grid import image_grid

        rows = min(args.grid_rows, len(prompts))
        tiles, labels = [], []
        for i in range(rows):
            tiles += [small[i].resize((big_size, big_size), Image.NEAREST),
                      Image.fromarray(px_bicubic[i].permute(1, 2, 0).numpy(), "RGB"), big[i]]
            labels += [f"{prompts[i]}, 64 px", "bicubic 256", "upscaler 256"]
        image_grid(tiles, cols=3, labels=labels, scale=1).save(args.grid)
        print(f"grid: {args.grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
