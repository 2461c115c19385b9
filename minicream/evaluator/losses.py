"""The evaluator's two losses, as plain functions of embeddings (no model, no training loop)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, ids: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with label-aware targets: rows/cols sharing a text id are all positives."""
    logits = scale * img @ txt.t()  # (B, B)
    same = (ids[:, None] == ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def preference_loss(winner: torch.Tensor, loser: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry on people's choices: -log sigmoid(s(prompt, winner) - s(prompt, loser)), s the evaluator's
    logit (scale x cosine). Embeddings (B, E), L2-normalised; scale a scalar (detach it: otherwise the loss falls
    by sharpening the temperature alone, without reordering anything)."""
    margin = scale * ((winner - loser) * txt).sum(dim=-1)  # (B,)
    return F.softplus(-margin).mean()  # softplus(-m) = -log sigmoid(m), stable for large |m|
