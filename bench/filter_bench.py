"""Accuracy of the language filter on bench/filter_prompts.jsonl (user-style prompts, written first).

The prompts of category "later" were written after the filter existed and measured once, without tuning;
the others were written before it. A prompt counts as correct when the filter resolves it to exactly the expected concepts (as a set) and,
for compositions, keeps the relation/count/size words listed in `keep`. Run:
    .venv/bin/python bench/filter_bench.py [--model DIR | --data DIR] [--no-synonyms] [--no-embeddings] [--show-errors]

The expected concepts are emoji names; `--data data/emoji` grounds the filter in the whole emoji dataset's
vocabulary (what the language part can do), `--model` in one model's concepts (what that model can be asked for).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model directory (default: the shipped reference model)")
    ap.add_argument("--data", help="ground the filter in a dataset's concepts (e.g. data/emoji) instead of a model's")
    ap.add_argument("--prompts", default=str(HERE / "filter_prompts.jsonl"))
    ap.add_argument("--no-synonyms", action="store_true", help="without the curated synonym table (ablation)")
    ap.add_argument("--no-embeddings", action="store_true", help="without the MiniLM nearest-concept rule")
    ap.add_argument("--show-errors", action="store_true")
    args = ap.parse_args(argv)

    from minicream.filter import load_vocabulary
    from minicream.filter.offline import OfflineFilter
    from minicream.pipelines import default_model_dir

    if args.data:
        from minicream.filter.vocabulary import concepts_from_dataset

        vocab = concepts_from_dataset(args.data)
        vocab.source = f"dataset {args.data}"
    else:
        vocab = load_vocabulary(args.model or default_model_dir())
    encoder = None
    if not args.no_embeddings:
        from minicream.text.encoder import TextEncoder

        encoder = TextEncoder.load(None)
    filt = OfflineFilter(vocab, encoder, synonyms={} if args.no_synonyms else None)
    rows = [json.loads(line) for line in open(args.prompts, encoding="utf-8") if line.strip()]
    per_cat, errors = defaultdict(lambda: [0, 0]), []
    t0 = time.time()
    for row in rows:
        res = filt.rewrite(row["prompt"])
        ok = set(res.concepts) == set(row["concepts"])
        ok = ok and all(w in res.rewritten for w in row.get("keep", []))
        per_cat[row["category"]][0] += ok
        per_cat[row["category"]][1] += 1
        if not ok:
            errors.append((row["prompt"], row["concepts"], res.rewritten, res.concepts))
    seconds = time.time() - t0
    total = sum(c for c, _ in per_cat.values())
    before = [(c, n) for cat, (c, n) in per_cat.items() if cat != "later"]
    b_ok, b_n = sum(c for c, _ in before), sum(n for _, n in before)
    if "later" in per_cat:  # prompts written after the filter existed, measured once, never tuned on
        l_ok, l_n = per_cat["later"]
        print(f"prompts written before the filter: {b_ok}/{b_n} = {100 * b_ok / b_n:.1f}%; "
              f"written after it: {l_ok}/{l_n} = {100 * l_ok / l_n:.1f}%")
    print(f"offline filter accuracy: {total}/{len(rows)} = {100 * total / len(rows):.1f}%"
          f" ({vocab.source}; synonyms {'off' if args.no_synonyms else 'on'}, embeddings {'off' if encoder is None else 'on'};"
          f" {1000 * seconds / len(rows):.1f} ms/prompt)")
    for cat, (c, n) in sorted(per_cat.items()):
        print(f"  {cat:12s} {c:3d}/{n:3d} = {100 * c / n:5.1f}%")
    if args.show_errors:
        for prompt, want, got, concepts in errors:
            print(f"  MISS {prompt!r}: want {want}, got {got!r} {concepts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
