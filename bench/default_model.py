"""Which shipped model should be the default? Each model draws the same user-style prompts, graded the way the
independent check grades: the nearest real image among every concept of the dataset (eval/nearest.py).

Prompt sets (none written for this script, none tuned to it):
  typed      every single-concept prompt of bench/filter_prompts.jsonl (exact names, paraphrases, synonyms, typos,
             Russian, emoji characters, styles, and the "later" set of everyday objects beyond the 61), through each
             model's own language filter, as `Pipeline.__call__` does for a user
  reference  the 61 concepts of the `reference` model by their bare names (that model's home ground)

    .venv/bin/python bench/default_model.py [--models reference,full] [--samples 2] [--out bench/last_default_model.json]

Prints top-1 / top-5 per model and prompt category; raw numbers to --out.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent


def prompt_sets(reference_concepts: list[str]) -> list[dict]:
    rows = [json.loads(line) for line in (HERE / "filter_prompts.jsonl").read_text().splitlines() if line.strip()]
    typed = [{"set": "typed", "category": r["category"], "prompt": r["prompt"], "accept": r["concepts"]}
             for r in rows if len(r["concepts"]) == 1 and r["category"] not in ("composition", "mixed")]
    names = [{"set": "reference", "category": "bare name", "prompt": c, "accept": [c]} for c in reference_concepts]
    return typed + names


def main(argv=None) -> int:
    from minicream.eval.metrics import topk_accuracy
    from minicream.eval.nearest import NearestJudge
    from minicream.eval.runner import _dataset_concepts
    from minicream.pipeline import Pipeline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="reference,full")
    ap.add_argument("--samples", type=int, default=2, help="images per prompt (seeds 0..N-1)")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--limit", type=int, default=0, help="only every k-th prompt (a quick look); 0 = all")
    ap.add_argument("--out", default=str(HERE / "last_default_model.json"))
    args = ap.parse_args(argv)

    reference = Pipeline.from_pretrained("reference")
    prompts = prompt_sets(sorted(reference.vocabulary.by_name))
    if args.limit:
        prompts = prompts[::args.limit]
    pool = sorted(_dataset_concepts(Path(args.data)))
    index = {c: i for i, c in enumerate(pool)}
    prompts = [p for p in prompts if all(c in index for c in p["accept"])]
    judge = NearestJudge.from_dataset(args.data)
    results = {"prompts": len(prompts), "samples": args.samples, "classes": len(pool), "models": {}}
    for name in args.models.split(","):
        pipe = Pipeline.from_pretrained(name)
        t0, images = time.time(), []
        for p in prompts:
            images += pipe(p["prompt"], num_images=args.samples, seed=list(range(args.samples)))
        probs = judge.class_probs(images, pool)
        groups: dict[str, list[int]] = defaultdict(list)
        for i in range(len(images)):
            p = prompts[i // args.samples]
            for key in ("all", p["set"], f'{p["set"]}: {p["category"]}'):
                groups[key].append(i)
        targets = [[index[c] for c in prompts[i // args.samples]["accept"]] for i in range(len(images))]
        table = {k: {"top1": round(topk_accuracy(probs[rows], [targets[r] for r in rows], 1), 4),
                     "top5": round(topk_accuracy(probs[rows], [targets[r] for r in rows], 5), 4), "n": len(rows)}
                 for k, rows in sorted(groups.items())}
        results["models"][name] = {"model_hash": pipe.model_hash, "seconds": round(time.time() - t0, 1), "accuracy": table}
        print(f"{name}: {len(images)} images in {time.time() - t0:.0f} s", flush=True)
    names = list(results["models"])
    print(f"{'prompts':32s}" + "".join(f"{n + ' top-1/top-5':>26s}" for n in names) + "       n")
    for key in results["models"][names[0]]["accuracy"]:
        cells = [results["models"][n]["accuracy"][key] for n in names]
        print(f"{key:32s}" + "".join(f"{c['top1']:>16.3f} / {c['top5']:.3f}" for c in cells) + f"{cells[0]['n']:>8d}")
    Path(args.out).write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
