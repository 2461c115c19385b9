"""The latent autoencoder: a diffusers `AutoencoderKL`, small enough to train on a CPU in minutes.

64 px RGB -> 16x16x4 latents by default (two downsamplings). The scaling factor that brings latents to
unit variance is measured on the training data after the autoencoder is trained (as SD did for its VAE)
and stored in the autoencoder's config.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ..errors import MinicreamError
from ..io.atomic import read_json
from ..io.weights import load_state_dict, save_state_dict
from ..precision import fast_bf16
from .base import WEIGHTS_NAME


@dataclass
class AEConfig:
    channels: tuple[int, ...] = (32, 64, 128)  # one entry per level; len-1 downsamplings (3 -> 4x)
    layers_per_block: int = 1
    latent_channels: int = 4
    mid_attention: bool = False  # attention at 16x16 costs more than it gives on emoji-sized images


def build_autoencoder(cfg: AEConfig) -> AutoencoderKL:
    n = len(cfg.channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels, norm_num_groups=min(32, cfg.channels[0] // 2),
        mid_block_add_attention=cfg.mid_attention, scaling_factor=1.0,
    )


def save_autoencoder(vae: AutoencoderKL, directory: str | Path, dtype: torch.dtype | None = None) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None else v).contiguous() for k, v in vae.state_dict().items()}
    save_state_dict(state, directory / WEIGHTS_NAME)
    (directory / "config.json").write_text(json.dumps(dict(vae.config), indent=2, default=list))


def load_autoencoder(directory: str | Path) -> AutoencoderKL:
    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise MinicreamError(f"{cfg_path}: missing autoencoder config.json")
    data = read_json(cfg_path)
    if not isinstance(data, dict):
        raise MinicreamError(f"{cfg_path}: expected a JSON object of AutoencoderKL settings")
    config = {k: v for k, v in data.items() if not k.startswith("_")}
    try:
        vae = AutoencoderKL.from_config(config)
    except (TypeError, ValueError, AttributeError, KeyError, RuntimeError) as e:
        raise MinicreamError(f"{cfg_path}: invalid autoencoder settings ({str(e).splitlines()[0][:160]})") from None
    state = load_state_dict(directory / WEIGHTS_NAME)
    try:
        vae.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:
        raise MinicreamError(f"{directory / WEIGHTS_NAME}: weights do not match config.json ({str(e).splitlines()[0]})") from None
    return vae.eval()


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def encode(vae: AutoencoderKL, images_uint8: torch.Tensor, batch_size: int = 256, sample: bool = False,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (N,3,H,W) -> scaled latents (N,C,h,w), float32. Mean of the posterior unless `sample`."""
    out = []
    for i in range(0, len(images_uint8), batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=images_uint8.device.type == "cpu" and fast_bf16("cpu")):
            dist = vae.encode(to_unit_range(images_uint8[i:i + batch_size])).latent_dist
        z = dist.sample(generator) if sample else dist.mean
        out.append(z.float())
    return torch.cat(out) * vae.config.scaling_factor


@torch.no_grad()
def decode(vae: AutoencoderKL, latents: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """scaled latents -> uint8 images."""
    out = []
    for i in range(0, len(latents), batch_size):
        with torch.autocast(latents.device.type, dtype=torch.bfloat16, enabled=fast_bf16(latents.device)):
            x = vae.decode(latents[i:i + batch_size] / vae.config.scaling_factor).sample
        out.append(to_uint8(x))
    return torch.cat(out)


def psnr(a_uint8: torch.Tensor, b_uint8: torch.Tensor) -> float:
    mse = (a_uint8.float() - b_uint8.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(255.0 ** 2 / mse)).item()
