"""`minicream train-control`: a ControlNet for a model's UNet, on the model's own training images' edge maps.

Numbered stages (a finished stage is skipped on --resume; the trainer resumes from its last checkpoint):
    1. data     the model's training images (its recipe's data, single objects), their latents through the model's
                autoencoder, their captions through its text encoder, and their Canny edge maps (cached)
    2. train    the frozen UNet plus a trainable ControlNet (models/controlnet.py) on the model's own objective;
                hints are the edge maps, or for kind "scribble" hand-like scribbles made from them on the fly
                (control/hints.py); a share of the captions dropped, so the structure alone draws something, EMA
    3. export   OUT/control/KIND: config.json + bf16 safetensors and control.json (kind, the model's hash, recipe);
                copy it into the model folder's control/ to use it (`minicream generate --control IMAGE`)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import MinicreamError
from ..io.model_dir import CONTROL_DIR, CONTROL_SETTINGS
from ..models.controlnet import KINDS, ControlNet
from ..training.on_model import export_part, open_run
from ..training.stages import mark_done, stage_done
from ..training.tasks import caption_picker, text_batch
from ..training.trainer import TrainConfig, train_logged


@dataclass
class ControlRecipe:
    kind: str = "edges"  # one of models.controlnet.KINDS
    model: str = "full"  # a shipped model's name or a model folder
    data: str = ""  # the image-caption folder (default: the model's recipe's data)
    caption_dropout: float = 0.3  # share of empty captions: the structure alone must draw something
    hint_width: int = 32
    limit: int = 0  # at most this many training images (0 = all)
    # zoomed-out and moved copies of every image (edges made from each copy): the caption alone no longer tells
    # where the object lies or how large it is, so the network must read the hint (without them the model's
    # centred training images make the hint redundant, and 2,500 steps learned to change almost nothing)
    augment: int = 2
    augment_zoom: float = 0.55  # smallest zoom of a copy (1 = the image's own size)
    augment_shift: int = 14  # largest move of a copy, px
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=6000, batch_size=32, lr=3e-4, warmup_steps=100, decay_to=0.1, ema_decay=0.998, checkpoint_every=250,
        log_every=50, max_minutes=60.0, schedule_clock="time"))

    def __post_init__(self):
        if self.kind not in KINDS:
            raise MinicreamError(f"--kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.augment < 0 or not 0 < self.augment_zoom <= 1 or self.augment_shift < 0:
            raise MinicreamError("augment must be >= 0, augment_zoom in (0, 1], augment_shift >= 0")
        if not 0 <= self.caption_dropout < 1:
            raise MinicreamError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")


def load_control_recipe(path: str | Path | None = "control", overrides=()) -> ControlRecipe:
    from ..config import build_dataclass, read_toml

    return build_dataclass(ControlRecipe, read_toml(path or None, overrides))


# 1. ------------------------------------------------------------------------------------------------
def prepare_data(pipe, cfg: ControlRecipe, run: Path, log):
    """(latents, edge maps uint8, caption choices, text table, empty-caption id), cached in run/cache."""
    from ..data.folder import images_to_tensor
    from ..training.on_model import training_examples
    from .hints import edge_maps

    cache = run / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    examples = training_examples(pipe, cfg.data, cfg.limit)
    if cfg.augment:
        from ..training.recipe import augmented_copies

        examples = examples + augmented_copies(examples, cfg.augment, cfg.augment_zoom, cfg.augment_shift)
    captions = [[e.text] + ([e.meta["concept"]] if e.meta.get("concept") and e.meta["concept"] != e.text else [])
                for e in examples]
    unique = sorted({c for cs in captions for c in cs} | {""})
    index = {t: i for i, t in enumerate(unique)}
    text = pipe.text_encoder.encode_cached(unique, cache / "text.safetensors")
    lat_path, edge_path = cache / "latents.pt", cache / "edges.pt"
    if lat_path.is_file() and edge_path.is_file():
        latents, edges = torch.load(lat_path), torch.load(edge_path)
    else:
        images = images_to_tensor(examples)
        with torch.no_grad():
            latents = torch.cat([pipe.encode_image(images[i:i + 256]).cpu() for i in range(0, len(images), 256)])
        edges = edge_maps(images)
        torch.save(latents, lat_path)
        torch.save(edges, edge_path)
    log(f"1. data: {len(examples)} images ({cfg.augment} zoomed/moved copies each), latents {tuple(latents.shape)}, edge density "
        f"{edges.float().mean().item() / 255:.3f}, {len(unique)} captions ({time.time() - t0:.0f}s)")
    return latents, edges, [[index[c] for c in cs] for cs in captions], text, index[""]


# 2. ------------------------------------------------------------------------------------------------
def control_loss(unet, objective, latents, edges, caption_choices, text, empty_id, cfg: ControlRecipe):
    """loss_fn(controlnet, idx, gen) of the Trainer: the frozen UNet's denoising loss with the ControlNet's residuals."""
    from .hints import scribbles

    pick = caption_picker(caption_choices, empty_id, cfg.caption_dropout)

    def loss_fn(net, idx, gen):
        device = next(net.parameters()).device
        ctx, mask, pooled = text_batch(text, pick(idx, gen), device)
        hint = edges[idx].float() / 255
        if cfg.kind == "scribble":
            hint = scribbles(hint, gen)
        hint = hint.to(device)
        x0 = latents[idx].to(device).contiguous(memory_format=torch.channels_last)

        def model(x_t, t):
            return unet(x_t, t, ctx, mask, pooled, control=net(x_t, t, ctx, mask, pooled, hint))

        return objective(model, x0, gen).mean(), {}

    return loss_fn


def train_control(pipe, cfg: ControlRecipe, run: Path, log, resume: bool) -> tuple[ControlNet, dict]:
    from ..adapters.train import objective_of

    latents, edges, choices, text, empty_id = prepare_data(pipe, cfg, run, log)
    unet = pipe.unet.float().requires_grad_(False).eval()
    net = ControlNet.from_unet(unet, cfg.kind, pipe.image_size, cfg.hint_width)
    log(f"controlnet ({cfg.kind}): {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters, from "
        f"{pipe.model_dir.name}'s UNet")
    loss = control_loss(unet, objective_of(pipe), latents, edges, choices, text, empty_id, cfg)
    return train_logged(net, loss, len(latents), cfg.train, run, "controlnet", log, resume, label="control")


# 3. ------------------------------------------------------------------------------------------------
def run_control(cfg: ControlRecipe, run_dir: str | Path, resume: bool = False) -> Path:
    pipe, run, log = open_run(cfg.model, run_dir, resume, "control", f"kind {cfg.kind}, ")
    folder = run / CONTROL_DIR / cfg.kind
    if stage_done(run, "export") is None:
        net, stats = train_control(pipe, cfg, run, log, resume)
        export_part(net, folder, CONTROL_SETTINGS, {"kind": cfg.kind, "model": pipe.model_dir.name,
                                                    "model_hash": pipe.model_hash}, cfg, stats)
        mark_done(run, "export", {})
        log(f"3. export: {folder} (copy it to {pipe.model_dir / CONTROL_DIR / cfg.kind} to use it)")
    return folder


__all__ = ["CONTROL_DIR", "ControlRecipe", "control_loss", "load_control_recipe", "run_control", "train_control"]
