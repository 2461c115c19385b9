"""Write an eval result as report.json, report.md (Markdown tables) and grid.png (first sample of each prompt)."""
from __future__ import annotations

import json
from pathlib import Path

from ..io.atomic import atomic_path
from ..io.grid import image_grid
from .benchmarks import PAPER_TABLE, TASKS, Benchmark

MAX_GRID = 48


def _fmt(x, digits=3) -> str:
    if isinstance(x, dict):
        if "mean" in x:
            return f"{x['mean']:.{digits}f} ± {x['std']:.{digits}f}"
        if "value" in x:
            return f"{x['value']:.2f}"
        return "skipped"
    return "–" if x is None else f"{x:.{digits}f}"


def markdown(res: dict) -> str:
    lines = [f"## `minicream eval --benchmark {res['benchmark']}`" + (f" (best of {res['candidates']})" if res["candidates"] > 1 else ""), "",
             f"{res['prompts']} prompts × {res['samples_per_prompt']} samples = n {res['n_generated']} generated"
             + (f", n {res['n_real']} real" if "n_real" in res else "")
             + f"; {res['sampler']}, {res['steps']} steps" + (f", guidance {res['guidance']}" if res.get("guidance") is not None else "")
             + (f" below noise {res['guidance_max_noise']}" if res.get("guidance_max_noise", 1.0) < 1.0 else "")
             + (f", CADS {res['cads']}" if res.get("cads", 0.0) > 0 else "")
             + (f", style {res['style']}" if res.get("style", "model") != "model" else "") + f"; model {res['model_hash']}; {res['seconds']['total']:.0f} s.", ""]
    if res["benchmark"] == "minicream-table":
        lines += ["| metric | kandinsky (paper) | midjourney (paper) | mini-CREAM (paper) | minicream (measured) |", "|---|---|---|---|---|"]
        lines.append(f"| FID (paper: InceptionV3; ours: evaluator features) | {PAPER_TABLE['FID']['kandinsky']} | {PAPER_TABLE['FID']['midjourney']} | {PAPER_TABLE['FID']['mini-CREAM']} | {_fmt(res.get('fd_evaluator'), 4)} |")
        lines.append(f"| IS (paper: InceptionV3; ours: evaluator zero-shot over {res['is_evaluator']['classes']} concepts) | {PAPER_TABLE['IS']['kandinsky']} | {PAPER_TABLE['IS']['midjourney']} | {PAPER_TABLE['IS']['mini-CREAM']} | {_fmt(res['is_evaluator'])} |")
        lines.append(f"| SSIM between samples (1.0 = collapse) | {PAPER_TABLE['SSIM']['kandinsky']} | {PAPER_TABLE['SSIM']['midjourney']} | {PAPER_TABLE['SSIM']['mini-CREAM']} | {_fmt(res.get('ssim_pairwise'), 4)} |")
        lines += ["", "Paper columns: their models, their data and 32 px images, as printed; not comparable with ours.", ""]
    lines += ["| metric | value |", "|---|---|"]
    rows = [("Fréchet distance, evaluator features", res.get("fd_evaluator")),
            ("KID, evaluator features (mean ± std over subsets)", res.get("kid_evaluator")),
            ("FID, InceptionV3", res.get("fid_inception")),
            ("IS, evaluator zero-shot classes", res.get("is_evaluator")),
            ("SSIM pairwise within a prompt (1.0 = collapse)", res.get("ssim_pairwise")),
            ("SSIM pairwise within a prompt without a style word", res.get("ssim_pairwise_plain")),
            ("SSIM to nearest real image", res.get("ssim_nearest_real")),
            ("CLIP score (evaluator cosine)", res.get("clip_score"))]
    for label, v in rows:
        if v is not None:
            lines.append(f"| {label} | {_fmt(v, 4) if not isinstance(v, dict) or 'skipped' not in v else 'skipped: ' + v['skipped']} |")
    for who, acc in (res.get("object_accuracy") or {}).items():
        lines.append(f"| object accuracy top-1 / top-5 among {acc['classes']} concepts, {who} | {acc['top1']:.3f} / {acc['top5']:.3f} (n {acc['n']}) |")
    if "tasks" in res:
        shown = [t for t in TASKS if t in res["tasks"]]
        graded = {res["grader"]: res, **(res.get("by_grader") or {})}
        lines += ["", "GenEval-style tasks (first row: the grader of the mean reported):", "",
                  "| grader | " + " | ".join(shown) + " | GenEval mean (6 tasks) |", "|" + "---|" * (len(shown) + 2)]
        lines += [f"| {who} | " + " | ".join(f"{g['tasks'].get(t, 0):.3f}" for t in shown) + f" | {g['geneval_mean']:.3f} |"
                  for who, g in graded.items()]
    return "\n".join(lines) + "\n"


def write_report(res: dict, images, bench: Benchmark, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "report.json") as tmp:
        tmp.write_text(json.dumps(res, indent=2))
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text(markdown(res))
    firsts = images[::bench.samples][:MAX_GRID] if bench.samples < 4 else images[:MAX_GRID]
    labels = [im.info.get("minicream", {}).get("prompt", "")[:18] for im in firsts]
    grid = image_grid(firsts, cols=min(8, len(firsts)), labels=labels)
    with atomic_path(out_dir / "grid.png") as tmp:
        grid.save(tmp, format="PNG")
