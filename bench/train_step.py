"""Training-step benchmark: our MoE UNet vs a stock diffusers UNet2DConditionModel of about the same FLOPs.

Prints, in one run: this machine's measured GEMM peak (bf16 and fp32), then for each model and precision
the training samples/s, achieved TFLOP/s (counted with torch.utils.flop_counter) and MFU against the bf16
GEMM peak measured here. Same batch, latents (16x16x4), text context (24 MiniLM tokens) and AdamW step.

    python bench/train_step.py [--batch 48] [--steps 3] [--rounds 5] [--device cpu|cuda] [--json out.json]

Rows are timed in interleaved rounds (every row, then the GEMM peak, repeated) and medians reported: this shared VM's
speed drifts by up to ~2x within minutes, so rows timed one after the other are not comparable.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from minicream.config import load_config
from minicream.models.conv import Conv3x3
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


class Bench:
    """One (model, precision) row: built and warmed up once, then timed in rounds interleaved with the other rows."""

    def __init__(self, model: torch.nn.Module, batch: int, bf16: bool, device: str, compile: bool = False,
                 matmul_conv_backward: bool = True):
        self.batch, self.device, self.conv_bwd = batch, device, matmul_conv_backward
        self.model = model = model.to(device, memory_format=torch.channels_last).train()
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        x, t, ctx, mask, pooled = make_batch(batch, device)
        fwd = torch.compile(model) if compile else model

        def step():
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = (fwd(x, t, ctx, mask, pooled).float() - x).pow(2).mean()
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)

        self.step = step
        with FlopCounterMode(display=False) as counter:
            (model(x, t, ctx, mask, pooled).float() - x).pow(2).mean().backward()  # eager: FLOPs of forward + backward
        self.flops = counter.get_total_flops()  # (the optimizer adds no matmul FLOPs)
        self.opt.zero_grad(set_to_none=True)
        t_warm = time.perf_counter()
        self.run(2)  # warm-up (and compilation with --compile)
        self.warmup_s = time.perf_counter() - t_warm
        self.times: list[float] = []

    def run(self, steps: int) -> float:
        Conv3x3.matmul_backward = self.conv_bwd
        try:
            if self.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                self.step()
            if self.device == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - t0) / steps
        finally:
            Conv3x3.matmul_backward = True

    def result(self) -> dict:
        dt = statistics.median(self.times)
        return {"params_M": sum(p.numel() for p in self.model.parameters()) / 1e6, "gflop_per_sample": self.flops / self.batch / 1e9,
                "samples_per_s": self.batch / dt, "tflops": self.flops / dt / 1e12, "warmup_s": self.warmup_s,
                "step_s_rounds": self.times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per row and round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all rows (medians are reported)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--compile", action="store_true", help="torch.compile every model (the warm-up column includes compiling)")
    ap.add_argument("--models", help="only the models whose name contains one of these comma-separated words")
    args = ap.parse_args()
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    cfg = load_config("reference").unet.model
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    models = {"minicream MoE UNet (reference)": lambda: MoEUNet(cfg),
              # the same UNet with oneDNN's own conv backward (as before minicream.models.conv)
              "minicream MoE, oneDNN conv bwd": lambda: MoEUNet(cfg),
              "minicream dense twin (moe=none)": lambda: MoEUNet(type(cfg)(**{**cfg.__dict__, "moe": "none"})),
              "diffusers UNet2DCondition 64/128": lambda: stock_unet((64, 128), head_dim=32),  # ~ our FLOPs per sample
              "diffusers UNet2DCondition 128/256": lambda: stock_unet()}  # our widths, 16x16 (no patches)
    if args.models:
        words = [w.strip() for w in args.models.split(",")]
        models = {k: v for k, v in models.items() if any(w in k for w in words)}
    benches = {}
    for name, build in models.items():
        for bf16 in (False, True):
            torch.manual_seed(0)
            benches[name, bf16] = Bench(build(), args.batch, bf16, args.device, args.compile,
                                        matmul_conv_backward="oneDNN conv bwd" not in name)
    # Rounds: every row, then the GEMM peak, again and again; medians. This VM's speed drifts by up to ~2x within
    # minutes, so rows timed one after the other are not comparable; interleaved rounds are.
    peaks: dict[str, list[float]] = {"bf16": [], "fp32": []}
    for r in range(args.rounds):
        for b in benches.values():
            b.times.append(b.run(args.steps))
        peaks["bf16"].append(gemm_peak(torch.bfloat16, args.device, seconds=1.0))
        peaks["fp32"].append(gemm_peak(torch.float32, args.device, seconds=1.0))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    peak_bf16, peak_fp32 = statistics.median(peaks["bf16"]), statistics.median(peaks["fp32"])
    print(f"GEMM peak ({8192 if args.device == 'cuda' else 2048}^3, median of {args.rounds} rounds): bf16 {peak_bf16:.2f} TFLOP/s "
          f"(range {min(peaks['bf16']):.2f}-{max(peaks['bf16']):.2f}), fp32 {peak_fp32:.2f} TFLOP/s")
    print(f"batch {args.batch}, {args.rounds} interleaved rounds of {args.steps} steps, medians" + (", torch.compile" if args.compile else ""))
    print(f"{'model':34s} {'prec':5s} {'params':>7s} {'GFLOP/s.':>9s} {'samples/s':>10s} {'TFLOP/s':>8s} {'MFU(bf16)':>9s} {'warm-up s':>9s}")
    rows = []
    for (name, bf16), b in benches.items():
        r = b.result()
        r.update(model=name, precision="bf16" if bf16 else "fp32", mfu_bf16=r["tflops"] / peak_bf16)
        rows.append(r)
        print(f"{name:34s} {r['precision']:5s} {r['params_M']:6.1f}M {r['gflop_per_sample']:9.2f} {r['samples_per_s']:10.1f} "
              f"{r['tflops']:8.3f} {100 * r['mfu_bf16']:8.1f}% {r['warmup_s']:9.1f}")

    def row(model: str, precision: str):
        return next((r for r in rows if r["model"] == model and r["precision"] == precision), None)

    ours = row("minicream MoE UNet (reference)", "bf16")
    stock = {p: row("diffusers UNet2DCondition 64/128", p) for p in ("bf16", "fp32")}
    if ours and stock["bf16"] and stock["fp32"]:
        best = max(stock.values(), key=lambda r: r["samples_per_s"])
        print(f"ratio, samples/s, ours (bf16) / stock diffusers of about the same FLOPs: {ours['samples_per_s'] / stock['bf16']['samples_per_s']:.2f}x "
              f"vs its bf16, {ours['samples_per_s'] / best['samples_per_s']:.2f}x vs its best precision ({best['precision']}); "
              f"FLOPs per sample ours / stock: {ours['gflop_per_sample'] / stock['bf16']['gflop_per_sample']:.2f}")
    old = row("minicream MoE, oneDNN conv bwd", "bf16")
    if ours and old:
        print(f"ratio, samples/s, Conv3x3 backward / oneDNN conv backward (ours, bf16): {ours['samples_per_s'] / old['samples_per_s']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "compile": args.compile, "peak_bf16": peak_bf16, "peak_fp32": peak_fp32, "peaks": peaks,
                       "rounds": args.rounds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
