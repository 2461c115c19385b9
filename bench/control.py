"""Does a picture follow its control? ControlNet (issue 33 item 1) measured on held-out images.

    python bench/control.py --model full --heldout 60 --scribbles 24 --grid docs/control_grid.png

Held-out test images (never trained on), spread evenly over the split, no skin tones, as they are and zoomed out and
moved (seeded; a drawing may put the object anywhere, while the model draws it centred); image i is drawn with seed i
from its own caption ("OK button, twemoji"), once without control and once with:
  - edges: the image's Canny edge map as the control (kind edges); graded against that edge map;
  - scribbles: a hand-like scribble made from the edge map (control/hints.py: jittered, thickened, partly erased;
    seeded by i) as the control (kind scribble); graded against the edge map it was made from (the structure).
Scores: the Canny edges of the drawn picture against the target, edge F1 within 1 px (edges) or 2 px (scribbles,
whose strokes are moved by up to a pixel and are 2-3 px wide) and the symmetric Chamfer distance in px
(control/metrics.py); and whether the picture still shows the concept: the nearest real image among the training
split (so the held-out image itself is never in the gallery), top-1 / top-5 over every concept.
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


def heldout(root: str, n: int, moved: bool, offset: float = 0.0) -> list:
    """n held-out examples spread evenly over the test split, from `offset` (0: the test set reported; 0.5: the ones
    halfway between, a disjoint dev set for choosing defaults); `moved`: each one zoomed out and moved (seeded), as a
    drawing may put the object anywhere and at any size (the model's own pictures are centred)."""
    import random

    from minicream.data.folder import Example, load_caption_folder
    from minicream.data.images import zoom_shift

    ex = [e for e in load_caption_folder(root, size=64, split="test") if not e.meta.get("skin_tone") and e.meta.get("concept")]
    ex = [ex[int((i + offset) * len(ex) / n)] for i in range(n)]
    if not moved:
        return ex
    rng = random.Random(0)
    return [Example(zoom_shift(e.image, rng.uniform(0.6, 0.85), rng.randint(-10, 10), rng.randint(-10, 10)), e.text, e.meta)
            for e in ex]


def run(args) -> dict:
    from adapters import Grader

    from minicream.control.hints import edge_maps, scribbles
    from minicream.control.metrics import edge_scores
    from minicream.data.folder import images_to_tensor
    from minicream.evaluator.scorer import to_uint8
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(args.model)
    grader = Grader([args.data])
    out, grid_rows = {"model": args.model, "steps": args.steps, "sets": {}}, []
    for name in args.sets.split(","):
        kind, moved = name.split("-")[0], name.endswith("-moved")
        n, tol = (args.heldout, 1.0) if kind == "edges" else (args.scribbles, 2.0)
        net_kind = args.edges_kind if kind == "edges" else args.scribble_kind
        if n == 0:
            continue
        examples = heldout(args.data, n, moved, args.offset)
        real = images_to_tensor(examples)
        edges = edge_maps(real).float() / 255  # (n, 1, 64, 64)
        hints = edges if kind == "edges" else torch.cat(
            [scribbles(edges[i:i + 1], torch.Generator().manual_seed(1000 + i)) for i in range(n)])
        arms = {"plain": {}} | {label: {"control_kind": net_kind, "control_scale": sc, "control_end": end}
                                for label, sc, end in args.arms}
        rows = {arm: [] for arm in arms}
        t0 = dict.fromkeys(arms, 0.0)
        for i, e in enumerate(examples):
            hint_img = Image.fromarray((hints[i, 0] * 255).byte().numpy(), "L")
            for arm, extra in arms.items():
                start = time.time()
                [im] = pipe(e.text, num_images=1, seed=i, filter="none", steps=args.steps,
                            **({"control": hint_img} if extra else {}), **extra)
                t0[arm] += time.time() - start
                drawn = edge_maps(to_uint8([im]))[0, 0].numpy() > 0
                s = edge_scores(drawn, edges[i, 0].numpy() > 0, tol)
                [g] = grader.grade([im], e.meta["concept"])
                rows[arm].append({**s, "top1": g["top1"], "top5": g["top5"], "concept": e.meta["concept"],
                                  "image": im})
            if i < args.grid_rows and name in args.grid_sets.split(","):
                grid_rows.append((real[i], hints[i, 0], rows["plain"][-1]["image"], rows[args.arms[0][0]][-1]["image"]))
        res = {"n": n, "kind": kind, "controlnet": net_kind, "moved": moved, "tolerance_px": tol, "offset": args.offset}
        for arm, rs in rows.items():
            r = res[arm] = {k: round(float(np.mean([r[k] for r in rs])), 4)
                            for k in ("precision", "recall", "f1", "top1", "top5")}
            finite = [x["chamfer"] for x in rs if np.isfinite(x["chamfer"])]
            r["chamfer_px"] = round(float(np.mean(finite)), 3) if finite else None
            r["seconds_per_image"] = round(t0[arm] / n, 3)
            if arm != "plain":
                r.update(arms[arm])
                r["f1_better"] = sum(c["f1"] > p["f1"] for c, p in zip(rs, rows["plain"]))
                r["concept_kept"] = round(r["top5"] / max(res["plain"]["top5"], 1e-9), 3)
        out["sets"][name] = res
        print(name, json.dumps(res))
    if args.grid:
        save_grid(grid_rows, args.grid)
    return out


def save_grid(rows, path: str, scale: int = 2) -> None:
    """Columns: the held-out image, the control (edge map or scribble), without control, with control."""
    tiles = []
    for real, hint, plain, ctl in rows:
        h = np.repeat((hint.numpy() * 255).astype(np.uint8)[..., None], 3, 2)
        tiles.append(np.concatenate([real.permute(1, 2, 0).numpy(), h, np.array(plain.convert("RGB")),
                                     np.array(ctl.convert("RGB"))], 1))
    half = (len(tiles) + 1) // 2
    left, right = np.concatenate(tiles[:half], 0), np.concatenate(tiles[half:], 0)
    if right.shape[0] < left.shape[0]:
        right = np.concatenate([right, np.full((left.shape[0] - right.shape[0], *right.shape[1:]), 255, np.uint8)], 0)
    gap = np.full((left.shape[0], 8, 3), 255, np.uint8)
    g = Image.fromarray(np.concatenate([left, gap, right], 1))
    g.resize((g.width * scale, g.height * scale), Image.NEAREST).save(path)
    print(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="full")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--sets", default="edges,edges-moved,scribble-moved",
                    help="edges / scribble: held-out edge maps / scribbles made from them; -moved: of the images zoomed "
                         "out and moved")
    ap.add_argument("--heldout", type=int, default=60, help="held-out images per edges set")
    ap.add_argument("--scribbles", type=int, default=24, help="held-out images per scribble set")
    ap.add_argument("--grid-sets", default="edges-moved,scribble-moved", help="the sets shown in the grid")
    ap.add_argument("--edges-kind", default="edges", help="the ControlNet that reads the edge maps")
    ap.add_argument("--scribble-kind", default="scribble", help="the ControlNet that reads the scribbles")
    ap.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ap.add_argument("--arms", default="1:1", help="the controlled arms, SCALE:END,... (control_scale, control_end: the "
                                                  "share of the schedule the control steers); the grid shows the first")
    ap.add_argument("--offset", type=float, default=0.0,
                    help="0: the test images reported; 0.5: the ones between them (a disjoint dev set)")
    ap.add_argument("--grid", help="write a grid PNG here")
    ap.add_argument("--grid-rows", type=int, default=6, help="rows of each kind in the grid")
    ap.add_argument("--json", default="bench/last_control.json")
    args = ap.parse_args()
    args.arms = [(f"scale {a} end {b}", float(a), float(b)) for a, b in (x.split(":") for x in args.arms.split(","))]
    res = run(args)
    Path(args.json).write_text(json.dumps(res, indent=1))
    print(args.json)


if __name__ == "__main__":
    main()
