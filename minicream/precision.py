"""One place for the bf16 decision (k-diffusion keeps its speed switches in one `flags` module, too).

bf16 is the fast precision where the hardware computes it: CUDA GPUs, and x86 CPUs with AMX or AVX512-BF16
(bf16 3x3 convolutions ~10x faster than fp32 there). On a CPU without them (e.g. AVX2-only AMD EPYC),
PyTorch emulates bf16 matmuls: measured 0.0002 TFLOP/s against 0.08 TFLOP/s in fp32 on one core, and an
autoencoder step 12x slower than in fp32. There everything runs in fp32.

The CPU flags alone do not decide it: a Xeon that reports AVX512-BF16 but no AMX (AMX hidden by its
hypervisor) ran a 3x3 convolution 1.4x and a 512^3 GEMM 1.6x slower in bf16 than in fp32 on one core, and
a training step 20% slower (bench/train_step.py). So where the flags say bf16 may pay, a convolution and a
GEMM are timed once per process in both precisions (~0.1 s), and bf16 is used only if it is clearly faster.
`MINICREAM_BF16=0|1` overrides.
"""
from __future__ import annotations

import functools
import os
import time

import torch

BF16_MIN_SPEEDUP = 1.25  # bf16 must beat fp32 by this much to be chosen: a margin over timing noise


def _best_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up (oneDNN builds its kernels on the first call)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _cpu_seconds(dtype: torch.dtype) -> float:
    """One 3x3 convolution and one GEMM at the shapes of a UNet's inner blocks, in `dtype`, best of 5."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 16, 16, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    a = torch.randn(256, 256, generator=gen).to(dtype)
    with torch.no_grad():
        return (_best_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=1))
                + _best_seconds(lambda: a @ a))


@functools.lru_cache(maxsize=None)
def _cpu_fast_bf16() -> bool:
    cpu = torch.cpu
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    if not any(getattr(cpu, name, lambda: False)() for name in checks):
        return False
    return _cpu_seconds(torch.float32) >= BF16_MIN_SPEEDUP * _cpu_seconds(torch.bfloat16)


def fast_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 compute pays on `device` (CUDA with bf16 support, or a CPU with AMX / AVX512-BF16)."""
    override = os.environ.get("MINICREAM_BF16", "").strip()
    if override in ("0", "1"):
        return override == "1"
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return kind == "cpu" and _cpu_fast_bf16()


def training_precision(requested: str, device: str | torch.device) -> str:
    """Accelerate's mixed_precision: 'bf16' falls back to 'no' (fp32) where bf16 is emulated."""
    return requested if requested != "bf16" or fast_bf16(device) else "no"
