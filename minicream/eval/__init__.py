"""Evaluation suite: metrics (FD/KID/IS on evaluator features, SSIM, CLIP score, prompt adherence) and benchmarks."""
from .benchmarks import BENCHMARKS, get_benchmark
from .runner import run_benchmark

__all__ = ["BENCHMARKS", "get_benchmark", "run_benchmark"]
