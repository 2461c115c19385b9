"""Training checkpoints in safetensors, written atomically (a crash never leaves a half checkpoint).

    run/checkpoints/step_000500/  model.safetensors  ema.safetensors  optimizer.safetensors  state.json
state.json holds the step, the optimizer's non-tensor state and the RNG states are tensors in
optimizer.safetensors under "rng.*", so `--resume` continues exactly where the run stopped.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from ..errors import MinicreamError
from ..io.atomic import read_json
from ..io.weights import load_state_dict, save_state_dict


def _flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": opt_state["param_groups"], "state": {}}
    for idx, st in opt_state["state"].items():
        meta["state"][str(idx)] = {}
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{idx}.{name}"] = v.contiguous()
            else:
                meta["state"][str(idx)][name] = v
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {int(i): dict(v) for i, v in meta["state"].items()}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: Path, step: int, model_state: dict, ema_state: dict | None, optimizer,
                    rng: dict[str, torch.Tensor], extra: dict, keep: int = 2) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_state_dict({k: v.contiguous() for k, v in model_state.items()}, tmp / "model.safetensors")
    if ema_state is not None:
        save_state_dict(ema_state, tmp / "ema.safetensors")
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    opt_tensors.update({f"rng.{k}": v for k, v in rng.items()})
    save_state_dict(opt_tensors, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": opt_meta, **extra}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # atomic on POSIX: readers see the old or the complete new checkpoint
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((Path(run_dir) / "checkpoints").glob("step_*"))
    return found[-1] if found else None


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not (path / "state.json").is_file():
        raise MinicreamError(f"{path}: not a checkpoint (no state.json)")
    state = read_json(path / "state.json", "the checkpoint is damaged: delete that step_* folder to resume from the one before")
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or "optimizer" not in state:
        raise MinicreamError(f"{path / 'state.json'}: not a checkpoint state (no step / optimizer entries)")
    opt_tensors = load_state_dict(path / "optimizer.safetensors")
    return {
        "step": state["step"],
        "extra": {k: v for k, v in state.items() if k not in ("step", "optimizer")},
        "model": load_state_dict(path / "model.safetensors"),
        "ema": load_state_dict(path / "ema.safetensors") if (path / "ema.safetensors").exists() else None,
        "optimizer": _unflatten_optimizer(opt_tensors, state["optimizer"]),
        "rng": {k[4:]: v for k, v in opt_tensors.items() if k.startswith("rng.")},
    }
