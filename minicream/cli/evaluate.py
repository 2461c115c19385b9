"""`minicream train-evaluator` and `minicream eval`: the image evaluator and the benchmarks."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import MinicreamError


def cmd_train_evaluator(args) -> None:
    if args.feedback is not None:  # fine-tune on people's ratings instead of training from a dataset
        from .feedback import cmd_train_on_feedback

        return cmd_train_on_feedback(args)
    if args.model is not None:
        raise MinicreamError("--model: only with --feedback (training from a dataset focuses on a model with --for-model)")
    from ..evaluator.train import load_recipe, train_evaluator

    overrides = list(args.set or [])
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    recipe = load_recipe(args.config, overrides)
    if args.for_model:
        from ..evaluator.train import focus_of_model

        recipe = dataclasses.replace(recipe, **focus_of_model(args.for_model))
    res = train_evaluator(recipe, args.data or "data/emoji", args.out, run_dir=args.run_dir, resume=args.resume,
                          init_from=args.init_from)
    for name in ("evaluator", "judge"):
        held = res.get(name, {}).get("heldout", {})
        if held:
            print(f"{name}: held-out retrieval top-1 {held['captions']['top1']:.3f} / top-5 {held['captions']['top5']:.3f} "
                  f"among {held['captions']['candidates']} captions")
    print(f"evaluator written to {args.out}")


def cmd_eval(args) -> None:
    from ..eval.runner import run_benchmark

    out = args.out or f"outputs/eval/{args.benchmark}" + (f"_best{args.candidates}" if args.candidates > 1 else "")
    run_benchmark(args.model, args.benchmark, out, samples=args.samples, candidates=args.candidates, seed=args.seed,
                  data_root=args.data, steps=args.steps, limit=args.limit, guidance=args.guidance, sampler=args.sampler,
                  guidance_max_noise=args.guidance_max_noise, cads=args.cads, style=args.style)
    print(Path(out) / "report.md")


def add_train_evaluator_parser(sub) -> None:
    te = sub.add_parser("train-evaluator", help="train the image evaluator (mini-CLIP) and the judge on a captioned image folder, "
                                                "or fine-tune a model's evaluator on people's ratings (--feedback)")
    te.add_argument("--data", help="dataset folder (train/ and test/ splits; default data/emoji)")
    te.add_argument("--out", required=True, help="output folder, e.g. MODEL/evaluator (with --feedback: a new folder)")
    te.add_argument("--feedback", metavar="DB|DIR", help="fine-tune the evaluator of --model on the ratings of a feedback "
                                                         "database (the server's OUTPUT_DIR/feedback.sqlite) or an exported folder")
    te.add_argument("--model", help="with --feedback: the model whose evaluator is fine-tuned (default: the default model)")
    te.add_argument("--config", default="evaluator", help="preset name or TOML file")
    te.add_argument("--steps", type=int, help="evaluator optimizer steps (with --feedback: fine-tuning steps, default 200)")
    te.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. judge_train.steps=100")
    te.add_argument("--for-model", metavar="DIR", help="focus on the concepts that model was trained on (its data.concepts / data.groups)")
    te.add_argument("--run-dir", help="checkpoints and caches (default OUT_run beside OUT)")
    te.add_argument("--resume", action="store_true", help="continue from the checkpoints in --run-dir")
    te.add_argument("--init-from", metavar="EVALUATOR_DIR", help="warm-start the evaluator from a trained one of the same "
                                                                "network (e.g. MODEL/evaluator), fresh optimizer and schedule")
    te.set_defaults(func=cmd_train_evaluator)


def add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="run a benchmark against a model and write report.json, report.md and grid.png")
    ev.add_argument("--model", help="model directory (default: the default model, full)")
    ev.add_argument("--benchmark", default="minicream-table", help="minicream-table, objects, concepts, coverage or scenes")
    ev.add_argument("--out", help="report folder (default outputs/eval/BENCHMARK)")
    ev.add_argument("--samples", type=int, help="samples per prompt (default: the benchmark's)")
    ev.add_argument("--candidates", type=int, default=1, metavar="N", help="best-of-N with the evaluator")
    ev.add_argument("--limit", type=int, help="only the first N prompts of the benchmark (a quicker subset)")
    ev.add_argument("--seed", type=int, default=0, help="base of the per-sample seeds")
    ev.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ev.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
    ev.add_argument("--guidance-max-noise", type=float, metavar="F", help="guidance only at noise levels t/T up to F (default: the model's)")
    ev.add_argument("--style", help="style option of every prompt: vary (a prompt naming no design draws one per "
                                    "image, by its seed) or model (the model chooses); default: the model's")
    ev.add_argument("--cads", type=float, metavar="S", help="condition-annealing noise scale (default: the model's)")
    ev.add_argument("--sampler", help="sampler (default: the model's; `minicream samplers` lists them)")
    ev.add_argument("--data", default="data/emoji", help="dataset with the real reference images")
    ev.set_defaults(func=cmd_eval)
