"""Nearest concept by sentence embedding (the frozen MiniLM the model is conditioned on).

The concept matrix (one pooled, L2-normalised vector per concept name, ~3 MB for 1,900 concepts) is
computed once and cached in a safetensors file keyed by the encoder and the names, under
$MINICREAM_CACHE_DIR (default ~/.cache/minicream/filter): model directories may be read-only
(the shipped model lives inside the installed package).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..io.weights import load_state_dict, read_metadata, save_state_dict
from .vocabulary import Vocabulary

_MATRICES: dict[str, torch.Tensor] = {}  # per process: cache key -> (N, D) matrix


def cache_dir() -> Path:
    root = os.environ.get("MINICREAM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "minicream")
    return Path(root) / "filter"


def concept_texts(vocab: Vocabulary) -> list[str]:
    return [c.name for c in vocab.concepts]


def concept_matrix(vocab: Vocabulary, encoder) -> torch.Tensor:
    texts = concept_texts(vocab)
    h = hashlib.sha256(json.dumps([encoder.id, encoder.max_length, texts], ensure_ascii=False).encode()).hexdigest()
    if h in _MATRICES:
        return _MATRICES[h]
    path = cache_dir() / f"concepts-{h[:16]}.safetensors"
    matrix = None
    if path.is_file():
        try:
            if read_metadata(path).get("key") == h:
                matrix = load_state_dict(path)["pooled"]
        except Exception:  # an unreadable cache is recomputed, never fatal
            matrix = None
    if matrix is None:
        matrix = encoder.encode(texts).pooled.float().cpu()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_state_dict({"pooled": matrix}, path, metadata={"key": h, "encoder": encoder.id})
        except Exception:
            pass  # no writable cache directory: computed once per process instead
    _MATRICES[h] = matrix
    return matrix


def similarities(phrase: str, vocab: Vocabulary, encoder) -> torch.Tensor:
    """(N,) cosine similarity of `phrase` to every concept of `vocab`, in the vocabulary's order."""
    import warnings

    matrix = concept_matrix(vocab, encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation of long phrases is harmless here
        q = encoder.encode([phrase]).pooled.float().cpu()[0]
    return matrix @ q


def nearest(phrase: str, vocab: Vocabulary, encoder, k: int = 3) -> list[tuple[str, float]]:
    """The `k` concepts most similar to `phrase`, with cosine similarities, best first."""
    sims = similarities(phrase, vocab, encoder)
    top = torch.topk(sims, min(k, len(sims)))
    return [(vocab.concepts[i].name, float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]
