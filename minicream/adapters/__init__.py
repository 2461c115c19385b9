"""Adapters: teach a shipped model a new subject or style from a few images, and use what was taught.

    format.py     an adapter folder (PEFT's LoRA files or a token's embedding, plus minicream_adapter.json)
    lora.py       LoRA on the UNet (and text encoder) through PEFT: targets, inject, scale, remove
    embedding.py  textual inversion's new token rows in MiniLM's input embedding table
    use.py        Pipeline.load_adapter / set_adapters / unload_adapter, and the filter's pass-through
    images.py     the training images: any size or format the editor reads, squared on white, light augmentation
    train.py      `finetune`: LoRA, DreamBooth (LoRA + prior preservation) and textual inversion

Inference imports format/lora/embedding/use only; `finetune` (train.py) is imported when called.
"""
from __future__ import annotations

from .format import METHODS, AdapterInfo, adapter_hash, parse_adapter_arg

__all__ = ["METHODS", "AdapterInfo", "adapter_hash", "finetune", "parse_adapter_arg"]


def finetune(*args, **kwargs):
    """See adapters/train.py `finetune`."""
    from .train import finetune as run

    return run(*args, **kwargs)
