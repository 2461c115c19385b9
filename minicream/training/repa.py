"""REPA, representation alignment (Yu et al. 2024, "Representation Alignment for Generation").

An auxiliary loss for the UNet: the tokens of an early layer (the last one at the first token resolution, before
the first downsampling) go through a small MLP head and are pulled, by cosine similarity, towards the features a
frozen image encoder computes from the *clean* image at the same positions. The paper uses DINOv2; the only
image encoder this project may use offline is its own evaluator's image tower (`minicream/<model>/evaluator`),
whose stage at the UNet's token resolution gives the targets. The targets are computed once per training image,
before training; the head is trained with the UNet and is not exported.

`unet.repa_weight` (0 = off) and `unet.repa_encoder` (a model folder or shipped name holding an evaluator) turn it
on; `bench/moe_ablation.py --arms repa` measures it at equal time.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import MinicreamError


class WithREPA(nn.Module):
    """The UNet plus the REPA head. Calls go to the UNet; a forward hook keeps the aligned layer's output, which
    `alignment_loss` reads after the call. Only `.unet` is exported."""

    def __init__(self, unet: nn.Module, target_dim: int):
        super().__init__()
        self.unet = unet
        layer = aligned_layer(unet)
        c = unet.config.channels[0]
        self.head = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.SiLU(), nn.Conv2d(2 * c, 2 * c, 1), nn.SiLU(),
                                  nn.Conv2d(2 * c, target_dim, 1))
        self.captured: torch.Tensor | None = None
        layer.register_forward_hook(self._keep)

    def _keep(self, module, args, output):
        self.captured = output

    @property
    def moe_layers(self):
        return self.unet.moe_layers

    def forward(self, *args, **kwargs):
        return self.unet(*args, **kwargs)

    def alignment_loss(self, targets: torch.Tensor) -> torch.Tensor:
        """1 - cosine similarity between the head's output and targets (B, D, h, w), averaged over positions."""
        if self.captured is None:
            raise RuntimeError("alignment_loss called before a forward pass")
        pred = self.head(self.captured)
        self.captured = None
        return (1 - F.cosine_similarity(pred.float(), targets.float(), dim=1)).mean()


def aligned_layer(unet: nn.Module) -> nn.Module:
    """The last down block before the first downsampling (the UNet's first token resolution)."""
    if not hasattr(unet, "down"):
        raise MinicreamError("REPA needs the minicream UNet (unet.model.arch = \"minicream\")")
    first = None
    for block in unet.down:
        if type(block).__name__ == "Downsample":
            break
        first = block
    if first is None:
        raise MinicreamError("REPA: the UNet has no block before its first downsampling")
    return first


@torch.no_grad()
def encoder_targets(encoder_dir: str | Path, images_uint8: torch.Tensor, size: int, batch_size: int = 256) -> torch.Tensor:
    """The frozen evaluator tower's feature map of every image at size x size (bf16, (N, C, size, size)): the
    first stage at or below that resolution, average-pooled to it."""
    from ..evaluator.model import MiniCLIP
    from ..io.model_dir import evaluator_folder

    clip = MiniCLIP.from_pretrained(evaluator_folder(encoder_dir, "unet.repa_encoder")).float().eval()
    tower = clip.image_tower
    out = []
    for i in range(0, len(images_uint8), batch_size):
        h = F.silu(tower.stem(clip.preprocess(images_uint8[i:i + batch_size])))
        for stage in tower.stages:
            h = stage(h)
            if h.shape[-1] <= size:
                break
        out.append(F.adaptive_avg_pool2d(h, size).to(torch.bfloat16))
    return torch.cat(out)
