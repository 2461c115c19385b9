"""Nearest concept by sentence embedding (the frozen MiniLM the model is conditioned on).

A concept is known by its name and by each of its emoji search keywords said with the name ("cherry blossom,
sakura"; data/emoji_keywords.py): its similarity to a phrase is the best of these, a keyword's counting
KEYWORD_DISCOUNT less. The keyword alone would be too loose ("circus" is a keyword of the gorilla); with the name
it says which sense of the word the concept is.

The concept matrix (one pooled, L2-normalised vector per text: ~28 MB for 1,927 concepts with ~18,000 keywords,
~29 s to compute on one core) is computed once and cached in a safetensors file keyed by the encoder and the texts,
under $MINICREAM_CACHE_DIR (default ~/.cache/minicream/filter): model directories may be read-only (the shipped
model lives inside the installed package).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
import weakref
from pathlib import Path

import torch

from ..io.weights import load_state_dict, read_metadata, save_state_dict
from .vocabulary import Vocabulary

_MATRICES: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per process: cache key -> ((M, D) matrix, (M,) rows)
# A keyword is weaker evidence than the name: the best keyword text must beat the name's similarity by this much
# to count (0.05: measured, README "Search keywords"; 0 scored the same on the typed prompts, less on paraphrases).
KEYWORD_DISCOUNT = 0.05


def cache_dir() -> Path:
    root = os.environ.get("MINICREAM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "minicream")
    return Path(root) / "filter"


def concept_texts(vocab: Vocabulary) -> tuple[list[str], list[int]]:
    """The texts each concept is known by, names first (row i is concept i), then "name, keyword" for each of its
    search keywords; and the concept of each text."""
    texts, rows = [c.name for c in vocab.concepts], list(range(len(vocab.concepts)))
    for i, c in enumerate(vocab.concepts):
        texts += [f"{c.name}, {w}" for w in c.keywords]
        rows += [i] * len(c.keywords)
    return texts, rows


# per process: id(vocabulary) -> (a weak reference to it, its texts, rows and their digest); hashing 20,000 texts
# took 10 ms a prompt. A vocabulary is not changed once the filter has used it (Vocabulary.offline_filter).
_TEXTS: dict[int, tuple] = {}


def _texts_of(vocab: Vocabulary) -> tuple[list[str], list[int], str]:
    got = _TEXTS.get(id(vocab))
    if got is not None and got[0]() is vocab:
        return got[1]
    texts, rows = concept_texts(vocab)
    digest = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()
    _TEXTS[id(vocab)] = weakref.ref(vocab, lambda _, i=id(vocab): _TEXTS.pop(i, None)), (texts, rows, digest)
    return texts, rows, digest


def concept_matrix(vocab: Vocabulary, encoder) -> tuple[torch.Tensor, torch.Tensor]:
    """((M, D) pooled embedding of every text of concept_texts, (M,) its concept's row)."""
    texts, rows, digest = _texts_of(vocab)
    h = hashlib.sha256(json.dumps([encoder.id, encoder.max_length, digest]).encode()).hexdigest()
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a long name with its keyword may lose its last tokens: harmless
            matrix = encoder.encode(texts).pooled.float().cpu()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_state_dict({"pooled": matrix}, path, metadata={"key": h, "encoder": encoder.id})
        except Exception:
            pass  # no writable cache directory: computed once per process instead
    _MATRICES[h] = matrix, torch.tensor(rows)
    return _MATRICES[h]


def similarities(phrase: str, vocab: Vocabulary, encoder) -> torch.Tensor:
    """(N,) cosine similarity of `phrase` to every concept of `vocab`, in the vocabulary's order."""
    matrix, rows = concept_matrix(vocab, encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation of long phrases (and keyword texts) is harmless here
        q = encoder.encode([phrase]).pooled.float().cpu()[0]
    sims, n = matrix @ q, len(vocab.concepts)  # (M,): names, then keyword texts
    if len(sims) == n:
        return sims
    return sims[:n].scatter_reduce(0, rows[n:], sims[n:] - KEYWORD_DISCOUNT, reduce="amax")


def nearest(phrase: str, vocab: Vocabulary, encoder, k: int = 3) -> list[tuple[str, float]]:
    """The `k` concepts most similar to `phrase`, with cosine similarities, best first."""
    sims = similarities(phrase, vocab, encoder)
    top = torch.topk(sims, min(k, len(sims)))
    return [(vocab.concepts[i].name, float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]
