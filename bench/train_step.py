"""Training-step benchmark: our MoE UNet vs a stock diffusers UNet2DConditionModel of about the same FLOPs.

Prints, in one run: this machine's measured GEMM peak (bf16 and fp32), then for each model and precision
the training samples/s, achieved TFLOP/s (counted with torch.utils.flop_counter) and MFU against the bf16
GEMM peak measured here. Same batch, latents (16x16x4), text context (24 MiniLM tokens) and AdamW step.

    python bench/train_step.py [--batch 48] [--steps 6] [--device cpu|cuda] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from minicream.config import load_config
from minicream.models.stock_unet import StockUNet
from minicream.models.unet import MoEUNet, UNetConfig


def gemm_peak(dtype: torch.dtype, device: str, n: int = 2048, seconds: float = 3.0) -> float:
    n = 8192 if device == "cuda" else n  # a GPU needs a large product to reach its peak
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * count / (time.perf_counter() - t0) / 1e12


def stock_unet(channels=(128, 256), head_dim=64) -> torch.nn.Module:
    """The stock diffusers UNet2DConditionModel (minicream.models.stock_unet, our calling convention; it has no
    pooled-text input): one layer per block, cross-attention below the top level, 16x16 latents, no patches."""
    return StockUNet(UNetConfig(channels=tuple(channels), layers_per_block=1, attention=(False,) + (True,) * (len(channels) - 1),
                                head_dim=head_dim, arch="diffusers"))


def make_batch(batch: int, device: str):
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, 24, dtype=torch.bool)
    mask[:, 10:] = False
    return (torch.randn(batch, 4, 16, 16, generator=g).to(device).contiguous(memory_format=torch.channels_last),
            (torch.rand(batch, generator=g) * 1000).to(device), torch.randn(batch, 24, 384, generator=g).to(device),
            mask.to(device), torch.randn(batch, 384, generator=g).to(device))


def bench_model(model: torch.nn.Module, batch: int, steps: int, bf16: bool, device: str, compile: bool = False) -> dict:
    model = model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x, t, ctx, mask, pooled = make_batch(batch, device)
    fwd = torch.compile(model) if compile else model

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = (fwd(x, t, ctx, mask, pooled).float() - x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        (model(x, t, ctx, mask, pooled).float() - x).pow(2).mean().backward()  # eager: FLOPs of forward + backward
    flops = counter.get_total_flops()  # (the optimizer adds no matmul FLOPs)
    opt.zero_grad(set_to_none=True)
    t_warm = time.perf_counter()
    step()  # warm-up (and compilation with --compile)
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t_warm
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    return {"params_M": sum(p.numel() for p in model.parameters()) / 1e6, "gflop_per_sample": flops / batch / 1e9,
            "samples_per_s": batch / dt, "tflops": flops / dt / 1e12, "warmup_s": warmup_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--compile", action="store_true", help="torch.compile every model (the warm-up column includes compiling)")
    ap.add_argument("--models", help="only the models whose name contains one of these comma-separated words")
    args = ap.parse_args()
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    cfg = load_config("reference").unet.model
    peak_bf16, peak_fp32 = gemm_peak(torch.bfloat16, args.device), gemm_peak(torch.float32, args.device)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"GEMM peak ({8192 if args.device == 'cuda' else 2048}^3): bf16 {peak_bf16:.2f} TFLOP/s, fp32 {peak_fp32:.2f} TFLOP/s")
    models = {"minicream MoE UNet (reference)": lambda: MoEUNet(cfg),
              "minicream dense twin (moe=none)": lambda: MoEUNet(type(cfg)(**{**cfg.__dict__, "moe": "none"})),
              "diffusers UNet2DCondition 64/128": lambda: stock_unet((64, 128), head_dim=32),  # ~ our FLOPs per sample
              "diffusers UNet2DCondition 128/256": lambda: stock_unet()}  # our widths, 16x16 (no patches)
    if args.models:
        words = [w.strip() for w in args.models.split(",")]
        models = {k: v for k, v in models.items() if any(w in k for w in words)}
    rows = []
    print(f"batch {args.batch}, {args.steps} timed steps" + (", torch.compile" if args.compile else ""))
    print(f"{'model':34s} {'prec':5s} {'params':>7s} {'GFLOP/s.':>9s} {'samples/s':>10s} {'TFLOP/s':>8s} {'MFU(bf16)':>9s} {'warm-up s':>9s}")
    for name, build in models.items():
        for bf16 in (False, True):
            torch.manual_seed(0)
            r = bench_model(build(), args.batch, args.steps, bf16, args.device, args.compile)
            r.update(model=name, precision="bf16" if bf16 else "fp32", mfu_bf16=r["tflops"] / peak_bf16)
            rows.append(r)
            print(f"{name:34s} {r['precision']:5s} {r['params_M']:6.1f}M {r['gflop_per_sample']:9.2f} {r['samples_per_s']:10.1f} "
                  f"{r['tflops']:8.3f} {100 * r['mfu_bf16']:8.1f}% {r['warmup_s']:9.1f}", flush=True)
    ours = next((r for r in rows if r["model"].startswith("minicream MoE") and r["precision"] == "bf16"), None)
    stock = next((r for r in rows if r["model"] == "diffusers UNet2DCondition 64/128" and r["precision"] == "bf16"), None)
    if ours and stock:
        print(f"ratio, bf16 samples/s, ours / stock diffusers of about the same FLOPs: {ours['samples_per_s'] / stock['samples_per_s']:.2f}x "
              f"(FLOPs per sample ours / stock: {ours['gflop_per_sample'] / stock['gflop_per_sample']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "compile": args.compile, "peak_bf16": peak_bf16, "peak_fp32": peak_fp32, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
