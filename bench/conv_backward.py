"""3x3 convolution backward at the reference UNet's shapes: oneDNN's own vs minicream's Conv3x3 (bf16, channels-last).

For every 3x3 convolution of the reference UNet's training step (batch 48, 8x8 and 4x4, 128-512 channels), in one
run, interleaved: forward time, oneDNN's backward (data and weight gradients) and Conv3x3's backward (oneDNN's
backward-data + one im2col GEMM for the weight gradient), in ms and TFLOP/s, and the ratio.

    python bench/conv_backward.py [--batch 48] [--repeats 20] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from minicream.models.conv import Conv3x3

# (cin, cout, size) of the reference UNet's 3x3 stride-1 convolutions (bench/profile_step.py lists them).
SHAPES = [(128, 128, 8), (256, 128, 8), (384, 128, 8), (128, 256, 4), (256, 256, 4), (384, 256, 4), (512, 256, 4)]


def time_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeats * 1e3)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"batch {args.batch}, bf16, channels-last; fwd+bwd times in ms (TFLOP/s of the backward's 2x forward FLOPs)")
    print(f"{'cin->cout @ size':18s} {'forward':>8s} {'oneDNN bwd':>16s} {'Conv3x3 bwd':>16s} {'bwd ratio':>9s}")
    rows, tot = [], {"onednn": 0.0, "ours": 0.0}
    for cin, cout, size in SHAPES:
        torch.manual_seed(0)
        conv = Conv3x3(cin, cout).to(torch.bfloat16, memory_format=torch.channels_last)
        x = torch.randn(args.batch, cin, size, size, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
        g = torch.randn(args.batch, cout, size, size, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        flops = 2 * args.batch * size * size * cin * cout * 9

        def fwd():
            with torch.no_grad():
                conv(x)

        def fwd_bwd(matmul: bool):
            Conv3x3.matmul_backward = matmul
            try:
                conv(x).backward(g)
            finally:
                Conv3x3.matmul_backward = True

        t_f = time_ms(fwd, args.repeats)
        t_o = time_ms(lambda: fwd_bwd(False), args.repeats) - t_f
        t_m = time_ms(lambda: fwd_bwd(True), args.repeats) - t_f
        tot["onednn"] += t_o
        tot["ours"] += t_m
        rows.append({"cin": cin, "cout": cout, "size": size, "fwd_ms": t_f, "onednn_bwd_ms": t_o, "conv3x3_bwd_ms": t_m})
        print(f"{cin:4d}->{cout:4d} @ {size}x{size}   {t_f:8.2f} {t_o:8.2f} ({2 * flops / t_o / 1e9:5.2f}) {t_m:8.2f} ({2 * flops / t_m / 1e9:5.2f}) {t_o / t_m:8.2f}x")
    print(f"all shapes: oneDNN backward {tot['onednn']:.1f} ms, Conv3x3 backward {tot['ours']:.1f} ms, ratio {tot['onednn'] / tot['ours']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "rows": rows, "total": tot}, f, indent=1)


if __name__ == "__main__":
    main()
