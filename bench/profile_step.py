"""Where a training step of the reference UNet spends its time: torch.profiler over a few bf16 steps.

Prints the operators with the most self time and the step split into categories (matmul/conv compute,
their backward, normalisation, elementwise, memory copies and casts, optimizer), so the gap between the
achieved TFLOP/s of bench/train_step.py and the GEMM peak can be read off.

    python bench/profile_step.py [--batch 48] [--steps 3] [--model moe|dense|stock] [--device cpu|cuda] [--json out.json]

On CUDA it prints the kernels with the most GPU time instead of the categories, and the step's wall time.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from train_step import gemm_peak, make_batch, stock_unet
from minicream.config import load_config
from minicream.models.unet import MoEUNet

# First match wins; names are aten / mkldnn operator names as the profiler reports them.
CATEGORIES = [
    ("optimizer (AdamW)", ("_foreach", "adamw", "Optimizer.step")),
    ("matmul (mm/bmm/addmm/linear)", ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::linear", "aten::matmul")),
    ("convolution fwd+bwd", ("convolution", "mkldnn_convolution", "conv2d")),
    ("attention (sdpa/softmax)", ("softmax", "scaled_dot_product", "flash_attention")),
    ("normalisation (group/layer norm)", ("group_norm", "layer_norm", "native_group_norm", "native_layer_norm")),
    ("casts and copies", ("aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous", "aten::cat", "aten::fill_", "aten::zero_")),
    ("elementwise and reductions", ("aten::add", "aten::mul", "aten::sub", "aten::div", "silu", "gelu", "aten::sum", "aten::mean",
                                     "aten::pow", "aten::sqrt", "aten::exp", "aten::where", "aten::neg", "aten::sigmoid", "aten::rsqrt")),
]


def categorise(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k.lower() in low for k in keys):
            return cat
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--model", choices=["moe", "dense", "stock"], default="moe")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args()
    cfg = load_config("reference").unet.model
    model = {"moe": lambda: MoEUNet(cfg), "dense": lambda: MoEUNet(type(cfg)(**{**cfg.__dict__, "moe": "none"})),
             "stock": lambda: stock_unet((64, 128), head_dim=32)}[args.model]()
    cuda = args.device == "cuda"
    model = model.to(args.device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x, t, ctx, mask, pooled = make_batch(args.batch, args.device)

    def step():
        with torch.autocast(args.device, dtype=torch.bfloat16):
            loss = (model(x, t, ctx, mask, pooled).float() - x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    step()
    # FLOPs of one step by operator (forward + backward), to put an achieved TFLOP/s on the matmul and conv rows.
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(args.device, dtype=torch.bfloat16):
            loss = (model(x, t, ctx, mask, pooled).float() - x).pow(2).mean()
        loss.backward()
    opt.zero_grad(set_to_none=True)
    flops_by_cat: dict[str, float] = defaultdict(float)
    for op, n in counter.get_flop_counts().get("Global", {}).items():
        flops_by_cat[categorise("aten::" + str(op).split(".")[1])] += n  # str(op) is e.g. "aten.mm"
    if cuda:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
        print(f"# {args.model} UNet, batch {args.batch}, bf16 autocast, CUDA: {(time.perf_counter() - t0) / args.steps * 1e3:.1f} ms per step unprofiled")
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(args.steps):
                step()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15, max_name_column_width=50))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=50))
        return
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    wall = (time.perf_counter() - t0) / args.steps
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) / args.steps / 1e6
    cats: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for e in events:
        c = categorise(e.key)
        cats[c] += e.self_cpu_time_total / args.steps / 1e6
        calls[c] += e.count // args.steps
    peak = gemm_peak(torch.bfloat16, args.device)
    print(f"# {args.model} UNet, batch {args.batch}, bf16 autocast, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"step wall time {wall * 1e3:.0f} ms (profiled; the profiler adds overhead), operator self time {total * 1e3:.0f} ms")
    print(f"bf16 GEMM peak (2048^3) measured after the profile: {peak:.2f} TFLOP/s; step FLOPs {sum(flops_by_cat.values()) / 1e9:.1f} G")
    print(f"\n{'category':36s} {'ms/step':>8s} {'share':>6s} {'calls/step':>10s} {'GFLOP':>7s} {'TFLOP/s':>8s}")
    for c, s in sorted(cats.items(), key=lambda kv: -kv[1]):
        fl = flops_by_cat.get(c, 0.0)
        rate = f"{fl / s / 1e12:8.2f}" if fl else f"{'':8s}"
        print(f"{c:36s} {s * 1e3:8.1f} {100 * s / total:5.1f}% {calls[c]:10d} {fl / 1e9:7.1f} {rate}")
    print(f"\n{'operator (top 15 by self time)':44s} {'ms/step':>8s} {'calls/step':>10s}")
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]
    for e in top:
        print(f"{e.key[:44]:44s} {e.self_cpu_time_total / args.steps / 1e3:8.1f} {e.count // args.steps:10d}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "batch": args.batch, "wall_ms": wall * 1e3, "self_ms": total * 1e3, "peak_bf16": peak,
                       "flops_by_category": dict(flops_by_cat),
                       "categories_ms": {c: s * 1e3 for c, s in cats.items()}, "calls": dict(calls),
                       "top": [{"op": e.key, "ms": e.self_cpu_time_total / args.steps / 1e3, "calls": e.count // args.steps} for e in top]}, f, indent=1)


if __name__ == "__main__":
    main()
