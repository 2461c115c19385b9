"""Layout-grounded scenes side by side (issue 15): the `scenes` benchmark (GenEval-style, graded by the judge) on one
model, with text2img's layout switched off (the prompt drawn as one caption, as before), and on with the final joint
redraw at several strengths.

    python bench/scenes_layout.py [--model DIR] [--harmonize 0,0.3] [--canvas scene,model] [--limit N] [--out runs/scenes_layout]

--canvas: "scene" lays the objects out at the model's native size on a canvas sized from the layout (issue 28, the
default), "model" on the model's own square canvas (before issue 28). The grader crops each object found and judges
it at the model's size, whatever the canvas.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from minicream.eval.runner import run_benchmark
from minicream.pipelines import Pipeline


def with_defaults(**defaults) -> None:
    """Change text2img's declared defaults for this process (the benchmark runner calls pipe(prompt, ...))."""
    mode = Pipeline.modes["text2img"]
    options = tuple(dataclasses.replace(o, default=defaults[o.name]) if o.name in defaults else o for o in mode.options)
    Pipeline.modes = {**Pipeline.modes, "text2img": dataclasses.replace(mode, options=options)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--harmonize", default="0,0.3")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--canvas", default="scene", help="comma-separated: scene, model")
    ap.add_argument("--limit", type=int, help="at most this many prompts (a quick look)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the arm without a layout")
    ap.add_argument("--out", default="runs/scenes_layout")
    args = ap.parse_args()
    arms = [] if args.no_baseline else [("no layout (one caption)", {"layout": "none"})]
    arms += [(f"layout, canvas {c}, harmonize {h}", {"layout": None, "canvas": c, "harmonize": float(h)})
             for c in args.canvas.split(",") for h in args.harmonize.split(",")]
    rows = {}
    original = Pipeline.modes
    for name, defaults in arms:
        Pipeline.modes = original
        with_defaults(**defaults)
        res = run_benchmark(args.model, "scenes", Path(args.out) / name.replace(" ", "_").replace(",", ""),
                            samples=args.samples, limit=args.limit, log=lambda m: None)
        rows[name] = {"tasks": res["tasks"], "geneval_mean": res["geneval_mean"], "grader": res["grader"],
                      "by_grader": res.get("by_grader"), "seconds": res["seconds"]["generate"]}
        print(f"{name:38s} " + " ".join(f"{t} {v:.3f}" for t, v in res["tasks"].items())
              + f"  GenEval mean {res['geneval_mean']:.3f} ({res['grader']})"
              + "".join(f", {k} {v['geneval_mean']:.3f}" for k, v in (res.get("by_grader") or {}).items())
              + f"  ({res['seconds']['generate']:.0f} s)", flush=True)
    Pipeline.modes = original
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
