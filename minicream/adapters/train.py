"""`finetune`: teach a model a subject or a style from a few images, as an adapter folder (format.py).

    lora                LoRA (PEFT) on the UNet's attention and feed-forward projections; the captions are "a <token>"
                        (a subject) or "<concept>, <token>" (a style, the concept read from each file's name)
    dreambooth          the same LoRA with prior preservation: images of `class_word` drawn by the base model itself are
                        trained on too (weight `prior_weight`), so "a cat" still draws the model's cats; the captions
                        are "a <token> <class word>"
    textual-inversion   only the token's new embedding rows in MiniLM's input table (`vectors` of them) are trained

LoRA and DreamBooth also keep the model's other prompts as they were (`preserve_weight`, default 1): each step, a batch
of the model's own concepts (and the empty prompt) on the same noisy latents is trained towards the base model's own
predictions (self-distillation, adapter switched off for the teacher). Measured on the full model (README "Adapters"):
the coverage benchmark's top-5 with a subject's LoRA loaded fell 0.28 without it and 0.045 with it, the subject still
drawn in all samples; training takes twice as long. `learn_token` learns the token as a new word too (pivotal tuning).

The run keeps its work (a checkpoint, the class images) in OUT.partial/ and moves the finished adapter to OUT at the
end, so OUT is either absent or complete; `resume=True` continues an interrupted run from its checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..diffusion.objectives import make_objective
from ..errors import MinicreamError
from ..io.weights import save_state_dict, sha256_file
from ..precision import fast_bf16
from ..text.encoder import TextEmbeddings
from . import checkpoint, embedding, lora
from .format import EMBEDS_NAME, INFO_NAME, METHODS, PEFT_WEIGHTS, TEXT_DIR, AdapterInfo
from .images import augmented, caption_name, image_paths, load_images

STYLE_MIN_IMAGES = 4  # a style is what several different images share
PEFT_PREFIX = "base_model.model."  # PeftModel.save_pretrained's key prefix: the files load in PEFT as they are
TRAINING = "learning"  # the PEFT adapter name while training ("train" would shadow nn.Module.train)
# Measured on the reference model, 5 octopus images (README "Adapters"): r8 on attention + FF only, 300 steps at 1e-3
# (or 1000 steps, or 5e-3) drew coloured blobs; adding the ResBlocks' convolutions, 500 steps at 2e-3, batch 8, drew it.
# Textual inversion on the full model, 6 subjects from unseen designs: top-5 0.438 at 200 steps, 0.646 at 500 (187 s).
DEFAULT_STEPS = {"lora": 500, "dreambooth": 500, "textual-inversion": 500}
DEFAULT_LR = {"lora": 2e-3, "dreambooth": 2e-3, "textual-inversion": 5e-3}
DEFAULT_BATCH = {"lora": 8, "dreambooth": 8, "textual-inversion": 4}


@dataclass(frozen=True)
class FinetuneConfig:
    method: str = "lora"                # lora | dreambooth | textual-inversion
    token: str = ""                     # the new word, e.g. "<my-cat>"
    style: bool = False                 # teach a style (captions "<concept>, <token>") instead of a subject
    steps: int = 0                      # optimiser steps (0 = DEFAULT_STEPS of the method)
    lr: float = 0.0                     # AdamW learning rate (0 = DEFAULT_LR of the method)
    batch_size: int = 0                 # images per step, with replacement from the augmented set (0 = DEFAULT_BATCH)
    rank: int = 8                       # LoRA rank
    alpha: float = 8.0                  # LoRA alpha (scale alpha / rank)
    targets: tuple = lora.DEFAULT_TARGETS  # LoRA target groups (lora.TARGETS)
    text_encoder: bool = False          # LoRA on MiniLM's attention too
    learn_token: bool = False           # LoRA/DreamBooth: the token is also a new word learnt as textual inversion
                                        # does (pivotal tuning), starting from `init_word`
    vectors: int = 1                    # textual inversion: embedding vectors of the token
    init_word: str = ""                 # textual inversion: start from this word's embedding (default: class word)
    class_word: str = ""                # DreamBooth: the subject's class ("cat")
    prior_weight: float = 1.0           # DreamBooth: weight of the prior-preservation loss
    class_images: int = 8               # DreamBooth: images of the class drawn by the base model
    preserve_weight: float = 1.0        # LoRA: weight of keeping the base model's predictions on other prompts
    preserve_prompts: int = 256         # LoRA: how many of the model's concepts (and designs) those prompts draw from
    variants: int = 4                   # each image and variants - 1 augmented copies
    flip: bool = False                  # augmentation may mirror images (off: subjects are often not symmetric)
    cfg_dropout: float = 0.1            # captions dropped (as in training), so guidance keeps working
    seed: int = 0
    checkpoint_every: int = 50          # steps between checkpoints (resume)

    def resolved(self) -> "FinetuneConfig":
        if self.method not in METHODS:
            raise MinicreamError(f"unknown method {self.method!r}; choose {', '.join(METHODS)}")
        if self.method == "dreambooth" and not self.class_word.strip():
            raise MinicreamError("dreambooth needs --class-word: what the subject is (\"cat\"), for prior preservation")
        checks = [(self.steps >= 0, "steps must be >= 1"), (self.lr >= 0, "lr must be positive"),
                  (0 <= self.batch_size <= 64, "batch size must be in 1..64"), (1 <= self.vectors <= 16, "vectors must be in 1..16"),
                  (0 <= self.prior_weight <= 10, "prior weight must be in 0..10"),
                  (0 <= self.preserve_weight <= 10, "preserve weight must be in 0..10"),
                  (1 <= self.preserve_prompts <= 4096, "preserve prompts must be in 1..4096"), (1 <= self.variants <= 16, "variants must be in 1..16"),
                  (1 <= self.class_images <= 64, "class images must be in 1..64"), (0 <= self.cfg_dropout < 1, "cfg dropout must be in [0, 1)")]
        for ok, message in checks:
            if not ok:
                raise MinicreamError(message)
        lora.target_regex(self.targets)
        return replace(self, steps=self.steps or DEFAULT_STEPS[self.method], lr=self.lr or DEFAULT_LR[self.method],
                       batch_size=self.batch_size or DEFAULT_BATCH[self.method],
                       targets=tuple(self.targets), token=self.token.strip())


def encode_with_grad(encoder, texts: list[str]) -> TextEmbeddings:
    """TextEncoder.encode, differentiable (for textual inversion and the text encoder's LoRA)."""
    enc, truncated = encoder.tokenize(texts)
    mask = enc["attention_mask"].bool()
    hidden = encoder.model(**enc).last_hidden_state * mask[..., None]
    pooled = F.normalize(hidden.sum(1) / mask.sum(1, keepdim=True).clamp(min=1), dim=-1)
    return TextEmbeddings(hidden, mask, pooled, truncated)


def check_token(pipe, token: str) -> None:
    embedding.check_new_token(pipe.text_encoder, token)
    names = {n.lower() for n in pipe.vocabulary.by_name} | {s.lower() for s in (pipe.vocabulary.styles or [])}
    if token.lower() in names:
        raise MinicreamError(f"{token!r} is already a word of this model's vocabulary; choose a new word, e.g. \"<my-cat>\"")


def objective_of(pipe):
    o = pipe.index["objective"]
    if o.get("network"):
        raise MinicreamError(f"{pipe.model_dir.name} is a distilled model; fine-tune the model it was distilled from")
    unet = pipe.index.get("recipe", {}).get("unet", {})
    name = {"epsilon": "epsilon", "v_prediction": "v", "flow": "flow"}[o["prediction_type"]]
    return make_objective(name, min_snr_gamma=unet.get("min_snr_gamma") or None, beta_schedule=o.get("beta_schedule", "scaled_linear"),
                          zero_snr=bool(o.get("rescale_betas_zero_snr", False)))


def class_latents(pipe, cfg: FinetuneConfig, work: Path, log) -> tuple[torch.Tensor, str]:
    """DreamBooth's prior: `class_images` images of the class word drawn by the base model (kept in work/ for a
    resume) and the caption the base model read for them."""
    from PIL import Image

    filtered = pipe.filter_prompt(cfg.class_word, "offline", style="model")
    folder = work / "class_images"
    folder.mkdir(exist_ok=True)
    paths = [folder / f"{i:03d}.png" for i in range(cfg.class_images)]
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    if todo:
        log(f"drawing {len(todo)} images of {filtered.rewritten!r} with the base model (prior preservation)")
        for i, im in zip(todo, pipe(cfg.class_word, filter=filtered, num_images=len(todo), seed=10_000 + cfg.seed,
                                    style="model", progress=False)):
            im.save(paths[i])
    pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1) for p in paths])
    with torch.no_grad():
        return pipe.encode_image(pixels), filtered.rewritten


def finetune(images, token: str, method: str = "lora", out: str | Path = "adapter", model=None, resume: bool = False,
             progress: bool = True, log=print, **options) -> Path:
    """Teach `model` (a model folder or shipped name; None = the default) the images as `token`; the adapter folder.
    options: FinetuneConfig's fields."""
    from ..pipelines import Pipeline

    unknown = set(options) - set(FinetuneConfig.__dataclass_fields__)
    if unknown:
        raise MinicreamError(f"unknown finetune option {sorted(unknown)[0]!r}")
    cfg = FinetuneConfig(method=method, token=token, **options).resolved()
    out, paths = Path(out), image_paths(images)
    if cfg.style and len(paths) < STYLE_MIN_IMAGES:
        raise MinicreamError(f"a style is taught from several images of different things ({STYLE_MIN_IMAGES} at least); "
                             f"got {len(paths)}")
    work = out.with_name(out.name + ".partial")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MinicreamError(f"{out} already exists; choose another --out or remove it")
    if work.exists() and not resume and (work / checkpoint.NAME).exists():
        raise MinicreamError(f"{work} holds an interrupted run; continue it with --resume or remove it")
    pipe = Pipeline.from_pretrained(model, dtype="fp32")
    check_token(pipe, cfg.token)
    pixels = load_images(paths, pipe.image_size)
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    settings = {**asdict(cfg), "targets": list(cfg.targets), "model_hash": pipe.model_hash,
                "images": [sha256_file(p)[:16] for p in paths]}
    with torch.no_grad():
        latents = pipe.encode_image(augmented(pixels, cfg.variants, cfg.seed, cfg.flip))
    names = [caption_name(p) for p in paths]
    subject = f"a {cfg.token} {cfg.class_word}".strip() if cfg.method == "dreambooth" else f"a {cfg.token}"
    captions = [(f"{n}, {cfg.token}" if n else cfg.token) if cfg.style else subject for n in names for _ in range(cfg.variants)]
    prior = class_latents(pipe, cfg, work, log) if cfg.method == "dreambooth" else None

    params = trainable(pipe, cfg)
    opt = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=0.0)
    step = checkpoint.load(work, settings, params, opt) if resume else 0
    losses = run_steps(pipe, cfg, params, opt, latents, captions, prior, step, work, settings, progress)
    folder = save_adapter(pipe, cfg, params, work / "adapter", len(paths))
    if out.exists():
        out.rmdir()
    os.replace(folder, out)
    shutil.rmtree(work)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"{out}: {cfg.method} adapter for {cfg.token!r}, {size / 1024:.0f} KiB, {time.time() - start:.0f} s"
        + (f", final loss {sum(losses[-20:]) / max(1, len(losses[-20:])):.4f}" if losses else ""))
    return out


def trainable(pipe, cfg: FinetuneConfig) -> dict[str, torch.Tensor]:
    """Inject what is trained into the pipeline and return it by name; everything else frozen."""
    pipe.unet.requires_grad_(False)
    torch.manual_seed(cfg.seed)  # PEFT draws LoRA's A matrices from the global generator
    words = {}
    if learns_word(cfg):
        init = cfg.init_word or cfg.class_word or "object"
        ids = pipe.text_encoder.tokenizer(init, add_special_tokens=False)["input_ids"]
        start_row = embedding.input_embeddings(pipe.text_encoder).weight[ids].mean(0)
        embedding.add_tokens(pipe.text_encoder, {cfg.token: start_row.expand(cfg.vectors, -1).clone()})
        table = embedding.input_embeddings(pipe.text_encoder)
        table.weight.requires_grad_(True)
        words = {"token_embeddings": table.weight}
    if cfg.method == "textual-inversion":
        return words
    lora.inject(pipe.unet, lora.lora_config(cfg.rank, cfg.alpha, lora.target_regex(cfg.targets)), TRAINING)
    if cfg.text_encoder:
        lora.inject(pipe.text_encoder.model, lora.lora_config(cfg.rank, cfg.alpha, lora.TEXT_TARGETS), TRAINING)
    params = dict(words)
    for where, module in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder.model)):
        for n, p in module.named_parameters():
            if f".{TRAINING}." in n:
                params[f"{where}.{n}"] = p.requires_grad_(True)
    return params


def learns_word(cfg: FinetuneConfig) -> bool:
    """Whether the token is a new row of the text encoder's table (textual inversion, or LoRA with learn_token)."""
    return cfg.method == "textual-inversion" or cfg.learn_token


def preserve_captions(pipe, cfg: FinetuneConfig) -> list[str]:
    """Prompts the adapter should leave as they were: `preserve_prompts` of the model's concepts (seeded), each bare or
    with one of its designs, and the empty prompt (classifier-free guidance's unconditional branch)."""
    if cfg.preserve_weight <= 0 or cfg.method == "textual-inversion":  # a new word changes no other prompt
        return []
    rng = np.random.default_rng(cfg.seed)
    names = sorted(pipe.vocabulary.by_name)
    chosen = rng.choice(len(names), size=min(cfg.preserve_prompts, len(names)), replace=False)
    styles = list(pipe.vocabulary.styles or [])
    out = [names[i] if not styles or rng.random() < 0.5 else f"{names[i]}, {styles[rng.integers(len(styles))]}"
           for i in chosen]
    return out + [""]


def preservation_loss(pipe, objective, x0, texts, fixed, cfg, g) -> torch.Tensor:
    """How far the adapted UNet's predictions for other prompts move from the base model's, on the same noisy
    latents (self-distillation: the base model is its own teacher, no images of other concepts needed)."""
    x_t, t_in, *_ = objective.noised(x0, g)
    with torch.no_grad(), lora.disabled(pipe.unet), lora.disabled(pipe.text_encoder.model):
        base_cond = _stack([fixed[t] for t in texts]) if fixed else pipe.encode_prompt(texts)
        target = pipe.unet(x_t, t_in, base_cond.hidden, base_cond.mask, base_cond.pooled).float()
    cond = encode_with_grad(pipe.text_encoder, texts) if cfg.text_encoder else base_cond
    pred = pipe.unet(x_t, t_in, cond.hidden, cond.mask, cond.pooled).float()
    return F.mse_loss(pred, target) * cfg.preserve_weight


def run_steps(pipe, cfg, params, opt, latents, captions, prior, step, work, settings, progress) -> list[float]:
    from tqdm import tqdm

    objective, te = objective_of(pipe), pipe.text_encoder
    with_grad = learns_word(cfg) or cfg.text_encoder
    keep = preserve_captions(pipe, cfg)
    fixed_keep = None if cfg.text_encoder else {t: pipe.encode_prompt(t) for t in keep}
    texts = sorted(set(captions) | {""} | ({prior[1]} if prior else set()))
    fixed = None if with_grad else {t: pipe.encode_prompt(t) for t in texts}
    if learns_word(cfg):  # only the new rows learn: the others are put back after every step
        table = params["token_embeddings"]
        base_rows = table.detach()[:embedding.input_embeddings(te).num_embeddings - cfg.vectors].clone()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast_bf16("cpu"))
    losses = []
    bar = tqdm(range(step, cfg.steps), initial=step, total=cfg.steps, desc=f"{cfg.method} {cfg.token}", disable=not progress)
    for step in bar:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        rows = torch.randint(len(latents), (cfg.batch_size,), generator=g).tolist()
        chosen = ["" if torch.rand((), generator=g) < cfg.cfg_dropout else captions[r] for r in rows]
        batches = [(latents[rows], chosen, 1.0)]
        if prior is not None:
            prows = torch.randint(len(prior[0]), (cfg.batch_size,), generator=g).tolist()
            batches.append((prior[0][prows], [prior[1]] * cfg.batch_size, cfg.prior_weight))
        total = 0.0
        for x0, texts_b, weight in batches:
            cond = encode_with_grad(te, texts_b) if with_grad else _stack([fixed[t] for t in texts_b])  # fp32, as sampling
            with autocast:
                fn = lambda x, t: pipe.unet(x, t, cond.hidden, cond.mask, cond.pooled)  # noqa: E731
                loss = objective(fn, x0, g).mean() * weight
            loss.backward()
            total += float(loss.detach())
        if keep:  # other prompts on the same latents: as the base model drew them
            krows = torch.randint(len(latents), (cfg.batch_size,), generator=g).tolist()
            ktexts = [keep[int(i)] for i in torch.randint(len(keep), (cfg.batch_size,), generator=g)]
            with autocast:
                loss = preservation_loss(pipe, objective, latents[krows], ktexts, fixed_keep, cfg, g)
            loss.backward()
            total += float(loss.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        if learns_word(cfg):
            with torch.no_grad():
                table[:len(base_rows)] = base_rows
        losses.append(total)
        bar.set_postfix(loss=f"{total:.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            checkpoint.save(work, step + 1, settings, params, opt)
    return losses


def _stack(parts: list[TextEmbeddings]) -> TextEmbeddings:
    return TextEmbeddings(*(torch.cat([getattr(p, f) for p in parts]) for f in ("hidden", "mask", "pooled", "truncated")))


def save_adapter(pipe, cfg: FinetuneConfig, params, folder: Path, n_images: int) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    if learns_word(cfg):
        save_state_dict({cfg.token: embedding.token_rows(pipe.text_encoder, cfg.token).detach().float().contiguous()},
                        folder / EMBEDS_NAME)
    if cfg.method != "textual-inversion":
        for module, where in ((pipe.unet, folder), (pipe.text_encoder.model, folder / TEXT_DIR)):
            if not lora.lora_layers(module):
                continue
            where.mkdir(exist_ok=True)
            state = {PEFT_PREFIX + k: v for k, v in lora.state_dict(module, TRAINING).items()}
            save_state_dict(state, where / PEFT_WEIGHTS, metadata={"format": "pt"})
            module.peft_config[TRAINING].save_pretrained(str(where))
    info = AdapterInfo(method=cfg.method, token=cfg.token, base_model_hash=pipe.model_hash, base_model=pipe.model_dir.name,
                       rank=0 if cfg.method == "textual-inversion" else cfg.rank,
                       alpha=0.0 if cfg.method == "textual-inversion" else cfg.alpha,
                       targets=() if cfg.method == "textual-inversion" else cfg.targets, text_encoder=cfg.text_encoder,
                       vectors=cfg.vectors if learns_word(cfg) else 0, style=cfg.style,
                       class_word=cfg.class_word, steps=cfg.steps, images=n_images)
    (folder / INFO_NAME).write_text(info.to_json())
    return folder
