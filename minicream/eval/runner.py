"""`minicream eval`: generate a benchmark's samples with a model, measure them, write report.json / report.md / grid.png."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from ..data.folder import images_to_tensor, iter_examples
from ..errors import MinicreamError
from ..evaluator.scorer import EVALUATOR_DIR, Evaluator, to_uint8
from ..evaluator.train import JUDGE_DIR
from . import metrics
from .adherence import check_prompt, square_view
from .nearest import NearestJudge
from .benchmarks import GENEVAL_TASKS, TASKS, Benchmark, get_benchmark
from .report import write_report


def _load_examples(data_root: Path, split: str) -> list:
    try:
        return list(iter_examples(data_root, size=64, split=split))
    except MinicreamError:
        return []


def _real_images(bench: Benchmark, data_root: Path, size: int) -> tuple[torch.Tensor | None, list]:
    if bench.real == "none":
        return None, []
    splits = ["test"] if bench.real == "test" else ["train", "test"]
    from ..data.folder import Example, _load_image, _resolve

    wanted = {c for p in bench.prompts for c in p["reference"]}
    examples = []
    for split in splits:  # decode only the reference images, not the whole dataset
        entries, _ = _resolve(data_root, split)
        for e in entries:
            if e.meta.get("concept") in wanted and e.meta.get("skin_tone") is None:
                image = _load_image(e.path, size)
                if image is not None:
                    examples.append(Example(image=image, text=e.text, meta=dict(e.meta)))
    if not examples:
        raise MinicreamError(f"no real images of the benchmark's concepts in {data_root}; build the dataset with `minicream data emoji {data_root}`")
    return images_to_tensor(examples), examples


def _accuracy(model: Evaluator, images: torch.Tensor, bench: Benchmark, rows: list[int], pool: list[str]) -> dict:
    """Top-1 / top-5 of the prompted concept among `pool`, over single-object prompts."""
    index = {c: i for i, c in enumerate(pool)}
    probs = model.class_probs(images[rows], pool)
    targets = []
    for r in rows:
        spec = bench.prompts[r // bench.samples]["spec"]
        targets.append([index[c] for c in spec.get("accept", spec["objects"]) if c in index])
    return {"top1": round(metrics.topk_accuracy(probs, targets, 1), 4), "top5": round(metrics.topk_accuracy(probs, targets, 5), 4),
            "n": len(rows), "classes": len(pool)}


def run_benchmark(model_dir: str | Path | None, name: str, out_dir: str | Path, samples: int | None = None,
                  candidates: int = 1, seed: int = 0, data_root: str | Path = "data/emoji", steps: int | None = None,
                  batch_size: int = 16, limit: int | None = None, guidance: float | None = None, sampler: str | None = None,
                  guidance_max_noise: float | None = None, cads: float | None = None, style: str | None = None,
                  log: Callable[[str], None] = print) -> dict:
    from ..pipelines import Pipeline

    t0 = time.time()
    data_root, out_dir = Path(data_root), Path(out_dir)
    if not any((data_root / split).is_dir() for split in ("train", "test")):
        # before any image is drawn: every benchmark compares with, or draws its prompts from, the real images
        raise MinicreamError(f"no dataset in {data_root}: build it first with `minicream data emoji {data_root}` "
                             "(or `make data/emoji/train/metadata.jsonl`), or pass --data")
    test = _load_examples(data_root, "test")
    pipe = Pipeline.from_pretrained(model_dir)
    if name == "objects":
        # A model trained on a selection of concepts (data.concepts / data.groups) is asked only for those.
        known = pipe.vocabulary.by_name
        test = [ex for ex in test if ex.meta.get("concept") in known] or test
    rows = _dataset_rows(data_root) if name == "coverage" else None
    bench = get_benchmark(name, samples, test, seed, limit, concepts=sorted(pipe.vocabulary.by_name), dataset_rows=rows,
                          styles=pipe.vocabulary.styles)
    evaluator = pipe.evaluator  # clear error when the model has no evaluator
    judge_dir = pipe.model_dir / EVALUATOR_DIR / JUDGE_DIR
    judge = Evaluator.from_pretrained(judge_dir, pipe.text_encoder) if (judge_dir / "config.json").is_file() else None
    grader, grader_name = (judge, "judge") if judge is not None else (evaluator, "evaluator (no separate judge shipped)")

    # 1. Generate: per-sample seeds, best-of-N when candidates > 1.
    log(f"{bench.name}: {len(bench.prompts)} prompts x {bench.samples} samples, best of {candidates}")
    images, scores = [], []
    for i, p in enumerate(bench.prompts):
        out = pipe(p["prompt"], num_images=bench.samples, seed=bench.sample_seeds(i), steps=steps, batch_size=batch_size,
                   num_candidates=candidates, guidance=guidance, sampler=sampler,
                   guidance_max_noise=guidance_max_noise, cads=cads, style=style)
        images += out
    # Scenes may come on canvases wider than square (objects at native size): the metrics that compare images of one
    # size see each padded to a square at the model's size; the grader reads the image as drawn.
    drawn = [to_uint8([im])[0] for im in images]
    fake = torch.stack([square_view(x, pipe.image_size) for x in drawn])
    t_gen = time.time() - t0
    log(f"generated {len(fake)} images in {t_gen:.0f} s")

    # 2. Metrics.
    # The classes a prompt is judged among: the concepts the model was trained on (GenEval judges among COCO's
    # classes), else every concept of the dataset. The report states how many.
    trained = set(pipe.vocabulary.by_name) if name != "scenes" else set()
    all_concepts = sorted((trained or _dataset_concepts(data_root)) | {c for p in bench.prompts for c in p["reference"]})
    real, _ = _real_images(bench, data_root, pipe.image_size)
    feat = metrics.EvaluatorFeatures(evaluator)
    res: dict = {"benchmark": bench.name, "model": str(pipe.model_dir), "model_hash": pipe.model_hash, "candidates": candidates,
                 "samples_per_prompt": bench.samples, "prompts": len(bench.prompts), "limit": limit, "n_generated": len(fake), "seed": bench.seed,
                 "sampler": sampler or pipe.defaults.get("sampler"), "steps": steps or pipe.defaults.get("steps"),
                 "guidance": guidance if guidance is not None else pipe.defaults.get("guidance"),
                 "guidance_max_noise": guidance_max_noise or pipe.guidance_max_noise,
                 "cads": cads if cads is not None else pipe.cads, "style": pipe.resolve_style(style) or "model",
                 "grader": grader_name}
    if real is not None:
        res["n_real"] = len(real)
        res["fd_evaluator"] = round(metrics.frechet_distance(real, fake, feat), 4)
        kid_mean, kid_std = metrics.kernel_distance(real, fake, feat)
        res["kid_evaluator"] = {"mean": round(kid_mean, 5), "std": round(kid_std, 5), "subset_size": min(100, len(real), len(fake))}
        res["fid_inception"] = metrics.inception_fid(real, fake)
        nearest = metrics.nearest_real_ssim(fake, real)
        res["ssim_nearest_real"] = round(float(nearest.mean()), 4)
    is_mean, is_std = metrics.inception_score(fake, metrics.EvaluatorLogits(evaluator, all_concepts))
    res["is_evaluator"] = {"mean": round(is_mean, 4), "std": round(is_std, 4), "classes": len(all_concepts)}
    if bench.samples >= 2:
        groups = [fake[i * bench.samples:(i + 1) * bench.samples] for i in range(len(bench.prompts))]
        res["ssim_pairwise"] = round(sum(metrics.pairwise_ssim(g) for g in groups) / len(groups), 4)
        plain = [g for g, p in zip(groups, bench.prompts) if p.get("group") == "plain"]
        if plain:  # variety: samples of a prompt without a style word may take any design
            res["ssim_pairwise_plain"] = round(sum(metrics.pairwise_ssim(g) for g in plain) / len(plain), 4)
    prompts = [bench.prompts[i // bench.samples]["prompt"] for i in range(len(fake))]
    res["clip_score"] = round(float(evaluator.score(fake, prompts).mean()), 4)

    # 3. Prompt adherence (graded by the judge; the evaluator's own view is reported beside it, labelled).
    single = [i for i in range(len(fake)) if bench.prompts[i // bench.samples]["spec"]["kind"] == "single_object"]
    if single:
        pool = bench.pool or all_concepts
        graders = {grader_name.split()[0]: grader}
        if bench.name in ("coverage", "concepts"):  # the independent check's way: the nearest of every real image
            graders["nearest"] = NearestJudge.from_dataset(data_root, size=pipe.image_size)
        res["object_accuracy"] = {name: _accuracy(g, fake, bench, single, pool) for name, g in graders.items()}
        res["object_accuracy"]["evaluator (self-graded)"] = _accuracy(evaluator, fake, bench, single, pool)
        for group in sorted({p["group"] for p in bench.prompts if "group" in p}):
            rows_g = [i for i in single if bench.prompts[i // bench.samples].get("group") == group]
            for name, g in graders.items():
                res["object_accuracy"][f"{name}, {group} prompts"] = _accuracy(g, fake, bench, rows_g, pool)
    if bench.name == "scenes":
        # Objects are named by the nearest real image (as the independent check does): the same grader for every
        # model, where a model's own judge is only as good as its training (the full model's, among 1,927
        # concepts, is weak). The model's judge is reported beside it.
        graders = {"nearest": NearestJudge.from_dataset(data_root, size=pipe.image_size), grader_name.split()[0]: grader}
        for gname, g in graders.items():
            per_task: dict[str, list[bool]] = {t: [] for t in TASKS}
            for i in range(len(drawn)):
                spec = bench.prompts[i // bench.samples]["spec"]
                per_task[spec["kind"]].append(check_prompt(g, drawn[i], spec, bench.pool, size=pipe.image_size))
            tasks = {t: round(sum(v) / len(v), 4) for t, v in per_task.items() if v}
            mean = round(sum(tasks[t] for t in GENEVAL_TASKS) / len(GENEVAL_TASKS), 4)
            if gname == "nearest":
                res["tasks"], res["geneval_mean"], res["grader"] = tasks, mean, "nearest"
            else:
                res["by_grader"] = {gname: {"tasks": tasks, "geneval_mean": mean}}
    res["seconds"] = {"generate": round(t_gen, 1), "total": round(time.time() - t0, 1)}
    res["machine"] = {"torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    write_report(res, images, bench, out_dir)
    log(f"report written to {out_dir}")
    return res


def _dataset_rows(root: Path) -> list[dict]:
    """Metadata rows of both splits (no image decoding)."""
    from ..data.folder import _resolve

    rows = []
    for split in ("train", "test"):
        try:
            entries, _ = _resolve(root, split)
        except MinicreamError:
            continue
        rows += [e.meta for e in entries]
    return rows


def _dataset_concepts(root: Path) -> set[str]:
    """Concept names of both splits, read from the metadata only (no image decoding)."""
    return {r["concept"] for r in _dataset_rows(root) if r.get("concept")}
