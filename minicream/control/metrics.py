"""How well a picture follows a structure: edge F1 with a pixel tolerance and the symmetric Chamfer distance, between
the picture's own Canny edges and the control's lines (both at the model's size)."""
from __future__ import annotations

import numpy as np


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Each pixel's Euclidean distance to the nearest True pixel of `mask` (inf where the mask is empty)."""
    import cv2

    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)


def edge_scores(picture_edges: np.ndarray, target: np.ndarray, tolerance: float = 1.0) -> dict:
    """picture_edges, target: (H, W) bool. precision: the share of the picture's edge pixels within `tolerance` px
    of a target line; recall: the share of target pixels within `tolerance` of a picture edge; f1; chamfer: the
    mean of both directions' average distance in px (a picture without edges, or an empty target, scores 0 / inf)."""
    p, t = picture_edges.astype(bool), target.astype(bool)
    if not p.any() or not t.any():
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "chamfer": float("inf")}
    to_t, to_p = _distance_to(t), _distance_to(p)
    precision = float((to_t[p] <= tolerance).mean())
    recall = float((to_p[t] <= tolerance).mean())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "chamfer": float((to_t[p].mean() + to_p[t].mean()) / 2)}


__all__ = ["edge_scores"]
