"""Editing measured (issue 14): inpainting, variations, outpainting and blending on a model, graded by its judge.

For N concepts of the model (a fixed seed picks them), each paired with the next one:
  inpaint   the real twemoji image of concept A, right half masked, prompt = concept B. The judge names the
            concept of the repainted half (cropped, padded to a square) among the N concepts: top-1 = B?
            The kept half must be the input's own pixels away from the seam: the share of identical pixels.
  variation four variations of the real image of A (the evaluator names it; strength 0.6): the judge's top-1 among
            the N concepts = A?, and the mean pairwise SSIM of the four (1.0 = copies).
Writes report.json, a grid of the inpaintings (input | mask | output), an outpainted strip and a blend strip.

    python bench/editing.py --model minicream/reference --out docs/editing [--concepts 20] [--data data/emoji]
    python bench/editing.py --model full --concepts 8 --variation-only [--vary-strength 0.8] [--vary-style vary]
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from minicream.data.folder import _load_image, _resolve
from minicream.editing import SEAM
from minicream.eval.metrics import pairwise_ssim
from minicream.evaluator.scorer import Evaluator, to_uint8
from minicream.io.grid import image_grid
from minicream.pipelines import Pipeline


def right_half_mask(size: int) -> Image.Image:
    m = np.zeros((size, size), np.uint8)
    m[:, size // 2:] = 255
    return Image.fromarray(m, "L")


def padded_right_half(im: Image.Image) -> Image.Image:
    w, h = im.size
    canvas = Image.new("RGB", (h, h), "white")
    canvas.paste(im.crop((w // 2, 0, w, h)), ((h - (w - w // 2)) // 2, 0))
    return canvas


def hstack(images: list[Image.Image], scale: int = 2, gap: int = 6) -> Image.Image:
    """Images of any sizes side by side (enlarged `scale`x, nearest), top-aligned, on white."""
    w = sum(im.width * scale for im in images) + gap * (len(images) - 1)
    h = max(im.height * scale for im in images)
    out, x = Image.new("RGB", (w, h), "white"), 0
    for im in images:
        out.paste(im.convert("RGB").resize((im.width * scale, im.height * scale), Image.NEAREST), (x, 0))
        x += im.width * scale + gap
    return out


def real_images(root: Path, concepts: list[str], style: str, size: int) -> dict[str, Image.Image]:
    out = {}
    for split in ("train", "test"):
        try:
            entries, _ = _resolve(root, split)
        except Exception:
            continue
        for e in entries:
            c = e.meta.get("concept")
            if c in concepts and c not in out and e.meta.get("style") == style and not e.meta.get("skin_tone"):
                im = _load_image(e.path, size)
                if im is not None:
                    out[c] = im
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--out", default="outputs/bench_editing")
    ap.add_argument("--concepts", type=int, default=20)
    ap.add_argument("--style", default="twemoji", help="design of the real input images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variation-only", action="store_true", help="measure variations only (no inpaint, outpaint, blend)")
    ap.add_argument("--vary-strength", type=float, help="strength of the variations (default: the mode's)")
    ap.add_argument("--vary-style", help="style option of the variations (default: the mode's)")
    ap.add_argument("--vary-guidance", type=float, help="guidance scale of the variations (default: the model's)")
    ap.add_argument("--vary-prompt", choices=["named", "empty", "true"], default="named",
                    help="prompt of the variations: named = the mode's default (none given: the evaluator names the "
                         "image), empty = \"\", true = the input's real concept (an upper bound, not a mode)")
    args = ap.parse_args()
    vary_options = {k: v for k, v in (("strength", args.vary_strength), ("style", args.vary_style),
                                      ("guidance", args.vary_guidance)) if v is not None}
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline.from_pretrained(args.model)
    judge_dir = pipe.model.judge if pipe.model.has(pipe.model.judge) else pipe.model.evaluator
    judge = Evaluator.from_pretrained(judge_dir, pipe.text_encoder)
    rng = random.Random(args.seed)
    names = sorted(pipe.vocabulary.by_name)
    reals = real_images(Path(args.data), names, args.style, pipe.image_size)
    pool = rng.sample(sorted(reals), min(args.concepts, len(reals)))
    size = pipe.image_size
    mask = right_half_mask(size)
    keep_cols = size // 2 - SEAM - 2  # columns away from the feathered seam

    rows, grid, vgrid = [], [], []
    for i, a in enumerate(pool):
        b = pool[(i + 1) % len(pool)]
        src = reals[a]
        if args.variation_only:
            edited, named, kept = src, None, np.ones(1)
        else:
            [edited] = pipe.edit(src, b, mask=mask, seed=1000 + i)
            probs = judge.class_probs([padded_right_half(edited)], pool)[0]
            named = pool[int(probs.argmax())]
            kept = np.asarray(edited)[:, :keep_cols] == np.asarray(src)[:, :keep_cols]
        prompt = {"named": {}, "empty": {"prompt": ""}, "true": {"prompt": a}}[args.vary_prompt]
        variations = pipe.vary(src, num_images=4, seed=2000 + 4 * i, **vary_options, **prompt)
        vnames = [pool[int(p.argmax())] for p in judge.class_probs(variations, pool)]
        source_named = pool[int(judge.class_probs([src], pool)[0].argmax())]
        rows.append({"input": a, "prompt": b, "variation_prompt": variations[0].info["minicream"]["prompt"],
                     "source_keeps_concept": float(source_named == a), "judge_repainted_half": named, "correct": named == b,
                     "kept_identical": float(kept.mean()), "variation_names": vnames,
                     "variation_keeps_concept": sum(v == a for v in vnames) / len(vnames),
                     "variation_ssim": round(pairwise_ssim(to_uint8(variations)), 4)})
        grid += [src, mask.convert("RGB"), edited]
        vgrid += [src, *variations]
        print(f"{a:>24s} -> {b:<24s} judge: {named or '-':<24s} kept {kept.mean():.3f}  variations: {rows[-1]['variation_keeps_concept']:.2f} "
              f"SSIM {rows[-1]['variation_ssim']:.3f}", flush=True)

    report = {"model": str(pipe.model_dir), "model_hash": pipe.model_hash, "concepts": len(pool), "style": args.style,
              "judge": str(judge_dir.relative_to(pipe.model_dir)),
              **({} if args.variation_only else {
                  "inpaint_judge_top1": round(sum(r["correct"] for r in rows) / len(rows), 4),
                  "inpaint_kept_identical": round(min(r["kept_identical"] for r in rows), 4)}),
              "variation_options": {**vary_options, "prompt": args.vary_prompt},
              "variation_keeps_concept": round(sum(r["variation_keeps_concept"] for r in rows) / len(rows), 4),
              # the judge's top-1 on the real inputs themselves: what the variations are compared with
              "source_keeps_concept": round(sum(r["source_keeps_concept"] for r in rows) / len(rows), 4),
              "variation_pairwise_ssim": round(sum(r["variation_ssim"] for r in rows) / len(rows), 4),
              "chance": round(1 / len(pool), 4), "rows": rows, "seconds": round(time.time() - t0, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    image_grid(vgrid[:5 * 8], cols=5).save(out / "variation_grid.png")  # source | four variations
    if args.variation_only:
        print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))
        return
    image_grid(grid[:3 * 8], cols=6).save(out / "inpaint_grid.png")
    a, b = pool[0], pool[1]
    [wide] = pipe.outpaint(reals[a], a, right=size, seed=7)
    [tall] = pipe.outpaint(reals[b], b, left=size // 2, right=size // 2, seed=8)
    hstack([reals[a], wide, reals[b], tall]).save(out / "outpaint_strip.png")
    frames = pipe.blend(reals[a], b, frames=8, seed=9, prompt=a)
    image_grid(frames, cols=8).save(out / "blend_strip.png")
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
