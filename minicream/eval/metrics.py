"""Image metrics on uint8 (N, 3, H, W) tensors, mostly torchmetrics with our evaluator as feature extractor.

The standard FID/KID/IS networks (InceptionV3) need weights that we never download, so the always-available
variants use the mini-CLIP evaluator: its image embedding for Fréchet distance and KID, its zero-shot
class probabilities over the dataset's concepts for the Inception Score. Numbers from these variants are
labelled as such and are NOT comparable with published FID/IS values (different feature space).
"""
from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from ..errors import MinicreamError

# torch-fidelity's FID InceptionV3 weights (what torchmetrics' feature=2048 loads), looked up, never fetched.
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"


# torchmetrics warns that KID/IS keep every feature in memory (fine at our sizes) and about std of one split.
warnings.filterwarnings("ignore", message=r"Metric `(Kernel Inception Distance|InceptionScore)` will save all extracted features")
warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom is <= 0")


class EvaluatorFeatures(nn.Module):
    """uint8 images -> evaluator image embeddings, in torchmetrics' custom-feature-extractor shape."""

    def __init__(self, evaluator):
        super().__init__()
        self.evaluator = evaluator
        self.num_features = evaluator.model.config.embed_dim

    def forward(self, x):
        return self.evaluator.image_features(x)


class EvaluatorLogits(nn.Module):
    """uint8 images -> zero-shot logits over `labels` (InceptionScore applies the softmax)."""

    def __init__(self, evaluator, labels: Sequence[str]):
        super().__init__()
        self.evaluator, self.labels = evaluator, list(labels)
        self.num_features = len(self.labels)

    def forward(self, x):
        return self.evaluator.class_probs(x, self.labels).clamp_min(1e-12).log()


def check_images(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or x.dtype != torch.uint8:
        raise MinicreamError(f"{what}: expected uint8 images of shape (N, 3, H, W)")
    if len(x) == 0:
        raise MinicreamError(f"{what}: zero images")
    return x


def _same_size(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[-2:] != b.shape[-2:]:
        raise MinicreamError(f"image sizes differ: {tuple(a.shape[-2:])} vs {tuple(b.shape[-2:])}; compare images of one size")


def frechet_distance(real: torch.Tensor, fake: torch.Tensor, feature: nn.Module) -> float:
    """Fréchet distance between Gaussian fits of the two feature sets (torchmetrics FID, custom features)."""
    check_images(real, "real images"), check_images(fake, "generated images"), _same_size(real, fake)
    if len(real) < 2 or len(fake) < 2:
        raise MinicreamError("Fréchet distance needs at least 2 images per set")
    fid = FrechetInceptionDistance(feature=feature, normalize=False, reset_real_features=True)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return max(0.0, float(fid.compute()))


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, feature: nn.Module, subsets: int = 50,
                    subset_size: int = 100) -> tuple[float, float]:
    """KID (unbiased MMD^2, cubic polynomial kernel): mean and std over random subsets."""
    check_images(real, "real images"), check_images(fake, "generated images"), _same_size(real, fake)
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise MinicreamError("KID needs at least 2 images per set")
    torch.manual_seed(0)  # subsets are random: fix them so reports are reproducible
    kid = KernelInceptionDistance(feature=feature, subsets=subsets, subset_size=size, normalize=False)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    mean, std = kid.compute()
    return float(mean), float(std)


def inception_score(fake: torch.Tensor, logits: nn.Module, splits: int | None = None) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))), with the given classifier's logits: mean and std over splits."""
    check_images(fake, "generated images")
    splits = splits or max(1, min(10, len(fake) // 10))
    torch.manual_seed(0)  # torchmetrics shuffles before splitting
    metric = InceptionScore(feature=logits, splits=splits, normalize=False)
    metric.update(fake)
    mean, std = metric.compute()
    return float(mean), float(std) if splits > 1 else 0.0


def _ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pair SSIM of uint8 batches (gaussian 11x11 window, data range 1)."""
    return structural_similarity_index_measure(a.float() / 255, b.float() / 255, data_range=1.0, reduction="none")


def pairwise_ssim(images: torch.Tensor) -> float:
    """Mean SSIM over all unordered pairs (diversity within a prompt: 1.0 = every sample identical)."""
    check_images(images, "images")
    pairs = list(itertools.combinations(range(len(images)), 2))
    if not pairs:
        raise MinicreamError("pairwise SSIM needs at least 2 images")
    i, j = (torch.tensor(p) for p in zip(*pairs))
    return float(_ssim(images[i], images[j]).mean())


def nearest_real_ssim(fake: torch.Tensor, real: torch.Tensor, shortlist: int = 8) -> torch.Tensor:
    """For each generated image, the SSIM of the most similar real image: (N,). High = close to (or a copy of) data.

    SSIM is costly on a CPU, so it is computed against the `shortlist` real images nearest in 16x16 pixel
    L2 distance only (the SSIM-nearest image is among them unless images differ mostly in fine detail).
    """
    check_images(fake, "generated images"), check_images(real, "real images"), _same_size(real, fake)
    small = lambda x: torch.nn.functional.adaptive_avg_pool2d(x.float(), 16).flatten(1)
    near = torch.cdist(small(fake), small(real)).topk(min(shortlist, len(real)), largest=False).indices  # (N, k)
    best = [_ssim(im[None].expand(len(idx), -1, -1, -1), real[idx]).max() for im, idx in zip(fake, near)]
    return torch.stack(best)


def topk_accuracy(probs: torch.Tensor, targets: torch.Tensor | Sequence[Sequence[int]], k: int = 1) -> float:
    """Fraction of rows whose top-k classes contain a target (targets: one index, or a set of accepted ones)."""
    if len(probs) == 0:
        raise MinicreamError("accuracy of zero predictions")
    top = probs.topk(min(k, probs.shape[1]), dim=1).indices.tolist()
    accepted = [{int(t)} if not isinstance(t, (list, tuple, set)) else set(t) for t in (targets.tolist() if isinstance(targets, torch.Tensor) else targets)]
    return sum(bool(set(row) & acc) for row, acc in zip(top, accepted)) / len(top)


def inception_weights_path() -> Path | None:
    """The standard FID InceptionV3 weights, if present in torch's hub cache (never downloaded)."""
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints" / INCEPTION_WEIGHTS
    return hub if hub.is_file() else None


def inception_fid(real: torch.Tensor, fake: torch.Tensor) -> dict:
    """Standard FID (InceptionV3 pool3, via torch-fidelity) when its weights are already on disk; else why not."""
    if inception_weights_path() is None:
        return {"skipped": f"InceptionV3 FID weights ({INCEPTION_WEIGHTS}) not in the torch hub cache; not downloaded"}
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return {"skipped": "torch-fidelity is not installed (pip install torch-fidelity==0.4.0)"}
    fid = FrechetInceptionDistance(feature=2048, normalize=False)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return {"value": float(fid.compute()), "n_real": len(real), "n_generated": len(fake)}
