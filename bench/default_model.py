"""Which shipped model should be the default? Each model draws the same user-style prompts, graded the way the
independent check grades: the nearest real image among every concept of the dataset (eval/nearest.py).

Prompt sets (--prompts; none written for this script, none tuned to it), each prompt through each model's own
language filter, as `Pipeline.__call__` does for a user:
  filter       (default) every single-concept prompt of bench/filter_prompts.jsonl (exact names, paraphrases,
               synonyms, typos, Russian, emoji characters, styles, and the "later" set of everyday objects beyond
               the 61) as set "typed", and the 61 concepts of the `reference` model by their bare names as set
               "reference" (that model's home ground)
  typed-vocab  bench/typed_prompts.jsonl (bench/make_typed_prompts.py): 360 prompts as people type them for concepts
               drawn from the whole vocabulary, stratified over the emoji groups: exact names, other capitals, typos,
               aliases, hand-written synonyms and descriptions, Russian, emoji characters, "NAME, DESIGN", and
               names in languages the filter does not read ("other language": reported apart, left out of "all")
  filter-dev   bench/filter_dev_prompts.jsonl: 80 hand-written descriptions and synonyms of concepts in neither set
               above, written before any was run, to work on the filter's weak rows without tuning to typed-vocab

    .venv/bin/python bench/default_model.py [--prompts filter|typed-vocab|filter-dev] [--models reference,full] [--samples 2]
        [--limit N] [--filter-only] [--out FILE]

Prints top-1 / top-5 per model and prompt category; raw numbers to --out (default bench/last_default_model.json,
bench/last_typed_vocab.json for typed-vocab). --filter-only draws nothing: it reports how often each model's filter
turns a prompt into an accepted concept (what a model's vocabulary and filter allow, in seconds).
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from minicream.errors import MinicreamError
from minicream.eval.adherence import square_view
from minicream.evaluator.scorer import to_uint8

HERE = Path(__file__).parent
PROMPT_SETS = ("filter", "typed-vocab", "filter-dev")
UNREAD = ("other language",)  # typed-vocab categories in languages the filter does not read: not in "all"
OUT = {"filter": HERE / "last_default_model.json", "typed-vocab": HERE / "last_typed_vocab.json",
       "filter-dev": HERE / "last_filter_dev.json"}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prompt_sets(reference_concepts: list[str]) -> list[dict]:
    """The `filter` set: typed prompts of the filter benchmark, then the 61 reference concepts by name."""
    rows = _rows(HERE / "filter_prompts.jsonl")
    typed = [{"set": "typed", "category": r["category"], "prompt": r["prompt"], "accept": r["concepts"]}
             for r in rows if len(r["concepts"]) == 1 and r["category"] not in ("composition", "mixed")]
    names = [{"set": "reference", "category": "bare name", "prompt": c, "accept": [c]} for c in reference_concepts]
    return typed + names


def typed_vocab_prompts(path: Path = HERE / "typed_prompts.jsonl", name: str = "typed-vocab") -> list[dict]:
    """The `typed-vocab` set (or `filter-dev`, the same format), one dict per line of bench/typed_prompts.jsonl."""
    return [{"set": name, "category": r["category"], "prompt": r["prompt"], "accept": r["concepts"],
             "group": r["group"], "unread": r["category"] in UNREAD} for r in _rows(path)]


def evenly(items: list, n: int) -> list:
    """At most `n` items, evenly spaced (every category of a file sorted by category keeps its share)."""
    if not n or n >= len(items):
        return items
    return [items[int((k + 0.5) * len(items) / n)] for k in range(n)]


def group_keys(p: dict) -> list[str]:
    keys = [f'{p["set"]}: {p["category"]}']
    if p.get("unread"):
        return keys + ["all incl. other languages"]
    keys += ["all", p["set"]]
    return keys + (["all incl. other languages"] if p["set"] == "typed-vocab" else [])


def filter_table(pipe, prompts: list[dict]) -> dict:
    """Top-1 of the filter alone: the prompt resolves to concepts, all of them accepted ("in_vocabulary": an accepted
    concept is one of the model's). Lists the misses on concepts the model knows."""
    groups: dict[str, list[int]] = defaultdict(list)
    known = pipe.vocabulary.by_name
    rows = []
    for p in prompts:
        row = {"prompt": p["prompt"], "category": p["category"], "accept": p["accept"],
               "known": any(c in known for c in p["accept"])}
        try:
            res = pipe.filter_prompt(p["prompt"])  # as Pipeline.__call__ does (filter "offline", the model's style)
            row.update(concepts=res.concepts, rewritten=res.rewritten,
                       ok=bool(res.concepts) and set(res.concepts) <= set(p["accept"]))
        except MinicreamError as e:  # the user gets an error instead of a picture: a miss
            row.update(concepts=[], error=str(e), ok=False)
        rows.append(row)
    for i, p in enumerate(prompts):
        for key in group_keys(p):
            groups[key].append(i)
    table = {k: {"top1": round(sum(rows[i]["ok"] for i in idx) / len(idx), 4),
                 "in_vocabulary": round(sum(rows[i]["known"] for i in idx) / len(idx), 4), "n": len(idx)}
             for k, idx in sorted(groups.items())}
    return {"accuracy": table, "misses": [r for r in rows if not r["ok"] and r["known"]]}


def image_table(pipe, judge, prompts: list[dict], samples: int, pool: list[str]) -> dict:
    """Top-1 / top-5 of the nearest-real-image judge over `samples` images per prompt (seeds 0..samples-1); a prompt
    the pipeline refuses (an error instead of a picture) counts as a miss."""
    index = {c: i for i, c in enumerate(pool)}
    images, drawn, errors = [], [], {}
    for j, p in enumerate(prompts):
        try:
            images += pipe(p["prompt"], num_images=samples, seed=list(range(samples)))
            drawn += [j] * samples
        except MinicreamError as e:  # refused prompt: its samples count as misses
            errors[p["prompt"]] = str(e)
    # A prompt the filter reads as a scene comes on a wider canvas: graded as a whole, padded to the model's square.
    square = torch.stack([square_view(to_uint8([im])[0], pipe.image_size) for im in images]) if images else None
    top = judge.class_probs(square, pool).topk(5, dim=1).indices.tolist() if images else []
    hits = {k: [0.0] * len(prompts) for k in (1, 5)}
    for ranked, j in zip(top, drawn):
        accepted = {index[c] for c in prompts[j]["accept"]}
        for k in (1, 5):
            hits[k][j] += bool(accepted & set(ranked[:k])) / samples
    groups: dict[str, list[int]] = defaultdict(list)
    for j, p in enumerate(prompts):
        for key in group_keys(p):
            groups[key].append(j)
    table = {key: {"top1": round(sum(hits[1][j] for j in idx) / len(idx), 4),
                   "top5": round(sum(hits[5][j] for j in idx) / len(idx), 4), "n": len(idx) * samples}
             for key, idx in sorted(groups.items())}
    return {"accuracy": table, "images": len(images), "refused": errors}


def main(argv=None) -> int:
    from minicream.eval.nearest import NearestJudge
    from minicream.eval.runner import _dataset_concepts
    from minicream.pipelines import Pipeline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", choices=PROMPT_SETS, default="filter", help="prompt set (see above)")
    ap.add_argument("--models", default="reference,full")
    ap.add_argument("--samples", type=int, default=2, help="images per prompt (seeds 0..N-1)")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--limit", type=int, default=0,
                    help="at most N prompts, evenly spaced over the set (a quick look); 0 = all")
    ap.add_argument("--filter-only", action="store_true", help="no images: how often each model's filter resolves a "
                    "prompt to an accepted concept")
    ap.add_argument("--out", help="raw numbers (default: bench/last_default_model.json, bench/last_typed_vocab.json; "
                    "with --filter-only bench/last_filter_filter.json, bench/last_typed_vocab_filter.json)")
    args = ap.parse_args(argv)

    if args.prompts == "typed-vocab":
        prompts = typed_vocab_prompts()
    elif args.prompts == "filter-dev":
        prompts = typed_vocab_prompts(HERE / "filter_dev_prompts.jsonl", "filter-dev")
    else:
        prompts = prompt_sets(sorted(Pipeline.from_pretrained("reference").vocabulary.by_name))
    prompts = evenly(prompts, args.limit)
    pool = sorted(_dataset_concepts(Path(args.data)))
    index = {c: i for i, c in enumerate(pool)}
    missing = [p["prompt"] for p in prompts if not all(c in index for c in p["accept"])]
    if missing:  # the judge grades against real images: a concept without any cannot be graded
        print(f"left out {len(missing)} prompts whose concepts have no real image in {args.data}: {missing[:5]}")
    prompts = [p for p in prompts if all(c in index for c in p["accept"])]
    judge = None if args.filter_only else NearestJudge.from_dataset(args.data)
    results = {"prompt_set": args.prompts, "prompts": len(prompts), "limit": args.limit, "classes": len(pool),
               "grader": "filter only" if args.filter_only else "nearest real image",
               **({} if args.filter_only else {"samples": args.samples}), "models": {}}
    for name in args.models.split(","):
        pipe = Pipeline.from_pretrained(name)
        t0 = time.time()
        res = filter_table(pipe, prompts) if args.filter_only else image_table(pipe, judge, prompts, args.samples, pool)
        results["models"][name] = {"model_hash": pipe.model_hash, "seconds": round(time.time() - t0, 1), **res}
        print(f"{name}: {len(prompts)} prompts in {time.time() - t0:.0f} s", flush=True)
    names = list(results["models"])
    cols = ("top1", "in_vocabulary") if args.filter_only else ("top1", "top5")
    label = " filter top-1 / in vocab" if args.filter_only else " top-1/top-5"
    print(f"{'prompts':40s}" + "".join(f"{n + label:>30s}" for n in names) + "       n")
    for key in results["models"][names[0]]["accuracy"]:
        cells = [results["models"][n]["accuracy"][key] for n in names]
        print(f"{key:40s}" + "".join(f"{c[cols[0]]:>20.3f} / {c[cols[1]]:.3f}" for c in cells) + f"{cells[0]['n']:>8d}")
    out = Path(args.out or (OUT[args.prompts] if not args.filter_only else
                            HERE / f"last_{args.prompts.replace('-', '_')}_filter.json"))
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
