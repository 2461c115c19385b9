"""Adapters on designs no model trained on (issue 31 item 3): subjects, forgetting, a style; time and size per method.

The unseen designs are Iconify's Firefox OS Emoji, Emoji One v1, Emoji One (EmojiTwo) and Noto Emoji v1, pinned npm
packages (`minicream data fetch fxemoji emojione-v1 emojione noto-v1`), built as their own dataset:

    minicream data emoji --styles fxemoji,emojione-v1,emojione,noto-v1 --no-skin-tones --heldout 0 data/unseen

Jobs (each writes OUT/jobs/NAME.json and is skipped when that file exists, so a run resumes; `--shard I/N` runs
every N-th job, for one process per core):
  subject S, method M   the subject's 4 unseen images (one per unseen design) taught as "<sS>" with `finetune` at the
                        method's defaults (dreambooth: --class-word = the subject's name; textual inversion: the
                        token starts from the name's embedding); `--samples` images of "a <sS>" ("a <sS> NAME" for
                        dreambooth), seeds 0..K-1, graded by the nearest real image among the training images of
                        data/emoji and every image of data/unseen (every concept of both): top-1/top-5 on the subject's concept, and "unseen look":
                        the share whose nearest real image is one of the unseen designs. Then forgetting: the coverage
                        benchmark's first `--forget-prompts` prompts (2 samples each, the benchmark's seeds) with the
                        adapter loaded at scale 1, graded as `minicream eval` grades coverage (nearest over data/emoji).
  base                  the base model on the same: each subject's plain name (K samples) and the coverage prompts.
  style                 one unseen design (`--style-design`) taught from `--style-images` of its images, one concept each
                        ("<concept>, <style>"); `--style-prompts` other concepts it draws, "<concept>, <style>" and the
                        base model's "<concept>", 2 samples each: the share whose nearest real image (all 8 designs) is
                        of the taught design, and concept top-5 (nearest over both datasets).
Subjects and style concepts are drawn (seed `--seed`) among the concepts the model knows that the unseen designs draw;
none of them was chosen by looking at results.

    .venv/bin/python bench/adapters.py --out runs/adapters --shard 0/2 &   # one per core
    .venv/bin/python bench/adapters.py --out runs/adapters --shard 1/2 &
    .venv/bin/python bench/adapters.py --out runs/adapters --report --grid docs/adapters_unseen_grid.png
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from minicream.adapters.train import FinetuneConfig

UNSEEN = ("fxemoji", "emojione-v1", "emojione", "noto-v1")
METHODS = ("lora", "dreambooth", "textual-inversion")


def gallery(roots: list[str]) -> tuple[torch.Tensor, list[str], list[str], list[str]]:
    """uint8 images, concepts, designs and file paths of every training-split image with a concept (no skin tones) in
    the datasets (data/unseen has no test split)."""
    from minicream.data.folder import _load_image, _resolve

    images, concepts, styles, paths = [], [], [], []
    for root in roots:
        entries, _ = _resolve(Path(root), "train")
        for e in entries:
            if e.meta.get("concept") and e.meta.get("skin_tone") is None:
                im = _load_image(e.path, 64)
                if im is not None:
                    images.append(torch.from_numpy(np.array(im)).permute(2, 0, 1))
                    concepts.append(e.meta["concept"])
                    styles.append(e.meta["style"])
                    paths.append(str(e.path))
    return torch.stack(images), concepts, styles, paths


class Grader:
    """The nearest real image (eval/nearest.py's features) over a gallery, with the design of the nearest one."""

    def __init__(self, roots: list[str]):
        from minicream.eval.nearest import NearestJudge

        images, self.concepts, self.styles, self.paths = gallery(roots)
        self.judge = NearestJudge(images, self.concepts)
        self.pool = sorted(set(self.concepts))

    def grade(self, images, concept: str) -> list[dict]:
        from minicream.eval.nearest import features

        x = torch.stack([torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1) for im in images])
        ranked = self.judge.class_probs(x, self.pool).topk(5, dim=1).indices.tolist()
        sims = features(x) @ self.judge.db.t()
        nearest = sims.argmax(dim=1).tolist()
        own = [k for k, c in enumerate(self.concepts) if c == concept]  # the concept in each design that draws it
        design = [self.styles[own[int(k)]] for k in sims[:, own].argmax(dim=1)] if own else [None] * len(x)
        return [{"top1": self.pool[r[0]] == concept, "top5": concept in [self.pool[k] for k in r],
                 "nearest_style": self.styles[n], "nearest_concept": self.concepts[n], "concept_design": d}
                for r, n, d in zip(ranked, nearest, design)]


def rows_of(root: str) -> list[dict]:
    return [json.loads(line) for line in (Path(root) / "train" / "metadata.jsonl").read_text().splitlines() if line]


def plan(args, pipe) -> dict:
    """Subjects and style concepts, drawn once (seeded) and kept in OUT/plan.json."""
    path = Path(args.out) / "plan.json"
    if path.is_file():
        return json.loads(path.read_text())
    known = set(pipe.vocabulary.by_name)
    files: dict[str, dict[str, str]] = defaultdict(dict)
    for r in rows_of(args.unseen):
        files[r["concept"]][r["style"]] = str(Path(args.unseen) / "train" / r["file_name"])
    rng = random.Random(args.seed)
    in_all = sorted(c for c, d in files.items() if len(d) == len(UNSEEN) and c in known)
    subjects = rng.sample(in_all, args.subjects)
    design = sorted(c for c, d in files.items() if args.style_design in d and c in known and c not in subjects)
    chosen = rng.sample(design, args.style_images + args.style_prompts)
    p = {"seed": args.seed, "subjects": [{"name": c, "token": f"<s{i}>", "images": [files[c][s] for s in UNSEEN]}
                                         for i, c in enumerate(subjects)],
         "style": {"design": args.style_design, "token": f"<{args.style_design}-style>",
                   "teach": [{"name": c, "image": files[c][args.style_design]} for c in chosen[:args.style_images]],
                   "draw": chosen[args.style_images:]}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(p, indent=1))
    return p


def coverage(pipe, args) -> tuple[object, list[tuple[str, int, list[str]]]]:
    from minicream.eval.benchmarks import get_benchmark
    from minicream.eval.runner import _dataset_rows

    bench = get_benchmark("coverage", 2, dataset_rows=_dataset_rows(Path(args.data)), styles=pipe.vocabulary.styles,
                          limit=args.forget_prompts)
    return bench, [(p["prompt"], i, p["reference"]) for i, p in enumerate(bench.prompts)]


def forgetting(pipe, args, judge) -> list[dict]:
    """Per image of the coverage prompts: its concept and whether the nearest judge (over data/emoji) names it."""
    from minicream.evaluator.scorer import to_uint8

    bench, prompts = coverage(pipe, args)
    index = {c: i for i, c in enumerate(bench.pool)}
    hits = []
    for prompt, i, ref in prompts:
        images = pipe(prompt, num_images=bench.samples, seed=bench.sample_seeds(i))
        top = judge.class_probs(to_uint8(images), bench.pool).topk(5, dim=1).indices.tolist()
        hits += [{"prompt": prompt, "concept": ref[0], "top1": r[0] == index[ref[0]], "top5": index[ref[0]] in r}
                 for r in top]
    return hits


def other_concepts(hits: list[dict], subject: str) -> dict:
    """Coverage top-1/top-5 over the images of concepts other than the subject."""
    kept = [h for h in hits if h["concept"] != subject]
    return {k: sum(h[k] for h in kept) / len(kept) for k in ("top1", "top5")} | {"n": len(kept)}


def summary(graded: list[dict]) -> dict:
    n = len(graded)
    return {"n": n, "top1": sum(g["top1"] for g in graded) / n, "top5": sum(g["top5"] for g in graded) / n,
            "unseen_look": sum(g["nearest_style"] in UNSEEN for g in graded) / n}


def save_images(images, folder: Path, keep: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, im in enumerate(images[:keep]):
        im.save(folder / f"{k}.png")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def options(args) -> dict:
    """--finetune KEY=VALUE settings (FinetuneConfig fields) for every method (run one method's jobs with --only)."""
    out = {}
    for item in args.finetune:
        key, value = item.split("=", 1)
        kind = type(getattr(FinetuneConfig(), key))
        out[key] = (tuple(value.split(",")) if key == "targets" else value.lower() in ("1", "true", "yes")
                    if kind is bool else kind(value))
    return out


def job_subject(args, p, s: int, method: str, grader, cov_judge) -> dict:
    from minicream.adapters import finetune
    from minicream.pipelines import Pipeline

    subj = p["subjects"][s]
    out = Path(args.out) / "adapters" / f"s{s}-{method}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
    extra = {"dreambooth": {"class_word": subj["name"]}, "textual-inversion": {"init_word": subj["name"]}}.get(method, {})
    t0, c0 = time.time(), cpu_seconds()
    finetune(subj["images"], subj["token"], method, out, model=args.model, progress=False, log=lambda m: None,
             **extra, **options(args))
    train = {"wall_s": round(time.time() - t0, 1), "cpu_s": round(cpu_seconds() - c0, 1),
             "size_bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}
    pipe = Pipeline.from_pretrained(args.model)
    pipe.load_adapter(out, scale=1.0)
    prompt = f"a {subj['token']} {subj['name']}" if method == "dreambooth" else f"a {subj['token']}"
    t0 = time.time()
    images = pipe(prompt, num_images=args.samples, seed=list(range(args.samples)))
    sample_s = (time.time() - t0) / args.samples
    save_images(images, Path(args.out) / "images" / f"s{s}-{method}")
    graded = grader.grade(images, subj["name"])
    return {"subject": subj["name"], "method": method, "prompt": prompt, "train": train,
            "s_per_image": round(sample_s, 3), **summary(graded), "graded": graded,
            "forgetting": forgetting(pipe, args, cov_judge)}


def job_base(args, p, grader, cov_judge) -> dict:
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(args.model)
    subjects = {}
    for s, subj in enumerate(p["subjects"]):
        images = pipe(subj["name"], num_images=args.samples, seed=list(range(args.samples)))
        save_images(images, Path(args.out) / "images" / f"s{s}-base")
        graded = grader.grade(images, subj["name"])
        subjects[subj["name"]] = {**summary(graded), "graded": graded}
    return {"subjects": subjects, "forgetting": forgetting(pipe, args, cov_judge)}


def job_style(args, p, grader) -> dict:
    from minicream.adapters import finetune
    from minicream.pipelines import Pipeline

    st = p["style"]
    folder = Path(args.out) / "style_images"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for t in st["teach"]:  # the file name is the caption's concept
        shutil.copy(t["image"], folder / f"{t['name'].replace(' ', '_')}.png")
    out = Path(args.out) / "adapters" / "style"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
    t0, c0 = time.time(), cpu_seconds()
    extra = {"init_word": args.style_init} if args.style_init else {}
    finetune(folder, st["token"], args.style_method, out, model=args.model, style=True, progress=False,
             log=lambda m: None, **extra, **options(args))
    train = {"wall_s": round(time.time() - t0, 1), "cpu_s": round(cpu_seconds() - c0, 1),
             "size_bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}
    base = Pipeline.from_pretrained(args.model)
    styled = Pipeline.from_pretrained(args.model)
    styled.load_adapter(out, scale=1.0)
    rows = {"base": [], "style": []}
    for k, concept in enumerate(st["draw"]):
        for key, pipe, prompt in (("base", base, concept), ("style", styled, f"{concept}, {st['token']}")):
            images = pipe(prompt, num_images=2, seed=[0, 1])
            if k < 8:
                save_images(images, Path(args.out) / "images" / f"style-{key}-{k}", keep=1)
            rows[key] += [{**g, "concept": concept} for g in grader.grade(images, concept)]

    def stats(graded):
        n = len(graded)
        return {"n": n, "top1": sum(g["top1"] for g in graded) / n, "top5": sum(g["top5"] for g in graded) / n,
                "design_named": sum(g["nearest_style"] == st["design"] for g in graded) / n,
                "concept_design_named": sum(g["concept_design"] == st["design"] for g in graded) / n}

    return {"design": st["design"], "method": args.style_method, "init_word": args.style_init, "train": train, "base": stats(rows["base"]), "style": stats(rows["style"]),
            "graded": rows}


def jobs(p) -> list[str]:
    return ["base", "style"] + [f"s{s}-{m}" for s in range(len(p["subjects"])) for m in METHODS]


def run(args) -> None:
    from minicream.eval.nearest import NearestJudge
    from minicream.pipelines import Pipeline

    p = plan(args, Pipeline.from_pretrained(args.model))
    i, n = (int(x) for x in args.shard.split("/"))
    mine = [j for k, j in enumerate(j for j in jobs(p) if not args.only or j in args.only.split(",")) if k % n == i]
    grader, cov_judge = None, None
    for name in mine:
        path = Path(args.out) / "jobs" / f"{name}.json"
        if path.is_file():
            continue
        if grader is None:
            grader = Grader([args.data, args.unseen])
            cov_judge = NearestJudge.from_dataset(args.data)
        t0 = time.time()
        if name == "base":
            res = job_base(args, p, grader, cov_judge)
        elif name == "style":
            res = job_style(args, p, grader)
        else:
            s, method = name[1:].split("-", 1)
            res = job_subject(args, p, int(s), method, grader, cov_judge)
        res["job_seconds"], res["finetune_options"] = round(time.time() - t0, 1), args.finetune
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1))
        print(f"{name}: done in {time.time() - t0:.0f} s", flush=True)


def report(args) -> None:
    out = Path(args.out)
    p = json.loads((out / "plan.json").read_text())
    done = {f.stem: json.loads(f.read_text()) for f in (out / "jobs").glob("*.json")}
    base = done.get("base")
    lines = ["| method | subject top-1 | subject top-5 | unseen look | forgetting (coverage top-5, adapter - base) "
             "| train wall / CPU, s | adapter |", "|---|---|---|---|---|---|---|"]
    table = {}
    if base:
        b = [base["subjects"][s["name"]] for s in p["subjects"]]
        n = sum(x["n"] for x in b)
        table["base"] = {k: sum(x[k] * x["n"] for x in b) / n for k in ("top1", "top5", "unseen_look")}
        lines.append(f"| base model, the plain name | {table['base']['top1']:.3f} | {table['base']['top5']:.3f} | "
                     f"{table['base']['unseen_look']:.3f} | – | – | – |")
    for m in METHODS:
        runs = [done[f"s{s}-{m}"] for s in range(len(p["subjects"])) if f"s{s}-{m}" in done]
        if not runs:
            continue
        n = sum(r["n"] for r in runs)
        row = {k: sum(r[k] * r["n"] for r in runs) / n for k in ("top1", "top5", "unseen_look")}
        deltas = []
        if base:
            for r in runs:
                after, before = (other_concepts(h, r["subject"]) for h in (r["forgetting"], base["forgetting"]))
                deltas.append(after["top5"] - before["top5"])
        row["forgetting_top5"] = sum(deltas) / len(deltas) if deltas else None
        row["subjects"] = len(runs)
        row["wall_s"] = sum(r["train"]["wall_s"] for r in runs) / len(runs)
        row["cpu_s"] = sum(r["train"]["cpu_s"] for r in runs) / len(runs)
        row["size_mb"] = sum(r["train"]["size_bytes"] for r in runs) / len(runs) / 1e6
        table[m] = row
        forget = f"{row['forgetting_top5']:+.3f}" if deltas else "–"
        lines.append(f"| {m} ({len(runs)} subjects) | {row['top1']:.3f} | {row['top5']:.3f} | {row['unseen_look']:.3f} | "
                     f"{forget} | {row['wall_s']:.0f} / {row['cpu_s']:.0f} | {row['size_mb']:.2f} MB |")
    if "style" in done:
        st = done["style"]
        lines += ["", "| style | design named | concept top-1 | concept top-5 | train wall / CPU, s | adapter |",
                  "|---|---|---|---|---|---|"]
        for key, label in (("base", "base model, \"<concept>\""), ("style", f"\"<concept>, {p['style']['token']}\"")):
            r = st[key]
            lines.append(f"| {label} | {r['design_named']:.3f} | {r['top1']:.3f} | {r['top5']:.3f} | "
                         + (f"{st['train']['wall_s']:.0f} / {st['train']['cpu_s']:.0f} | "
                            f"{st['train']['size_bytes'] / 1e6:.2f} MB |" if key == "style" else "– | – |"))
        table["style"] = {k: st[k] for k in ("base", "style", "train")}
    print("\n".join(lines))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    Path(args.json).write_text(json.dumps({"plan": p, "table": table, "jobs": sorted(done)}, indent=1))
    if args.grid:
        grid(args, p)


def grid(args, p) -> None:
    """One row per subject: its 4 unseen images | the base model's plain name | 2 samples per method."""
    from PIL import Image, ImageDraw

    out, cell = Path(args.out), 64
    cols = ["image 1", "image 2", "image 3", "image 4", "base: name", *[f"{m[:4]} {k}" for m in METHODS for k in (0, 1)]]
    sheet = Image.new("RGB", (cell * len(cols), 14 + cell * len(p["subjects"])), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(cols):
        draw.text((c * cell + 2, 1), label, fill="black")
    for r, subj in enumerate(p["subjects"]):
        files = subj["images"] + [out / "images" / f"s{r}-base" / "0.png"] + [
            out / "images" / f"s{r}-{m}" / f"{k}.png" for m in METHODS for k in (0, 1)]
        for c, f in enumerate(files):
            if Path(f).is_file():
                sheet.paste(Image.open(f).convert("RGB").resize((cell, cell)), (c * cell, 14 + r * cell))
    sheet.save(args.grid)
    print(f"grid: {args.grid}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="full")
    ap.add_argument("--data", default="data/emoji", help="the training designs' dataset")
    ap.add_argument("--unseen", default="data/unseen", help="the unseen designs' dataset (see above)")
    ap.add_argument("--out", default="runs/adapters")
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--samples", type=int, default=8, help="images per subject prompt")
    ap.add_argument("--forget-prompts", type=int, default=100, help="coverage prompts (2 samples each) for forgetting")
    ap.add_argument("--style-design", default="fxemoji", choices=UNSEEN)
    ap.add_argument("--style-images", type=int, default=24)
    ap.add_argument("--style-method", default="lora", choices=METHODS, help="how the style is taught")
    ap.add_argument("--style-init", help="the style token's starting word (textual inversion, or --finetune "
                    "token_init for LoRA)")
    ap.add_argument("--style-prompts", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard", default="0/1", help="I/N: run every N-th job starting at I")
    ap.add_argument("--only", help="comma-separated job names (base, style, s0-lora, s3-dreambooth, ...)")
    ap.add_argument("--finetune", action="append", default=[], metavar="KEY=VALUE",
                    help="a finetune setting (repeatable), e.g. preserve_weight=1")
    ap.add_argument("--report", action="store_true", help="aggregate the finished jobs instead of running any")
    ap.add_argument("--grid", help="with --report: write the subjects' grid here")
    ap.add_argument("--json", default="bench/last_adapters.json", help="with --report: the table as JSON")
    args = ap.parse_args(argv)
    report(args) if args.report else run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
