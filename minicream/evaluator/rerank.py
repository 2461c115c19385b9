"""Best-of-N: candidate seeds derived from each image's seed, and the choice of the best-scoring ones.

Candidate 0 of an image uses the image's own seed (so N=1 is plain generation and the first candidate
is the image you would have got without reranking); candidate j > 0 uses a seed derived from (seed, j)
only, so the result never depends on the batch size or on the other images asked for.

A derived seed keeps its image's seed modulo DESIGN_PERIOD (840 = lcm(1..8)). Under style "vary" the seed picks
the design (seed mod the number of designs, filter/variety.py), so every candidate of an image is drawn in the
image's own design and reranking picks the best drawing, not the design the evaluator prefers: with free designs,
best-of-4 on the full model raised the bare names' pairwise SSIM from 0.418 to 0.662 (issue 35). A scene's objects
(seeds derived the same way, pipelines/scene.py) share its design too.
"""
from __future__ import annotations

import torch

from ..errors import MinicreamError

MAX_CANDIDATES = 64
DESIGN_PERIOD = 840  # lcm(1..8): a derived seed is congruent to its image's seed modulo any design count up to 8
# Derived seeds stay valid everywhere a seed is taken (the HTTP API takes 0..2^31-1): the largest multiple of the
# period below 2^31, so reducing by it keeps the residue.
_SEED_MOD = 2**31 // DESIGN_PERIOD * DESIGN_PERIOD
# A large odd multiplier coprime with _SEED_MOD // DESIGN_PERIOD: the 64 derived seeds of one image are distinct.
_SEED_STRIDE = 0x9E3779B1 * DESIGN_PERIOD


def candidate_seed(seed: int, j: int) -> int:
    return seed if j == 0 else (seed + j * _SEED_STRIDE) % _SEED_MOD


def candidate_seeds(seeds: list[int], n: int) -> list[int]:
    """Image-major list: [s0c0, s0c1, ..., s0c(n-1), s1c0, ...]."""
    return [candidate_seed(s, j) for s in seeds for j in range(n)]


def check_candidates(num_candidates: int, keep: int) -> None:
    if not isinstance(num_candidates, int) or not 1 <= num_candidates <= MAX_CANDIDATES:
        raise MinicreamError(f"num_candidates must be an integer in 1..{MAX_CANDIDATES}, got {num_candidates!r}")
    if not isinstance(keep, int) or not 1 <= keep <= num_candidates:
        raise MinicreamError(f"keep_top must be in 1..num_candidates ({num_candidates}), got {keep!r}")


def best_indices(scores: torch.Tensor, n: int, keep: int = 1) -> list[int]:
    """Flat indices of the `keep` best candidates of each image (scores image-major, n per image), best first.

    Ties go to the lower candidate index (stable sort), so results are deterministic.
    """
    if scores.numel() % n:
        raise MinicreamError(f"{scores.numel()} scores is not a multiple of {n} candidates")
    grouped = scores.detach().float().cpu().reshape(-1, n)
    order = torch.sort(-grouped, dim=1, stable=True).indices[:, :keep]
    return [i * n + int(j) for i, row in enumerate(order) for j in row]
