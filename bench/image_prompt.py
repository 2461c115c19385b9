"""Images as prompts (issue 34), measured: the image-prompt adapter, variations, fusion and the prior.

    python bench/image_prompt.py --model full --sets prompt,variations,fusion,prior --grid docs/image_prompt_grid.png

Sets (--sets):
  prompt      --heldout held-out test images (never trained on; spread evenly over the split, no skin tones), image i
              drawn from the image alone with seed i (`image_prompt=`, no text) in the arms of ARMS below, and for
              reference from its caption alone ("OK button, twemoji"). Graded: the nearest real image among the *training* split (so the held-out image
              itself is never in the gallery: a copy does not win by being itself) names the image's concept, top-1 /
              top-5 over every concept; beside it top-5 by the nearest among every image of the dataset (train and
              test, the coverage benchmark's judge), and by the nearest among every image but the prompt image itself
              (leave-one-out: the prompt's own copy cannot name it); SSIM to the prompt image (a copy would be near 1).
  variations  --variations held-out images, 4 variations each (`vary`, seeds 4i..4i+3): by the embedding (the
              default with an adapter: from the image's latents noised to 0.6), by the embedding from pure noise, and
              by re-noising (the method before it): mean pairwise SSIM among an image's variations, and how often the
              judges name the source's concept (top-5).
  fusion      --pairs pairs of held-out images of different concepts, and pairs (image, another concept's name), mixed at
              weights 0, 0.25, 0.5, 0.75, 1 for the first part (one seed per pair): the evaluator's cosine similarity of
              the drawn picture to each source (an image's embedding; for a text, the embedding of the held-out image of
              its concept that the pair was made from) against the weight; a grid of mixes.
  prior       retrieval: a held-out concept's name through the prior (and through the evaluator's text tower): do the
              nearest held-out image embeddings show that concept (top-1 / top-5 among distinct concepts)? Then
              the coverage benchmark's prompts (eval/benchmarks.py: random vocabulary concepts, "name, design" and the
              bare name) and bench/typed_prompts.jsonl, each drawn with and without `prior=True`, graded by the nearest
              real image among every image of the dataset (as `minicream eval` grades coverage), top-1 / top-5.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def heldout(root: str, n: int, offset: int = 0) -> list:
    from minicream.data.folder import load_caption_folder

    ex = [e for e in load_caption_folder(root, size=64, split="test") if not e.meta.get("skin_tone") and e.meta.get("concept")]
    return [ex[(i * len(ex) // n + offset) % len(ex)] for i in range(n)]


def ssim(a: Image.Image, b: Image.Image) -> float:
    from minicream.eval.metrics import _ssim
    from minicream.evaluator.scorer import to_uint8

    return float(_ssim(to_uint8([a.convert("RGB")]), to_uint8([b.convert("RGB").resize(a.size)]))[0])


def pil(e) -> Image.Image:
    return Image.fromarray(np.array(e.image.convert("RGB")))


class EveryImage:
    """The nearest real image among *every* image of the dataset (train and test, as `minicream eval` grades coverage
    and as the independent check does): top-5 over every concept."""

    def __init__(self, root: str):
        from minicream.eval.nearest import NearestJudge

        self.judge = NearestJudge.from_dataset(root)
        self.pool = sorted(set(self.judge.concepts))
        index = {c: i for i, c in enumerate(self.pool)}
        self.cols = torch.tensor([index[c] for c in self.judge.concepts])

    def top5(self, images, concept: str, leave_out=None) -> list[bool]:
        """Does the judge name `concept` in its top 5? `leave_out`: an image (the prompt or source) whose own copy in
        the gallery is left out, so a picture close to it must be named by the *other* images of its concept."""
        from minicream.eval.nearest import features
        from minicream.evaluator.scorer import to_uint8

        judge, px = self.judge, to_uint8([im.convert("RGB") for im in images])
        keep = torch.ones(len(judge.concepts), dtype=torch.bool)
        if leave_out is not None:
            keep &= judge.db @ features(to_uint8([leave_out.convert("RGB")]))[0] < 0.9999
        cols = self.cols[keep]
        sim = features(px) @ judge.db[keep].t()
        best = torch.full((len(px), len(self.pool)), -1.0).scatter_reduce(1, cols[None].expand(len(px), -1), sim, "amax")
        ranked = best.topk(5, dim=1).indices
        return [concept in [self.pool[k] for k in r] for r in ranked.tolist()]


def ARMS(image, caption) -> dict:
    """The prompt set's arms: the image prompt at its defaults (from the image's latents noised to 0.6), from pure
    noise, the same start without the adapter (image_scale 0: what img2img alone keeps), and the caption alone."""
    return {"image (default: from the image at 0.6)": {"image_prompt": image},
            "image, from pure noise": {"image_prompt": image, "image_strength": 1.0},
            "the image at 0.6 without the adapter": {"image_prompt": image, "image_scale": 0.0},
            "caption alone": {"prompt": caption, "filter": "none"}}


def run_prompt(pipe, grader, args, out, grid) -> None:
    examples = heldout(args.data, args.heldout)
    rows = {k: [] for k in ARMS(None, None)}
    secs = {k: 0.0 for k in rows}
    for i, e in enumerate(examples):
        for arm, kw in ARMS(pil(e), e.text).items():
            t = time.time()
            [im] = pipe.run("text2img", **{"prompt": None, **kw}, num_images=1, seed=i, steps=args.steps)
            secs[arm] += time.time() - t
            [g] = grader.grade([im], e.meta["concept"])
            [every] = args.every.top5([im], e.meta["concept"])
            [others] = args.every.top5([im], e.meta["concept"], leave_out=pil(e))
            rows[arm].append({"top1": g["top1"], "top5": g["top5"], "top5_every_image": every,
                              "top5_every_other_image": others, "ssim": ssim(im, pil(e)),
                              "image": im})
        if i < args.grid_rows:
            grid.append([pil(e)] + [rows[k][-1]["image"] for k in rows])
    res = {"n": len(examples), "gallery": "training split (the held-out image is not in it)"}
    for arm, rs in rows.items():
        res[arm] = {k: round(float(np.mean([r[k] for r in rs])), 4) for k in ("top1", "top5", "top5_every_image",
                                                                                  "top5_every_other_image", "ssim")}
        res[arm]["seconds_per_image"] = round(secs[arm] / len(examples), 3)
    for arm in ARMS(None, None):
        res[arm]["ssim_over_0.8"] = sum(r["ssim"] > 0.8 for r in rows[arm])
    out["prompt"] = res
    print("prompt", json.dumps(res))


def run_variations(pipe, grader, args, out, grid) -> None:
    from minicream.eval.metrics import pairwise_ssim
    from minicream.evaluator.scorer import to_uint8

    examples = heldout(args.data, args.variations, offset=7)
    res = {"n_sources": len(examples), "per_source": 4}
    arms = {"embedding (default: with detail, from the image at 0.6)": {"method": "embedding"},
            "embedding, without detail": {"method": "embedding", "image_detail": False},
            "embedding, from pure noise": {"method": "embedding", "image_strength": 1.0},
            "renoise": {"method": "renoise"}}
    for method, kw in arms.items():
        ss, kept, every, others, t = [], [], [], [], time.time()
        for i, e in enumerate(examples):
            ims = pipe.run("variation", image=pil(e), num_images=4, seed=[4 * i + k for k in range(4)], steps=args.steps,
                           **kw)
            ss.append(pairwise_ssim(to_uint8([im.convert("RGB") for im in ims])))
            kept += [g["top5"] for g in grader.grade(ims, e.meta["concept"])]
            every += args.every.top5(ims, e.meta["concept"])
            others += args.every.top5(ims, e.meta["concept"], leave_out=pil(e))
            if i < args.grid_rows and method.startswith("embedding (default"):
                grid.append([pil(e), *ims])
        res[method] = {"pairwise_ssim": round(float(np.mean(ss)), 4), "concept_kept_top5": round(float(np.mean(kept)), 4),
                       "concept_kept_top5_every_image": round(float(np.mean(every)), 4),
                       "concept_kept_top5_every_other_image": round(float(np.mean(others)), 4),
                       "seconds_per_image": round((time.time() - t) / (4 * len(examples)), 3)}
    out["variations"] = res
    print("variations", json.dumps(res))


def run_fusion(pipe, args, out, grid) -> None:
    from minicream.image_prompt.use import image_embeddings, read_image

    ev = pipe.evaluator
    examples = heldout(args.data, 2 * args.pairs, offset=3)
    pairs = [(examples[2 * k], examples[2 * k + 1]) for k in range(args.pairs)
             if examples[2 * k].meta["concept"] != examples[2 * k + 1].meta["concept"]]

    def emb(img):
        return image_embeddings(pipe, read_image(img, pipe.image_size)[None])[0]

    res = {}
    for kind in ("image+image", "image+text"):
        sims = {w: {"a": [], "b": []} for w in WEIGHTS}
        for k, (a, b) in enumerate(pairs):
            part_b = pil(b) if kind == "image+image" else b.meta["concept"]
            ea, eb = emb(pil(a)), emb(pil(b))  # a text's target: the embedding of a held-out image of its concept
            row = [pil(a)]
            for w in WEIGHTS:
                [im] = pipe.fuse([pil(a), part_b], weights=[w, 1 - w], num_images=1, seed=k, steps=args.steps)
                f = ev.image_features([im.convert("RGB")])[0]
                sims[w]["a"].append(float(f @ ea))
                sims[w]["b"].append(float(f @ eb))
                row.append(im)
            row.append(pil(b) if kind == "image+image" else _label(b.meta["concept"]))
            if k < args.grid_rows // 2:
                grid.append(row)
        res[kind] = {str(w): {"sim_to_a": round(float(np.mean(s["a"])), 4), "sim_to_b": round(float(np.mean(s["b"])), 4)}
                     for w, s in sims.items()}
        a_curve = [res[kind][str(w)]["sim_to_a"] for w in WEIGHTS]
        b_curve = [res[kind][str(w)]["sim_to_b"] for w in WEIGHTS]
        res[kind]["a_rises_with_its_weight"] = all(x < y for x, y in zip(a_curve, a_curve[1:]))
        res[kind]["b_falls_with_a_weight"] = all(x > y for x, y in zip(b_curve, b_curve[1:]))
    res["pairs"] = len(pairs)
    out["fusion"] = res
    print("fusion", json.dumps(res))


def _label(text: str) -> Image.Image:
    from PIL import ImageDraw

    im = Image.new("RGB", (64, 64), "white")
    words, lines = text.split(), [""]
    for w in words:
        lines[-1:] = [lines[-1] + " " + w] if len(lines[-1]) + len(w) < 11 else [lines[-1], w]
    ImageDraw.Draw(im).multiline_text((2, 4), "\n".join(line.strip() for line in lines[:5]), fill="black")
    return im


def prior_retrieval(pipe, args) -> dict:
    """Does the prior's embedding of a concept's name lie near that concept's images? For the concepts of --heldout
    held-out images: the name through the prior (seed i) and through the evaluator's text tower; the concepts of the
    5 nearest held-out image embeddings (every test image of the split), top-1 / top-5."""
    from minicream.data.folder import images_to_tensor, load_caption_folder
    from minicream.image_prompt.prior import prior_embeddings

    test = [e for e in load_caption_folder(args.data, size=64, split="test") if not e.meta.get("skin_tone") and e.meta.get("concept")]
    gallery = pipe.evaluator.image_features(images_to_tensor(test))
    concepts = [e.meta["concept"] for e in test]
    names = [e.meta["concept"] for e in heldout(args.data, args.heldout)]
    out = {"n": len(names), "gallery_images": len(test)}
    for arm, e in (("prior", prior_embeddings(pipe, names, list(range(len(names))))),
                   ("evaluator text tower", pipe.evaluator.text_features(names))):
        ranked = (e @ gallery.t()).argsort(dim=1, descending=True)
        hits = {1: 0, 5: 0}
        for name, row in zip(names, ranked.tolist()):
            seen = list(dict.fromkeys(concepts[j] for j in row[:50]))
            hits[1] += name in seen[:1]
            hits[5] += name in seen[:5]
        out[arm] = {"top1": round(hits[1] / len(names), 4), "top5": round(hits[5] / len(names), 4)}
    return out


class Prior:
    """The pipeline drawing every prompt through the prior (for default_model.image_table)."""

    def __init__(self, pipe):
        self.pipe, self.image_size = pipe, pipe.image_size

    def __call__(self, prompt, **kw):
        return self.pipe(prompt, prior=True, **kw)


def run_prior(pipe, args, out) -> None:
    from default_model import image_table, typed_vocab_prompts

    from minicream.eval.benchmarks import get_benchmark
    from minicream.eval.nearest import NearestJudge
    from minicream.eval.runner import _dataset_concepts, _dataset_rows, _load_examples

    judge = NearestJudge.from_dataset(args.data, size=pipe.image_size)
    pool = sorted(_dataset_concepts(Path(args.data)))
    bench = get_benchmark("coverage", 1, _load_examples(Path(args.data), "test"), 0, args.coverage,
                          concepts=sorted(pipe.vocabulary.by_name), dataset_rows=_dataset_rows(Path(args.data)),
                          styles=pipe.vocabulary.styles)
    coverage = [{"set": "coverage", "category": p.get("group", "coverage"), "prompt": p["prompt"], "accept": p["reference"]}
                for p in bench.prompts]
    typed = [p for p in typed_vocab_prompts() if not p["unread"]][:: max(1, 360 // args.typed)][: args.typed]
    res = {"retrieval": prior_retrieval(pipe, args)}
    print("retrieval", json.dumps(res["retrieval"]))
    for name, prompts in (("coverage", coverage), ("typed-vocab", typed)):
        for arm, target in (("text", pipe), ("prior", Prior(pipe))):
            t = time.time()
            table = image_table(target, judge, prompts, args.samples, pool)
            res[f"{name}, {arm}"] = {"all": table["accuracy"].get("all") or table["accuracy"].get(name),
                                     "seconds": round(time.time() - t, 1), "by_group": table["accuracy"]}
            print(name, arm, json.dumps(res[f"{name}, {arm}"]["all"]))
    out["prior"] = res


def save_grid(rows: list[list[Image.Image]], path: str) -> None:
    """One row per example (64 px tiles, enlarged 2x), shorter rows padded with white."""
    from minicream.io.grid import image_grid

    width = max(len(r) for r in rows)
    white = Image.new("RGB", (64, 64), "white")
    image_grid([im.convert("RGB").resize((64, 64)) for r in rows for im in r + [white] * (width - len(r))], width).save(path)
    print(path)


def main() -> None:
    from adapters import Grader

    from minicream.pipelines import Pipeline

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="full")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--sets", default="prompt,variations,fusion,prior")
    ap.add_argument("--heldout", type=int, default=120, help="held-out images of the prompt set")
    ap.add_argument("--variations", type=int, default=40, help="held-out sources of the variations set")
    ap.add_argument("--pairs", type=int, default=16, help="pairs of the fusion set")
    ap.add_argument("--coverage", type=int, default=200, help="coverage prompts of the prior set")
    ap.add_argument("--typed", type=int, default=120, help="typed-vocab prompts of the prior set")
    ap.add_argument("--samples", type=int, default=2, help="images per prompt in the prior set")
    ap.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ap.add_argument("--grid", help="write a grid PNG per set here (NAME_SET.png)")
    ap.add_argument("--grid-rows", type=int, default=6)
    ap.add_argument("--json", default="bench/last_image_prompt.json")
    args = ap.parse_args()
    pipe = Pipeline.from_pretrained(args.model)
    grader = Grader([args.data])
    args.every = EveryImage(args.data)
    out = {"model": args.model, "steps": args.steps or pipe.defaults.get("steps"), "threads": torch.get_num_threads()}
    for name in args.sets.split(","):
        grid: list = []
        t = time.time()
        if name == "prompt":
            run_prompt(pipe, grader, args, out, grid)
        elif name == "variations":
            run_variations(pipe, grader, args, out, grid)
        elif name == "fusion":
            run_fusion(pipe, args, out, grid)
        elif name == "prior":
            run_prior(pipe, args, out)
        else:
            raise SystemExit(f"unknown set {name!r}")
        out.setdefault("seconds", {})[name] = round(time.time() - t, 1)
        if args.grid and grid:
            save_grid(grid, str(Path(args.grid).with_name(f"{Path(args.grid).stem}_{name}.png")))
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(args.json)


if __name__ == "__main__":
    main()
