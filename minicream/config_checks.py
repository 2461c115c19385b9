"""Validation of a resolved recipe config, once, before any work: types, ranges and cross-field rules, each
refused with a one-line message naming the field (`--set unet.train.batch_size=0` used to end in a
ZeroDivisionError deep in the trainer)."""
from __future__ import annotations

import math

from .errors import MinicreamError

OBJECTIVES = ("epsilon", "v", "flow")
TIMESTEPS = ("uniform", "logit_normal")  # diffusion/objectives.py (not imported here: config checks stay torch-free)
PRECISIONS = ("bf16", "no")
SCHEDULE_CLOCKS = ("steps", "time")


def _fail(field: str, value, rule: str):
    raise MinicreamError(f"config: {field} = {value!r}: {rule}")


def _int(field: str, value, lo: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(field, value, "must be an integer")
    if lo is not None and value < lo:
        _fail(field, value, f"must be at least {lo}")


def _num(field: str, value, lo: float | None = None, hi: float | None = None, hi_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(field, value, "must be a finite number")
    if lo is not None and value < lo:
        _fail(field, value, f"must be at least {lo}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        _fail(field, value, f"must be {'below' if hi_open else 'at most'} {hi}")


def _choice(field: str, value, choices) -> None:
    if value not in choices:
        _fail(field, value, "must be one of " + ", ".join(map(str, choices)))


def _train(prefix: str, t, min_steps: int = 1) -> None:
    _int(f"{prefix}.steps", t.steps, min_steps)
    for name in ("batch_size", "grad_accum", "checkpoint_every", "log_every"):
        _int(f"{prefix}.{name}", getattr(t, name), 1)
    _int(f"{prefix}.warmup_steps", t.warmup_steps, 0)
    _int(f"{prefix}.seed", t.seed, 0)
    if t.seed > 2**32 - 1:  # numpy and the samplers' generators take 32-bit seeds: refuse before any training
        _fail(f"{prefix}.seed", t.seed, "must be at most 4294967295")
    if t.batch_size % t.grad_accum:
        _fail(f"{prefix}.grad_accum", t.grad_accum, f"must divide the batch size ({t.batch_size})")
    _num(f"{prefix}.lr", t.lr, 0.0)
    _num(f"{prefix}.weight_decay", t.weight_decay, 0.0)
    _num(f"{prefix}.decay_to", t.decay_to, 0.0, 1.0)
    _num(f"{prefix}.grad_clip", t.grad_clip, 0.0)
    _num(f"{prefix}.ema_decay", t.ema_decay, 0.0, 1.0, hi_open=True)
    _num(f"{prefix}.max_minutes", t.max_minutes, 0.0)
    _choice(f"{prefix}.mixed_precision", t.mixed_precision, PRECISIONS)
    _choice(f"{prefix}.schedule_clock", t.schedule_clock, SCHEDULE_CLOCKS)
    _int(f"{prefix}.plan_samples", t.plan_samples, 0)
    _num(f"{prefix}.cooldown", t.cooldown, 0.0, 1.0)
    if not isinstance(t.deterministic, bool):
        _fail(f"{prefix}.deterministic", t.deterministic, "must be true or false")


def validate_config(cfg) -> None:
    """Raise MinicreamError for the first invalid field of a RecipeConfig."""
    d, u, a = cfg.data, cfg.unet, cfg.autoencoder
    _int("data.size", d.size, 8)
    _int("data.limit", d.limit, 0)
    _num("data.scene_ratio", d.scene_ratio, 0.0, 1.0, hi_open=True)
    _int("data.augment", d.augment, 0)
    _num("data.augment_zoom", d.augment_zoom, 0.1, 1.0)
    _int("data.augment_shift", d.augment_shift, 0)
    if not isinstance(d.skin_tones, bool):
        _fail("data.skin_tones", d.skin_tones, "must be true or false")
    _int("text.max_length", cfg.text.max_length, 1)
    if not a.model.channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in a.model.channels):
        _fail("autoencoder.model.channels", list(a.model.channels), "must be a list of positive integers")
    _int("autoencoder.model.latent_channels", a.model.latent_channels, 1)
    _int("autoencoder.model.layers_per_block", a.model.layers_per_block, 1)
    _num("autoencoder.kl_weight", a.kl_weight, 0.0)
    _train("autoencoder.train", a.train)
    m = u.model
    if not m.channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in m.channels):
        _fail("unet.model.channels", list(m.channels), "must be a list of positive integers")
    for name in ("patch_size", "layers_per_block", "head_dim", "ff_mult", "num_experts", "top_k"):
        _int(f"unet.model.{name}", getattr(m, name), 1)
    if m.top_k > m.num_experts:
        _fail("unet.model.top_k", m.top_k, f"must not exceed unet.model.num_experts ({m.num_experts})")
    # 64 px -> the autoencoder halves len(channels)-1 times -> the UNet patches and halves len(channels)-1 times
    factor = 2 ** (len(a.model.channels) - 1) * (m.patch_size * 2 ** (len(m.channels) - 1) if m.arch == "minicream" else 1)
    if d.size % factor:
        _fail("data.size", d.size, f"must be a multiple of {factor} for these autoencoder and UNet levels")
    _choice("unet.objective", u.objective, OBJECTIVES)
    _num("unet.min_snr_gamma", u.min_snr_gamma, 0.0)
    _choice("unet.timesteps", u.timesteps, TIMESTEPS)
    _num("unet.logit_mean", u.logit_mean)
    _num("unet.logit_std", u.logit_std, 0.0)
    _num("unet.repa_weight", u.repa_weight, 0.0)
    if u.repa_weight and not u.repa_encoder:
        _fail("unet.repa_encoder", u.repa_encoder, "must name a model folder or shipped model with an evaluator when unet.repa_weight > 0")
    if u.repa_weight and m.arch != "minicream":
        _fail("unet.repa_weight", u.repa_weight, "REPA needs unet.model.arch = \"minicream\"")
    _num("unet.cfg_dropout", u.cfg_dropout, 0.0, 1.0, hi_open=True)
    _num("unet.moe_aux_weight", u.moe_aux_weight, 0.0)
    _num("unet.moe_z_weight", u.moe_z_weight, 0.0)
    _train("unet.train", u.train)
    _int("sample.steps", cfg.sample.steps, 1)
    _num("sample.guidance", cfg.sample.guidance, 0.0)
    if cfg.sample.style not in ("", "vary", "model"):
        _fail("sample.style", cfg.sample.style, "must be \"vary\", \"model\" or empty")
    for name in ("steps", "judge_steps"):
        _int(f"evaluator.{name}", getattr(cfg.evaluator, name), 0)
    for name in ("max_minutes", "judge_max_minutes"):
        _num(f"evaluator.{name}", getattr(cfg.evaluator, name), 0.0)
    dec = cfg.decoder
    _train("decoder.train", dec.train, min_steps=0)  # 0 steps: no stage 3b
    for name in ("chroma_weight", "perceptual_weight", "gan_weight"):
        _num(f"decoder.{name}", getattr(dec, name), 0.0)
    _int("decoder.gan_start", dec.gan_start, 0)
    if not isinstance(dec.perceptual_encoder, str) or (dec.perceptual_weight and not dec.perceptual_encoder):
        _fail("decoder.perceptual_encoder", dec.perceptual_encoder,
              "must name a model folder or shipped model with an evaluator when decoder.perceptual_weight > 0")


def validate_upscaler(cfg) -> None:
    """Raise MinicreamError for the first invalid field of an UpscalerRecipe (training/upscaler.py)."""
    if not isinstance(cfg.data, str) or not cfg.data:
        _fail("data", cfg.data, "must be a dataset folder")
    for name, lo in (("crop", 0), ("heldout", 1), ("steps", 1)):
        _int(name, getattr(cfg, name), lo)
    if not cfg.model.channels or any(not isinstance(c, int) or c < 8 or c % 8 for c in cfg.model.channels):
        _fail("model.channels", cfg.model.channels, "must be a list of multiples of 8")
    if cfg.crop and cfg.crop % cfg.model.multiple:
        _fail("crop", cfg.crop, f"must be a multiple of {cfg.model.multiple} (the network's levels), or 0")
    _num("blur_prob", cfg.blur_prob, 0.0, 1.0)
    _num("blur_max", cfg.blur_max, 0.0, 4.0)
    _num("roundtrip_prob", cfg.roundtrip_prob, 0.0, 1.0)
    if cfg.roundtrip_prob > 0 and (not isinstance(cfg.roundtrip_model, str) or not cfg.roundtrip_model):
        _fail("roundtrip_model", cfg.roundtrip_model, "must name the model whose autoencoder makes the round trips")
    if not isinstance(cfg.init_from, str):
        _fail("init_from", cfg.init_from, "must be an upscaler folder, or empty")
    if not cfg.report_steps or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in cfg.report_steps):
        _fail("report_steps", cfg.report_steps, "must be a list of step counts >= 1")
    m = cfg.model
    _int("model.scale", m.scale, 2)
    _int("model.layers_per_block", m.layers_per_block, 1)
    _num("model.residual_scale", m.residual_scale, 0.0)
    _num("model.max_noise_level", m.max_noise_level, 0.0, 1.0)
    _num("noise_level", cfg.noise_level, 0.0, m.max_noise_level)
    from .diffusion.upscale import SAMPLERS

    if cfg.sampler not in SAMPLERS:
        _fail("sampler", cfg.sampler, f"must be one of {', '.join(SAMPLERS)}")
    if not isinstance(cfg.consistent, bool):
        _fail("consistent", cfg.consistent, "must be true or false")
    _train("train", cfg.train)


def validate_distill(cfg) -> None:
    """Raise MinicreamError for the first invalid field of a DistillConfig (training/distill.py)."""
    if not isinstance(cfg.teacher, str):
        _fail("teacher", cfg.teacher, "must name a shipped model or a model folder (empty: the default model)")
    for name, lo in (("pairs", 1), ("scene_prompts", 0), ("steps", 0), ("shard_size", 1), ("sample_batch", 1),
                     ("seed", 0), ("student_steps", 0), ("measure_samples", 1)):
        _int(name, getattr(cfg, name), lo)
    if cfg.sample_batch > 256:
        _fail("sample_batch", cfg.sample_batch, "must be at most 256")
    if not isinstance(cfg.sampler, str):
        _fail("sampler", cfg.sampler, "must be a sampler's name, or empty for the teacher's")
    _num("guidance", cfg.guidance, -1.0, 50.0)
    _num("perceptual_weight", cfg.perceptual_weight, 0.0)
    _train("reflow", cfg.reflow)
    _train("distill", cfg.distill)
