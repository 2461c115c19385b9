"""`config.json` + safetensors checkpoints for our own modules, like diffusers' save/from_pretrained."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from ..errors import MinicreamError
from ..io.atomic import read_json
from ..io.weights import load_state_dict, save_state_dict

WEIGHTS_NAME = "model.safetensors"


def config_from_dict(cls, data: dict, where: str):
    """Build dataclass `cls` from `data`, refusing unknown keys (a typo must not be silently ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise MinicreamError(f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; known: {', '.join(sorted(names))}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise MinicreamError(f"{where}: {e}") from None


class PretrainedMixin:
    """Needs `config_class` (a dataclass) and `self.config`."""

    config_class: type

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous() for k, v in self.state_dict().items()}
        save_state_dict(state, directory / WEIGHTS_NAME)
        (directory / "config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
        directory = Path(directory)
        cfg_path = directory / "config.json"
        if not cfg_path.is_file():
            raise MinicreamError(f"{cfg_path}: missing config.json; is {directory} a saved {cls.__name__}?")
        data = read_json(cfg_path)  # bounded: a huge or deeply nested file is a one-line error
        if not isinstance(data, dict):
            raise MinicreamError(f"{cfg_path}: expected a JSON object of {cls.config_class.__name__} fields")
        config = config_from_dict(cls.config_class, data, str(cfg_path))
        try:
            model = cls(config)
        except (TypeError, ValueError, AttributeError, RuntimeError) as e:  # e.g. "head_dim": "64"
            raise MinicreamError(f"{cfg_path}: invalid values ({str(e).splitlines()[0][:160]})") from None
        state = load_state_dict(directory / WEIGHTS_NAME)
        try:
            missing, unexpected = model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, strict=False)
        except RuntimeError as e:  # tensor shapes differ from what config.json describes
            raise MinicreamError(f"{directory / WEIGHTS_NAME}: weights do not match config.json ({str(e).splitlines()[-1].strip()})") from None
        if missing or unexpected:
            raise MinicreamError(f"{directory / WEIGHTS_NAME}: weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.to(dtype).eval()
