"""The from-scratch recipe as numbered stages. Each stage records its result in the run directory, so a
stopped run resumes at the stage (and, for training, the step) where it stopped.

    1. data         build/load the image-caption dataset (+ synthetic multi-object scenes)
    2. text         encode every caption once with the frozen text encoder (cached)
    3. autoencoder  train the KL autoencoder, measure the latent scaling factor and reconstruction PSNR
    3b. decoder     (decoder.train.steps > 0) fine-tune the decoder on the frozen latent space (training/decoder.py)
    4. latents      encode the training images once (memory-mapped cache)
    5. unet         train the MoE UNet on cached latents and text embeddings
    6. export       write the model directory (config.json + safetensors, bf16) loadable by Pipeline
    7. evaluator    train the image evaluator (best-of-N) and the judge (eval), focused on the model's concepts
    8. upscaler     ([upscaler] preset set) train the diffusion upscaler on the dataset rendered at 4x (training/upscaler.py)
"""
from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed

from ..config import RecipeConfig, config_to_dict, to_toml
from ..data.folder import Example, images_to_tensor, load_caption_folder
from ..data.selection import select_examples
from ..diffusion.objectives import make_objective
from ..errors import MinicreamError
from ..evaluator.train import train_model_evaluator  # stage 7
from ..filter.vocabulary import write_model_concepts
from ..models.autoencoder import build_autoencoder, decode, encode, psnr, save_autoencoder
from ..io.atomic import read_json
from ..io.model_dir import MAX_INDEX_BYTES, MODEL_INDEX  # the model folder's layout lives in io/model_dir.py
from ..models.build import build_unet
from ..text.encoder import TextEncoder
from .stages import mark_done as _mark_done
from .stages import stage_done as _stage_done
from .resume_check import check_data, check_resume, data_fingerprint
from .tasks import autoencoder_loss, unet_loss
from .trainer import Trainer
from .upscaler import stage_recipe, train_stage


class RunLog:
    """Plain-text training log (committed with the reference weights) next to the TensorBoard logs."""

    def __init__(self, path: Path):
        self.path, self.t0 = path, time.time()
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')} +{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


# 1. ------------------------------------------------------------------------------------------------
def load_training_data(cfg: RecipeConfig, log) -> tuple[list[Example], list[Example]]:
    d = cfg.data
    if d.source == "emoji":
        root = Path(d.root)
        if not (root / "train" / "metadata.jsonl").is_file():
            from ..data.emoji import build_emoji_dataset

            log(f"building the emoji dataset in {root}")
            build_emoji_dataset(root, size=d.size, skin_tones=d.skin_tones)
    else:
        root = Path(d.source)
    examples = load_caption_folder(root, size=d.size, split="train")
    if not d.skin_tones:
        examples = [e for e in examples if not e.meta.get("skin_tone")]
    if d.concepts or d.groups:
        examples = select_examples(examples, d.concepts, d.groups)
    pool = examples  # scenes draw objects from the whole dataset, even when `limit` trims the single images
    if d.limit:
        examples = examples[: d.limit]
    if d.augment:
        examples = examples + augmented_copies(examples, d.augment, d.augment_zoom, d.augment_shift)
    scenes: list[Example] = []
    if d.scene_ratio > 0 and d.source == "emoji":
        from ..data.scenes import make_scene_dataset

        n = round(len(examples) * d.scene_ratio / (1 - d.scene_ratio))
        scenes = make_scene_dataset(pool, n, size=d.size, seed=cfg.unet.train.seed)
    return examples, scenes


def augmented_copies(examples: list[Example], copies: int, zoom: float, shift: int, seed: int = 0) -> list[Example]:
    """`copies` zoomed and shifted copies of every example (data.augment), the same for a given seed and list."""
    from ..data.images import zoom_shift

    rng = random.Random(seed)
    out = []
    for _ in range(copies):
        for e in examples:
            z = rng.uniform(zoom, 1.0)
            dx, dy = rng.randint(-shift, shift), rng.randint(-shift, shift)
            out.append(Example(image=zoom_shift(e.image, z, dx, dy), text=e.text, meta={**e.meta, "augmented": True}))
    return out


def caption_variants(example: Example, cfg: RecipeConfig) -> list[str]:
    texts = [example.text]
    concept = example.meta.get("concept")
    if cfg.data.concept_captions and concept and concept != example.text:
        texts.append(concept)
    return texts


# 5. ------------------------------------------------------------------------------------------------
def _unet_trainer(cfg: RecipeConfig, run: Path, latents, images, caption_choices, text, empty_id, log, cpu,
                  offset: int = 0):
    u = cfg.unet
    # The text encoder decides the conditioning widths (384 for MiniLM; another local encoder may differ).
    dim = text.hidden.shape[-1]
    set_seed(u.train.seed)  # the initial weights are part of a deterministic run
    model = build_unet(dataclasses.replace(u.model, context_dim=dim, pooled_dim=dim, in_channels=latents.shape[1],
                                        sample_size=latents.shape[-1]))
    if cfg.init_from:  # `offset`: the samples its earlier sittings trained on (its training record)
        _warm_start(model, Path(cfg.init_from) / "unet")
        log(f"unet: warm start from {cfg.init_from} (fresh optimizer; {offset:,} samples trained before)")
    if u.train.plan_samples:
        log(f"unet: planned schedule of {u.train.plan_samples:,} samples; this sitting starts at {offset:,} "
            f"({offset / u.train.plan_samples:.1%}), warm-up {u.train.warmup_steps} steps, cooldown {u.train.cooldown:.0%}")
    objective = make_objective(u.objective, u.min_snr_gamma or None, u.beta_schedule, u.zero_terminal_snr,
                               u.timesteps, u.logit_mean, u.logit_std)
    n_params = sum(p.numel() for p in model.parameters())
    repa = None
    if u.repa_weight:
        from .repa import WithREPA, encoder_targets

        t0 = time.time()
        targets = encoder_targets(u.repa_encoder, images, latents.shape[-1] // u.model.patch_size)
        repa = (targets, u.repa_weight)
        model = WithREPA(model, targets.shape[1])
        log(f"unet: REPA targets {tuple(targets.shape)} from {u.repa_encoder}'s evaluator, weight {u.repa_weight} "
            f"({time.time() - t0:.1f}s)")
    usage = torch.zeros(len(model.moe_layers), u.model.num_experts)  # tokens per expert since the last log line
    loss_fn = unet_loss(latents, caption_choices, text, empty_id, objective, u.cfg_dropout, u.moe_aux_weight,
                        u.moe_z_weight, repa, usage)
    log(f"unet: {n_params / 1e6:.2f} M parameters, arch={u.model.arch}, moe={u.model.moe}, experts={u.model.num_experts}, top_k={u.model.top_k}, objective={u.objective}")

    def log_step(step, rec):
        fractions = (usage / usage.sum(dim=1, keepdim=True).clamp(min=1)).flatten().tolist()
        usage.zero_()
        usage_text = " ".join(f"{x:.2f}" for x in fractions)
        log(f"unet step {step}/{u.train.steps} loss {rec['loss_avg']:.4f} {rec['samples_per_s']:.0f} samples/s"
            + (f" repa {rec['repa']:.3f}" if "repa" in rec else "") + (f" expert usage [{usage_text}]" if usage_text else ""))

    return Trainer(model, loss_fn, len(latents), u.train, run, "unet", cpu=cpu, log_fn=log_step,
                   plan_offset=offset), objective


def training_record(model_dir: Path) -> dict:
    """What an exported model says of its training (model_index.json "training"): samples seen over all its
    sittings, the number of sittings, the planned schedule's length. Empty for a model that records none."""
    return dict(read_json(model_dir / MODEL_INDEX, max_bytes=MAX_INDEX_BYTES).get("training") or {})


def run_recipe(cfg: RecipeConfig, run_dir: str | Path, resume: bool = False, cpu: bool | None = None) -> Path:
    run = Path(run_dir)
    if run.exists() and any(run.iterdir()) and not resume:
        raise MinicreamError(f"{run} is not empty; pass --resume to continue that run or choose another --out")
    if resume:
        check_resume(run, cfg)
    if cfg.init_from:
        from ..io.model_dir import resolve_model  # a shipped model's name ("full") or a folder

        cfg = dataclasses.replace(cfg, init_from=str(resolve_model(cfg.init_from)))
        _check_init_from(cfg)
    if cfg.upscaler.preset:
        stage_recipe(cfg)  # stage 8's dataset and settings, checked before hours of training
    run.mkdir(parents=True, exist_ok=True)
    (run / "cache").mkdir(parents=True, exist_ok=True)
    (run / "config.toml").write_text(to_toml(cfg))
    log = RunLog(run / "train_log.txt")
    t_total = time.time()
    log(f"recipe start (resume={resume}) torch {torch.__version__}, threads {torch.get_num_threads()}")

    # 1. Data
    t0 = time.time()
    examples, scenes = load_training_data(cfg, log)
    all_examples = examples + scenes
    check_data(run, cfg)  # the dataset may have been (re)built just now
    if _stage_done(run, "data") is None:
        root = cfg.data.folder()
        _mark_done(run, "data", {"fingerprint": data_fingerprint(root), "images": len(examples), "scenes": len(scenes)})
    log(f"1. data: {len(examples)} images + {len(scenes)} scenes ({time.time() - t0:.1f}s)")

    # 2. Text embeddings, once for every caption variant (+ the empty prompt for guidance)
    t0 = time.time()
    encoder = TextEncoder.load(None if cfg.text.encoder == "minilm" else cfg.text.encoder, max_length=cfg.text.max_length)
    variants = [caption_variants(e, cfg) for e in all_examples]
    unique = sorted({t for v in variants for t in v} | {""})
    index = {t: i for i, t in enumerate(unique)}
    text = encoder.encode_cached(unique, run / "cache" / "text.safetensors")
    caption_choices = [[index[t] for t in v] for v in variants]
    log(f"2. text: {len(unique)} unique captions encoded by {encoder.id} ({time.time() - t0:.1f}s)")

    # 3. Autoencoder
    images = images_to_tensor(all_examples)
    ae_dir = run / "vae"
    done = _stage_done(run, "autoencoder")
    if done is None and cfg.init_from:  # warm start: the latents must come from the model's own autoencoder
        from ..models.autoencoder import load_autoencoder

        vae = load_autoencoder(Path(cfg.init_from) / "vae")
        save_autoencoder(vae, ae_dir)
        _mark_done(run, "autoencoder", {"init_from": str(cfg.init_from), "scaling_factor": vae.config.scaling_factor})
        log(f"3. autoencoder: taken from {cfg.init_from}")
    elif done is None:
        t0 = time.time()
        a = cfg.autoencoder
        set_seed(a.train.seed)  # the initial weights are part of a deterministic run
        trainer = Trainer(build_autoencoder(a.model), autoencoder_loss(images, a.kl_weight), len(images), a.train, run,
                          "autoencoder", cpu=cpu, log_fn=lambda s, r: log(f"autoencoder step {s}/{a.train.steps} loss {r['loss_avg']:.4f} {r['samples_per_s']:.0f} samples/s"))
        if resume and trainer.resume():
            log(f"autoencoder: resumed at step {trainer.step}")
        trainer.train()
        vae = trainer.final_model().float()
        if trainer.acc.is_main_process:
            raw = encode(vae, images)
            vae.register_to_config(scaling_factor=float(1.0 / raw.std()))
            test = _heldout_images(cfg)
            rec = decode(vae, encode(vae, test))
            result = {"psnr_heldout_db": round(psnr(test, rec), 2), "n_heldout": len(test),
                      "scaling_factor": vae.config.scaling_factor, "seconds": round(time.time() - t0, 1)}
            save_autoencoder(vae, ae_dir)
            _mark_done(run, "autoencoder", result)
            log(f"3. autoencoder: {result}")
        trainer.acc.wait_for_everyone()
    from ..models.autoencoder import load_autoencoder

    if cfg.decoder.train.steps > 0 and _stage_done(run, "decoder") is None:
        _decoder_stage(cfg, run, ae_dir, images, log, resume, cpu)
    vae = load_autoencoder(ae_dir)

    # 4. Latents, memory-mapped (written by the main process; the others wait for it)
    from accelerate import PartialState

    state = PartialState(cpu=cpu if cpu is not None else not torch.cuda.is_available())
    lat_path = run / "cache" / "latents.npy"
    if _stage_done(run, "latents") is None and state.is_main_process:
        t0 = time.time()
        lat = encode(vae, images).numpy().astype(np.float32)
        np.save(lat_path, lat)
        _mark_done(run, "latents", {"shape": list(lat.shape), "std": float(lat.std()), "seconds": round(time.time() - t0, 1)})
        log(f"4. latents: {lat.shape}, std {lat.std():.3f} ({time.time() - t0:.1f}s)")
    state.wait_for_everyone()
    latents = torch.from_numpy(np.load(lat_path, mmap_mode="c"))  # copy-on-write memory map: pages load on demand

    # 5. UNet (skipped, with 6, when a resumed run has exported a UNet of this same configuration)
    model_dir = run / "model"
    unet_cfg = json.loads(json.dumps(config_to_dict(cfg.unet)))
    if (_stage_done(run, "export") or {}).get("unet") != unet_cfg:
        t0 = time.time()
        before = training_record(Path(cfg.init_from)) if cfg.init_from else {}  # earlier sittings
        trainer, objective = _unet_trainer(cfg, run, latents, images, caption_choices, text, index[""], log, cpu,
                                           offset=int(before.get("samples", 0)))
        if resume and trainer.resume():
            log(f"unet: resumed at step {trainer.step}")
        stats = trainer.train()
        unet = trainer.final_model()
        if cfg.unet.repa_weight:
            unet = unet.unet  # REPA's head is not exported
        log(f"5. unet: {stats['steps']} steps in {stats['seconds']:.0f}s; peak resident memory so far {_peak_rss_gb():.2f} GB")

        # 6. Export
        if trainer.acc.is_main_process:
            record = {"samples": trainer.schedule.plan_position(stats["steps"]),
                      "sittings": int(before.get("sittings", 0)) + 1,
                      "plan_samples": cfg.unet.train.plan_samples}
            export_model(model_dir, cfg, unet, vae, objective, encoder, sorted({e.text for e in examples}), record)
            _mark_done(run, "export", {"unet_steps": stats["steps"], "unet_seconds": round(stats["seconds"], 1),
                                       "mb": round(_dir_mb(model_dir), 1), "unet": unet_cfg})
            log(f"6. export: {model_dir} ({_dir_mb(model_dir):.1f} MB); total {(time.time() - t_total) / 60:.1f} min")

    # 7. Evaluator and judge (small models: one process trains them)
    if cfg.evaluator.preset and state.num_processes > 1:
        if state.is_main_process:
            log(f"7. evaluator: skipped in a {state.num_processes}-process launch; run "
                f"`minicream train-evaluator --for-model {model_dir} --out {model_dir / 'evaluator'}` after it")
    elif cfg.evaluator.preset and _stage_done(run, "evaluator") is None:
        t0 = time.time()
        res = train_model_evaluator(cfg, model_dir, run / "evaluator", log, resume, encoder)
        _mark_done(run, "evaluator", {k: res[k] for k in ("evaluator", "judge") if k in res} | {"seconds": round(time.time() - t0, 1)})
        log(f"7. evaluator: {model_dir / 'evaluator'} ({time.time() - t0:.0f}s); total {(time.time() - t_total) / 60:.1f} min")

    if cfg.upscaler.preset:  # 8. Upscaler (one process, like the evaluator)
        train_stage(cfg, run, model_dir, log, resume, state)
    return model_dir


# 3b. -----------------------------------------------------------------------------------------------
def _decoder_stage(cfg: RecipeConfig, run: Path, ae_dir: Path, images: torch.Tensor, log, resume: bool, cpu) -> None:
    """Fine-tune the run's decoder in place (run/vae); the encoder and scaling factor, so the latents, are kept."""
    from accelerate import PartialState

    from ..models.autoencoder import load_autoencoder
    from .decoder import finetune_and_report

    t0 = time.time()
    vae, before, after = finetune_and_report(load_autoencoder(ae_dir), images, cfg, run, log, resume, cpu)
    state = PartialState()
    if state.is_main_process:
        save_autoencoder(vae, ae_dir)
        _mark_done(run, "decoder", {"before": before, "after": after, "seconds": round(time.time() - t0, 1)})
        log(f"3b. decoder: held-out PSNR {before['psnr_db']} -> {after['psnr_db']} dB, green kept "
            f"{before['green_kept']} -> {after['green_kept']}, sharpness {before['sharpness']} -> {after['sharpness']}")
    state.wait_for_everyone()


def _check_init_from(cfg: RecipeConfig) -> None:
    """Refuse a warm start from a model whose UNet differs, before anything is written."""
    src = Path(cfg.init_from)
    for part in ("unet", "vae"):
        if not (src / part / "config.json").is_file():
            raise MinicreamError(f"init_from: {src} is not an exported model (no {part}/config.json)")
    try:
        theirs = json.loads((src / "unet" / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise MinicreamError(f"init_from: {src / 'unet' / 'config.json'} is unreadable ({e})") from None
    ours = dataclasses.asdict(cfg.unet.model)
    # context/pooled widths, channels in and latent size come from the text encoder and the autoencoder
    derived = {"context_dim", "pooled_dim", "in_channels", "sample_size"}
    differ = [k for k in ours if k not in derived and json.loads(json.dumps(ours[k])) != theirs.get(k, ours[k])]
    if differ:
        raise MinicreamError("init_from: the UNet config differs from the run's in " + ", ".join(
            f"{k} ({theirs.get(k)!r} there, {ours[k]!r} here)" for k in differ))


def _warm_start(model: torch.nn.Module, unet_dir: Path) -> None:
    """Load an exported UNet's weights into `model`, refusing a different architecture with the fields named."""
    from ..models.build import load_unet

    if not (unet_dir / "config.json").is_file():
        raise MinicreamError(f"init_from: {unet_dir} has no exported UNet (config.json)")
    source = load_unet(unet_dir)
    ours, theirs = dataclasses.asdict(model.config), dataclasses.asdict(source.config)
    differ = [k for k in ours if ours[k] != theirs.get(k)]
    if differ:
        raise MinicreamError("init_from: the UNet config differs from the run's in " + ", ".join(
            f"{k} ({theirs.get(k)!r} there, {ours[k]!r} here)" for k in differ))
    model.load_state_dict(source.state_dict())


def _heldout_images(cfg: RecipeConfig) -> torch.Tensor:
    root = cfg.data.folder()
    try:
        test = load_caption_folder(root, size=cfg.data.size, split="test")
    except MinicreamError:
        test = load_caption_folder(root, size=cfg.data.size, split="train")
    return images_to_tensor(test[:512])


def _peak_rss_gb() -> float:
    import resource  # POSIX; ru_maxrss is in KiB on Linux

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def export_model(model_dir: Path, cfg: RecipeConfig, unet, vae, objective, encoder, vocabulary: list[str],
                 training: dict | None = None) -> None:
    """The model directory: bf16 safetensors + configs, everything Pipeline.from_pretrained needs."""
    model_dir.mkdir(parents=True, exist_ok=True)
    unet.float().save_pretrained(model_dir / "unet", dtype=torch.bfloat16)
    save_autoencoder(vae, model_dir / "vae", dtype=torch.bfloat16)
    index = {
        "format": "minicream", "version": 1,
        "image_size": cfg.data.size,
        "objective": objective.scheduler_config(),
        "text_encoder": {"name": cfg.text.encoder, "max_length": cfg.text.max_length, "id": encoder.id},
        "sample": config_to_dict(cfg.sample),
        "recipe": config_to_dict(cfg),
    }
    if training:  # samples seen over every sitting: where the next --init-from sitting resumes a planned schedule
        index["training"] = training
    (model_dir / MODEL_INDEX).write_text(json.dumps(index, indent=1))
    (model_dir / "vocabulary.json").write_text(json.dumps(vocabulary, ensure_ascii=False, indent=0))
    write_model_concepts(model_dir, vocabulary, cfg.data.folder())
