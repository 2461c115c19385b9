"""Train the mini-CLIP evaluator (and the separate judge) on a captioned image folder.

Each image is paired with one of its texts per step: the full caption ("red apple, twemoji") or the
bare concept ("red apple"), so the evaluator scores both kinds of prompt. Targets are label-aware:
two images whose drawn texts are equal (same concept, e.g. both styles) are both positives, so the
loss never pushes apart a correct pair. Augmentation (random scale / shift, blur, noise) makes the image
tower see the off-centre, blurry images a small generator draws, not only clean emoji.
"""
from __future__ import annotations

import dataclasses
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..data.folder import images_to_tensor, load_caption_folder
from ..data.selection import select_examples
from ..errors import MinicreamError
from ..io.atomic import atomic_path, read_json
from ..text.encoder import TextEncoder
from ..training.resume_check import data_fingerprint
from ..training.trainer import TrainConfig, Trainer
from .losses import contrastive_loss
from .model import EvaluatorConfig, MiniCLIP

JUDGE_DIR = "judge"  # the judge is saved inside the evaluator folder: <model>/evaluator/judge
RESULTS_FILE = "results.json"


@dataclass
class EvaluatorRecipe:
    model: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1200, batch_size=128, lr=2e-3, weight_decay=0.05,
                                                                   warmup_steps=60, ema_decay=0.0, checkpoint_every=200))
    judge: EvaluatorConfig = field(default_factory=lambda: EvaluatorConfig(arch="plain", channels=(32, 64, 128), embed_dim=128))
    judge_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=600, batch_size=128, lr=2e-3, weight_decay=0.05,
                                                                         warmup_steps=60, ema_decay=0.0, seed=1, checkpoint_every=200))
    train_judge: bool = True  # also train the separate judge used by `minicream eval` for prompt adherence
    concept_captions: bool = True  # also pair images with the bare concept name
    augment_shift: float = 0.08  # max translation, fraction of the image size
    augment_scale: tuple = (0.75, 1.05)  # random zoom range
    augment_blur: float = 0.3  # probability of a 3x3 box blur (generated images are soft)
    text_max_length: int = 24
    # Focus: the generator's concepts (its data.concepts / data.groups). Their images make up `focus_fraction`
    # of the training stream, so the evaluator and the judge learn to tell apart exactly what the generator
    # draws, while the rest of the dataset keeps them general (held-out retrieval). Empty: the whole dataset.
    concepts: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    focus_fraction: float = 0.5


def load_recipe(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> EvaluatorRecipe:
    """Preset name ("evaluator") or TOML file, plus `section.key=value` overrides, into an EvaluatorRecipe: the
    project's one config reader (config.read_toml), as the recipe's and distillation's configs are read."""
    from ..config import build_dataclass, read_toml

    return build_dataclass(EvaluatorRecipe, read_toml(path, overrides))


# -- data -------------------------------------------------------------------------------------------------
def _texts_of(examples, concept_captions: bool) -> tuple[list[str], torch.Tensor]:
    """Unique texts and, per example, the indices of its (caption, concept) texts (-1 if none)."""
    texts: dict[str, int] = {}
    pairs = []
    for ex in examples:
        cap = texts.setdefault(ex.text, len(texts))
        concept = ex.meta.get("concept") if concept_captions else None
        pairs.append((cap, texts.setdefault(concept, len(texts)) if concept else -1))
    return list(texts), torch.tensor(pairs)


def encode_texts(encoder: TextEncoder, texts: list[str], cache: Path | None) -> torch.Tensor:
    """Pooled MiniLM vectors (N, 384), cached in a safetensors file keyed by the texts."""
    if cache is None:
        return encoder.encode(texts).pooled.float()
    cache.parent.mkdir(parents=True, exist_ok=True)
    return encoder.encode_cached(texts, cache).pooled.float()


def augment(x: torch.Tensor, gen: torch.Generator, recipe: EvaluatorRecipe) -> torch.Tensor:
    """Random zoom + shift (white border), sometimes a blur and a little noise. x in [-1, 1]."""
    b = x.shape[0]
    lo, hi = recipe.augment_scale
    scale = lo + (hi - lo) * torch.rand(b, generator=gen)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * recipe.augment_shift * 2  # grid units span 2
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Emoji sit on white: pad with white (1.0) by sampling x - 1 with zero padding, then adding 1 back.
    x = F.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1
    blur = torch.rand(b, generator=gen) < recipe.augment_blur
    if blur.any():
        x[blur] = F.avg_pool2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return x + 0.03 * torch.randn(x.shape, generator=gen)


def focus_order(n: int, focus: list[int], fraction: float) -> torch.Tensor:
    """Indices of one pass over the data in which the `focus` examples make up about `fraction` of it."""
    if not focus or fraction <= 0:
        return torch.arange(n)
    if fraction >= 1:
        return torch.tensor(focus)
    repeats = max(1, round(fraction / (1 - fraction) * n / len(focus)))
    return torch.cat([torch.arange(n), torch.tensor(focus).repeat(repeats)])


def make_loss_fn(images: torch.Tensor, pooled: torch.Tensor, pairs: torch.Tensor, recipe: EvaluatorRecipe,
                 order: torch.Tensor | None = None):
    def loss_fn(model, idx, gen):
        if order is not None:
            idx = order[idx]
        x = augment(images[idx].float() / 127.5 - 1, gen, recipe)
        choice = pairs[idx]
        use_concept = (torch.rand(len(idx), generator=gen) < 0.5) & (choice[:, 1] >= 0)
        ids = torch.where(use_concept, choice[:, 1], choice[:, 0])
        m = model.module if hasattr(model, "module") else model
        img = F.normalize(m.image_tower(x.contiguous(memory_format=torch.channels_last)).float(), dim=-1)
        txt = m.encode_text(pooled[ids])
        scale = m.scale()
        loss = contrastive_loss(img, txt, ids, scale)
        return loss, {"temperature": float(1 / scale.detach())}
    return loss_fn


# -- evaluation -------------------------------------------------------------------------------------------
@torch.no_grad()
def retrieval_accuracy(model: MiniCLIP, images: torch.Tensor, true_ids: torch.Tensor, text_pooled: torch.Tensor,
                       ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Image -> text retrieval: is the true text among the top-k of all candidate texts?"""
    model.eval()
    feats = torch.cat([model.encode_image(model.preprocess(images[i:i + 256])) for i in range(0, len(images), 256)])
    txt = model.encode_text(text_pooled)
    ranks = (feats @ txt.t()).argsort(dim=1, descending=True)
    hit = ranks == true_ids[:, None]
    return {f"top{k}": round(float(hit[:, :k].any(dim=1).float().mean()), 4) for k in ks}


def heldout_retrieval(model: MiniCLIP, encoder: TextEncoder, test_examples, all_concepts: list[str],
                      cache_dir: Path | None) -> dict:
    """Zero-shot retrieval on held-out images: among the test captions, and among every concept name."""
    images = images_to_tensor(test_examples)
    captions = sorted({ex.text for ex in test_examples})
    cap_ids = torch.tensor([captions.index(ex.text) for ex in test_examples])
    cap_pooled = encode_texts(encoder, captions, cache_dir / "test_captions.safetensors" if cache_dir else None)
    out = {"n_images": len(test_examples), "captions": {"candidates": len(captions), **retrieval_accuracy(model, images, cap_ids, cap_pooled)}}
    with_concept = [i for i, ex in enumerate(test_examples) if ex.meta.get("concept") in set(all_concepts)]
    if with_concept:
        index = {c: i for i, c in enumerate(all_concepts)}
        con_pooled = encode_texts(encoder, all_concepts, cache_dir / "concepts.safetensors" if cache_dir else None)
        ids = torch.tensor([index[test_examples[i].meta["concept"]] for i in with_concept])
        out["concepts"] = {"candidates": len(all_concepts), **retrieval_accuracy(model, images[with_concept], ids, con_pooled)}
        styles = sorted({test_examples[i].meta.get("style") for i in with_concept} - {None})
        out["concepts_by_style"] = {}  # per design: a new design may be harder than the others
        for style in styles:
            rows = [k for k, i in enumerate(with_concept) if test_examples[i].meta.get("style") == style]
            out["concepts_by_style"][style] = {"n_images": len(rows), **retrieval_accuracy(
                model, images[with_concept][rows], ids[rows], con_pooled)}
    return out


def seen_accuracy(model: MiniCLIP, encoder: TextEncoder, train, cache_dir: Path | None, limit: int = 2000) -> dict:
    """Concept classification among every concept (skin tones left out) on clean training images, overall and
    per design: what the judge must do with a generator's drawings of the concepts it was trained on."""
    plain = [e for e in train if e.meta.get("concept") and not e.meta.get("skin_tone")]
    if not plain:  # a captions-only folder: no concepts to classify
        return {}
    concepts = sorted({e.meta["concept"] for e in plain})
    sample = random.Random(0).sample(plain, min(limit, len(plain)))
    pooled = encode_texts(encoder, concepts, cache_dir / "plain_concepts.safetensors" if cache_dir else None)
    index = {c: i for i, c in enumerate(concepts)}
    out: dict = {"candidates": len(concepts)}
    for style in [None, *sorted({e.meta.get("style") for e in sample} - {None})]:
        part = [e for e in sample if style is None or e.meta.get("style") == style]
        ids = torch.tensor([index[e.meta["concept"]] for e in part])
        out["all" if style is None else style] = {"n_images": len(part), **retrieval_accuracy(model, images_to_tensor(part), ids, pooled)}
    return out


def focus_accuracy(model: MiniCLIP, encoder: TextEncoder, seen, test, concepts: list[str], cache_dir: Path | None) -> dict:
    """Concept classification among the focus concepts: on their (clean, unaugmented) training images, and on
    their held-out images where the split has any."""
    pooled = encode_texts(encoder, concepts, cache_dir / "focus_concepts.safetensors" if cache_dir else None)
    index = {c: i for i, c in enumerate(concepts)}
    out: dict = {"candidates": len(concepts)}
    for part, examples in (("seen", seen), ("heldout", [e for e in test if e.meta.get("concept") in index])):
        if examples:
            ids = torch.tensor([index[e.meta["concept"]] for e in examples])
            out[part] = {"n_images": len(examples), **retrieval_accuracy(model, images_to_tensor(examples), ids, pooled)}
    return out


# -- entry point ------------------------------------------------------------------------------------------
def _train_one(name: str, cfg: EvaluatorConfig, tcfg: TrainConfig, images, pooled, pairs, order, recipe, run_dir: Path,
               resume: bool, log: Callable[[str], None], init_from: Path | None = None) -> tuple[MiniCLIP, dict]:
    torch.manual_seed(tcfg.seed)
    model = MiniCLIP(cfg)
    if init_from is not None:  # a warm start: another sitting of the same network (fresh optimizer and schedule)
        model.load_state_dict(warm_start_weights(init_from, cfg))
        log(f"{name}: warm start from {init_from}")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{name}: {cfg.arch} image tower, {n_params / 1e6:.2f}M parameters, {tcfg.steps} steps of {tcfg.batch_size}")

    def log_fn(step, rec):
        if step % (tcfg.log_every * 4) == 0 or step == tcfg.steps:
            log(f"{name} step {step}: loss {rec.get('loss_avg', 0):.4f} temperature {rec.get('temperature', 0):.4f} ({rec['time_s']} s)")

    trainer = Trainer(model, make_loss_fn(images, pooled, pairs, recipe, order), len(order), tcfg, run_dir, name, cpu=True, log_fn=log_fn)
    if resume and trainer.resume():
        log(f"{name}: resumed at step {trainer.step}")
    result = trainer.train()
    return trainer.final_model(use_ema=tcfg.ema_decay > 0).float().eval(), {"steps": result["steps"], "seconds": round(result["seconds"], 1), "parameters": n_params}


def warm_start_weights(src: Path, cfg: EvaluatorConfig) -> dict:
    """The fp32 weights of the evaluator saved in `src`, refused in one line unless it is the network `cfg` builds."""
    try:
        saved = read_json(Path(src) / "config.json")
    except (OSError, ValueError, MinicreamError):
        raise MinicreamError(f"--init-from {src}: no readable evaluator (config.json) there") from None
    if saved != json.loads(json.dumps(dataclasses.asdict(cfg))):
        raise MinicreamError(f"--init-from {src}: that evaluator is another network than the recipe's [model]")
    return {k: v.float() for k, v in MiniCLIP.from_pretrained(src).state_dict().items()}


def train_evaluator(config: EvaluatorRecipe | None, data_root: str | Path, out_dir: str | Path,
                    log: Callable[[str], None] | None = None, run_dir: str | Path | None = None, resume: bool = False,
                    encoder: TextEncoder | None = None, only: str | None = None, init_from: str | Path | None = None) -> dict:
    """Train the evaluator (and the judge), save them (bf16) to `out_dir` (+ `out_dir/judge`), return results.

    Checkpoints and the text-embedding cache go to `run_dir` (default: a sibling `<out_dir>_run`), so
    `out_dir` holds only what ships: config.json, model.safetensors, results.json, judge/. `init_from`: an evaluator
    folder to warm-start the evaluator from (the judge, if trained, starts fresh); its results record it.
    """
    recipe = config or EvaluatorRecipe()
    log = log or print
    out_dir = Path(out_dir)
    run_dir = Path(run_dir) if run_dir is not None else out_dir.parent / f"{out_dir.name}_run"
    cache = run_dir / "cache"
    train = load_caption_folder(data_root, size=recipe.model.image_size, split="train")
    try:
        test = load_caption_folder(data_root, size=recipe.model.image_size, split="test")
    except MinicreamError:
        test = []
    images = images_to_tensor(train)
    focus_concepts: list[str] = []
    focus: list[int] = []
    if recipe.concepts or recipe.groups:
        chosen = {id(e) for e in select_examples(train, recipe.concepts, recipe.groups, what="evaluator")}
        focus = [i for i, e in enumerate(train) if id(e) in chosen]
        focus_concepts = sorted({train[i].meta["concept"] for i in focus if train[i].meta.get("concept")})
        log(f"evaluator focus: {len(focus)} images of {len(focus_concepts)} concepts, {recipe.focus_fraction:.0%} of the stream")
    order = focus_order(len(train), focus, recipe.focus_fraction)
    texts, pairs = _texts_of(train, recipe.concept_captions)
    encoder = encoder or TextEncoder.load(None, max_length=recipe.text_max_length)
    log(f"evaluator data: {len(train)} train / {len(test)} test images, {len(texts)} texts; encoding texts (cached)")
    pooled = encode_texts(encoder, texts, cache / "train_texts.safetensors")
    results: dict = {"data": str(data_root), "data_fingerprint": data_fingerprint(Path(data_root)), "train_images": len(train),
                     "recipe": dataclasses.asdict(recipe)}
    if focus:
        results["focus"] = {"images": len(focus), "concepts": len(focus_concepts)}
    concepts = sorted({ex.meta["concept"] for ex in train + test if ex.meta.get("concept")})
    models = [("evaluator", recipe.model, recipe.train, out_dir)]
    if recipe.train_judge:
        models.append(("judge", recipe.judge, recipe.judge_train, out_dir / JUDGE_DIR))
    if only is not None:  # retrain one of the two, keep the other's results
        models = [m for m in models if m[0] == only]
        if (out_dir / RESULTS_FILE).is_file():
            old = read_json(out_dir / RESULTS_FILE)
            results.update({k: v for k, v in old.items() if k in ("evaluator", "judge") and k != only})
    for name, cfg, tcfg, dest in models:
        warm = Path(init_from) if init_from is not None and name == "evaluator" else None
        model, info = _train_one(name, cfg, tcfg, images, pooled, pairs, order, recipe, run_dir, resume, log, warm)
        if warm is not None:
            info["init_from"] = {"path": str(warm), "steps_before": _steps_before(warm)}
        if test:
            info["heldout"] = heldout_retrieval(model, encoder, test, concepts, cache)
            log(f"{name} held-out retrieval: {json.dumps(info['heldout'])}")
        info["seen"] = seen_accuracy(model, encoder, train, cache)
        if info["seen"]:
            log(f"{name} among all concepts on training images: {json.dumps(info['seen'])}")
        if focus_concepts:
            info["focus"] = focus_accuracy(model, encoder, [train[i] for i in focus], test, focus_concepts, cache)
            log(f"{name} focus concepts: {json.dumps(info['focus'])}")
        _save(model, dest)
        results[name] = info
    with atomic_path(out_dir / RESULTS_FILE) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    return results


def _steps_before(src: Path) -> int | None:
    """Optimizer steps the warm-start evaluator had seen over all its sittings, from its results.json."""
    try:
        info = read_json(src / RESULTS_FILE)["evaluator"]
    except (OSError, ValueError, KeyError, TypeError, MinicreamError):
        return None
    return int(info.get("steps", 0)) + int((info.get("init_from") or {}).get("steps_before") or 0)


def reuse_evaluator(src: str | Path, recipe: EvaluatorRecipe, data_root: str | Path, out_dir: str | Path) -> dict | None:
    """Copy the evaluator (and judge) in `src` to `out_dir` and return its results when it was trained by this same
    `recipe` on this same data (the caption fingerprint of `data_root`); None, copying nothing, otherwise.
    A warm-started sitting changes only the generator: its evaluator would come out the same."""
    src, out_dir = Path(src), Path(out_dir)
    try:
        old = read_json(src / RESULTS_FILE)
    except (OSError, ValueError, MinicreamError):
        return None
    if not isinstance(old, dict) or old.get("data_fingerprint") != data_fingerprint(Path(data_root)) \
            or old.get("recipe") != json.loads(json.dumps(dataclasses.asdict(recipe))):
        return None
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    return old


def focus_of_model(model_dir: str | Path) -> dict:
    """The selection a model was trained on ({"concepts", "groups"}), from its model_index.json."""
    index = Path(model_dir) / "model_index.json"
    try:
        data = read_json(index)["recipe"]["data"]
    except (OSError, ValueError, KeyError, TypeError, MinicreamError):
        raise MinicreamError(f"{model_dir}: not a minicream model folder with a recipe (no readable {index.name})") from None
    if not (data.get("concepts") or data.get("groups")):
        raise MinicreamError(f"{model_dir}: that model was trained on the whole dataset; there is no selection to focus on")
    return {"concepts": tuple(data.get("concepts") or ()), "groups": tuple(data.get("groups") or ())}


def _save(model: MiniCLIP, dest: Path) -> None:
    """bf16 weights (the shipped size); the judge subfolder, if any, is kept."""
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, dtype=torch.bfloat16)
    dest.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        f.replace(dest / f.name)
    tmp.rmdir()


def train_model_evaluator(cfg, model_dir: Path, run_dir: Path, log, resume: bool, encoder) -> dict:
    """`minicream train` stage 7 (a RecipeConfig's [evaluator]): the evaluator preset, focused on the generator's
    selection, saved to `model_dir/evaluator`."""
    from .scorer import EVALUATOR_DIR

    e = cfg.evaluator
    overrides = [f"{key}={value}" for key, value in (("train.steps", e.steps), ("judge_train.steps", e.judge_steps),
                                                     ("train.max_minutes", e.max_minutes),
                                                     ("judge_train.max_minutes", e.judge_max_minutes)) if value]
    recipe = dataclasses.replace(load_recipe(e.preset, overrides), concepts=tuple(cfg.data.concepts), groups=tuple(cfg.data.groups))
    root = cfg.data.folder()
    if cfg.init_from:  # a warm-started sitting: the evaluator depends only on its recipe and the data
        reused = reuse_evaluator(Path(cfg.init_from) / EVALUATOR_DIR, recipe, root, model_dir / EVALUATOR_DIR)
        if reused is not None:
            log(f"evaluator: {cfg.init_from}'s evaluator and judge come from this same recipe and data: copied, not retrained")
            return reused
    return train_evaluator(recipe, root, model_dir / EVALUATOR_DIR, log=log, run_dir=run_dir, resume=resume, encoder=encoder)
