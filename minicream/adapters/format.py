"""An adapter folder on disk, the unit people train, share and stack:

    minicream_adapter.json      what it is: method, token, the base model's UNet hash, rank, ... (`AdapterInfo`)
    adapter_config.json         PEFT's LoraConfig of the UNet's LoRA          (lora, dreambooth)
    adapter_model.safetensors   PEFT's adapter weights of the UNet            (lora, dreambooth)
    text_encoder/               the same two files for the text encoder's LoRA, when it was trained
    learned_embeds.safetensors  the new token's embedding rows, {token: (vectors, dim)}  (textual-inversion, and a
                                LoRA whose token was learnt with it: `vectors` > 0)

Only safetensors and JSON: nothing is unpickled. The adapter's hash (`adapter_hash`) is over every weights file, so
a PNG that records it can tell when an adapter of the same name was changed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import MinicreamError
from ..io.atomic import read_json
from ..io.weights import check_safetensors, sha256_file

INFO_NAME = "minicream_adapter.json"
PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
TEXT_DIR = "text_encoder"
EMBEDS_NAME = "learned_embeds.safetensors"
METHODS = ("lora", "dreambooth", "textual-inversion")
FORMAT = "minicream-adapter-v1"


@dataclass(frozen=True)
class AdapterInfo:
    method: str                 # one of METHODS
    token: str                  # the word prompts use to call it, e.g. "<my-cat>"
    base_model_hash: str        # short_hash of the base model's UNet weights: an adapter only fits its own model
    base_model: str = ""        # the base model's folder name, for messages
    rank: int = 0               # LoRA rank (0 for textual inversion)
    alpha: float = 0.0          # LoRA alpha
    targets: tuple = ()         # target groups of the UNet's LoRA (lora.TARGETS)
    text_encoder: bool = False  # a LoRA of the text encoder too
    vectors: int = 0            # embedding vectors of the token (textual inversion; a LoRA with a learnt token)
    style: bool = False         # trained as a style word (captions "<concept>, <token>")
    class_word: str = ""        # DreamBooth's class ("cat"), the prior-preservation prompt
    steps: int = 0
    images: int = 0
    format: str = FORMAT
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "targets": list(self.targets)}, indent=1)

    @classmethod
    def read(cls, folder: Path) -> "AdapterInfo":
        path = folder / INFO_NAME
        if not path.is_file():
            raise MinicreamError(f"{folder}: not a minicream adapter (no {INFO_NAME}); make one with `minicream finetune`")
        raw = read_json(path)
        names = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or not names >= set(raw):
            raise MinicreamError(f"{path}: not a {FORMAT} file (unknown format or keys)")
        try:
            info = cls(**{**raw, "targets": tuple(raw.get("targets", ()))})
        except TypeError as e:
            raise MinicreamError(f"{path}: {e}") from None
        if info.method not in METHODS or not isinstance(info.token, str) or not info.token.strip():
            raise MinicreamError(f"{path}: method must be one of {', '.join(METHODS)} and token a word")
        return info


def adapter_files(folder: Path, info: AdapterInfo) -> list[Path]:
    """The weights files the adapter needs; a one-line error naming the first missing or broken one."""
    if info.method == "textual-inversion":
        files = [folder / EMBEDS_NAME]
    else:
        files = [folder / PEFT_WEIGHTS] + ([folder / TEXT_DIR / PEFT_WEIGHTS] if info.text_encoder else [])
        files += [folder / EMBEDS_NAME] if info.vectors else []
    for f in files:
        if not f.is_file():
            raise MinicreamError(f"{folder}: the adapter is incomplete ({f.relative_to(folder)} is missing)")
        check_safetensors(f)
    return files


def adapter_hash(folder: Path, info: AdapterInfo | None = None) -> str:
    """10 hex chars of the sha256 over the adapter's description and weights files (as model hashes are shown)."""
    info = info or AdapterInfo.read(folder)
    h = hashlib.sha256((folder / INFO_NAME).read_bytes())
    for f in adapter_files(folder, info):
        h.update(sha256_file(f).encode())
    return h.hexdigest()[:10]


def parse_adapter_arg(text: str) -> tuple[str, float]:
    """"DIR[:SCALE]" (the CLI's --adapter) -> (DIR, scale); a folder whose name has a colon is taken whole."""
    folder, sep, scale = text.rpartition(":")
    if sep and folder and not Path(text).exists():
        try:
            return folder, float(scale)
        except ValueError:
            pass
    return text, 1.0
