"""One place for the bf16 decision (k-diffusion keeps its speed switches in one `flags` module, too).

bf16 is the fast precision where the hardware computes it: CUDA GPUs, and x86 CPUs with AMX or AVX512-BF16
(bf16 3x3 convolutions ~10x faster than fp32 there). On a CPU without them (e.g. AVX2-only AMD EPYC),
PyTorch emulates bf16 matmuls: measured 0.0002 TFLOP/s against 0.08 TFLOP/s in fp32 on one core, and an
autoencoder step 12x slower than in fp32. There everything runs in fp32. `MINICREAM_BF16=0|1` overrides.
"""
from __future__ import annotations

import functools
import os

import torch


@functools.lru_cache(maxsize=None)
def _cpu_fast_bf16() -> bool:
    cpu = torch.cpu
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


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
