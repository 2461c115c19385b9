"""Stage 3b: the decoder fine-tune. The autoencoder's decoder is trained further on its own, frozen latent space, as
Stable Diffusion's ft-MSE / ft-EMA decoders were: the encoder (so the latents, so the UNet's training data and every
UNet trained on them) is unchanged, and any model of that autoencoder takes the new decoder as it is.

Losses (config.DecoderSection): L1 + L2 in RGB, an L1 on chroma (each pixel minus its channel mean: the hue the
first autoencoder lost, greens turned brown), optionally an LPIPS-style distance over a frozen evaluator's image
tower (the only image network this project may use offline) and a small patch discriminator's hinge loss. The
decoder sees the posterior means, the latents the UNet was trained on.

One training loop (training/trainer.py) runs it, so it has the run folder's checkpoints, `--resume`, EMA and
progress bar. `minicream train-decoder --model M --out RUN` runs it on an exported model; `decoder.train.steps`
runs it as a recipe stage.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch.func import functional_call

from ..errors import MinicreamError
from ..models.autoencoder import decode, encode, to_unit_range
from .trainer import Trainer

LOGGED = ("l1", "mse", "chroma", "perceptual", "gan_g", "gan_d")  # the loss terms each log line shows
GREEN_MARGIN = 20  # a "clearly green" pixel: G above both R and B by this much (0..255)


class PatchCritic(nn.Module):
    """A small PatchGAN discriminator (pix2pix's, narrower): one real/fake logit per overlapping 16-px patch."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.GroupNorm(8, 2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 3, 1, 1), nn.GroupNorm(8, 4 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * width, 1, 3, 1, 1))

    def forward(self, x):
        return self.net(x)


class FeatureDistance(nn.Module):
    """LPIPS without learned weights: each stage of a frozen evaluator image tower, unit-normalised over channels,
    squared difference summed over channels and averaged over positions, summed over stages."""

    def __init__(self, evaluator_dir: str | Path):
        super().__init__()
        from ..evaluator.model import MiniCLIP

        self.tower = MiniCLIP.from_pretrained(evaluator_dir).float().eval().image_tower
        self.tower.requires_grad_(False)

    def features(self, x):
        h = F.silu(self.tower.stem(x))
        out = [h]
        for stage in self.tower.stages:
            h = stage(h)
            out.append(h)
        return [F.normalize(f.float(), dim=1) for f in out]

    def forward(self, a, b):
        return sum((fa - fb).pow(2).sum(dim=1).mean() for fa, fb in zip(self.features(a), self.features(b)))


class DecoderTuner(nn.Module):
    """What the trainer trains: the autoencoder with its encoder frozen, the critic (if any), the frozen feature net
    (if any). Only the decoder side and the critic have gradients."""

    def __init__(self, vae: AutoencoderKL, critic: PatchCritic | None, features: FeatureDistance | None):
        super().__init__()
        self.vae, self.critic, self.features = vae, critic, features
        for part in (vae.encoder, vae.quant_conv):
            part.requires_grad_(False)

    def forward(self, z):
        return self.vae.decode(z).sample


def chroma(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=1, keepdim=True)


def decoder_loss(images_uint8: torch.Tensor, latents: torch.Tensor, section):
    """`loss_fn(model, idx, gen)` for the trainer. latents: unscaled posterior means of `images_uint8`.
    The adversarial term reaches the decoder through the critic's detached weights, and the critic's own hinge loss
    sees detached reconstructions, so one optimizer steps both without either pulling the other's way."""

    def loss_fn(model, idx, gen):
        tuner = getattr(model, "module", model)
        x = to_unit_range(images_uint8[idx]).contiguous(memory_format=torch.channels_last)
        rec = model(latents[idx].contiguous(memory_format=torch.channels_last)).float()
        l1, l2 = (rec - x).abs().mean(), (rec - x).pow(2).mean()
        loss = l1 + l2
        logs = {"l1": l1.item(), "mse": l2.item()}
        if section.chroma_weight:
            c = (chroma(rec) - chroma(x)).abs().mean()
            loss = loss + section.chroma_weight * c
            logs["chroma"] = c.item()
        if tuner.features is not None:
            p = tuner.features(rec, x)
            loss = loss + section.perceptual_weight * p
            logs["perceptual"] = p.item()
        step = getattr(tuner, "step", 0)
        if tuner.critic is not None and step >= section.gan_start:
            frozen = {k: v.detach() for k, v in tuner.critic.named_parameters()}
            g = -functional_call(tuner.critic, frozen, (rec,)).float().mean()
            d = F.relu(1 - tuner.critic(x).float()).mean() + F.relu(1 + tuner.critic(rec.detach()).float()).mean()
            loss = loss + section.gan_weight * g + d
            logs.update({"gan_g": g.item(), "gan_d": d.item()})
        tuner.step = step + 1
        return loss, logs

    return loss_fn


def _build_tuner(vae: AutoencoderKL, section) -> DecoderTuner:
    features = None
    if section.perceptual_weight > 0:  # config_checks refuses a weight without an encoder
        from ..io.model_dir import evaluator_folder

        features = FeatureDistance(evaluator_folder(section.perceptual_encoder, "decoder.perceptual_encoder"))
    critic = PatchCritic() if section.gan_weight > 0 else None
    return DecoderTuner(vae, critic, features)


def finetune_decoder(vae: AutoencoderKL, images_uint8: torch.Tensor, section, run: Path, log, resume: bool = False,
                     cpu: bool | None = None) -> AutoencoderKL:
    """Fine-tune `vae`'s decoder on `images_uint8` (N, 3, H, W); checkpoints in run/decoder. Returns the autoencoder
    (EMA weights when decoder.train.ema_decay > 0) with the encoder and scaling factor untouched."""
    t0 = time.time()
    latents = encode(vae.float(), images_uint8) / vae.config.scaling_factor
    log(f"decoder: {len(images_uint8)} images encoded once ({time.time() - t0:.1f}s)")
    tuner = _build_tuner(vae, section)
    tr = section.train
    trainer = Trainer(tuner, decoder_loss(images_uint8, latents, section), len(images_uint8), tr, run, "decoder", cpu=cpu,
                      log_fn=lambda s, r: log(f"decoder step {s}/{tr.steps} loss {r['loss_avg']:.4f} {r['samples_per_s']:.0f} "
                                              "samples/s " + " ".join(f"{k} {r[k]:.4f}" for k in LOGGED if k in r)))
    if resume and trainer.resume():
        tuner.step = trainer.step
        log(f"decoder: resumed at step {trainer.step}")
    stats = trainer.train()
    log(f"decoder: {stats['steps']} steps in {stats['seconds']:.0f}s")
    return trainer.final_model().vae.float().eval()


@torch.no_grad()
def reconstruction_report(vae: AutoencoderKL, images_uint8: torch.Tensor, designs: list[str]) -> dict:
    """Held-out round trip at the images' size: PSNR over all images and per design, the share of clearly green
    real pixels that stay green-dominant ("green_kept"; the hue the first full autoencoder lost), and sharpness: the
    variance of the Laplacian of the round trip over that of the real images (1 = as sharp; blur is below 1)."""
    rec = decode(vae, encode(vae, images_uint8))
    a, b = images_uint8.float(), rec.float()
    mse = (a - b).pow(2).mean(dim=(1, 2, 3)).clamp(min=1e-9)
    per_image = 10 * torch.log10(255.0 ** 2 / mse)
    r, g, bl = a[:, 0], a[:, 1], a[:, 2]
    green = (g > r + GREEN_MARGIN) & (g > bl + GREEN_MARGIN)
    kept = (b[:, 1] > b[:, 0]) & (b[:, 1] > b[:, 2])
    out = {"psnr_db": round(per_image.mean().item(), 2), "n": len(images_uint8),
           "green_kept": round(kept[green].float().mean().item(), 3) if green.any() else None,
           "sharpness": round(laplacian_variance(b) / max(laplacian_variance(a), 1e-9), 3), "by_design": {}}
    for d in sorted(set(designs)):
        sel = torch.tensor([x == d for x in designs])
        out["by_design"][d] = round(per_image[sel].mean().item(), 2)
    return out


def laplacian_variance(images: torch.Tensor) -> float:
    """Mean over images of the variance of the 3x3 Laplacian of the grey image (float 0..255, (N, 3, H, W))."""
    grey = images.float().mean(dim=1, keepdim=True)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return F.conv2d(grey, kernel).var(dim=(1, 2, 3)).mean().item()


def heldout_split(cfg) -> tuple[torch.Tensor, list[str]]:
    """The dataset's test images (the training split where there is none) and each one's design."""
    from ..data.folder import images_to_tensor, load_caption_folder

    root = cfg.data.folder()
    try:
        test = load_caption_folder(root, size=cfg.data.size, split="test")
    except MinicreamError:
        test = load_caption_folder(root, size=cfg.data.size, split="train")[:512]
    if not cfg.data.skin_tones:
        test = [e for e in test if not e.meta.get("skin_tone")]
    return images_to_tensor(test), [str(e.meta.get("style") or "-") for e in test]


def finetune_and_report(vae: AutoencoderKL, images_uint8: torch.Tensor, cfg, run: Path, log, resume: bool = False,
                        cpu: bool | None = None) -> tuple[AutoencoderKL, dict, dict]:
    """finetune_decoder with the recipe's settings (cfg.decoder), and the held-out figures before and after."""
    test, designs = heldout_split(cfg)
    before = reconstruction_report(vae, test, designs)
    log(f"decoder: held-out before {before}")
    vae = finetune_decoder(vae, images_uint8, cfg.decoder, run, log, resume, cpu)
    after = reconstruction_report(vae, test, designs)
    log(f"decoder: held-out after {after}")
    return vae, before, after


def finetune_model_decoder(model: str | Path, out: str | Path, overrides: list[str] | tuple[str, ...] = (),
                           resume: bool = False, cpu: bool | None = None) -> Path:
    """`minicream train-decoder`: an exported model's decoder fine-tuned on the data of its recipe (`overrides`, as
    `--set`: `decoder.*` settings, or `data.*` ones, e.g. data.concepts=[] for every concept's images). Writes OUT/model, the same model with the new decoder (its model_index.json
    records the stage's settings and the held-out figures before and after); checkpoints in OUT/decoder."""
    import json
    import shutil

    from ..config import RecipeConfig, apply_overrides, build_dataclass, config_to_dict
    from ..config_checks import validate_config
    from ..data.folder import images_to_tensor
    from ..io.atomic import read_json, write_text_atomic
    from ..io.model_dir import MAX_INDEX_BYTES, MODEL_INDEX, SHIPPED, resolve_model
    from ..models.autoencoder import load_autoencoder, save_autoencoder
    from .recipe import RunLog, load_training_data
    from .stages import mark_done, stage_done

    src, run = resolve_model(model), Path(out)
    if not (src / MODEL_INDEX).is_file():
        raise MinicreamError(f"--model {model}: neither a shipped model's name ({', '.join(SHIPPED)}) nor a model "
                             f"folder (no {MODEL_INDEX})")
    if run.exists() and any(run.iterdir()) and not resume:
        raise MinicreamError(f"{run} is not empty; pass --resume to continue that run or choose another --out")
    index = read_json(src / MODEL_INDEX, max_bytes=MAX_INDEX_BYTES)
    recipe = json.loads(json.dumps(index.get("recipe") or {}))
    recipe.pop("decoder", None)  # the settings of an earlier fine-tune are not this one's
    apply_overrides(recipe, overrides)  # decoder.* settings, or data.* to train on other images
    cfg = build_dataclass(RecipeConfig, recipe)
    validate_config(cfg)
    if cfg.decoder.train.steps <= 0:
        raise MinicreamError("train-decoder: give --steps or --minutes")
    run.mkdir(parents=True, exist_ok=True)
    log = RunLog(run / "train_log.txt")
    log(f"decoder fine-tune of {src} (resume={resume}): {json.dumps(config_to_dict(cfg.decoder))}")
    if stage_done(run, "decoder") is None:
        examples, scenes = load_training_data(cfg, log)
        vae, before, after = finetune_and_report(load_autoencoder(src / "vae"), images_to_tensor(examples + scenes),
                                                 cfg, run, log, resume, cpu)
        dst = run / "model"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
        save_autoencoder(vae, dst / "vae", dtype=torch.bfloat16)
        # the recipe stays the one the UNet was trained by; the fine-tune's own settings and images go beside it
        index.setdefault("recipe", {})["decoder"] = config_to_dict(cfg.decoder)
        index["decoder_finetune"] = {"from": str(src), "data": config_to_dict(cfg.data), "before": before, "after": after}
        write_text_atomic(dst / MODEL_INDEX, json.dumps(index, indent=1))
        mark_done(run, "decoder", {"before": before, "after": after})
    return run / "model"
