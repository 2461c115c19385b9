"""Resuming a fine-tuning run: the trained tensors and AdamW's moments in one safetensors file, with the step and
the run's settings in its metadata. Every step draws from a generator seeded by (seed, step), so a resumed run
continues exactly as an uninterrupted one would."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import MinicreamError
from ..io.weights import check_safetensors, load_state_dict, read_metadata, save_state_dict

NAME = "checkpoint.safetensors"


def save(folder: Path, step: int, settings: dict, params: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> None:
    state = {f"param.{k}": p.detach().float().contiguous() for k, p in params.items()}
    for k, p in params.items():
        for key, value in opt.state.get(p, {}).items():
            state[f"adam.{key}.{k}"] = torch.as_tensor(value).detach().float().reshape(-1) if key == "step" else value.detach()
    save_state_dict(state, folder / NAME, metadata={"step": str(step), "settings": json.dumps(settings, sort_keys=True)})


def load(folder: Path, settings: dict, params: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> int:
    """The step to continue from (0 when there is no checkpoint); refuses a checkpoint of other settings."""
    path = folder / NAME
    if not path.is_file():
        return 0
    check_safetensors(path)
    meta = read_metadata(path)
    if json.loads(meta.get("settings", "{}")) != json.loads(json.dumps(settings, sort_keys=True)):
        raise MinicreamError(f"{path}: made with other settings (images, method, token, rank, steps...); "
                             "run again without --resume to start over")
    state = load_state_dict(path)
    with torch.no_grad():
        for k, p in params.items():
            if f"param.{k}" not in state:
                raise MinicreamError(f"{path}: lacks {k}; run again without --resume to start over")
            p.copy_(state[f"param.{k}"].to(p.dtype))
            moments = {key: state[f"adam.{key}.{k}"] for key in ("exp_avg", "exp_avg_sq", "step") if f"adam.{key}.{k}" in state}
            if moments:
                moments["step"] = moments["step"].reshape(())
                opt.state[p] = moments
    return int(meta["step"])
