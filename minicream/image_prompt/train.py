"""`minicream train-image-prompt`: an image-prompt adapter (models/image_adapter.py) for a model's frozen UNet.

Numbered stages (a finished stage is skipped on --resume; the trainer resumes from its last checkpoint):
    1. data     the model's training images (single objects), their latents through the model's autoencoder, their
                image embeddings through the model's evaluator (its image tower: the space best-of-N and the prior
                share), their captions through its text encoder (cached)
    2. train    the frozen UNet plus the adapter on the model's own objective, each image drawn from its own
                embedding; half the captions dropped, so the image alone draws its concept (text is optional at use)
    3. export   OUT/image_prompt: config.json + bf16 safetensors and image_prompt.json (the UNet's and the evaluator's
                hashes, recipe); copy it into the model folder to use it (`minicream generate --image-prompt IMAGE`)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import MinicreamError
from ..io.model_dir import IMAGE_PROMPT_DIR, IMAGE_PROMPT_SETTINGS
from ..models.image_adapter import ImagePromptAdapter
from ..training.on_model import export_part, open_run
from ..training.stages import mark_done, stage_done
from ..training.tasks import caption_picker, text_batch
from ..training.trainer import TrainConfig, train_logged


@dataclass
class ImagePromptRecipe:
    model: str = "full"  # a shipped model's name or a model folder
    data: str = ""  # the image-caption folder (default: the model's recipe's data)
    caption_dropout: float = 0.5  # share of empty captions: the image alone must draw its concept
    num_tokens: int = 4
    grid: bool = True  # detail tokens from the image tower's feature map (models/image_adapter.py)
    grid_dropout: float = 0.3  # share of images drawn from the pooled embedding alone (as the prior's and fusions')
    limit: int = 0  # at most this many training images (0 = all)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=8000, batch_size=32, lr=3e-4, warmup_steps=100, decay_to=0.1, ema_decay=0.998, checkpoint_every=250,
        log_every=50, max_minutes=60.0, schedule_clock="time"))

    def __post_init__(self):
        if not 0 <= self.caption_dropout <= 1:
            raise MinicreamError(f"caption_dropout must be in [0, 1], got {self.caption_dropout}")
        if not 1 <= self.num_tokens <= 16:
            raise MinicreamError(f"num_tokens must be 1 to 16, got {self.num_tokens}")
        if not 0 <= self.grid_dropout <= 1:
            raise MinicreamError(f"grid_dropout must be in [0, 1], got {self.grid_dropout}")


def load_image_prompt_recipe(path: str | Path | None = "image_prompt", overrides=()) -> ImagePromptRecipe:
    from ..config import build_dataclass, read_toml

    return build_dataclass(ImagePromptRecipe, read_toml(path or None, overrides))


# 1. ------------------------------------------------------------------------------------------------
def caption_table(pipe, examples, cache: Path):
    """(each example's caption choices, the cached text table, the empty caption's row): the example's caption and
    its bare concept name."""
    captions = [[e.text] + ([e.meta["concept"]] if e.meta.get("concept") and e.meta["concept"] != e.text else [])
                for e in examples]
    unique = sorted({c for cs in captions for c in cs} | {""})
    index = {t: i for i, t in enumerate(unique)}
    text = pipe.text_encoder.encode_cached(unique, cache / "text.safetensors")
    return [[index[c] for c in cs] for cs in captions], text, index[""]


def prepare_data(pipe, cfg, run: Path, log, latents: bool = True):
    """(latents or None, image embeddings, caption choices, text table, empty-caption id), cached in run/cache; with
    `latents` also the image tower's feature maps (bf16) in run/cache/grids.pt (train_image_prompt reads them)."""
    from ..training.on_model import training_examples
    from ..data.folder import images_to_tensor

    cache = run / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    examples = training_examples(pipe, cfg.data, cfg.limit)
    choices, text, empty_id = caption_table(pipe, examples, cache)
    images = None

    def cached(path: Path, make):  # each array computed once, from the images read once
        nonlocal images
        if path.is_file():
            return torch.load(path)
        if images is None:
            images = images_to_tensor(examples)
        with torch.no_grad():
            value = make(images)
        torch.save(value, path)
        return value

    embeds = cached(cache / "embeds.pt", pipe.evaluator.image_features)
    lat = None
    if latents:
        lat = cached(cache / "latents.pt", lambda x: torch.cat([pipe.encode_image(x[i:i + 256]).cpu()
                                                                  for i in range(0, len(x), 256)]))
        cached(cache / "grids.pt", lambda x: pipe.evaluator.image_grid(x).to(torch.bfloat16))
    log(f"1. data: {len(examples)} images, " + (f"latents {tuple(lat.shape)}, " if latents else "")
        + f"image embeddings {tuple(embeds.shape)}, {len(text.pooled)} captions ({time.time() - t0:.0f}s)")
    return lat, embeds, choices, text, empty_id


# 2. ------------------------------------------------------------------------------------------------
def image_prompt_loss(unet, objective, latents, embeds, grids, caption_choices, text, empty_id, cfg: ImagePromptRecipe):
    """loss_fn(adapter, idx, gen) of the Trainer: the frozen UNet's denoising loss, each image prompted by itself
    (its feature map dropped for a share of the images)."""
    pick = caption_picker(caption_choices, empty_id, cfg.caption_dropout)

    def loss_fn(adapter, idx, gen):
        device = next(adapter.parameters()).device
        ctx, mask, pooled = text_batch(text, pick(idx, gen), device)
        grid = keep = None
        if grids is not None:
            grid, keep = grids[idx].to(device), torch.rand(len(idx), generator=gen) >= cfg.grid_dropout
        image = adapter.prepare(unet, embeds[idx].to(device), torch.ones(len(idx), device=device), grid, keep)
        x0 = latents[idx].to(device).contiguous(memory_format=torch.channels_last)
        return objective(lambda x_t, t: unet(x_t, t, ctx, mask, pooled, image=image), x0, gen).mean(), {}

    return loss_fn


def train_image_prompt(pipe, cfg: ImagePromptRecipe, run: Path, log, resume: bool) -> tuple[ImagePromptAdapter, dict]:
    from ..adapters.train import objective_of

    latents, embeds, choices, text, empty_id = prepare_data(pipe, cfg, run, log)
    grids = torch.load(run / "cache" / "grids.pt") if cfg.grid else None
    unet = pipe.unet.float().requires_grad_(False).eval()
    grid_dim, grid_cells = (grids.shape[2], grids.shape[1]) if cfg.grid else (0, 16)
    adapter = ImagePromptAdapter.from_unet(unet, embeds.shape[1], cfg.num_tokens, grid_dim, grid_cells)
    log(f"image-prompt adapter: {sum(p.numel() for p in adapter.parameters()) / 1e6:.2f} M parameters, "
        f"{len(adapter.to_kv)} transformer blocks, from {pipe.model_dir.name}'s UNet")
    loss = image_prompt_loss(unet, objective_of(pipe), latents, embeds, grids, choices, text, empty_id, cfg)
    return train_logged(adapter, loss, len(latents), cfg.train, run, "image_adapter", log, resume, label="image-prompt")


# 3. ------------------------------------------------------------------------------------------------
def run_image_prompt(cfg: ImagePromptRecipe, run_dir: str | Path, resume: bool = False) -> Path:
    from .use import evaluator_hash

    # the image embeddings come from the model's evaluator: a model without one is refused
    pipe, run, log = open_run(cfg.model, run_dir, resume, "image-prompt", evaluator=True)
    folder = run / IMAGE_PROMPT_DIR
    if stage_done(run, "export") is None:
        adapter, stats = train_image_prompt(pipe, cfg, run, log, resume)
        export_part(adapter, folder, IMAGE_PROMPT_SETTINGS, {"model": pipe.model_dir.name, "model_hash": pipe.model_hash,
                                                             "evaluator_hash": evaluator_hash(pipe)}, cfg, stats)
        mark_done(run, "export", {})
        log(f"3. export: {folder} (copy it to {pipe.model_dir / IMAGE_PROMPT_DIR} to use it)")
    return folder


__all__ = ["ImagePromptRecipe", "caption_table", "image_prompt_loss", "load_image_prompt_recipe", "prepare_data",
           "run_image_prompt", "train_image_prompt"]
