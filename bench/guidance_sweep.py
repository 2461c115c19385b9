"""Sampling settings of one model on the coverage benchmark: guidance scale, and guidance applied only in a limited
interval of noise levels (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample and
Distribution Quality in Diffusion Models": guidance at the highest noise levels picks one layout for every seed and
costs variety; there the conditional prediction alone is used).

Each arm runs `minicream eval --benchmark coverage` (the same prompts and seeds) with its settings and prints one row:
nearest-real-image top-1/top-5 (all prompts, bare-name prompts), pairwise SSIM of bare-name prompts, KID.

    python bench/guidance_sweep.py --model runs/full4/model --limit 200 --arms "4;3;4@0.8;6@0.8" --out runs/gsweep

An arm is `GUIDANCE[@HI][+cadsS]`: guidance where the noise level t/T <= HI, the conditional prediction above it
(`minicream eval --guidance G --guidance-max-noise HI`); with `+cadsS`, condition-annealed sampling of noise scale S
(Sadat et al. 2024; `--cads S`, `minicream/diffusion/cads.py`); with `+vary`, style "vary" (`--style vary`,
`minicream/filter/variety.py`), else style "model", whatever the model's default.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minicream.eval.runner import run_benchmark  # noqa: E402


ARM = re.compile(r"^(?P<g>[0-9.]+)(@(?P<hi>[0-9.]+))?(\+cads(?P<s>[0-9.]+))?(?P<vary>\+vary)?$")


def parse_arm(arm: str) -> dict:
    """`4`, `4@0.8`, `4@0.8+cads0.25`, `4+vary` -> the sampling options of the arm (`+vary`: style "vary", one design
    per image by its seed when the prompt names none; without it style "model": the model chooses)."""
    m = ARM.match(arm.strip())
    if not m:
        raise SystemExit(f"bad arm {arm!r}: expected GUIDANCE[@HI][+cadsS][+vary], e.g. 4@0.8+cads0.25")
    return {"guidance": float(m["g"]), "guidance_max_noise": float(m["hi"] or 1.0), "cads": float(m["s"] or 0.0),
            "style": "vary" if m["vary"] else "model"}


def row(name: str, res: dict) -> dict:
    acc = res["object_accuracy"]
    return {"arm": name, "top1": acc["nearest"]["top1"], "top5": acc["nearest"]["top5"],
            "plain_top5": acc["nearest, plain prompts"]["top5"], "styled_top5": acc["nearest, styled prompts"]["top5"],
            "ssim_plain": res["ssim_pairwise_plain"], "kid": res["kid_evaluator"]["mean"], "n": acc["nearest"]["n"],
            "seconds": res["seconds"]["total"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--arms", default="4;4@0.8", help="';'-separated GUIDANCE or GUIDANCE@HI")
    ap.add_argument("--limit", type=int, default=None, help="first N prompts of the benchmark (alternately styled/bare)")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--out", default="runs/guidance_sweep")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for arm in args.arms.split(";"):
        opts = parse_arm(arm)
        report = out / arm.replace("@", "_at_").replace("+", "_") / "report.json"
        if report.is_file():
            res = json.loads(report.read_text())
        else:
            res = run_benchmark(args.model, "coverage", report.parent, **opts, limit=args.limit,
                                data_root=args.data, log=lambda s: None)
        rows.append(row(arm, res))
        r = rows[-1]
        print(f"{arm:>8}  top-1 {r['top1']:.3f}  top-5 {r['top5']:.3f}  (bare {r['plain_top5']:.3f}, styled "
              f"{r['styled_top5']:.3f})  SSIM bare {r['ssim_plain']:.3f}  KID {r['kid']:.4f}  n {r['n']}  {r['seconds']:.0f} s",
              flush=True)
    (out / "sweep.json").write_text(json.dumps({"model": args.model, "limit": args.limit, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
