"""Image prompts at sampling time: a model folder's image_prompt/ adapter, the call's images (or mixed embeddings) as
embeddings in the evaluator's space, and the ImageCondition the UNet reads (several image prompts stack).

An adapter was trained for one UNet and one evaluator (whose image tower makes the embeddings): image_prompt.json
records both hashes, and an adapter made for other weights is refused in one line.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import MinicreamError
from ..io.atomic import read_json
from ..io.imagefile import pixels_sha
from ..io.model_dir import IMAGE_PROMPT_DIR, IMAGE_PROMPT_SETTINGS
from ..models.image_adapter import ImageCondition, ImagePromptAdapter

MAX_IMAGES = 4
MAX_SCALE = 2.0


def has_image_prompt(pipe) -> bool:
    return (pipe.model_dir / IMAGE_PROMPT_DIR / "config.json").is_file()


def load_adapter(pipe) -> ImagePromptAdapter:
    """The model's image-prompt adapter, loaded once per pipeline in the UNet's dtype."""
    adapter = pipe.__dict__.get("_image_adapter")
    if adapter is None:
        folder = pipe.model_dir / IMAGE_PROMPT_DIR
        if not has_image_prompt(pipe):
            raise MinicreamError(f"{pipe.model_dir.name} has no image-prompt adapter (train one with "
                                 "`minicream train-image-prompt`)")
        made = read_json(folder / IMAGE_PROMPT_SETTINGS) if (folder / IMAGE_PROMPT_SETTINGS).is_file() else {}
        if made.get("model_hash") != pipe.model_hash or made.get("evaluator_hash") != evaluator_hash(pipe):
            raise MinicreamError(f"{folder}: this image-prompt adapter was trained for other weights (UNet "
                                 f"{made.get('model_hash')}, evaluator {made.get('evaluator_hash')}; the model's are "
                                 f"{pipe.model_hash}, {evaluator_hash(pipe)}); train it again with `minicream train-image-prompt`")
        adapter = ImagePromptAdapter.from_pretrained(folder).to(pipe.device, dtype=pipe.unet_dtype)
        try:
            adapter.check(pipe.unet)
        except ValueError as e:
            raise MinicreamError(f"{folder}: {e}") from None
        pipe._image_adapter = adapter
    return adapter


def evaluator_hash(pipe) -> str | None:
    from ..io.weights import short_hash
    from ..models.base import WEIGHTS_NAME

    path = pipe.model.evaluator / WEIGHTS_NAME
    return short_hash(path) if path.is_file() else None


def read_image(image, size: int) -> torch.Tensor:
    """An image prompt (a PIL image or a path) -> uint8 (3, size, size), on white and squared as the training data."""
    from ..editing import load_image

    return load_image(image, size)


def image_embeddings(pipe, pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (K, 3, S, S) -> unit-norm (K, E) embeddings by the model's evaluator's image tower."""
    return pipe.evaluator.image_features(pixels)


@dataclass
class ImagePrompt:
    """The call's image prompts: one embedding and scale each, the same for every image drawn."""

    adapter: ImagePromptAdapter
    embeds: torch.Tensor  # (K, E) unit norm, the same for every image; or (K, N, E): one per image (the prior's)
    scales: list[float]
    records: list[dict]  # what the PNG records of each: its pixels' sha256 (or the fused parts), scale
    grids: torch.Tensor | None = None  # (K, cells, C): the images' feature maps (detail tokens), or None
    init: torch.Tensor | None = None  # (1, C, h, w): the first image's latents, to start from at `strength` (< 1)
    strength: float = 1.0

    @property
    def start(self) -> dict:
        """pipe.denoise's init/strength: from the first image's noised latents, or (strength 1) from pure noise."""
        return {} if self.init is None else {"init": self.init, "strength": self.strength}

    def select(self, rows: list[int]) -> "ImagePrompt":
        """The prompts of images `rows` (a chunk of a call's images; per-image embeddings only)."""
        if self.embeds.ndim == 2:
            return self
        return ImagePrompt(self.adapter, self.embeds[:, rows], self.scales, self.records, self.grids, self.init,
                           self.strength)

    def condition(self, unet, batch: int, skip: int = 0) -> ImageCondition:
        """The UNet's ImageCondition for a batch whose first `skip` rows are drawn without the image (classifier-free
        guidance's unconditional half)."""
        device = next(self.adapter.parameters()).device
        parts = []
        grids = [None] * len(self.scales) if self.grids is None else list(self.grids)
        for e, s, g in zip(self.embeds, self.scales, grids):
            w = torch.full((batch,), s, device=device)
            w[:skip] = 0
            if e.ndim == 1:
                e = e.expand(batch, -1)
            else:  # one per image: the unconditional rows (weight 0) take the first image's
                if batch - skip != len(e):
                    raise MinicreamError("per-image image prompts need the model's own canvas size")
                e = torch.cat([e[:1].expand(skip, -1), e])
            parts.append(self.adapter.prepare(unet, e.to(device), w, None if g is None else g.to(device).expand(batch, -1, -1)))
        emb = sum(p.emb for p in parts)
        kv = {block: [x for p in parts for x in p.kv[block]] for block in parts[0].kv}
        return ImageCondition(emb, kv)


def _check_scale(s) -> float:
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= float(s) <= MAX_SCALE:
        raise MinicreamError(f"image_scale must be a number from 0 to {MAX_SCALE:g}, got {s!r}")
    return float(s)


def build_image_prompt(pipe, images, scale=1.0, detail: bool = True, strength: float = 1.0) -> ImagePrompt | None:
    """The call's ImagePrompt from its image prompt(s) (a PIL image or path, or a list of them) and scale(s) (0-2);
    None when no image prompt is given. `detail`: with the images' feature maps (where the adapter reads them: the
    look and layout kept closer), else the pooled embeddings alone (freer: what the picture shows). `strength` < 1:
    start from the first image's latents noised to that share of the schedule (its layout and colours kept, as
    img2img), 1: from pure noise (only the embedding carries the image)."""
    if images is None or isinstance(images, ImagePrompt):  # an ImagePrompt made otherwise (a fusion's mix)
        return images
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    if not images or len(images) > MAX_IMAGES:
        raise MinicreamError(f"give 1 to {MAX_IMAGES} image prompts, got {len(images)}")
    scales = list(scale) if isinstance(scale, (list, tuple)) else [scale] * len(images)
    if len(scales) != len(images):
        raise MinicreamError(f"image_scale: give one value, or one per image prompt ({len(images)}), got {len(scales)}")
    scales = [_check_scale(s) for s in scales]
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < float(strength) <= 1:
        raise MinicreamError(f"image_strength must be a number in (0, 1], got {strength!r}")
    adapter = load_adapter(pipe)
    pixels = torch.stack([read_image(im, pipe.image_size) for im in images])
    detail = bool(detail) and bool(adapter.config.grid_dim)
    records = [{"sha256": pixels_sha(p), "scale": s, "detail": detail, "strength": float(strength)}
               for p, s in zip(pixels, scales)]
    grids = pipe.evaluator.image_grid(pixels) if detail else None
    init = pipe.encode_image(pixels[:1]) if strength < 1 else None
    return ImagePrompt(adapter, image_embeddings(pipe, pixels), scales, records, grids, init, float(strength))


__all__ = ["MAX_IMAGES", "MAX_SCALE", "ImagePrompt", "build_image_prompt", "has_image_prompt",
           "image_embeddings", "load_adapter", "read_image"]
