"""Adapters on a Pipeline, as diffusers names it: `load_adapter(path, scale=...)`, `set_adapters([...], weights=[...])`,
`unload_adapter(name=None)`. `Pipeline` inherits `AdapterMixin`.

Scales apply to LoRA adapters (0 = off, 1 = as trained, up to MAX_SCALE); a textual-inversion adapter is a new word,
on whenever a prompt uses it, so its scale is 1. Every loaded adapter is recorded in the PNGs drawn with it (name,
hash, scale, token, folder: `records`), which is what `generate --from` checks before a re-run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import MinicreamError
from ..io.weights import load_state_dict
from . import embedding, lora
from .format import EMBEDS_NAME, PEFT_WEIGHTS, TEXT_DIR, AdapterInfo, adapter_files, adapter_hash

MAX_SCALE = 2.0
PEFT_PREFIX = "base_model.model."  # PeftModel.save_pretrained's key prefix


@dataclass
class LoadedAdapter:
    name: str
    path: Path
    info: AdapterInfo
    hash: str
    scale: float

    @property
    def key(self) -> str:
        """The adapter's name inside PEFT's layers: a module name ("train" or "a.b" would not do)."""
        return "adapter_" + re.sub(r"\W", "_", self.name)


def has_word(info: AdapterInfo) -> bool:
    """Whether the adapter adds its token to the text encoder as a learnt word (textual inversion, pivotal LoRA)."""
    return info.method == "textual-inversion" or info.vectors > 0


def check_scale(scale, name: str) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 <= float(scale) <= MAX_SCALE:
        raise MinicreamError(f"adapter {name!r}: scale must be a number in 0..{MAX_SCALE:g}, got {scale!r}")
    return float(scale)


def read_adapter(path: str | Path, model_hash: str, model_name: str) -> tuple[AdapterInfo, str]:
    """(info, hash) of an adapter folder made for this model; a one-line error for anything else."""
    path = Path(path)
    if not path.is_dir():
        raise MinicreamError(f"{path}: adapter folder not found")
    info = AdapterInfo.read(path)
    if info.base_model_hash != model_hash:
        raise MinicreamError(f"{path}: this adapter was made for another model ({info.base_model or '?'}, UNet hash "
                             f"{info.base_model_hash}); this model is {model_name} ({model_hash})")
    return info, adapter_hash(path, info)


def peft_state(path: Path) -> dict[str, torch.Tensor]:
    """PEFT's saved LoRA weights with their PeftModel key prefix taken off (the keys `set_peft_model_state_dict` reads)."""
    return {k.removeprefix(PEFT_PREFIX): v for k, v in load_state_dict(path).items()}


class AdapterMixin:
    @property
    def adapters(self) -> dict[str, LoadedAdapter]:
        if "_adapters" not in self.__dict__:
            self._adapters = {}
        return self._adapters

    def load_adapter(self, path: str | Path, scale: float = 1.0, name: str | None = None) -> str:
        """Load an adapter folder made by `minicream finetune` for this model; returns its name (default: the
        folder's name). It is active at `scale` at once; `set_adapters` changes the mix."""
        path = Path(path)
        name = name or path.resolve().name
        scale = check_scale(scale, name)
        info, digest = read_adapter(path, self.model_hash, self.model_dir.name)
        if name in self.adapters:
            raise MinicreamError(f"an adapter named {name!r} is already loaded; unload it first or give another name")
        same = [a.name for a in self.adapters.values() if a.info.token.lower() == info.token.lower()]
        if same:
            raise MinicreamError(f"adapters {same[0]!r} and {name!r} both use the token {info.token!r}; load one of them")
        if info.method == "textual-inversion" and scale != 1.0:
            raise MinicreamError(f"adapter {name!r} is a textual inversion (a new word): it has no scale")
        rows = None
        if has_word(info):
            rows = load_state_dict(path / EMBEDS_NAME)
            if list(rows) != [info.token]:
                raise MinicreamError(f"{path / EMBEDS_NAME}: holds {list(rows)[:3]}, not the token {info.token!r}")
        if info.method != "textual-inversion":
            adapter_files(path, info)
            key = LoadedAdapter(name, path, info, digest, scale).key
            if key in {a.key for a in self.adapters.values()}:
                raise MinicreamError(f"an adapter with a name like {name!r} is already loaded; give this one another name")
            regex = lora.target_regex(info.targets)
            lora.inject(self.unet, lora.lora_config(info.rank, info.alpha, regex), key, peft_state(path / PEFT_WEIGHTS))
            if info.text_encoder:
                try:
                    lora.inject(self.text_encoder.model, lora.lora_config(info.rank, info.alpha, lora.TEXT_TARGETS), key,
                                peft_state(path / TEXT_DIR / PEFT_WEIGHTS))
                except MinicreamError:
                    lora.remove(self.unet, key)
                    raise
        if rows is not None:  # the adapter's word, last: nothing above can fail after it is added
            embedding.add_tokens(self.text_encoder, {info.token: rows[info.token].float()})
        self.adapters[name] = LoadedAdapter(name, path, info, digest, scale)
        self._apply_scales()
        return name

    def set_adapters(self, names: list[str] | str, weights: list[float] | float | None = None) -> None:
        """Make these LoRA adapters active at these scales (default 1); the other LoRA adapters stay loaded, off."""
        names = [names] if isinstance(names, str) else list(names)
        weights = [1.0] * len(names) if weights is None else [weights] * len(names) if isinstance(weights, (int, float)) else list(weights)
        if len(weights) != len(names):
            raise MinicreamError(f"set_adapters: {len(names)} names but {len(weights)} weights")
        unknown = [n for n in names if n not in self.adapters]
        if unknown:
            raise MinicreamError(f"no adapter named {unknown[0]!r} is loaded (loaded: {', '.join(self.adapters) or 'none'})")
        chosen = {n: check_scale(w, n) for n, w in zip(names, weights)}
        for a in self.adapters.values():
            if a.info.method == "textual-inversion":
                if chosen.get(a.name, 1.0) != 1.0:
                    raise MinicreamError(f"adapter {a.name!r} is a textual inversion (a new word): it has no scale")
            else:
                a.scale = chosen.get(a.name, 0.0)
        self._apply_scales()

    def unload_adapter(self, name: str | None = None) -> None:
        """Remove one adapter (None: all); the model is then exactly as before it was loaded."""
        names = list(self.adapters) if name is None else [name]
        if name is not None and name not in self.adapters:
            raise MinicreamError(f"no adapter named {name!r} is loaded")
        for n in names:
            a = self.adapters.pop(n)
            if has_word(a.info):
                keep = {b.info.token: embedding.token_rows(self.text_encoder, b.info.token).detach().clone()
                        for b in self.adapters.values() if has_word(b.info)}
                embedding.remove_tokens(self.text_encoder, keep)
            if a.info.method != "textual-inversion":
                lora.remove(self.unet, a.key)
                lora.remove(self.text_encoder.model, a.key)
        self._apply_scales()

    def _apply_scales(self) -> None:
        weights = {a.key: a.scale for a in self.adapters.values() if a.info.method != "textual-inversion"}
        lora.activate(self.unet, weights)
        lora.activate(self.text_encoder.model, weights)

    @property
    def adapter_tokens(self) -> dict[str, LoadedAdapter]:
        return {a.info.token: a for a in self.adapters.values()}

    @property
    def adapter_records(self) -> list[dict]:
        """What a PNG records of the loaded adapters."""
        return [{"name": a.name, "hash": a.hash, "scale": a.scale, "token": a.info.token, "path": str(a.path)}
                for a in self.adapters.values()]


FILLER = {"a", "an", "the", "of", "photo", "picture", "image", "drawing", "emoji", "icon"}


def phrase(a: LoadedAdapter) -> str:
    """How the adapter was captioned: its token, and a DreamBooth adapter's class word after it."""
    return f"{a.info.token} {a.info.class_word}" if a.info.method == "dreambooth" and a.info.class_word else a.info.token


def keep_tokens(tokens: dict[str, LoadedAdapter], prompt: str, rewrite, mode: str):
    """The language filter with loaded adapters: their tokens pass through untouched (the filter would read "<my-cat>"
    as "cat face"). The rest of the prompt, when it says more than "a", is filtered on its own: a subject's token
    goes first ("<my-cat>, red apple"), a style's last ("red apple, <my-style>"), as they were trained."""
    from ..filter import FilterResult

    found, rest, typed = [], prompt, prompt
    for t, a in tokens.items():
        pattern = re.escape(t) + (rf"(\s+{re.escape(a.info.class_word)}\b)?" if a.info.method == "dreambooth" and a.info.class_word else "")
        if re.search(pattern, prompt, re.IGNORECASE):
            found.append(a)
            rest = re.sub(pattern, " ", rest, flags=re.IGNORECASE)
            typed = re.sub(pattern, lambda m, a=a: phrase(a), typed, flags=re.IGNORECASE)
    if not found or mode == "none":  # "none" reads every prompt as typed anyway
        return rewrite(prompt)
    words = re.sub(r"[^\w\s'-]", " ", rest).split()
    kept = [f"kept {a.info.token!r} as typed: the token of adapter '{a.name}'" for a in found]
    if not [w for w in words if w.lower() not in FILLER]:
        return FilterResult(prompt, " ".join(typed.split()), kept, [], "none", mode_requested=mode)
    r = rewrite(" ".join(words))
    rewritten = ", ".join([*(phrase(a) for a in found if not a.info.style), r.rewritten, *(phrase(a) for a in found if a.info.style)])
    changes = kept + [f"the rest, {' '.join(words)!r}: " + c for c in r.changes]
    return FilterResult(prompt, rewritten, changes, [], r.mode_used, list(r.warnings), mode_requested=mode)
