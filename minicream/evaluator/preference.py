"""Fine-tune the evaluator on people's ratings: a pairwise preference (Bradley-Terry) loss on the pairs of
minicream.feedback, plus the evaluator's own contrastive loss on the winners and their prompts and an anchor (the
embeddings' squared distance from the untuned evaluator's), so that a few hundred ratings reorder its scores
without making it forget what the prompts mean.

Measured (bench/feedback_sim.py, reference model, 60 simulated ratings of 20 concepts, 100 steps; held out: 40 new
sets of the same concepts, and the dataset's 376 held-out real emoji named among their 353 concepts):
    untuned                              pairs 0.692   real top-1 / top-5 0.075 / 0.194
    no anchor                            pairs 0.817   real 0.029 / 0.141   (forgets)
    no anchor, image tower only          pairs 0.825   real 0.027 / 0.130
    anchor 1                             pairs 0.850   real 0.059 / 0.178
    anchor 4 (default)                   pairs 0.842   real 0.072 / 0.186
    anchor 4, no contrastive term        pairs 0.842   real 0.067 / 0.178
(chosen on those same held-out sets: a first look, not a tuned result).

    results = finetune_on_feedback("model/evaluator", "outputs/serve/feedback.sqlite", "model_ft/evaluator")

The fine-tuned evaluator is saved as the trained one is (config.json + bf16 model.safetensors), with the judge
folder copied from the source (the judge stays independent of the ratings) and feedback.json recording the
run; it holds no results.json, so a later recipe sitting never mistakes it for the recipe's own evaluator.
"""
from __future__ import annotations

import copy
import io
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..errors import MinicreamError
from ..feedback.export import FeedbackDataset, read_feedback_dataset
from ..models.base import WEIGHTS_NAME
from .losses import contrastive_loss, preference_loss
from .model import MiniCLIP
from .scorer import EVALUATOR_DIR, Evaluator

FEEDBACK_RESULTS = "feedback.json"
JUDGE_DIR = "judge"  # as in train.py (not imported from there: it pulls the training loop and Accelerate)


@dataclass(frozen=True)
class PreferenceConfig:
    steps: int = 200  # optimiser steps
    lr: float = 1e-4  # AdamW; small: the evaluator is already trained
    batch_size: int = 32  # preference pairs a step
    weight_decay: float = 0.0
    contrastive_weight: float = 0.5  # the evaluator's InfoNCE on (winner, prompt): keeps it from forgetting
    anchor_weight: float = 4.0  # squared distance of the embeddings from the untuned evaluator's: forgets less
    train_text: bool = True  # also tune the text projection and temperature (False: the image tower alone)
    seed: int = 0

    def __post_init__(self):
        if not (isinstance(self.steps, int) and 1 <= self.steps <= 1_000_000):
            raise MinicreamError(f"steps: an integer in 1..1000000, got {self.steps!r}")
        if not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 4096):
            raise MinicreamError(f"batch_size: an integer in 1..4096, got {self.batch_size!r}")
        if not (0 < self.lr <= 1) or min(self.weight_decay, self.contrastive_weight, self.anchor_weight) < 0:
            raise MinicreamError("lr must be in (0, 1], weight_decay, contrastive_weight and anchor_weight >= 0")


def evaluator_dir(path: str | Path) -> Path:
    """An evaluator folder (config.json + model.safetensors), or a model folder holding one in evaluator/."""
    p = Path(path)
    for d in (p, p / EVALUATOR_DIR):
        if (d / "config.json").is_file() and (d / WEIGHTS_NAME).is_file():
            return d
    raise MinicreamError(f"{p}: no evaluator there (config.json + {WEIGHTS_NAME}, or a model folder with {EVALUATOR_DIR}/)")


def decode_pngs(pngs: dict[str, bytes], size: int) -> tuple[torch.Tensor, dict[str, int]]:
    """uint8 (N, 3, size, size) of the PNGs (RGB, resized as the evaluator sees them) and each hash's row."""
    order = sorted(pngs)
    arrays = []
    for h in order:
        try:
            with Image.open(io.BytesIO(pngs[h])) as im:
                rgb = im.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise MinicreamError(f"image {h[:12]}... of the ratings cannot be read ({str(e)[:100]})") from None
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(rgb, dtype=np.uint8))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), {h: i for i, h in enumerate(order)}


@dataclass
class PairTensors:
    images: torch.Tensor  # uint8 (N, 3, S, S)
    prompts: list[str]
    index: torch.Tensor  # (P, 3): prompt row, winner row, loser row


def pair_tensors(data: FeedbackDataset, size: int) -> PairTensors:
    if not data.pairs:
        raise MinicreamError("no preference pairs with images in the ratings; rate some best-of-N candidates first")
    images, rows = decode_pngs({h: data.pngs[h] for p in data.pairs for h in (p.winner, p.loser)}, size)
    prompts = sorted({p.prompt for p in data.pairs})
    at = {t: i for i, t in enumerate(prompts)}
    return PairTensors(images, prompts, torch.tensor([[at[p.prompt], rows[p.winner], rows[p.loser]] for p in data.pairs]))


@torch.no_grad()
def preference_margins(evaluator: Evaluator, pairs: PairTensors) -> torch.Tensor:
    """s(prompt, winner) - s(prompt, loser) per pair, in cosine units (what best-of-N ranks by)."""
    img = evaluator.image_features(pairs.images)
    txt = evaluator.text_features(pairs.prompts)[pairs.index[:, 0]]
    return ((img[pairs.index[:, 1]] - img[pairs.index[:, 2]]) * txt).sum(dim=-1)


def preference_accuracy(evaluator: Evaluator, pairs: PairTensors) -> dict:
    """How often the evaluator agrees with the ratings (winner scored above loser), and the mean margin."""
    m = preference_margins(evaluator, pairs)
    return {"pairs": len(m), "accuracy": round(float((m > 0).float().mean()), 4), "margin": round(float(m.mean()), 5)}


def _step_loss(model: MiniCLIP, pairs: PairTensors, pooled: torch.Tensor, batch: torch.Tensor, cfg: PreferenceConfig,
               anchor: MiniCLIP | None = None):
    b = pairs.index[batch]  # (B, 3)
    x = model.preprocess(pairs.images[torch.cat([b[:, 1], b[:, 2]])])
    feats = F.normalize(model.image_tower(x).float(), dim=-1)  # (2B, E): winners, then losers
    win, lose = feats[:len(b)], feats[len(b):]
    txt = model.encode_text(pooled[b[:, 0]])
    loss_pref = preference_loss(win, lose, txt, model.scale().detach())
    loss = loss_pref
    if cfg.contrastive_weight > 0:
        loss = loss + cfg.contrastive_weight * contrastive_loss(win, txt, b[:, 0], model.scale())
    if anchor is not None:  # stay near the untuned embeddings (||a - b||^2 = 2 - 2 cos for unit vectors)
        with torch.no_grad():
            feats0, txt0 = anchor.encode_image(x), anchor.encode_text(pooled[b[:, 0]])
        drift = (feats - feats0).pow(2).sum(-1).mean() + (txt - txt0).pow(2).sum(-1).mean()
        loss = loss + cfg.anchor_weight * drift
    return loss, float(loss_pref.detach())


def finetune_on_feedback(evaluator_path: str | Path, feedback: str | Path | FeedbackDataset, out_dir: str | Path,
                         config: PreferenceConfig | None = None, encoder=None, progress: bool = True,
                         log: Callable[[str], None] | None = None) -> dict:
    """Fine-tune the evaluator at `evaluator_path` (an evaluator folder, or a model folder with evaluator/) on the
    preference pairs of `feedback` (a feedback database file, an exported folder, or a FeedbackDataset); save it
    to `out_dir` and return the record written to out_dir/feedback.json, with the agreement with the ratings
    (accuracy, mean margin) on the training pairs before and after. `encoder`: the text encoder (default: the
    packaged MiniLM, as the evaluator was trained with)."""
    cfg, log = config or PreferenceConfig(), log or print
    src, out = evaluator_dir(evaluator_path), Path(out_dir)
    if out.resolve() == src.resolve():
        raise MinicreamError(f"{out}: is the evaluator being fine-tuned; give another folder (the source stays as it is)")
    _check_out(out)
    data = feedback if isinstance(feedback, FeedbackDataset) else read_feedback_dataset(feedback)
    model = MiniCLIP.from_pretrained(src).float()
    if encoder is None:
        from ..text.encoder import TextEncoder

        encoder = TextEncoder.load(None, max_length=24)
    pairs = pair_tensors(data, model.config.image_size)
    before = preference_accuracy(Evaluator(model, encoder), pairs)
    log(f"feedback: {len(pairs.index)} preference pairs, {len(pairs.images)} images, {len(pairs.prompts)} prompts; "
        f"the evaluator agrees with {before['accuracy']:.1%} of them")
    with torch.no_grad():
        pooled = encoder.encode(pairs.prompts).pooled.float().cpu()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    anchor = copy.deepcopy(model).eval().requires_grad_(False) if cfg.anchor_weight > 0 else None
    if not cfg.train_text:
        model.text_proj.requires_grad_(False)
        model.logit_scale.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    t0, order, at = time.time(), torch.randperm(len(pairs.index), generator=gen), 0
    bar = tqdm(range(cfg.steps), desc="fine-tuning on ratings", disable=not progress, leave=False)
    for _ in bar:
        if at + cfg.batch_size > len(order) and at > 0:  # a new pass over the pairs, in a new order
            order, at = torch.randperm(len(pairs.index), generator=gen), 0
        batch = order[at:at + cfg.batch_size]
        at += len(batch)
        loss, loss_pref = _step_loss(model, pairs, pooled, batch, cfg, anchor)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", pref=f"{loss_pref:.4f}")
    model = model.eval().to(torch.bfloat16).float()  # measured as it is shipped
    after = preference_accuracy(Evaluator(model, encoder), pairs)
    log(f"after {cfg.steps} steps: agrees with {after['accuracy']:.1%} (mean margin {before['margin']:+.4f} -> {after['margin']:+.4f})")
    record = {"source": str(src), "feedback": str(feedback) if not isinstance(feedback, FeedbackDataset) else "(in memory)",
              "config": asdict(cfg), "pairs": len(pairs.index), "images": len(pairs.images), "prompts": len(pairs.prompts),
              "seconds": round(time.time() - t0, 1), "train_pairs_before": before, "train_pairs_after": after}
    _save(model, src, out, record)
    return record


def _save(model: MiniCLIP, src: Path, out: Path, record: dict) -> None:
    """Written beside `out` under a temporary name, then renamed into place: never half-written."""
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, dtype=torch.bfloat16)
    if (src / JUDGE_DIR).is_dir():
        shutil.copytree(src / JUDGE_DIR, tmp / JUDGE_DIR)
    (tmp / FEEDBACK_RESULTS).write_text(json.dumps(record, indent=2) + "\n")
    _check_out(out)
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)


def _check_out(out: Path) -> None:
    """`out` may be new, empty, or an earlier fine-tuned evaluator (replaced); anything else is refused."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / FEEDBACK_RESULTS).is_file())):
        raise MinicreamError(f"{out}: exists and is not an earlier fine-tuned evaluator; give a new folder")
