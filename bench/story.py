"""Does a recurring object keep its look across a story's scenes? `minicream story` (issue 33 item 2) against drawing
each scene on its own.

    python bench/story.py --model full --seeds 0,1,2 --grid docs/story_grid.png

Twelve three-scene stories (STORIES below: everyday objects, each recurring in two or three scenes, as "a cat face
next to a house | a cat face above a car | two cat faces"), each drawn with several seeds two ways:
  - story:        `Pipeline.story(scenes, seed=s)`, every recurring object drawn once and reused;
  - independent:  each scene drawn by itself (`Pipeline(scene, seed=s + 1000 * i)`), as a user would without `story`.
Every object of every scene is cut out at its box (the PNG's recorded layout; the whole picture for a scene of one
object) and resized to 64 px. For each object that appears in two or more scenes, every pair of its crops from
different scenes is compared: cosine similarity of the model's evaluator image features, and SSIM. Each crop is
also graded by the nearest real image among the training split (top-5 over every concept names it?).
"""
from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

STORIES = [
    "a cat face next to a house | a cat face above a car | two cat faces",
    "a dog face and a red apple | a dog face to the left of a tree | three red apples",
    "a rocket above a house | a rocket and a star | two rockets",
    "a banana next to a pizza | a banana and a dog face | a pizza above a red apple",
    "a snowman and a christmas tree | a snowman to the left of a house | two christmas trees",
    "a bicycle next to a tree | a bicycle and a dog face | two trees",
    "an umbrella above a cat face | an umbrella and a sun | a sun above a house",
    "a ghost and a jack-o-lantern | a ghost to the left of a house | two jack-o-lanterns",
    "a guitar and a trumpet | a guitar next to a microphone | a trumpet above a drum",
    "a frog next to a lotus | two frogs | a frog above a snail",
    "a crown and a ring | a crown above a lion | a ring next to a gem stone",
    "a bus next to a house | a bus and a tree | two buses",
]


def crops(im: Image.Image) -> list[tuple[str, Image.Image]]:
    """(the object's caption, its crop at 64 px) per object of a drawn scene."""
    p = im.info["minicream"]
    layout = p.get("layout")
    if not isinstance(layout, dict):
        return [(p.get("rewritten_prompt") or p["prompt"], im.convert("RGB").resize((64, 64), Image.BICUBIC))]
    return [(o["caption"], im.convert("RGB").crop(tuple(o["box"])).resize((64, 64), Image.BICUBIC))
            for o in layout["objects"]]


def concept_of(caption: str, concepts: list[str]) -> str | None:
    """The cast concept a crop's caption names (captions may carry a design: "cat face, twemoji")."""
    head = caption.split(",")[0].strip().lower()
    return next((c for c in concepts if c.lower() == head), None)


def measure(pipe, grader, scenes_images: list[list[Image.Image]], concepts: list[str]) -> dict:
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    by_concept = {}  # concept -> [(scene index, crop)]
    graded = []
    for i, im in enumerate(scenes_images):
        for caption, crop in crops(im):
            c = concept_of(caption, concepts)
            if c is None:
                continue
            by_concept.setdefault(c, []).append((i, crop))
            graded.append(grader.grade([crop], c)[0]["top5"])
    cos, ss = [], []
    for c, items in by_concept.items():
        feats = pipe.evaluator.image_features([x for _, x in items])
        for (a, (ia, xa)), (b, (ib, xb)) in combinations(enumerate(items), 2):
            if ia == ib:
                continue  # two copies in one scene ("two cats") are not a recurrence across scenes
            cos.append(float(feats[a] @ feats[b]))
            ta, tb = (torch.from_numpy(np.array(x)).permute(2, 0, 1)[None].float() / 255 for x in (xa, xb))
            ss.append(float(ssim(ta, tb, data_range=1.0)))
    return {"cosine": cos, "ssim": ss, "named": graded}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="full")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--grid", help="write a grid PNG here (the first stories, story vs independent)")
    ap.add_argument("--json", default="bench/last_story.json")
    ap.add_argument("--grid-only", action="store_true", help="draw the grid's stories (first seed) and measure nothing")
    args = ap.parse_args()
    from adapters import Grader

    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(args.model)
    grader = Grader([args.data])
    totals = {k: {"cosine": [], "ssim": [], "named": []} for k in ("story", "independent")}
    per_story, grid = [], []
    for text in STORIES[:4] if args.grid_only else STORIES:
        scenes = [s.strip() for s in text.split("|")]
        row = {"story": text, "cast": None}
        for seed in map(int, args.seeds.split(",")[:1] if args.grid_only else args.seeds.split(",")):
            story = pipe.story(scenes, seed=seed)
            concepts = [c["concept"] for c in story[0].info["minicream"]["story"]["cast"]]
            row["cast"] = concepts
            alone = [pipe(s, seed=seed + 1000 * i, num_images=1)[0] for i, s in enumerate(scenes)]
            for name, images in () if args.grid_only else (("story", story), ("independent", alone)):
                m = measure(pipe, grader, images, concepts)
                for k in m:
                    totals[name][k] += m[k]
            if len(grid) < 4 and seed == int(args.seeds.split(",")[0]):
                grid.append((story, alone))
        per_story.append(row)
        print(text, row["cast"], flush=True)
    if args.grid_only:
        save_grid(grid, args.grid)
        return
    out = {"model": args.model, "seeds": args.seeds, "stories": per_story, "results": {}}
    for name, t in totals.items():
        out["results"][name] = {"pairs": len(t["cosine"]), "evaluator_cosine": round(float(np.mean(t["cosine"])), 4),
                                "ssim": round(float(np.mean(t["ssim"])), 4), "objects": len(t["named"]),
                                "named_top5": round(float(np.mean(t["named"])), 4)}
    print(json.dumps(out["results"], indent=1))
    Path(args.json).write_text(json.dumps(out, indent=1))
    if args.grid:
        save_grid(grid, args.grid)


def save_grid(rows, path: str, scale: int = 2) -> None:
    """Per story two rows: its scenes drawn as a story (above), then each drawn on its own (below)."""
    lines = [imgs for story, alone in rows for imgs in (story, alone)]
    width = max(sum(im.width for im in imgs) + 8 * (len(imgs) - 1) for imgs in lines)
    heights = [max(im.height for im in imgs) + (20 if k % 2 else 4) for k, imgs in enumerate(lines)]
    g = Image.new("RGB", (width, sum(heights)), "white")
    y = 0
    for imgs, h in zip(lines, heights):
        x = 0
        for im in imgs:
            g.paste(im.convert("RGB"), (x, y))
            x += im.width + 8
        y += h
    g.resize((g.width * scale, g.height * scale), Image.NEAREST).save(path)
    print(path)


if __name__ == "__main__":
    main()
