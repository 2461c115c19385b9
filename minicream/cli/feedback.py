"""`minicream feedback export | stats` (people's ratings recorded by `minicream serve`) and the fine-tuning of
`minicream train-evaluator --feedback` (minicream.feedback, minicream.evaluator.preference).

Readers never create or repair a database: a missing, corrupt or foreign file is one line and exit status 2, and the
file is left byte for byte (the store checks it before anything is written)."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

from ..errors import MinicreamError


def cmd_export(args) -> None:
    from ..feedback.export import export_feedback

    info = export_feedback(args.db, args.out, overwrite=args.overwrite)
    print(f"{info['ratings']} ratings of {info['candidate_sets']} candidate sets -> {info['pairs']} preference pairs, "
          f"{info['images']} images written to {args.out}"
          + (f" ({info['pairs_without_images']} pairs left out: their pictures were not recorded)" if info["pairs_without_images"] else ""))


def feedback_stats(db: str | Path) -> dict:
    """Counts of a feedback database: sets, images, ratings, preference pairs, the most rated prompts."""
    from ..feedback import FeedbackStore

    store = FeedbackStore.open_existing(db)
    counts, ratings, pairs = store.count(), store.ratings(), store.preferences()
    prompts = Counter(r.prompt for r in ratings)
    return {"database": str(db), "candidate_sets": counts.sets, "images": counts.images, "choices": counts.choices,
            "marked_wrong": counts.wrong, "preference_pairs": len(pairs), "prompts_rated": len(prompts),
            "clients": len({r.client for r in ratings if r.client is not None}),
            "first": min((r.created for r in ratings), default=None), "last": max((r.created for r in ratings), default=None),
            "top_prompts": prompts.most_common(5)}


def cmd_stats(args) -> None:
    import time

    s = feedback_stats(args.db)
    if args.json:
        print(json.dumps(s, indent=2))
        return
    when = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))  # noqa: E731
    print(f"{args.db}: {s['candidate_sets']} candidate sets ({s['images']} images); {s['choices']} choices and "
          f"{s['marked_wrong']} marked wrong from {s['clients']} client(s) -> {s['preference_pairs']} preference pairs")
    if s["first"] is not None:
        print(f"ratings from {when(s['first'])} to {when(s['last'])}; {s['prompts_rated']} prompts, most rated: "
              + ", ".join(f"{p!r} {n}" for p, n in s["top_prompts"]))
    else:
        print("no ratings yet: pick the best of a generation's candidates on the page (`minicream serve`)")


# -- train-evaluator --feedback ----------------------------------------------------------------------------------
NOT_WITH_FEEDBACK = {"config": "evaluator", "for_model": None, "run_dir": None, "resume": False, "data": None}


def preference_config(args):
    """PreferenceConfig from --steps and `--set FIELD=VALUE` (its fields: steps, lr, batch_size, anchor_weight...)."""
    from ..evaluator.preference import PreferenceConfig

    kinds = {f.name: type(f.default) for f in dataclasses.fields(PreferenceConfig)}
    values = {}
    for item in args.set or []:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or key not in kinds:
            raise MinicreamError(f"--set {item[:60]!r}: with --feedback, FIELD=VALUE with FIELD one of {', '.join(kinds)}")
        try:
            values[key] = {"true": True, "false": False}[text.strip().lower()] if kinds[key] is bool else kinds[key](text)
        except (KeyError, ValueError):
            want = {int: "an integer", float: "a number", bool: "true or false"}.get(kinds[key], kinds[key].__name__)
            raise MinicreamError(f"--set {key}: expected {want}, got {text[:40]!r}") from None
    if args.steps is not None:
        values["steps"] = args.steps
    return PreferenceConfig(**values)


def cmd_train_on_feedback(args) -> None:
    """Fine-tune the model's evaluator on the ratings of a feedback database or an exported folder."""
    given = [f"--{k.replace('_', '-')}" for k, default in NOT_WITH_FEEDBACK.items() if getattr(args, k) != default]
    if given:
        raise MinicreamError(f"{', '.join(given)}: not with --feedback (it fine-tunes the evaluator of --model on ratings)")
    source = Path(args.feedback)
    if not source.exists():
        raise MinicreamError(f"--feedback {source}: no such feedback database or export folder")
    cfg = preference_config(args)
    from ..evaluator.preference import evaluator_dir, finetune_on_feedback
    from ..feedback.export import read_feedback_dataset
    from ..io.model_dir import resolve_model

    data = read_feedback_dataset(source)  # checked first, before MiniLM and the evaluator load: a bad file costs nothing
    if not data.pairs:
        raise MinicreamError(f"{source}: no preference pairs with pictures yet; pick the best of a generation's candidates "
                             "on the page (`minicream serve`) first")
    model_dir = resolve_model(args.model)
    if not model_dir.exists():
        raise MinicreamError(f"--model {args.model}: no such model folder or shipped model")
    src = evaluator_dir(model_dir)
    print(f"fine-tuning {src} on {len(data.pairs)} preference pairs from {source} ({cfg.steps} steps)")
    record = finetune_on_feedback(src, source, args.out, cfg, progress=True)
    before, after = record["train_pairs_before"], record["train_pairs_after"]
    print(f"agreement with the ratings {before['accuracy']:.3f} -> {after['accuracy']:.3f} on the {record['pairs']} pairs "
          f"trained on ({record['seconds']:.0f} s); fine-tuned evaluator written to {args.out}")
    print(f"to use it: copy {model_dir} and replace its evaluator/ folder with {args.out}")


def add_parsers(sub) -> None:
    fb = sub.add_parser("feedback", help="people's ratings recorded by `minicream serve`: export them, count them")
    fsub = fb.add_subparsers(dest="feedback_command", required=True)
    ex = fsub.add_parser("export", help="write the ratings as a dataset folder (preferences.jsonl, ratings.jsonl, images/)")
    ex.add_argument("--db", required=True, help="the feedback database (the server's OUTPUT_DIR/feedback.sqlite)")
    ex.add_argument("--out", required=True, help="a new (or empty) folder")
    ex.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    ex.set_defaults(func=cmd_export)
    st = fsub.add_parser("stats", help="how many candidate sets, ratings and preference pairs a database holds")
    st.add_argument("--db", required=True, help="the feedback database (the server's OUTPUT_DIR/feedback.sqlite)")
    st.add_argument("--json", action="store_true", help="print the counts as JSON")
    st.set_defaults(func=cmd_stats)
