"""Build or load the denoiser named by `UNetConfig.arch`: minicream's MoE UNet or the stock diffusers UNet."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import MinicreamError
from ..io.atomic import read_json
from .stock_unet import StockUNet
from .unet import MoEUNet, UNetConfig

ARCHS = {"minicream": MoEUNet, "diffusers": StockUNet}


def build_unet(config: UNetConfig) -> nn.Module:
    return ARCHS[config.arch](config)


def load_unet(directory: str | Path, **kwargs) -> nn.Module:
    """from_pretrained of the class that config.json's `arch` names (minicream's when absent)."""
    try:
        arch = read_json(Path(directory) / "config.json").get("arch", "minicream")
    except (OSError, ValueError, AttributeError, MinicreamError):
        arch = "minicream"  # from_pretrained reports the missing or broken config.json clearly
    return ARCHS.get(arch, MoEUNet).from_pretrained(directory, **kwargs)
