"""Textual inversion's new words in MiniLM's input embedding table: adding them, their rows, taking them away.

A token of V vectors is V added tokenizer entries ("<my-cat>", "<my-cat>_1", ...); a prompt's "<my-cat>" is spelled
out as all of them before tokenising (`TextEncoder.expansions`). The table grows by V rows at the end; every other
row is untouched, and unloading shrinks it back and restores the tokenizer as it was, so outputs are bit-identical.
"""
from __future__ import annotations

import copy

import torch

from ..errors import MinicreamError


def pieces(token: str, vectors: int) -> list[str]:
    return [token] + [f"{token}_{i}" for i in range(1, vectors)]


def check_new_token(encoder, token: str) -> None:
    """A token must be new to the tokenizer: an existing word would change every prompt that uses it."""
    if not token.strip() or any(c.isspace() for c in token.strip()):
        raise MinicreamError(f"the token must be one word without spaces, e.g. \"<my-cat>\", got {token!r}")
    if token.lower() in encoder.tokenizer.get_vocab() or token in encoder.tokenizer.get_vocab():
        raise MinicreamError(f"{token!r} is already a word of the text encoder's vocabulary; choose a new word, "
                             "e.g. \"<my-cat>\"")


def input_embeddings(encoder) -> torch.nn.Embedding:
    return encoder.model.get_input_embeddings()


def add_tokens(encoder, rows: dict[str, torch.Tensor]) -> None:
    """Add each token (its rows: (V, dim)) to the encoder's tokenizer and embedding table."""
    if not hasattr(encoder, "_base_vocab"):  # what unloading restores
        encoder._base_vocab = (copy.deepcopy(encoder.tokenizer), input_embeddings(encoder).num_embeddings)
    for token, vectors in rows.items():
        check_new_token(encoder, token)
        if vectors.ndim != 2 or vectors.shape[1] != encoder.dim:
            raise MinicreamError(f"the embedding of {token!r} has shape {tuple(vectors.shape)}; this text encoder "
                                 f"needs (vectors, {encoder.dim})")
        names = pieces(token, vectors.shape[0])
        encoder.tokenizer.add_tokens(names)
        table = input_embeddings(encoder)
        old = table.weight.data
        grown = torch.nn.Embedding(len(encoder.tokenizer), old.shape[1], padding_idx=table.padding_idx,
                                   dtype=old.dtype, device=old.device)
        grown.weight.data[:old.shape[0]] = old
        ids = encoder.tokenizer.convert_tokens_to_ids(names)
        grown.weight.data[ids] = vectors.to(old.dtype)
        grown.requires_grad_(False)
        encoder.model.set_input_embeddings(grown)
        encoder.expansions[token] = " ".join(names)


def token_rows(encoder, token: str) -> torch.Tensor:
    """The (V, dim) embedding rows of an added token."""
    names = encoder.expansions[token].split(" ")
    return input_embeddings(encoder).weight[encoder.tokenizer.convert_tokens_to_ids(names)]


def remove_tokens(encoder, keep: dict[str, torch.Tensor]) -> None:
    """Take every added token away (the tokenizer and table as before the first was added), then add `keep` again."""
    if not hasattr(encoder, "_base_vocab"):
        return
    tokenizer, n = encoder._base_vocab
    table = input_embeddings(encoder)
    base = torch.nn.Embedding(n, table.weight.shape[1], padding_idx=table.padding_idx, dtype=table.weight.dtype)
    base.weight.data.copy_(table.weight.data[:n])
    base.requires_grad_(False)
    encoder.model.set_input_embeddings(base)
    encoder.tokenizer = copy.deepcopy(tokenizer)
    encoder.expansions.clear()
    del encoder._base_vocab
    if keep:
        add_tokens(encoder, keep)
