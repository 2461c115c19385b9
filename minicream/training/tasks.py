"""Loss functions the Trainer calls: autoencoder reconstruction and UNet denoising.

Each is built from tensors held in memory (images, cached latents, cached text embeddings) and returns
`loss_fn(model, batch_indices, generator) -> (loss, logs)`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.autoencoder import to_unit_range
from ..models.moe import summarize


def autoencoder_loss(images_uint8: torch.Tensor, kl_weight: float):
    """L1 + L2 reconstruction with a small KL term (no perceptual/GAN loss: those need downloaded nets)."""

    def loss_fn(vae, idx, gen):
        x = to_unit_range(images_uint8[idx]).contiguous(memory_format=torch.channels_last)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(x.device, posterior.mean.dtype)
        rec = vae.decode(z).sample.float()
        l1, l2 = (rec - x).abs().mean(), (rec - x).pow(2).mean()
        kl = posterior.kl().mean() / x[0].numel()
        return l1 + l2 + kl_weight * kl, {"l1": l1.item(), "mse": l2.item(), "kl": kl.item()}

    return loss_fn


def caption_picker(caption_choices: list[list[int]], empty_id: int, dropout: float):
    """pick(idx, gen) -> one caption id per example (one of its choices at random, the empty prompt with probability
    `dropout`, for classifier-free guidance)."""
    n_choices = torch.tensor([len(c) for c in caption_choices])
    table = torch.full((len(caption_choices), int(n_choices.max())), -1, dtype=torch.long)
    for i, c in enumerate(caption_choices):
        table[i, :len(c)] = torch.tensor(c)

    def pick(idx, gen):
        tid = table[idx, (torch.rand(len(idx), generator=gen) * n_choices[idx]).long()]
        return torch.where(torch.rand(len(idx), generator=gen) < dropout, torch.full_like(tid, empty_id), tid)

    return pick


def text_batch(text, tid: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden states, mask, pooled) of the cached text table's rows `tid`, on `device`."""
    return text.hidden[tid].to(device), text.mask[tid].to(device), text.pooled[tid].to(device)


def unet_loss(latents: torch.Tensor, caption_choices: list[list[int]], text, empty_id: int, objective,
              cfg_dropout: float, aux_weight: float, z_weight: float, repa: tuple[torch.Tensor, float] | None = None,
              usage: torch.Tensor | None = None):
    """Denoising loss, plus the mixture of experts' balance and z-losses that the UNet's forward returns.
    caption_choices[i]: indices into the cached text table usable for example i.
    repa: (encoder targets per example, weight) when the model is a `training.repa.WithREPA`.
    usage: a (MoE layers, experts) tensor each step's routed-token counts are added to, for a log of the experts'
    usage over many steps (its owner reads and empties it; the model keeps no count)."""
    pick = caption_picker(caption_choices, empty_id, cfg_dropout)

    def loss_fn(model, idx, gen):
        device = next(model.parameters()).device
        ctx, mask, pooled = text_batch(text, pick(idx, gen), device)
        x0 = latents[idx].to(device).contiguous(memory_format=torch.channels_last)
        moe = []  # one MoEStats per MoE layer and forward
        loss = objective(lambda x_t, t: model(x_t, t, ctx, mask, pooled, moe_stats=moe), x0, gen).mean()
        logs = {"denoise": loss.item()}
        if repa is not None:
            targets, weight = repa
            align = getattr(model, "module", model).alignment_loss(targets[idx].to(device))
            loss = loss + weight * align
            logs["repa"] = align.item()
        if moe:
            aux, z, counts = summarize(moe)
            loss = loss + aux_weight * aux + z_weight * z
            logs.update({"moe_balance": aux.item(), "moe_z": z.item()})
            total = counts.sum(0)
            for e, frac in enumerate((total / total.sum().clamp(min=1)).tolist()):
                logs[f"moe_expert{e}"] = frac
            if usage is not None:
                usage.add_(counts.cpu())
        return loss, logs

    return loss_fn
