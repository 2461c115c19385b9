"""Which design does each seed draw? The variety of bare-name prompts, taken apart.

Issue 13's variety bar is the mean pairwise SSIM between samples of one prompt given without a style word (<= 0.5).
Two samples of a bare name can differ in two ways: they draw different designs (twemoji, openmoji, noto, fluent), or
they draw the same design differently. For concepts drawn at random (seeded) from those with all four designs, this
draws K seeds of the bare name under each sampling arm and finds, for every sample, the nearest of that concept's
real designs (the nearest-real-image judge's features, `minicream/eval/nearest.py`). It reports per arm:

- pairwise SSIM over the K samples (the benchmark's statistic; K = 2 there, more here);
- how seeds spread over designs: the fraction of seed pairs that drew the same design, and the mean number of
  distinct designs among K seeds (1 = every seed the same design; a uniform choice gives 1 - (3/4)^K x 4);
- the SSIM of same-design pairs and of different-design pairs;
- nearest-real-image top-5 among all concepts (so variety is not bought with accuracy unseen).

    python bench/design_spread.py --model runs/full5/model --concepts 48 --seeds 4 --arms "4;4@0.8;4+cads0.1"

An arm is `GUIDANCE[@HI][+cadsS][+vary]`: guidance scale, guidance only at noise levels t/T <= HI, and condition-annealed
sampling with noise scale S (`--guidance-max-noise`, `--cads`); `+vary` draws each seed with style "vary" (one design
per image by its seed, `--style vary`), every other arm with style "model" (the model chooses).
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minicream.eval.metrics import _ssim, topk_accuracy  # noqa: E402
from minicream.eval.nearest import NearestJudge, features  # noqa: E402
from minicream.evaluator.scorer import to_uint8  # noqa: E402
from minicream.pipelines import Pipeline  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guidance_sweep import parse_arm  # noqa: E402  (the same arm syntax)


def real_by_concept(root: Path) -> tuple[torch.Tensor, list[str], list[str]]:
    """uint8 real images of a built emoji dataset (both splits, no skin tones), their concepts and designs."""
    from minicream.data.folder import _load_image, _resolve

    images, concepts, styles = [], [], []
    for split in ("train", "test"):
        entries, _ = _resolve(root, split)
        for e in entries:
            if e.meta.get("concept") and e.meta.get("skin_tone") is None:
                im = _load_image(e.path, 64)
                if im is not None:
                    images.append(im), concepts.append(e.meta["concept"]), styles.append(e.meta["style"])
    return to_uint8(images), concepts, styles


def analyse(samples: torch.Tensor, concept: str, real_f: torch.Tensor, concepts: list[str], styles: list[str]) -> dict:
    own = [i for i, c in enumerate(concepts) if c == concept]
    sim = features(samples) @ real_f[own].t()
    drew = [styles[own[j]] for j in sim.argmax(1).tolist()]
    same, diff = [], []
    for a, b in itertools.combinations(range(len(samples)), 2):
        s = float(_ssim(samples[a:a + 1], samples[b:b + 1]).mean())
        (same if drew[a] == drew[b] else diff).append(s)
    return {"designs": drew, "same": same, "diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--arms", default="4;4@0.8")
    ap.add_argument("--concepts", type=int, default=48)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="draws the concepts")
    ap.add_argument("--data", default="data/emoji", type=Path)
    ap.add_argument("--random-seeds", action="store_true",
                    help="each concept's K seeds drawn at random (default: consecutive, as in one batch); under "
                         "style vary consecutive seeds always differ in design, random ones coincide 1 time in n")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    arms = {a: parse_arm(a) for a in args.arms.split(";")}
    real, concepts, styles = real_by_concept(args.data)
    by = collections.defaultdict(set)
    for c, s in zip(concepts, styles):
        by[c].add(s)
    all_designs = max(len(v) for v in by.values())
    pool = sorted(c for c, v in by.items() if len(v) == all_designs)
    chosen = random.Random(args.seed).sample(pool, min(args.concepts, len(pool)))
    judge = NearestJudge(real, concepts)
    labels = sorted(set(concepts))
    pipe = Pipeline.from_pretrained(args.model)
    rows = []
    for name, opts in arms.items():
        t0 = time.time()
        per, imgs, targets = [], [], []
        for k, concept in enumerate(chosen):
            seeds = random.Random(k).sample(range(2 ** 31), args.seeds) if args.random_seeds else 1000 * k
            out = pipe(concept, num_images=args.seeds, seed=seeds, **opts)
            x = to_uint8(out)
            per.append(analyse(x, concept, judge.db, concepts, styles))
            imgs.append(x)
            targets += [labels.index(concept)] * len(x)
        probs = torch.cat([judge.class_probs(x, labels) for x in imgs])
        same = [s for p in per for s in p["same"]]
        diff = [s for p in per for s in p["diff"]]
        pairs = len(same) + len(diff)
        row = {"arm": name, "ssim_pairwise": round((sum(same) + sum(diff)) / pairs, 4),
               "same_design_pairs": round(len(same) / pairs, 3),
               "distinct_designs": round(sum(len(set(p["designs"])) for p in per) / len(per), 2),
               "ssim_same_design": round(sum(same) / max(len(same), 1), 4),
               "ssim_diff_design": round(sum(diff) / max(len(diff), 1), 4),
               "design_counts": dict(collections.Counter(d for p in per for d in p["designs"])),
               "top5": round(topk_accuracy(probs, torch.tensor(targets), 5), 3),
               "top1": round(topk_accuracy(probs, torch.tensor(targets), 1), 3),
               "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    uniform = 1 - (1 - 1 / all_designs) ** args.seeds
    result = {"model": args.model, "concepts": len(chosen), "seeds": args.seeds, "random_seeds": args.random_seeds,
              "designs": all_designs,
              "uniform_distinct_designs": round(all_designs * uniform, 2), "uniform_same_pairs": round(1 / all_designs, 3),
              "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
