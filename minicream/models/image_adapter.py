"""An image-prompt adapter for the frozen UNet (IP-Adapter, Ye et al. 2023): decoupled cross-attention to image tokens.

    image embedding (the evaluator's image tower, unit norm, E)
        --> linear + LayerNorm --> N image tokens in the text encoder's width
        [+ the tower's last feature map before pooling (4x4 cells at 64 px; IP-Adapter Plus uses the patch tokens
           likewise): each cell a linear + LayerNorm token with a learnt position, so where things are and their
           shapes reach the UNet; optional per call and dropped for a share of training, so the pooled embedding
           alone (the prior's, a fusion's) still draws]
        --> per transformer block: its own key/value projection (initialised from the block's text key/value), an
            attention of the block's text queries to the image tokens, added to the text attention's output
            (times a learnt per-block gate that starts at 0, so the adapter starts as the identity)
        --> and an MLP into the ResBlocks' conditioning vector (zero-initialised), as Kandinsky adds its image
            embedding to the time embedding: this UNet learns *what* to draw through that vector

The UNet stays frozen and unchanged: `prepare()` turns the call's embeddings into an `ImageCondition` that
`MoEUNet.forward(image=...)` reads (its conditioning vector and, per transformer block, the keys and values).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import PretrainedMixin
from .layers import TransformerBlock, zero_init


@dataclass
class ImageAdapterConfig:
    image_dim: int = 192  # the image embedding's size (the evaluator's joint space)
    num_tokens: int = 4  # image tokens attended beside the text tokens
    context_dim: int = 384  # the UNet's cross-attention input width
    emb_dim: int = 512  # the UNet's conditioning vector width
    block_dims: tuple[int, ...] = ()  # channels of each of the UNet's transformer blocks, in module order
    block_heads: tuple[int, ...] = ()
    grid_dim: int = 0  # channels of the image tower's feature map (0: the pooled embedding only)
    grid_cells: int = 16

    def __post_init__(self):
        self.block_dims, self.block_heads = tuple(self.block_dims), tuple(self.block_heads)
        if len(self.block_dims) != len(self.block_heads) or not self.block_dims:
            raise ValueError("block_dims and block_heads need one entry per transformer block")
        if self.num_tokens < 1 or self.image_dim < 1:
            raise ValueError("num_tokens and image_dim must be positive")


def transformer_blocks(unet: nn.Module) -> list[TransformerBlock]:
    """The UNet's transformer blocks in module order (the adapter's per-block projections follow it)."""
    return [m for m in unet.modules() if isinstance(m, TransformerBlock)]


@dataclass
class ImageCondition:
    """What the UNet reads of an image prompt for one batch: `emb` (B, emb_dim), added to the conditioning vector, and
    per transformer block (k, v) of shape (B, heads, N, d) with `weight` (B, 1, 1, 1): the block's gated scale per row
    (0 for rows without an image, such as classifier-free guidance's unconditional half)."""

    emb: torch.Tensor
    kv: dict  # TransformerBlock -> [(k, v, weight, mask or None), ...] (one per image prompt)


class ImagePromptAdapter(nn.Module, PretrainedMixin):
    config_class = ImageAdapterConfig

    def __init__(self, config: ImageAdapterConfig):
        super().__init__()
        self.config = cfg = config
        self.to_tokens = nn.Linear(cfg.image_dim, cfg.num_tokens * cfg.context_dim)
        self.token_norm = nn.LayerNorm(cfg.context_dim)
        self.to_emb = nn.Sequential(nn.Linear(cfg.image_dim, cfg.emb_dim), nn.SiLU(), zero_init(nn.Linear(cfg.emb_dim, cfg.emb_dim)))
        self.to_kv = nn.ModuleList(nn.Linear(cfg.context_dim, 2 * d, bias=False) for d in cfg.block_dims)
        self.gates = nn.Parameter(torch.zeros(len(cfg.block_dims)))
        if cfg.grid_dim:
            self.grid_proj = nn.Linear(cfg.grid_dim, cfg.context_dim)
            self.grid_pos = nn.Parameter(torch.randn(cfg.grid_cells, cfg.context_dim) * 0.02)
            self.grid_norm = nn.LayerNorm(cfg.context_dim)

    @classmethod
    def from_unet(cls, unet: nn.Module, image_dim: int, num_tokens: int = 4, grid_dim: int = 0,
                  grid_cells: int = 16) -> "ImagePromptAdapter":
        """An adapter for `unet`, each block's image key/value projection a copy of its text one (as IP-Adapter)."""
        blocks = transformer_blocks(unet)
        cfg = ImageAdapterConfig(image_dim, num_tokens, unet.config.context_dim, unet.time_mlp[-1].out_features,
                                 tuple(b.attn2.to_q.in_features for b in blocks), tuple(b.attn2.heads for b in blocks),
                                 grid_dim, grid_cells)
        adapter = cls(cfg)
        with torch.no_grad():
            for kv, block in zip(adapter.to_kv, blocks):
                kv.weight.copy_(block.attn2.to_kv.weight)
        return adapter

    def check(self, unet: nn.Module) -> None:
        dims = tuple(b.attn2.to_q.in_features for b in transformer_blocks(unet))
        if dims != self.config.block_dims:
            raise ValueError(f"this image adapter was made for transformer blocks {self.config.block_dims}, the UNet has {dims}")

    def prepare(self, unet: nn.Module, embeds: torch.Tensor, weights: torch.Tensor, grid: torch.Tensor | None = None,
                grid_keep: torch.Tensor | None = None) -> ImageCondition:
        """embeds (B, image_dim) unit-norm image embeddings; weights (B,) each row's scale (0 = no image prompt);
        grid (B, cells, grid_dim): the tower's feature map (None: the pooled embedding alone); grid_keep (B,) bool:
        the rows whose grid is attended (training drops some)."""
        dtype = self.to_tokens.weight.dtype
        x = F.normalize(embeds.float(), dim=-1) * embeds.shape[-1] ** 0.5  # unit variance per element
        x = x.to(dtype)
        w = weights.to(dtype)
        B, N, D = len(x), self.config.num_tokens, self.config.context_dim
        tokens = self.token_norm(self.to_tokens(x).view(B, N, D))
        mask = None
        if grid is not None and self.config.grid_dim:
            cells = self.grid_norm(self.grid_proj(grid.to(dtype)) + self.grid_pos.to(dtype))
            tokens = torch.cat([tokens, cells], dim=1)
            if grid_keep is not None:
                mask = torch.cat([torch.ones(B, N, dtype=torch.bool, device=x.device),
                                  grid_keep.to(x.device)[:, None].expand(B, cells.shape[1])], dim=1)
        kv = {}
        for i, (block, proj, heads) in enumerate(zip(transformer_blocks(unet), self.to_kv, self.config.block_heads)):
            k, v = proj(tokens).view(B, tokens.shape[1], 2, heads, -1).permute(2, 0, 3, 1, 4)
            kv[block] = [(k, v, (w * self.gates[i]).view(B, 1, 1, 1), mask)]
        return ImageCondition(self.to_emb(x) * w[:, None], kv)


__all__ = ["ImageAdapterConfig", "ImageCondition", "ImagePromptAdapter", "transformer_blocks"]
