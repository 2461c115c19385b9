"""LoRA on minicream's UNet (and MiniLM) through PEFT: which layers, injecting and removing adapters, their scales.

Targets are named groups (`TARGETS`), each a regular expression over module names, so `--targets attn,ff` reads as
what it adapts. The default is the transformer blocks' attention and feed-forward projections (the mid block's
experts included), as LoRA for Stable Diffusion does, and the ResBlocks' 3x3 convolutions ("conv"): on this small
UNet, attention and FF alone did not learn a new subject; "proj" adds the transformer blocks' in/out projections. PEFT's zero-initialised B matrix makes a fresh adapter the identity.

Adapters are injected under their own names, so several stack (`activate`); removing the last one puts each wrapped
layer's own module back (`remove`), whose weights were never touched: outputs are bit-identical to before.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import MinicreamError

TARGETS = {
    "attn": r"attn[12]\.(to_q|to_kv|to_out)",
    "ff": r"ff\.(experts\.\d+\.)?net\.(0|2)",
    "conv": r"res\.conv[12]",
    "proj": r"attn\.(proj_in|proj_out)|mid_attn\.(proj_in|proj_out)",
}
DEFAULT_TARGETS = ("attn", "ff", "conv")  # without conv, 5 images were not learnt (README "Adapters")
TEXT_TARGETS = r".*\.attention\.self\.(query|key|value)"  # MiniLM's (BERT's) attention projections


def target_regex(groups) -> str:
    unknown = [g for g in groups if g not in TARGETS]
    if unknown or not groups:
        raise MinicreamError(f"unknown LoRA target {', '.join(unknown) or '(none)'}; choose from {', '.join(TARGETS)}")
    return r".*\.(" + "|".join(TARGETS[g] for g in groups) + r")"


def lora_config(rank: int, alpha: float, regex: str):
    from peft import LoraConfig

    if not 1 <= rank <= 256:
        raise MinicreamError(f"LoRA rank must be in 1..256, got {rank}")
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=regex, lora_dropout=0.0, init_lora_weights=True)


def lora_layers(model: nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def inject(model: nn.Module, config, name: str, state: dict[str, torch.Tensor] | None = None) -> None:
    """Add adapter `name` to `model` in place (its weights from `state`: PEFT's keys, without the adapter name)."""
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    if any(name in layer.lora_A for layer in lora_layers(model)):
        raise MinicreamError(f"an adapter named {name!r} is already loaded; unload it first")
    with warnings.catch_warnings():  # PEFT warns when a second adapter is added: stacking them is the point
        warnings.simplefilter("ignore")
        inject_adapter_in_model(config, model, adapter_name=name)
    for layer in lora_layers(model):  # adapter weights in fp32 whatever the base's dtype (PEFT casts the input)
        for part in (layer.lora_A, layer.lora_B):
            if name in part:
                part[name].float()
    if state is not None:
        result = set_peft_model_state_dict(model, state, adapter_name=name)
        missing = [k for k in result.missing_keys if f".{name}." in k or k.endswith(f".{name}")]
        if result.unexpected_keys or missing:
            remove(model, name)
            raise MinicreamError(f"adapter {name!r} does not fit this model's layers "
                                 f"({len(result.unexpected_keys)} unexpected, {len(missing)} missing weights)")


def state_dict(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().float().contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}


def activate(model: nn.Module, weights: dict[str, float]) -> None:
    """Make exactly the adapters of `weights` active, each at its scale (1 = as trained)."""
    for layer in lora_layers(model):
        present = [n for n in weights if n in layer.lora_A]
        for n in present:
            layer.set_scale(n, float(weights[n]))
        layer.set_adapter(present)
        # set_adapter makes the active adapters trainable; inference never trains them
        for n in present:
            layer.lora_A[n].requires_grad_(False)
            layer.lora_B[n].requires_grad_(False)


@contextmanager
def disabled(model: nn.Module):
    """The model without its LoRA layers' contribution inside the block (the base model's outputs)."""
    layers = lora_layers(model)
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def remove(model: nn.Module, name: str | None = None) -> None:
    """Delete adapter `name` (None: all); layers left without adapters become their own base module again."""
    from peft.tuners.lora import LoraLayer

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, LoraLayer):
                continue
            left = [n for n in child.lora_A if name is not None and n != name]
            if not left:  # the base module itself, untouched since it was wrapped
                setattr(parent, child_name, child.get_base_layer())
            elif name in child.lora_A:
                child.delete_adapter(name)
    configs = getattr(model, "peft_config", {})
    for n in list(configs) if name is None else [name]:
        configs.pop(n, None)
