"""One-step generation side by side, one run (issue 16): quality and speed of the teacher at 20 steps and naively at
1/2/4 steps, the 2-rectified flow at 1/2/4 steps, the distilled student at 1 step, and a stock diffusers
StableDiffusionPipeline of the same size at 1 step (speed only: its UNet is random).

Quality: the `concepts` benchmark (each of the model's concepts by name, 4 samples, graded by the independent
nearest-real-image judge and the learned judge; KID on evaluator features; pairwise SSIM of one prompt's samples).
Speed: UNet + decoder time (prompt encoded once, outside the clock) for 1 and 8 images, and images/s at the best
batch over 256 images; best of --repeats, arms interleaved so that the machine's drift hits them alike.

    python bench/onestep.py --student runs/onestep/model --reflow runs/onestep/reflow_model [--teacher reference]
                            [--repeats 3] [--json bench/last_onestep.json] [--skip-quality]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCHES = (8, 32, 64, 128, 256)


def quality(arms: list[tuple[str, str, int]], out: Path) -> dict:
    from minicream.eval.runner import run_benchmark

    rows = {}
    for label, model, steps in arms:
        t0 = time.time()
        res = run_benchmark(model, "concepts", out / label.replace(" ", "_").replace("/", ""), steps=steps, batch_size=64,
                            log=lambda s: None)
        acc = res["object_accuracy"]
        rows[label] = {"steps": steps, "sampler": res["sampler"],
                       "nearest": acc.get("nearest"), "judge": acc.get("judge"),
                       "kid": res.get("kid_evaluator"), "ssim_pairwise": res.get("ssim_pairwise"),
                       "seconds": round(time.time() - t0, 1)}
        n, j = acc.get("nearest", {}), acc.get("judge", {})
        print(f"  {label:28s} nearest {n.get('top1', float('nan')):.3f}/{n.get('top5', float('nan')):.3f}  judge "
              f"{j.get('top1', float('nan')):.3f}/{j.get('top5', float('nan')):.3f}  KID {res['kid_evaluator']['mean']:.4f}"
              f"  SSIM {res.get('ssim_pairwise')}", flush=True)
    return rows


def speed(pipes: dict, repeats: int) -> dict:
    """UNet + decoder seconds for 1 and 8 images and images/s at the best batch, interleaved across arms."""
    from sample import stock_pipeline  # bench/sample.py: the stock diffusers pipeline of our size

    from minicream.models.autoencoder import decode

    def ours(name, n, batch):
        pipe, steps = pipes[name]
        cond = pipe.encode_prompt("red apple, twemoji")
        uncond = pipe.encode_prompt("")
        st, guidance, sampler = pipe.settings(steps, None, None)

        def go():
            with torch.inference_mode():
                lat = pipe.denoise(list(range(n)), cond, uncond, guidance, sampler, st, batch_size=batch)
                for i in range(0, n, batch):
                    decode(pipe.vae, lat[i:i + batch], batch_size=batch)
        return go

    teacher = pipes["teacher 20 steps"][0]
    sd = stock_pipeline(teacher, "cpu")
    sd_embeds = None

    def stock(n, batch):
        nonlocal sd_embeds
        if sd_embeds is None:
            with torch.no_grad():
                sd_embeds = sd.encode_prompt("red apple, twemoji", "cpu", 1, False)[0]

        def go():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                for start in range(0, n, batch):
                    k = min(batch, n - start)
                    sd(prompt_embeds=sd_embeds.expand(k, -1, -1), height=64, width=64, num_inference_steps=1,
                       guidance_scale=1.0, output_type="pt")
        return go

    jobs = {}
    for name in pipes:
        jobs[(name, 1, 1)] = ours(name, 1, 1)
        jobs[(name, 8, 8)] = ours(name, 8, 8)
    jobs[("stock SD 1 step", 1, 1)] = stock(1, 1)
    jobs[("stock SD 1 step", 8, 8)] = stock(8, 8)
    fast = [n for n in pipes if pipes[n][1] <= 4]
    for b in BATCHES:
        for name in fast:
            jobs[(name, 256, b)] = ours(name, 256, b)
        jobs[("stock SD 1 step", 256, b)] = stock(256, b)
    jobs[("teacher 20 steps", 64, 64)] = ours("teacher 20 steps", 64, 64)
    student = pipes["student 1 step"][0]
    latents = torch.randn(256, *student.latent_shape, generator=torch.Generator().manual_seed(0))
    for b in BATCHES:  # where the one-step time goes: the decoder alone
        jobs[("decoder only", 256, b)] = (lambda b=b: [decode(student.vae, latents[i:i + b], batch_size=b)
                                                      for i in range(0, 256, b)])
    best = {k: float("inf") for k in jobs}
    warm = {}
    for k, fn in jobs.items():
        t0 = time.perf_counter()
        fn()  # warm-up: oneDNN primitives, allocator (and torch.compile's compilation, per shape)
        warm[k[0]] = warm.get(k[0], 0.0) + time.perf_counter() - t0
    for r in range(repeats):
        for k, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
        print(f"  speed round {r + 1}/{repeats} done", flush=True)
    out = {}
    for name in [*pipes, "stock SD 1 step", "decoder only"]:
        through = {b: n / best[(nm, n, b)] for (nm, n, b) in best if nm == name and n >= 64}
        b_best = max(through, key=through.get) if through else None
        out[name] = {"latency_1_s": round(best.get((name, 1, 1), float("nan")), 4),
                     "latency_8_s": round(best.get((name, 8, 8), float("nan")), 4),
                     "images_per_s": round(through[b_best], 1) if b_best else None, "best_batch": b_best,
                     "images_per_s_by_batch": {b: round(v, 1) for b, v in sorted(through.items())},
                     "warmup_s": round(warm[name], 1)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="reference")
    ap.add_argument("--reflow", required=True, help="the 2-rectified flow's model folder (runs/onestep/reflow_model)")
    ap.add_argument("--student", required=True, help="the one-step student's model folder")
    ap.add_argument("--out", default="runs/bench_onestep")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also the student with torch.compile (serve --compile)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from minicream.io.model_dir import resolve_model
    from minicream.pipelines import Pipeline

    teacher = str(resolve_model(args.teacher))
    result = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "teacher": teacher, "reflow": args.reflow, "student": args.student,
              "date": time.strftime("%Y-%m-%d %H:%M")}
    if not args.skip_quality:
        print("quality (concepts benchmark):", flush=True)
        arms = [("teacher 20 steps", teacher, 20), ("teacher 4 steps", teacher, 4), ("teacher 2 steps", teacher, 2),
                ("teacher 1 step", teacher, 1), ("2-rectified flow 4 steps", args.reflow, 4),
                ("2-rectified flow 2 steps", args.reflow, 2), ("2-rectified flow 1 step", args.reflow, 1),
                ("student 1 step", args.student, 1)]
        result["quality"] = quality(arms, Path(args.out))
    if not args.skip_speed:
        print("speed (UNet + decoder):", flush=True)
        pipes = {"teacher 20 steps": (Pipeline.from_pretrained(teacher), 20),
                 "student 1 step": (Pipeline.from_pretrained(args.student), 1)}
        if args.compile:
            pipes["student 1 step, compiled"] = (Pipeline.from_pretrained(args.student).compile(warmup=False), 1)
        result["speed"] = speed(pipes, args.repeats)
        for name, r in result["speed"].items():
            print(f"  {name:20s} 1 image {r['latency_1_s'] * 1000:.1f} ms  8 images {r['latency_8_s'] * 1000:.1f} ms  "
                  f"{r['images_per_s']} images/s at batch {r['best_batch']} (warm-up {r['warmup_s']} s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
