"""What `--resume` must refuse: a run continued with another model or data config, or on another dataset.

Only the length of training, logging and stage 7 may change between sittings (`--resume --steps N` continues
training); anything else would pair the run's autoencoder, cached latents and checkpoints with something else.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..config import RecipeConfig, config_to_dict
from ..errors import MinicreamError

# Dotted keys (a prefix ending in "." covers a section) that may differ when a run is resumed.
MAY_CHANGE = ("autoencoder.train.steps", "autoencoder.train.max_minutes", "autoencoder.train.checkpoint_every",
              "autoencoder.train.log_every", "unet.train.steps", "unet.train.max_minutes",
              "unet.train.checkpoint_every", "unet.train.log_every", "decoder.train.steps", "decoder.train.max_minutes",
              "decoder.train.checkpoint_every", "decoder.train.log_every", "evaluator.", "sample.", "upscaler.")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, (list, tuple)) else v
    return out


def config_differences(saved_toml: str, cfg: RecipeConfig, may_change: tuple[str, ...] = MAY_CHANGE) -> list[str]:
    """Fields (other than `may_change`) whose value in `cfg` differs from the saved run config. A field the saved
    config lacks (written by an older version) counts with its default."""
    new = _flat(json.loads(json.dumps(config_to_dict(cfg))))
    old = {**_flat(json.loads(json.dumps(config_to_dict(RecipeConfig())))), **_flat(tomllib.loads(saved_toml))}
    keys = sorted(set(old) | set(new))
    return [f"{k} ({old.get(k)!r} in the run, {new.get(k)!r} now)" for k in keys
            if old.get(k) != new.get(k) and not any(k == m or (m.endswith(".") and k.startswith(m)) for m in may_change)]


def data_fingerprint(root: Path) -> str:
    """sha256 of a dataset folder's captions: its metadata.jsonl files, else the names and sizes of its files."""
    h = hashlib.sha256()
    metas = sorted(root.rglob("metadata.jsonl"))
    for p in metas:
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    if not metas:
        for p in sorted(x for x in root.rglob("*") if x.is_file()):
            h.update(f"{p.relative_to(root)}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()


def check_resume(run: Path, cfg: RecipeConfig) -> None:
    """Refuse, naming the differing fields, before anything of the run is loaded or overwritten."""
    from .checkpoint import latest_checkpoint

    saved = run / "config.toml"
    # Before the first UNet checkpoint the UNet (and a warm start) may still be chosen anew: only the
    # autoencoder, the cached latents and the data are kept then.
    may_change = MAY_CHANGE + (("unet.", "init_from") if latest_checkpoint(run / "unet") is None else ())
    if saved.is_file():
        try:
            differ = config_differences(saved.read_text(), cfg, may_change)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise MinicreamError(f"{saved}: unreadable ({e}); start a new run with another --out") from None
        if differ:
            raise MinicreamError(f"--resume: {run} was started with another config: {'; '.join(differ[:6])}"
                                 + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
                                 + "; start a new run with another --out")
    check_data(run, cfg)


def check_data(run: Path, cfg: RecipeConfig) -> None:
    """The run's dataset fingerprint (stage 1) against the dataset as it is now."""
    stage = run / "stages" / "data.json"
    if not stage.is_file():
        return
    try:
        old = json.loads(stage.read_text()).get("fingerprint")
    except (ValueError, AttributeError):
        old = None
    root = cfg.data.folder()
    if old and root.is_dir() and data_fingerprint(root) != old:
        raise MinicreamError(f"--resume: the dataset in {root} is not the one this run was trained on "
                             "(its captions changed); start a new run with another --out")
