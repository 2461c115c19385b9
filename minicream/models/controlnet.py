"""ControlNet for the MoE UNet (Zhang & Agrawala 2023): structure from an edge map or a drawing.

    hint image (B,1,S,S) --hint encoder (3x3 convs, stride 2 down to the UNet's top grid, last conv zero)--+
    latents --conv_in (a trainable copy) ------------------------------------------------------------------+--> the
    copied down path and mid block --> one zero-initialised 1x1 conv per skip and one for the mid block --> residuals

The residuals are added to the frozen UNet's skip connections and mid block (MoEUNet.forward's `control`), scaled by
the control's strength; several ControlNets stack by summing their scaled residuals (diffusers' MultiControlNet).
Every output conv starts at zero, so an untrained ControlNet leaves the UNet's output unchanged, and training starts
from the UNet's own encoder weights (`ControlNet.from_unet`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import MinicreamError
from .base import PretrainedMixin
from .layers import zero_init
from .unet import MoEUNet, UNetConfig

KINDS = ("edges", "scribble")  # what a ControlNet is trained on (control/hints.py makes both from the images)


@dataclass
class ControlNetConfig:
    unet: dict = field(default_factory=dict)  # the UNet's config (UNetConfig's fields): the encoder copied from it
    image_size: int = 64  # the hint's side in pixels (the model's image size)
    hint_channels: int = 1
    hint_width: int = 32  # the hint encoder's first convs (wider deeper down, as ControlNet's 16-32-96-256)
    kind: str = "edges"  # one of KINDS

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def unet_config(self) -> UNetConfig:
        return UNetConfig(**self.unet)

    @property
    def factor(self) -> int:
        """Hint pixels per cell of the UNet's top grid (a power of two)."""
        u = self.unet_config
        f = self.image_size // (u.sample_size // u.patch_size)
        if f < 1 or 2 ** round(math.log2(f)) != f or f * (u.sample_size // u.patch_size) != self.image_size:
            raise ValueError(f"image_size {self.image_size} is not a power-of-two multiple of the UNet's top grid")
        return f


def hint_encoder(cin: int, width: int, cout: int, factor: int) -> nn.Sequential:
    """(B,cin,S,S) -> (B,cout,S/factor,S/factor); the last conv is zero, so it adds nothing before training."""
    layers, c = [nn.Conv2d(cin, width, 3, padding=1), nn.SiLU()], width
    for _ in range(int(math.log2(factor))):
        nxt = min(4 * width, 2 * c)
        layers += [nn.Conv2d(c, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, nxt, 3, padding=1, stride=2), nn.SiLU()]
        c = nxt
    return nn.Sequential(*layers, zero_init(nn.Conv2d(c, cout, 3, padding=1)))


class ControlNet(nn.Module, PretrainedMixin):
    config_class = ControlNetConfig

    def __init__(self, config: ControlNetConfig):
        super().__init__()
        self.config = config
        ucfg = config.unet_config
        if ucfg.arch != "minicream":
            raise ValueError("ControlNet is built for the minicream UNet (arch 'minicream')")
        self.encoder = MoEUNet(ucfg)  # a copy of the UNet whose up path is dropped: its conditioning and encode()
        del self.encoder.up, self.encoder.norm_out, self.encoder.conv_out
        self.hint = hint_encoder(config.hint_channels, config.hint_width, ucfg.channels[0], config.factor)
        self.zero_skips = nn.ModuleList(zero_init(nn.Conv2d(c, c, 1)) for c in self.encoder.skip_channels)
        self.zero_mid = zero_init(nn.Conv2d(ucfg.channels[-1], ucfg.channels[-1], 1))

    @classmethod
    def from_unet(cls, unet: MoEUNet, kind: str = "edges", image_size: int = 64, hint_width: int = 32) -> "ControlNet":
        """A ControlNet whose encoder starts as a copy of `unet`'s (its hint encoder and output convs at zero)."""
        import dataclasses

        if not isinstance(unet, MoEUNet):
            raise MinicreamError("ControlNet needs the minicream UNet (arch 'minicream'); this model's is another")
        net = cls(ControlNetConfig(unet=dataclasses.asdict(unet.config), image_size=image_size, kind=kind,
                                   hint_width=hint_width))
        own = net.encoder.state_dict()
        net.encoder.load_state_dict({k: v for k, v in unet.state_dict().items() if k in own}, strict=True)
        return net

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor,
                hint: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x, t, context, mask, pooled as MoEUNet's; hint (B, hint_channels, S, S) in [0, 1] (1 = a line).
        Returns the residuals for MoEUNet.forward's `control`: one per skip, one for the mid block."""
        cond = self.encoder.conditioning(x, t, context, mask, pooled)
        skips, mid = self.encoder.encode(x, cond, self.hint(hint.to(x.dtype) * 2 - 1))
        return [z(s) for z, s in zip(self.zero_skips, skips)], self.zero_mid(mid)


def combine(parts: list[tuple[list[torch.Tensor], torch.Tensor]], scales: list[float]):
    """Several ControlNets' residuals, each times its scale, summed (None when there are none)."""
    if not parts:
        return None
    skips = [sum(s * p[0][i] for p, s in zip(parts, scales)) for i in range(len(parts[0][0]))]
    return skips, sum(s * p[1] for p, s in zip(parts, scales))


__all__ = ["KINDS", "ControlNet", "ControlNetConfig", "combine"]
