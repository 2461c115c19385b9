"""What do N people's ratings change? Simulated ratings from the nearest-real-image judge, measured on held-out ones.

1. Draws --ratings best-of-k rating sets (k = --candidates) of the model's concepts (--concepts of them, drawn at
   random with seed 0, or --prompts) and lets the nearest judge (minicream/eval/nearest.py) pick each winner, as a
   careful person would; they go into <out>/train.sqlite as the server records people's choices.
2. Draws --heldout more sets the same way (other seeds) into <out>/heldout.sqlite.
3. Fine-tunes the model's evaluator on the training ratings (Bradley-Terry + its contrastive loss) into <out>/evaluator.
4. On the held-out sets, for the evaluator before and after: agreement with the judge on every (winner, loser) pair,
   how often its best-of-k pick is the judge's, and the judge's mean score of its pick, next to the first candidate
   (plain generation), a random pick (the mean) and the judge's own pick (the ceiling); and, to see what it forgot,
   how well it names the dataset's held-out real emoji among all their concepts.

    python bench/feedback_sim.py --model reference --data data/emoji --ratings 200 --out runs/feedback_sim

Writes <out>/results.json and prints it. Re-running reuses nothing (give a new --out), except with --reuse: steps 3-4
only, on the ratings an earlier run of the same --out wrote (its train.sqlite and heldout.sqlite; the judge's scores of
the held-out candidates are computed again from their stored PNGs, and must pick the same winners).

bench/last_feedback_sim_60.json (a small first look, not the README's 200): --ratings 60 --heldout 40 --candidates 4
--concepts 20 --steps 8 --ft-steps 100 on the reference model, one shared CPU core, 16 min, with the first defaults
(no anchor). Held-out sets (new seeds of the same 20 concepts): agreement with the judge on pairs 0.692 -> 0.817,
best-of-4 pick = the judge's 0.475 -> 0.550, the judge's score of the pick 0.976 -> 0.981 (first candidate 0.976,
random 0.972, the judge's own pick 0.983); but naming held-out real emoji fell 0.075 -> 0.029 top-1, hence the anchor
(now default: pairs 0.842, real top-1 0.072; the variants are in the JSON and in minicream/evaluator/preference.py).
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minicream.eval.nearest import NearestJudge, real_images  # noqa: E402
from minicream.evaluator.preference import (PreferenceConfig, evaluator_dir, finetune_on_feedback, pair_tensors,  # noqa: E402
                                            preference_accuracy)
from minicream.evaluator.scorer import Evaluator  # noqa: E402
from minicream.feedback.export import read_feedback_dataset  # noqa: E402
from minicream.feedback.simulate import SIMULATION_LIMITS, SimulatedRating, judge_scores, simulate_ratings  # noqa: E402
from minicream.feedback.store import FeedbackStore  # noqa: E402
from minicream.models.base import WEIGHTS_NAME  # noqa: E402
from minicream.pipelines import Pipeline  # noqa: E402
from minicream.io.model_dir import resolve_model  # noqa: E402

HELDOUT_SEED = 10**6  # held-out sets use seeds far from the training sets'


def rerank_outcome(evaluator: Evaluator, store: FeedbackStore, ratings) -> dict:
    """Best-of-k by `evaluator` on the simulated sets: the judge's verdict on its picks."""
    picked, agree = [], 0
    for r in ratings:
        images = [Image.open(io.BytesIO(store.image_png(h))).convert("RGB") for h in r.hashes]
        j = int(torch.argmax(evaluator.score(images, r.prompt)))
        picked.append(r.scores[j])
        agree += j == r.winner
    n = max(1, len(ratings))
    return {"judge_pick_agreement": round(agree / n, 4), "judge_score_of_pick": round(sum(picked) / n, 4)}


def ratings_from_store(store: FeedbackStore, judge, labels) -> list[SimulatedRating]:
    """The simulated ratings of an earlier run, from its database: each set's candidates re-scored by the judge."""
    out = []
    for r in store.ratings():
        s = store.candidate_set(r.set_id)
        images = [Image.open(io.BytesIO(store.image_png(h))).convert("RGB") for h in s["images"]]
        scores = judge_scores(judge, images, s["prompt"], labels).float()
        winner = s["images"].index(r.image)
        if scores[winner] < scores.max():
            raise SystemExit(f"set {r.set_id}: the judge no longer picks the recorded winner; simulate again")
        out.append(SimulatedRating(s["prompt"], tuple(s["settings"]["seeds"]), tuple(s["images"]),
                                   tuple(round(float(x), 6) for x in scores), winner, r.set_id))
    return out


def real_image_accuracy(evaluator: Evaluator, images: torch.Tensor, concepts: list[str]) -> dict:
    """Forgetting check: top-1 / top-5 of the evaluator naming held-out real emoji among every concept of the split."""
    labels = sorted(set(concepts))
    index = {c: i for i, c in enumerate(labels)}
    feats = evaluator.image_features(images)
    ranks = (feats @ evaluator.text_features(labels).t()).argsort(dim=1, descending=True)
    hit = ranks == torch.tensor([index[c] for c in concepts])[:, None]
    return {"n_images": len(concepts), "candidates": len(labels), "top1": round(float(hit[:, :1].any(1).float().mean()), 4),
            "top5": round(float(hit[:, :5].any(1).float().mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder with an evaluator/")
    ap.add_argument("--data", default="data/emoji", help="the built emoji dataset (the judge's real images)")
    ap.add_argument("--ratings", type=int, default=200, help="simulated ratings to fine-tune on")
    ap.add_argument("--heldout", type=int, default=100, help="simulated ratings to measure on")
    ap.add_argument("--candidates", type=int, default=4, help="k: candidates a rating picks among")
    ap.add_argument("--concepts", type=int, default=50, help="concepts drawn at random (seed 0) from the model's")
    ap.add_argument("--prompts", default="", help="comma-separated concept names instead of --concepts")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps")
    ap.add_argument("--ft-steps", type=int, default=200, help="fine-tuning steps")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--contrastive-weight", type=float, default=0.5)
    ap.add_argument("--anchor-weight", type=float, default=4.0)
    ap.add_argument("--out", default="runs/feedback_sim")
    ap.add_argument("--reuse", action="store_true", help="fine-tune and measure on the ratings already in --out")
    args = ap.parse_args()
    out = Path(args.out)
    if args.reuse:
        if not ((out / "train.sqlite").is_file() and (out / "heldout.sqlite").is_file()):
            sys.exit(f"{out}: no train.sqlite and heldout.sqlite to reuse")
        if (out / "evaluator").exists() or (out / "results.json").exists():
            sys.exit(f"{out}: holds a fine-tuned evaluator or results already; give another --out")
    elif out.exists() and any(out.iterdir()):
        sys.exit(f"{out}: exists and is not empty; give a new --out")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    # 1-2. simulated ratings
    model_dir = resolve_model(args.model)  # a folder, or a shipped model's name ("reference")
    pipe = Pipeline.from_pretrained(model_dir)
    judge = NearestJudge.from_dataset(args.data)
    known = sorted(set(pipe.vocabulary.by_name) & set(judge.concepts))
    if args.prompts:
        prompts = [p.strip() for p in args.prompts.split(",") if p.strip()]
    else:
        prompts = sorted(random.Random(0).sample(known, min(args.concepts, len(known))))
    options = {"steps": args.steps}
    train_store = FeedbackStore(out / "train.sqlite", limits=SIMULATION_LIMITS)
    held_store = FeedbackStore(out / "heldout.sqlite", limits=SIMULATION_LIMITS)
    if args.reuse:
        held = ratings_from_store(held_store, judge, sorted(set(prompts)))
        if {r.prompt for r in held} - set(prompts) or not 0 < len(train_store.ratings()) <= args.ratings \
                or not 0 < len(held) <= args.heldout:
            sys.exit(f"{out}: its ratings were not simulated with these --ratings, --heldout and prompts")
    else:
        simulate_ratings(pipe, prompts, args.ratings, judge, candidates=args.candidates, seed=0, store=train_store,
                         generate_options=options)
        held = simulate_ratings(pipe, prompts, args.heldout, judge, candidates=args.candidates, seed=HELDOUT_SEED,
                                store=held_store, generate_options=options)
    t_sim = time.time() - t0

    # 3. fine-tune
    cfg = PreferenceConfig(steps=args.ft_steps, lr=args.lr, batch_size=args.batch_size, contrastive_weight=args.contrastive_weight,
                           anchor_weight=args.anchor_weight)
    record = finetune_on_feedback(model_dir, out / "train.sqlite", out / "evaluator", cfg, encoder=pipe.text_encoder)

    # 4. measure on the held-out sets
    held_pairs = pair_tensors(read_feedback_dataset(out / "heldout.sqlite"), pipe.evaluator.model.config.image_size)
    results: dict = {"model": str(model_dir), "ratings": args.ratings, "heldout_sets": len(held), "candidates": args.candidates,
                     "prompts": len(prompts), "sampling_steps": args.steps, "finetune": record["config"],
                     "train_pairs": {"before": record["train_pairs_before"], "after": record["train_pairs_after"]}}
    n = max(1, len(held))
    results["heldout_baselines"] = {"first_candidate": round(sum(r.scores[0] for r in held) / n, 4),
                                    "random_pick": round(sum(sum(r.scores) / len(r.scores) for r in held) / n, 4),
                                    "judge_pick": round(sum(max(r.scores) for r in held) / n, 4)}
    real, real_concepts = real_images(args.data, splits=("test",))
    for name, folder in (("before", evaluator_dir(model_dir)), ("after", out / "evaluator")):
        assert (folder / WEIGHTS_NAME).is_file()
        ev = Evaluator.from_pretrained(folder, text_encoder=pipe.text_encoder)
        results[f"heldout_{name}"] = {**preference_accuracy(ev, held_pairs), **rerank_outcome(ev, held_store, held)}
        results[f"real_test_images_{name}"] = real_image_accuracy(ev, real, real_concepts)
    results["seconds"] = {"simulate": round(t_sim, 1), "total": round(time.time() - t0, 1)}
    if args.reuse:
        results["seconds"]["note"] = "--reuse: simulate = re-scoring the held-out sets; the ratings were simulated by an earlier run"
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
