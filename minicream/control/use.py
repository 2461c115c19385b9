"""ControlNets at sampling time: a model folder's control/<kind>/ networks, the call's control images turned into hints,
and the residuals they add to the UNet (several controls stack by summing their scaled residuals).

A ControlNet was trained for one UNet: control.json records that UNet's hash, and a ControlNet made for another
model (or for an earlier sitting of this one) is refused in one line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import MinicreamError
from ..io.atomic import read_json
from ..io.imagefile import pixels_sha
from ..models.controlnet import KINDS, ControlNet, combine
from ..io.model_dir import CONTROL_DIR, CONTROL_SETTINGS
from .hints import PREPROCESS, to_hint

MAX_CONTROLS = 4
MAX_SCALE = 2.0


def kinds(pipe) -> list[str]:
    """The ControlNets this model has (its folder's control/<kind>/), in KINDS order."""
    root = pipe.model_dir / CONTROL_DIR
    return [k for k in KINDS if (root / k / "config.json").is_file()]


def load_controlnet(pipe, kind: str) -> ControlNet:
    """The model's ControlNet of `kind`, loaded once per pipeline in the UNet's dtype."""
    cache = pipe.__dict__.setdefault("_controlnets", {})
    if kind not in cache:
        have = kinds(pipe)
        if kind not in have:
            raise MinicreamError(f"{pipe.model_dir.name} has no {kind!r} ControlNet" + (
                f"; it has {', '.join(have)}" if have else " (train one with `minicream train-control`)"))
        folder = pipe.model_dir / CONTROL_DIR / kind
        made_for = read_json(folder / CONTROL_SETTINGS).get("model_hash") if (folder / CONTROL_SETTINGS).is_file() else None
        if made_for != pipe.model_hash:
            raise MinicreamError(f"{folder}: this ControlNet was trained for another UNet (hash {made_for}, the model's "
                                 f"is {pipe.model_hash}); train it again with `minicream train-control`")
        cache[kind] = ControlNet.from_pretrained(folder).to(pipe.device, dtype=pipe.unet_dtype,
                                                            memory_format=torch.channels_last)
    return cache[kind]


@dataclass
class Control:
    """The call's controls: one ControlNet, hint (1, 1, S, S), scale and steering window each, the same for every
    image. A control steers while the schedule's progress 1 - t/T lies in its [start, end] (diffusers'
    control_guidance_start / _end, by noise level): the structure is set at high noise, and with end < 1 the text
    alone draws the last details."""

    nets: list[ControlNet]
    hints: list[torch.Tensor]
    scales: list[float]
    records: list[dict]  # what the PNG records of each: kind, scale, preprocess, the hint's sha256, start, end
    windows: list[tuple[float, float]]  # (start, end) of each
    num_train_timesteps: int

    def residuals(self, x, t, hidden, mask, pooled):
        """The summed scaled residuals of the controls steering at t, or None when none does (the plain UNet)."""
        progress = 1.0 - float(t.max()) / self.num_train_timesteps
        on = [i for i, (a, b) in enumerate(self.windows) if a <= progress <= b]
        if not on:
            return None
        parts = [self.nets[i](x, t, hidden, mask, pooled, self.hints[i].to(x.device).expand(len(x), -1, -1, -1))
                 for i in on]
        return combine(parts, [self.scales[i] for i in on])


def _as_list(value, n: int, name: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise MinicreamError(f"{name}: give one value, or one per control image ({n}), got {len(values)}")
    return values


def read_hint(image, size: int, preprocess: str) -> torch.Tensor:
    """A control image (a PIL image or a path) -> its (1, S, S) hint (hints.to_hint)."""
    from ..editing import open_image

    return to_hint(open_image(image, "control image"), size, preprocess)


def hint_sha(hint: torch.Tensor) -> str:
    return pixels_sha((hint * 255).round().to(torch.uint8))


def build_control(pipe, images, kind=None, scale=1.0, preprocess="none", start=0.0, end=1.0) -> Control | None:
    """The call's Control from its control image(s) (a PIL image or path, or a list of them), each one's kind (default:
    the model's first ControlNet), scale (0-2), preprocessing ("none": a drawing or edge map as it is; "edges": a
    picture whose edges are taken) and steering window (start < end, shares of the schedule from pure noise);
    None when no control image is given."""
    if images is None:
        return None
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    if not images or len(images) > MAX_CONTROLS:
        raise MinicreamError(f"give 1 to {MAX_CONTROLS} control images, got {len(images)}")
    if kind is None:
        have = kinds(pipe)
        if not have:
            raise MinicreamError(f"{pipe.model_dir.name} has no ControlNet (train one with `minicream train-control`)")
        kind = have[0]
    kinds_, scales, preps, starts, ends = (_as_list(v, len(images), n) for v, n in (
        (kind, "control_kind"), (scale, "control_scale"), (preprocess, "control_preprocess"),
        (start, "control_start"), (end, "control_end")))
    out = Control([], [], [], [], [], pipe.index["objective"].get("num_train_timesteps", 1000))
    for image, k, s, p, a, b in zip(images, kinds_, scales, preps, starts, ends):
        if k not in KINDS:
            raise MinicreamError(f"control_kind must be one of {', '.join(KINDS)}, got {k!r}")
        if p not in PREPROCESS:
            raise MinicreamError(f"control_preprocess must be one of {', '.join(PREPROCESS)}, got {p!r}")
        for value, name, top in ((s, "control_scale", MAX_SCALE), (a, "control_start", 1.0), (b, "control_end", 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= float(value) <= top:
                raise MinicreamError(f"{name} must be a number from 0 to {top:g}, got {value!r}")
        if float(a) >= float(b):
            raise MinicreamError(f"control_start ({a:g}) must be below control_end ({b:g})")
        net = load_controlnet(pipe, k)
        hint = read_hint(image, pipe.image_size, p)
        out.nets.append(net)
        out.hints.append(hint[None])
        out.scales.append(float(s))
        out.windows.append((float(a), float(b)))
        out.records.append({"kind": k, "scale": float(s), "preprocess": p, "sha256": hint_sha(hint),
                            "start": float(a), "end": float(b)})
    return out


__all__ = ["MAX_CONTROLS", "MAX_SCALE", "Control", "build_control", "hint_sha", "kinds", "load_controlnet", "read_hint"]
