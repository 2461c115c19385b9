"""`minicream train-upscaler`: the 64 -> 256 px diffusion upscaler, trained on the dataset rendered at 256 px.

Numbered stages (a finished stage is skipped on --resume; the trainer resumes from its last checkpoint):
    1. data     the high-resolution images (train split) in memory, uint8
    2. train    flow matching on the residual over bicubic (diffusion/upscale.py), random crops, noise-augmented
                and sometimes blurred low-resolution conditions (generated 64-px images are softer than downsampled
                renders), EMA
    3. export   OUT/upscaler: config.json + bf16 safetensors, and the held-out report (report.json)
    4. report   held-out images: PSNR / SSIM against the real renders for bicubic, Lanczos and the upscaler at
                several step counts, sharpness (Laplacian variance over the real images'), seconds per image
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..diffusion.upscale import (UpscaleSettings, downsample, flow_loss, gaussian_blur, sample_upscale, start_noise,
                                 upsample)
from ..errors import MinicreamError
from ..io.atomic import write_text_atomic
from ..io.model_dir import UPSCALER_DIR
from ..models.autoencoder import to_uint8, to_unit_range
from ..models.upscaler import Upscaler, UpscalerConfig
from .stages import mark_done, stage_done
from .trainer import TrainConfig, train_logged



@dataclass
class UpscalerRecipe:
    data: str = "data/emoji256"  # `minicream data emoji --size 256 --no-skin-tones data/emoji256`
    skin_tones: bool = False
    crop: int = 64  # training crops of the high-resolution image (0 = whole images)
    blur_prob: float = 0.5  # share of batches whose low-resolution input is blurred first
    blur_max: float = 0.8  # largest blur (sigma in low-resolution pixels)
    # share of batches whose low-resolution input is the autoencoder round trip (decode(encode(x))) of
    # `roundtrip_model`'s autoencoder: the softness of the pictures that model draws
    roundtrip_prob: float = 0.0
    roundtrip_model: str = ""  # a shipped model's name or a model folder (needed when roundtrip_prob > 0)
    init_from: str = ""  # an upscaler folder to start from (a fine-tune); empty: a fresh network
    heldout: int = 200  # test images in the report
    report_steps: tuple[int, ...] = (1, 2, 4, 8)
    # sampling defaults written with the model; also the sampler of the held-out report. 32 euler_a steps: the
    # model's own pictures upscaled reach 0.81 of the sharpness of real renders of the same concepts and designs
    # (8 euler steps: 0.68; bench/upscaler.py, README)
    steps: int = 32
    sampler: str = "euler_a"
    noise_level: float = 0.0
    # back-project every step onto the low-resolution input (sample_upscale): +1.6 dB on held-out renders, but the
    # model's own soft pictures stay soft (sharpness 0.57 against 0.82; README), so not by default
    consistent: bool = False
    model: UpscalerConfig = field(default_factory=UpscalerConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=8000, batch_size=32, lr=4e-4, warmup_steps=200, decay_to=0.05, ema_decay=0.999, checkpoint_every=500,
        log_every=50, max_minutes=60.0, schedule_clock="time"))

    def settings(self) -> UpscaleSettings:
        """The sampling defaults written with the model (upscaler.json) and used by the held-out report."""
        return UpscaleSettings(self.steps, self.noise_level, self.sampler, self.consistent)


def load_upscaler_recipe(path: str | Path | None = "upscaler", overrides=()) -> UpscalerRecipe:
    from ..config import build_dataclass, read_toml
    from ..config_checks import validate_upscaler

    cfg = build_dataclass(UpscalerRecipe, read_toml(path or None, overrides))
    validate_upscaler(cfg)
    return cfg


# 1. ------------------------------------------------------------------------------------------------
def load_images(cfg: UpscalerRecipe, split: str, limit: int = 0) -> tuple[torch.Tensor, list[str]]:
    """(N, 3, S, S) uint8 images of one split at the data's own size, and each one's design."""
    from ..data.folder import images_to_tensor, load_caption_folder

    size = data_size(cfg)
    examples = load_caption_folder(cfg.data, size=size, split=split)
    if not cfg.skin_tones:
        examples = [e for e in examples if not e.meta.get("skin_tone")]
    if limit and len(examples) > limit:  # evenly spread: the split lists one design after another
        examples = [examples[i * len(examples) // limit] for i in range(limit)]
    if not examples:
        raise MinicreamError(f"{cfg.data}: no {split} images")
    return images_to_tensor(examples), [str(e.meta.get("style") or "-") for e in examples]


def data_size(cfg: UpscalerRecipe) -> int:
    info = Path(cfg.data) / "dataset_info.json"
    size = json.loads(info.read_text()).get("size") if info.is_file() else None
    if not isinstance(size, int):
        raise MinicreamError(f"{cfg.data}: not a dataset built by `minicream data emoji --size 256` (no size in "
                             "dataset_info.json)")
    if size % cfg.model.scale or size % cfg.model.multiple:
        raise MinicreamError(f"{cfg.data}: images of {size} px are not a whole x{cfg.model.scale} of a low-resolution "
                             f"image, or not a multiple of {cfg.model.multiple} (the network's levels)")
    return size


# 2. ------------------------------------------------------------------------------------------------
def roundtrips(images_uint8: torch.Tensor, cfg: UpscalerRecipe, log) -> torch.Tensor | None:
    """The low-resolution images through `roundtrip_model`'s autoencoder, once (uint8), or None when unused."""
    if cfg.roundtrip_prob <= 0:
        return None
    from ..io.model_dir import ModelDir, resolve_model
    from ..models.autoencoder import decode, encode, load_autoencoder

    t0 = time.time()
    vae = load_autoencoder(ModelDir.open(resolve_model(cfg.roundtrip_model)).vae).float().eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images_uint8), 256):
            low = to_uint8(downsample(to_unit_range(images_uint8[i:i + 256]), cfg.model.scale))
            out.append(decode(vae, encode(vae, low)))
    log(f"1. data: {len(images_uint8)} round trips through {cfg.roundtrip_model}'s autoencoder "
        f"({time.time() - t0:.0f}s)")
    return torch.cat(out)


def upscaler_task(images_uint8: torch.Tensor, cfg: UpscalerRecipe, roundtrip: torch.Tensor | None = None):
    """loss_fn(model, idx, gen) of the Trainer: one batch of crops."""
    scale = cfg.model.scale

    def loss_fn(model, idx, gen):
        high = to_unit_range(images_uint8[idx])
        low = downsample(high, scale)
        if roundtrip is not None and torch.rand((), generator=gen).item() < cfg.roundtrip_prob:
            low = to_unit_range(roundtrip[idx]).float()
        elif cfg.blur_prob > 0 and torch.rand((), generator=gen).item() < cfg.blur_prob:
            low = gaussian_blur(low, cfg.blur_max * torch.rand((), generator=gen).item())
        low = to_unit_range(to_uint8(low)).float()  # 8-bit, as every input image is
        # condition noise: half the batches clean, the rest uniform up to the largest level
        levels = torch.rand(len(idx), generator=gen) * cfg.model.max_noise_level
        levels = levels * (torch.rand(len(idx), generator=gen) < 0.5)
        loss = flow_loss(model, high, low, levels, gen, cfg.crop)
        return loss, {}

    return loss_fn


def train_upscaler(cfg: UpscalerRecipe, run: Path, log, resume: bool) -> Upscaler:
    images, _ = load_images(cfg, "train")
    log(f"1. data: {len(images)} images of {images.shape[-1]} px from {cfg.data}")
    model = Upscaler(cfg.model)
    if cfg.init_from:
        start = Upscaler.from_pretrained(cfg.init_from)
        if start.config != cfg.model:
            raise MinicreamError(f"init_from {cfg.init_from}: its network ({start.config}) is not the recipe's model")
        model.load_state_dict(start.state_dict())
        log(f"upscaler: starting from {cfg.init_from}")
    log(f"upscaler: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    return train_logged(model, upscaler_task(images, cfg, roundtrips(images, cfg, log)), len(images), cfg.train, run,
                        "upscaler", log, resume)[0]


# 4. ------------------------------------------------------------------------------------------------
def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean(dim=(1, 2, 3)).clamp(min=1e-9)
    return (10 * torch.log10(255.0 ** 2 / mse)).mean().item()


def _ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    return ssim(a.float() / 255, b.float() / 255, data_range=1.0).item()


def lanczos(low_uint8: torch.Tensor, scale: int) -> torch.Tensor:
    out = []
    for im in low_uint8:
        pil = Image.fromarray(im.permute(1, 2, 0).numpy()).resize((im.shape[-1] * scale, im.shape[-2] * scale),
                                                                 Image.LANCZOS)
        out.append(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))
    return torch.stack(out)


@torch.no_grad()
def upscale_uint8(model: Upscaler, low_uint8: torch.Tensor, settings: UpscaleSettings, seed: int = 0,
                  batch_size: int = 16) -> torch.Tensor:
    """Upscale uint8 images (N, 3, h, w) with seeded noise (image i: seed + i, euler_a's step noise too); bf16 where
    the CPU is fast at it."""
    from ..precision import fast_bf16

    s, bf16 = model.config.scale, fast_bf16()
    out = []
    for lo in range(0, len(low_uint8), batch_size):
        chunk = to_unit_range(low_uint8[lo:lo + batch_size]).float()
        gens = [torch.Generator().manual_seed(seed + lo + i) for i in range(len(chunk))]
        noise, level_noise = (torch.stack(x) for x in zip(*(start_noise(g, chunk.shape, s) for g in gens)))
        up = sample_upscale(model, chunk, noise, settings.steps, settings.noise_level, level_noise, bf16,
                            settings.sampler, gens, settings.consistent)
        out.append(to_uint8(up))
    return torch.cat(out)


def upscaler_report(model: Upscaler, cfg: UpscalerRecipe, steps_list=None,
                    settings: UpscaleSettings | None = None) -> dict:
    """Held-out figures: each method's PSNR / SSIM against the real high-resolution render, sharpness (Laplacian
    variance over the real images'), and seconds per image; the input is the real render's 8-bit downsample. The
    upscaler samples with `settings` (default: the recipe's) at each of `steps_list`'s step counts (default: the
    recipe's report_steps)."""
    from .decoder import laplacian_variance

    high, designs = load_images(cfg, "test", cfg.heldout)
    s = cfg.model.scale
    low = to_uint8(downsample(to_unit_range(high), s))
    real_sharp = laplacian_variance(high)
    settings = settings or cfg.settings()
    methods = {"bicubic": lambda: to_uint8(upsample(to_unit_range(low).float(), s)), "lanczos": lambda: lanczos(low, s)}
    for k in steps_list or cfg.report_steps:
        methods[f"upscaler_{k}"] = lambda k=k: upscale_uint8(model, low, replace(settings, steps=k))
    out = {"n": len(high), "size": int(high.shape[-1]), "noise_level": settings.noise_level,
           "sampler": settings.sampler, "consistent": settings.consistent, "methods": {}}
    for name, fn in methods.items():
        t0 = time.time()
        up = fn()
        dt = (time.time() - t0) / len(high)
        by_design = {}
        for d in sorted(set(designs)):
            sel = torch.tensor([x == d for x in designs])
            by_design[d] = round(_psnr(up[sel], high[sel]), 2)
        out["methods"][name] = {"psnr_db": round(_psnr(up, high), 2), "ssim": round(_ssim(up, high), 4),
                                "sharpness": round(laplacian_variance(up) / max(real_sharp, 1e-9), 3),
                                "seconds_per_image": round(dt, 4), "psnr_by_design": by_design}
    return out


# 3. ------------------------------------------------------------------------------------------------
def export_upscaler(model: Upscaler, cfg: UpscalerRecipe, folder: Path, report: dict | None = None) -> None:
    from ..config import config_to_dict

    model.save_pretrained(folder, dtype=torch.bfloat16)
    settings = {**asdict(cfg.settings()), "recipe": config_to_dict(cfg)}
    if report is not None:
        settings["report"] = report
    write_text_atomic(folder / "upscaler.json", json.dumps(settings, indent=1))


def run_upscaler(cfg: UpscalerRecipe, run_dir: str | Path, resume: bool = False) -> Path:
    from .recipe import RunLog

    run = Path(run_dir)
    if run.exists() and any(run.iterdir()) and not resume:
        raise MinicreamError(f"{run} is not empty; pass --resume to continue that run or choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    log = RunLog(run / "train_log.txt")
    log(f"upscaler start (resume={resume}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    folder = run / UPSCALER_DIR
    if stage_done(run, "export") is None:
        model = train_upscaler(cfg, run, log, resume)
        export_upscaler(model, cfg, folder)
        mark_done(run, "export", {})
        log(f"3. export: {folder}")
    if stage_done(run, "report") is None:
        model = Upscaler.from_pretrained(folder)
        report = upscaler_report(model, cfg)
        export_upscaler(model, cfg, folder, report)
        mark_done(run, "report", report)
        log(f"4. report: {json.dumps(report['methods'])}")
    return folder


# `minicream train` stage 8 ------------------------------------------------------------------------
def stage_recipe(cfg) -> UpscalerRecipe:
    """`minicream train` stage 8's upscaler recipe (a RecipeConfig's [upscaler] preset, data, steps, minutes and
    overrides), refused in one line before any training when its dataset's images are not the model's size times the
    upscaler's scale."""
    u = cfg.upscaler
    overrides = [f"data={u.data!r}"] if u.data else []
    overrides += [f"{key}={value}" for key, value in (("train.steps", u.steps), ("train.max_minutes", u.max_minutes))
                  if value]
    recipe = load_upscaler_recipe(u.preset, [*overrides, *u.overrides])
    want, have = cfg.data.size * recipe.model.scale, data_size(recipe)
    if have != want:
        raise MinicreamError(f"[upscaler] {recipe.data} has {have}-px images; this model draws {cfg.data.size} px, so "
                             f"its x{recipe.model.scale} upscaler trains on {want}-px ones (`minicream data emoji "
                             f"--size {want} --no-skin-tones DIR`)")
    return recipe


def train_stage(cfg, run: Path, model_dir: Path, log, resume: bool, state) -> None:
    """`minicream train` stage 8: the upscaler recipe run in `run/upscaler` (resumed where it stopped), copied without
    its checkpoints to `model_dir/upscaler`, its held-out report in the run's stages; once per run, in one process
    (`state`: Accelerate's; a multi-process launch says how to train it after)."""
    import shutil

    if state.num_processes > 1:
        if state.is_main_process:
            log(f"8. upscaler: skipped in a {state.num_processes}-process launch; run `minicream train-upscaler` and "
                f"copy its upscaler/ folder into {model_dir}")
        return
    if stage_done(run, "upscaler") is not None:
        return
    t0 = time.time()
    recipe, run_dir = stage_recipe(cfg), run / "upscaler"
    folder = run_upscaler(recipe, run_dir, resume=resume or run_dir.exists())
    target = model_dir / UPSCALER_DIR
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("checkpoints"))
    report = json.loads((target / "upscaler.json").read_text()).get("report", {})
    mark_done(run, "upscaler", {"report": report, "seconds": round(time.time() - t0, 1)})
    log(f"8. upscaler: {target} ({time.time() - t0:.0f}s)")


__all__ = ["UPSCALER_DIR", "UpscalerRecipe", "export_upscaler", "lanczos", "load_images", "load_upscaler_recipe",
           "run_upscaler", "stage_recipe", "train_stage", "upscale_uint8", "upscaler_report", "upscaler_task"]
