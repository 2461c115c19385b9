"""MultiDiffusion (Bar-Tal et al. 2023): a model trained at one latent size denoises a larger canvas.

The canvas is covered by overlapping windows of the native size; every step, the model sees each window on
its own (all windows in one batch) and each latent takes the mean of the predictions of the windows that
cover it. The mean of the per-window predictions is the least-squares fusion of MultiDiffusion's paper.
"""
from __future__ import annotations

from typing import Callable

import torch


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)  # the last window ends at the border
    return starts


def windows(canvas: tuple[int, int], window: tuple[int, int], stride: int | None = None) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of windows of size `window` covering `canvas` (H, W), overlapping by at least half."""
    (h, w), (wh, ww) = canvas, window
    if h < wh or w < ww:
        raise ValueError(f"canvas {canvas} is smaller than the window {window}")
    sy = stride or max(1, wh // 2)
    sx = stride or max(1, ww // 2)
    return [(y, x) for y in _starts(h, wh, sy) for x in _starts(w, ww, sx)]


def tiled_model_fn(model_fn: Callable, canvas: tuple[int, int], window: tuple[int, int], stride: int | None = None) -> Callable:
    """model_fn(x, t) over (B, C, wh, ww) batches of B * len(windows) -> the same over (B, C, H, W) canvases.

    `model_fn` must accept a batch of B * n windows (window-major within each image: image 0's windows first)."""
    corners = windows(canvas, window, stride)
    wh, ww = window
    count = torch.zeros(1, 1, *canvas)
    for y, x in corners:
        count[..., y:y + wh, x:x + ww] += 1

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        crops = torch.stack([x[:, :, y:y + wh, xx:xx + ww] for y, xx in corners], dim=1)  # (B, n, C, wh, ww)
        tt = t.repeat_interleave(len(corners)) if t.ndim else t
        out = model_fn(crops.flatten(0, 1), tt).view(b, len(corners), *crops.shape[2:])
        total = torch.zeros(b, out.shape[2], *canvas, dtype=out.dtype, device=out.device)
        for k, (y, xx) in enumerate(corners):
            total[:, :, y:y + wh, xx:xx + ww] += out[:, k]
        return total / count.to(out.device, out.dtype)

    fn.n_windows = len(corners)
    return fn
