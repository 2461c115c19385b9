"""`minicream train-prior`: the prior (models/prior.py), text -> image embedding, for a model's evaluator's space
(its use at sampling time: image_prompt/prior.py).

Numbered stages (a finished stage is skipped on --resume; the trainer resumes from its last checkpoint):
    1. data     the model's training images' embeddings through its evaluator's image tower, their captions (the
                caption and the bare concept name) through its text encoder (cached)
    2. train    the flow-matching prior on (caption, embedding) pairs, a share of captions dropped (guidance)
    3. export   OUT/prior: config.json + bf16 safetensors and prior.json (the evaluator's hash, the text encoder,
                recipe); copy it to the model folder's image_prompt/prior to use it
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import MinicreamError
from ..io.model_dir import IMAGE_PROMPT_DIR, PRIOR_DIR
from ..models.prior import EmbeddingPrior, PriorConfig, flow_loss
from ..training.on_model import export_part, open_run
from ..training.stages import mark_done, stage_done
from ..training.tasks import caption_picker
from ..training.trainer import TrainConfig, train_logged
from .prior import PRIOR_SETTINGS


@dataclass
class PriorRecipe:
    model: str = "full"  # a shipped model's name or a model folder (its evaluator gives the embedding space)
    data: str = ""  # the image-caption folder (default: the model's recipe's data)
    caption_dropout: float = 0.1
    limit: int = 0
    net: PriorConfig = field(default_factory=PriorConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=20000, batch_size=256, lr=5e-4, warmup_steps=200, decay_to=0.05, ema_decay=0.999, checkpoint_every=1000,
        log_every=200, max_minutes=10.0, schedule_clock="time"))

    def __post_init__(self):
        if not 0 <= self.caption_dropout < 1:
            raise MinicreamError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")


def load_prior_recipe(path: str | Path | None = "prior", overrides=()) -> PriorRecipe:
    from ..config import build_dataclass, read_toml

    return build_dataclass(PriorRecipe, read_toml(path or None, overrides))


def prior_loss(embeds, caption_choices, text, empty_id, dropout: float):
    pick = caption_picker(caption_choices, empty_id, dropout)

    def loss_fn(prior, idx, gen):
        device = next(prior.parameters()).device
        pooled = text.pooled[pick(idx, gen)].to(device)
        return flow_loss(prior, embeds[idx].to(device), pooled, gen), {}

    return loss_fn


def run_prior(cfg: PriorRecipe, run_dir: str | Path, resume: bool = False) -> Path:
    from ..config import config_to_dict
    from .train import prepare_data
    from .use import evaluator_hash

    # the embedding space is the model's evaluator's: a model without one is refused
    pipe, run, log = open_run(cfg.model, run_dir, resume, "prior", evaluator=True)
    folder = run / PRIOR_DIR
    if stage_done(run, "export") is None:
        _, embeds, choices, text, empty_id = prepare_data(pipe, cfg, run, log, latents=False)
        net = EmbeddingPrior(PriorConfig(**{**config_to_dict(cfg.net), "embed_dim": embeds.shape[1],
                                            "text_dim": text.pooled.shape[1]}))
        log(f"prior: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters")
        net, stats = train_logged(net, prior_loss(embeds, choices, text, empty_id, cfg.caption_dropout), len(embeds),
                                  cfg.train, run, "prior_train", log, resume, label="prior")
        export_part(net, folder, PRIOR_SETTINGS, {"model": pipe.model_dir.name, "evaluator_hash": evaluator_hash(pipe),
                                                  "text_encoder": pipe.index.get("text_encoder")}, cfg, stats)
        mark_done(run, "export", {})
        log(f"3. export: {folder} (copy it to {pipe.model_dir / IMAGE_PROMPT_DIR / PRIOR_DIR} to use it)")
    return folder


__all__ = ["PriorRecipe", "load_prior_recipe", "prior_loss", "run_prior"]
