"""One-step generation the InstaFlow way, as numbered stages over a finished teacher model. Each stage records its
result in the run directory (`stages/*.json`), so a stopped run resumes where it stopped.

    1. prompts   every caption the teacher was trained on (each concept in each style, and plain), plus scene captions
    2. pairs     (noise, latent, prompt) triples drawn by the teacher with its sampler and guidance (safetensors shards)
    3. reflow    a 2-rectified flow on those pairs, initialised from the teacher (its v-network, read as a velocity
                 field: diffusion/reflow.py), guidance baked in; exported as a flow model
    4. targets   the 2-rectified flow's own images from the same noises (`student_steps` Euler steps): straight
                 paths make them a smoother map for the student than the teacher's
    5. distill   the one-step student: noise -> image in one evaluation, latent L2 + a perceptual term in the
                 feature space of the teacher's own evaluator (no downloaded LPIPS); exported as a flow model
    6. measure   straightness (InstaFlow's metric) of the teacher and of the 2-rectified flow, on held-out noises
"""
from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..diffusion.reflow import euler_path, network_alphas, one_step, reflow_loss, straightness, velocity_from_v
from ..errors import MinicreamError
from ..io.atomic import write_text_atomic
from ..io.model_dir import MODEL_INDEX, ModelDir
from ..io.weights import short_hash
from ..models.base import WEIGHTS_NAME
from ..models.moe import summarize
from ..text.encoder import TextEmbeddings
from .stages import mark_done, stage_done
from .trainer import TrainConfig, Trainer


@dataclass
class DistillConfig:
    teacher: str = ""  # a shipped model's name or a model folder; empty: the default model (pipelines/base.py)
    pairs: int = 6144  # (noise, latent, prompt) triples drawn from the teacher
    scene_prompts: int = 256  # scene captions among the prompts (two objects, position, counting, size)
    sampler: str = ""  # the teacher's sampler, steps and guidance; empty / 0 / -1: its own defaults
    steps: int = 0
    guidance: float = -1.0
    shard_size: int = 512
    sample_batch: int = 64
    seed: int = 0
    reflow: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=2000, batch_size=48, lr=1e-4, warmup_steps=50, decay_to=0.1, ema_decay=0.995, checkpoint_every=300,
        log_every=50, max_minutes=40.0))
    student_steps: int = 8  # Euler steps of the 2-rectified flow that draw the student's targets; 0 = the teacher's
    distill: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1500, batch_size=48, lr=1e-4, warmup_steps=50, decay_to=0.1, ema_decay=0.995, checkpoint_every=300,
        log_every=50, max_minutes=40.0))
    perceptual_weight: float = 1.0  # the evaluator-feature term beside latent L2
    measure_samples: int = 64  # noises per measurement of straightness


def load_distill_config(path: str | Path | None = "onestep", overrides=()) -> DistillConfig:
    from ..config import build_dataclass, read_toml
    from ..config_checks import validate_distill

    cfg = build_dataclass(DistillConfig, read_toml(path or None, overrides))
    validate_distill(cfg)
    return cfg


# 1. ------------------------------------------------------------------------------------------------
def teacher_prompts(model: ModelDir, n_scenes: int, seed: int) -> list[str]:
    """Every caption the teacher was trained on ("concept, style"), each concept plainly, and scene captions."""
    from ..data.scene_layout import plan_scene
    from ..filter import load_vocabulary

    captions = json.loads((model.path / "vocabulary.json").read_text(encoding="utf-8"))
    names = sorted(load_vocabulary(model.path).by_name)
    rng = random.Random(seed)
    scenes = [plan_scene(rng, names, model.image_size).text for _ in range(n_scenes)] if len(names) >= 2 else []
    return list(dict.fromkeys([*captions, *names, *scenes]))


# 2. ------------------------------------------------------------------------------------------------
def draw_pairs(pipe, prompts: list[str], cfg: DistillConfig, out: Path, log) -> dict:
    """Shards of (noise, latents, prompt_id) from the teacher; an existing shard is kept (resume)."""
    steps, guidance, sampler = pipe.settings(cfg.steps or None, None if cfg.guidance < 0 else cfg.guidance,
                                             cfg.sampler or None)
    out.mkdir(parents=True, exist_ok=True)
    order = torch.randperm(cfg.pairs, generator=torch.Generator().manual_seed(cfg.seed)) % len(prompts)
    uncond = pipe.encode_prompt("")
    n_shards = -(-cfg.pairs // cfg.shard_size)
    t0 = time.time()
    for k in tqdm(range(n_shards), desc="teacher pairs", unit="shard"):
        path = out / f"shard_{k:04d}.safetensors"
        if path.is_file():
            continue
        lo, hi = k * cfg.shard_size, min((k + 1) * cfg.shard_size, cfg.pairs)
        seeds = [cfg.seed * 1_000_003 + i for i in range(lo, hi)]
        ids = order[lo:hi]
        # the pipeline's own encoding (each prompt alone), so that a user redrawing a pair's seed gets its latents
        emb = pipe.encode_prompt([prompts[int(i)] for i in ids])
        latents = pipe.denoise(seeds, emb, uncond, guidance, sampler, steps, batch_size=cfg.sample_batch)
        noise, _ = pipe.noise(seeds, latents.shape[1:])
        tmp = path.with_suffix(".tmp")
        save_file({"noise": noise.contiguous(), "latents": latents.float().contiguous(), "prompt_id": ids.contiguous()},
                  str(tmp))
        tmp.replace(path)
        log(f"2. pairs: shard {k + 1}/{n_shards} ({hi} pairs, {time.time() - t0:.0f}s)")
    return {"sampler": sampler, "steps": steps, "guidance": guidance, "pairs": cfg.pairs, "shards": n_shards}


def load_pairs(folder: Path) -> dict[str, torch.Tensor]:
    shards = sorted(folder.glob("shard_*.safetensors"))
    if not shards:
        raise MinicreamError(f"{folder}: no pair shards")
    parts = [load_file(str(p)) for p in shards]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


# 3. and 5. ---------------------------------------------------------------------------------------
def _net(model, text: TextEmbeddings, ids, moe_stats: list | None = None):
    """The student as net_fn(x, t) for these prompts; its MoE layers report into `moe_stats` (a list) if given."""
    emb = text[ids]
    device = next(model.parameters()).device
    ctx, mask, pooled = emb.hidden.to(device), emb.mask.to(device), emb.pooled.to(device)
    return lambda x, t: model(x.contiguous(memory_format=torch.channels_last), t, ctx, mask, pooled, moe_stats=moe_stats)


def _moe_terms(moe_stats: list) -> tuple[torch.Tensor | float, dict]:
    """The balance and z-losses the forward returned (the recipe's default weights), none for a dense model."""
    if not moe_stats:
        return 0.0, {}
    aux, z, _ = summarize(moe_stats)
    return 0.01 * aux + 0.001 * z, {"moe_balance": float(aux)}


def reflow_task(pairs: dict, text: TextEmbeddings, alphas: torch.Tensor):
    x0s, x1s, ids = pairs["latents"], pairs["noise"], pairs["prompt_id"]

    def loss_fn(model, idx, gen):
        moe = []
        u_fn = velocity_from_v(_net(model, text, ids[idx], moe), alphas)
        loss = reflow_loss(u_fn, x0s[idx], x1s[idx], gen).mean()
        extra, logs = _moe_terms(moe)
        return loss + extra, {"reflow": loss.item(), **logs}

    return loss_fn


class EvaluatorFeatures(torch.nn.Module):
    """LPIPS-like features from the teacher's own evaluator image tower: each stage's activations, unit-normalised
    over channels (the perceptual term compares them by mean squared difference)."""

    def __init__(self, evaluator_model):
        super().__init__()
        self.m = evaluator_model.float().eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:  # images in [-1, 1]
        tower = self.m.image_tower
        x = self.m.preprocess((images.float().clamp(-1, 1) + 1) / 2)
        h, feats = F.silu(tower.stem(x)), []
        for stage in tower.stages:
            h = stage(h)
            feats.append(F.normalize(h.float(), dim=1))
        return feats


def perceptual_distance(fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
    return sum((a - b).pow(2).sum(1).flatten(1).mean(1) for a, b in zip(fa, fb)) / len(fa)


def distill_task(noise: torch.Tensor, targets: torch.Tensor, ids: torch.Tensor, text: TextEmbeddings,
                 alphas: torch.Tensor, vae, features: EvaluatorFeatures | None, weight: float):
    """Student loss: latent L2 between its one-step image and the target, plus `weight` x the perceptual distance
    of the decoded images in the evaluator's feature space."""
    vae = vae.float().eval().requires_grad_(False)
    scale = vae.config.scaling_factor

    def loss_fn(model, idx, gen):
        moe = []
        x0 = one_step(velocity_from_v(_net(model, text, ids[idx], moe), alphas), noise[idx]).float()
        target = targets[idx]
        l2 = (x0 - target).pow(2).flatten(1).mean(1).mean()
        loss, logs = l2, {"l2": l2.item()}
        if features is not None and weight > 0:
            with torch.no_grad():
                ft = features(vae.decode(target / scale).sample)
            perc = perceptual_distance(features(vae.decode(x0 / scale).sample), ft).mean()
            loss = loss + weight * perc
            logs["perceptual"] = perc.item()
        extra, moe_logs = _moe_terms(moe)
        return loss + extra, {**logs, **moe_logs}

    return loss_fn


def _train(model, task, n: int, tcfg: TrainConfig, run: Path, name: str, log, resume: bool):
    """One training stage (reflow, distill) with the shared Trainer: resumable, logged to the run's log."""
    trainer = Trainer(model, task, n, tcfg, run, name, log_fn=lambda s, r: log(
        f"{name} step {s}/{tcfg.steps} loss {r['loss_avg']:.4f} {r['samples_per_s']:.0f} samples/s"))
    start = 0
    if resume and trainer.resume():
        start = trainer.step
        log(f"{name}: resumed at step {start}")
    stats = trainer.train()
    if start:  # this sitting's seconds only: the log holds the earlier ones
        stats["resumed_at_step"] = start
    return trainer, stats


# 6. ------------------------------------------------------------------------------------------------
def export_flow_model(out: Path, teacher: ModelDir, unet, what: str, sample: dict, info: dict) -> None:
    """A model folder like the teacher's (same autoencoder, evaluator, vocabulary) whose UNet is `unet`, read as a
    flow velocity through its v-prediction parametrisation (model_index objective.network)."""
    out.mkdir(parents=True, exist_ok=True)
    unet.float().save_pretrained(out / "unet", dtype=torch.bfloat16)
    for part in ("vae", "evaluator"):
        if (teacher.path / part).is_dir():
            shutil.copytree(teacher.path / part, out / part, dirs_exist_ok=True)
    for f in ("vocabulary.json", "concepts.json"):
        if (teacher.path / f).is_file():
            shutil.copy(teacher.path / f, out / f)
    t_obj = teacher.objective
    index = {**{k: v for k, v in teacher.index.items() if k != "recipe"},
             "objective": {"num_train_timesteps": t_obj.get("num_train_timesteps", 1000), "prediction_type": "flow",
                           "network": {"prediction_type": "v_prediction",
                                       "beta_schedule": t_obj.get("beta_schedule", "scaled_linear"),
                                       "rescale_betas_zero_snr": bool(t_obj.get("rescale_betas_zero_snr", False))}},
             "sample": {**({"style": teacher.defaults["style"]} if teacher.defaults.get("style") else {}), **sample},
             "distill": {"what": what, **info}}
    write_text_atomic(out / MODEL_INDEX, json.dumps(index, indent=1))


def _timing(name: str, stats: dict) -> dict:
    """A stage's seconds; a resumed stage's earlier sittings are in train_log.txt, so only the step it resumed at."""
    if "resumed_at_step" in stats:
        return {f"{name}_resumed_at_step": stats["resumed_at_step"]}
    return {f"{name}_seconds": round(stats["seconds"])}


def _lengthless(cfg: DistillConfig) -> dict:
    """The settings a resumed run must share: all but how long the training stages run."""
    d = dataclasses.asdict(cfg)
    for stage in ("reflow", "distill"):
        d[stage].pop("steps"), d[stage].pop("max_minutes")
    return d


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in a:
        if isinstance(a[k], dict):
            out += _differences(a[k], b[k], f"{prefix}{k}.")
        elif a[k] != b[k]:
            out.append(f"{prefix}{k} ({a[k]!r} in the run, {b[k]!r} now)")
    return out


def teacher_info(teacher: ModelDir) -> dict:
    return {"teacher": teacher.path.name, "teacher_hash": short_hash(teacher.unet / WEIGHTS_NAME)}


def run_distill(cfg: DistillConfig, run_dir: str | Path, resume: bool = False) -> Path:
    from ..config import to_toml
    from ..models.build import load_unet
    from ..io.model_dir import resolve_model
    from ..pipelines import Pipeline
    from .recipe import RunLog

    run = Path(run_dir)
    if run.exists() and any(run.iterdir()) and not resume:
        raise MinicreamError(f"{run} is not empty; pass --resume to continue that run or choose another --out")
    teacher_dir = resolve_model(cfg.teacher or None)
    teacher = ModelDir.open(teacher_dir)
    if teacher.objective.get("prediction_type") != "v_prediction":
        raise MinicreamError(f"{teacher_dir}: distill needs a v-prediction teacher (this one is "
                             f"{teacher.objective.get('prediction_type')!r})")
    if resume and (run / "config.toml").is_file():
        from ..config import build_dataclass, read_toml

        saved = build_dataclass(DistillConfig, read_toml(run / "config.toml"))
        differ = _differences(_lengthless(saved), _lengthless(cfg))
        if differ:
            raise MinicreamError(f"{run}: --resume with other settings than the run's in {', '.join(differ)}; only the "
                                 "stages' steps and max_minutes may change (use the same settings or a new --out)")
    (run / "cache").mkdir(parents=True, exist_ok=True)
    write_text_atomic(run / "config.toml", to_toml(cfg))
    log = RunLog(run / "train_log.txt")
    info = teacher_info(teacher)
    log(f"distill start (resume={resume}) teacher {teacher_dir} ({info['teacher_hash']}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}")

    # 1. Prompts and their embeddings
    pipe = Pipeline.from_pretrained(teacher_dir)
    prompts = teacher_prompts(teacher, cfg.scene_prompts, cfg.seed)
    write_text_atomic(run / "prompts.json", json.dumps(prompts, ensure_ascii=False, indent=0))
    text = pipe.text_encoder.encode_cached(prompts, run / "cache" / "text.safetensors")
    log(f"1. prompts: {len(prompts)} ({cfg.scene_prompts} scenes)")

    # 2. Teacher pairs
    if stage_done(run, "pairs") is None:
        t0 = time.time()
        res = draw_pairs(pipe, prompts, cfg, run / "pairs", log)
        res["seconds"] = round(time.time() - t0, 1)
        mark_done(run, "pairs", res)
        log(f"2. pairs: {res}")
    pairs = load_pairs(run / "pairs")
    alphas = network_alphas({"beta_schedule": teacher.objective.get("beta_schedule", "scaled_linear"),
                             "rescale_betas_zero_snr": teacher.objective.get("rescale_betas_zero_snr", False)})
    pair_info = {**info, "pairs": len(pairs["noise"]), **{k: stage_done(run, "pairs")[k] for k in ("sampler", "steps", "guidance")}}

    # 3. Reflow
    reflow_dir = run / "reflow_model"
    if stage_done(run, "reflow") is None:
        torch.manual_seed(cfg.seed)
        trainer, stats = _train(load_unet(teacher.unet).float(), reflow_task(pairs, text, alphas), len(pairs["noise"]),
                                cfg.reflow, run, "reflow", log, resume)
        export_flow_model(reflow_dir, teacher, trainer.final_model(), "2-rectified flow (reflow of the teacher's pairs)",
                          {"sampler": "euler", "steps": 4, "guidance": 1.0},
                          {**pair_info, "reflow_steps": stats["steps"], **_timing("reflow", stats)})
        mark_done(run, "reflow", {"steps": stats["steps"], "seconds": round(stats["seconds"], 1)})
        log(f"3. reflow: {stats['steps']} steps in {stats['seconds']:.0f}s -> {reflow_dir}")
    reflow = Pipeline.from_pretrained(reflow_dir, dtype="fp32")

    # 4. The student's targets: the 2-rectified flow's own images from the same noises
    tgt_path = run / "cache" / "student_targets.safetensors"
    if cfg.student_steps == 0:
        targets = pairs["latents"]
    else:
        if not tgt_path.is_file():
            t0 = time.time()
            out = []
            for lo in tqdm(range(0, len(pairs["noise"]), cfg.sample_batch), desc="student targets"):
                sl = slice(lo, lo + cfg.sample_batch)
                u_fn = reflow.model_fn(text[pairs["prompt_id"][sl]], None, 1.0)
                out.append(euler_path(u_fn, pairs["noise"][sl], cfg.student_steps)[0])
            save_file({"latents": torch.cat(out).contiguous()}, str(tgt_path))
            mark_done(run, "targets", {"student_steps": cfg.student_steps, "seconds": round(time.time() - t0, 1)})
            log(f"4. targets: {cfg.student_steps}-step images of the 2-rectified flow ({time.time() - t0:.0f}s)")
        targets = load_file(str(tgt_path))["latents"]

    # 5. Distil to one step
    student_dir = run / "model"
    if stage_done(run, "distill") is None:
        from ..evaluator.model import MiniCLIP
        from ..models.autoencoder import load_autoencoder

        torch.manual_seed(cfg.seed)
        feats = EvaluatorFeatures(MiniCLIP.from_pretrained(teacher.evaluator)) if teacher.has(teacher.evaluator) else None
        task = distill_task(pairs["noise"], targets, pairs["prompt_id"], text, alphas, load_autoencoder(teacher.vae),
                            feats, cfg.perceptual_weight)
        trainer, stats = _train(load_unet(reflow_dir / "unet").float(), task, len(targets), cfg.distill, run, "distill",
                                log, resume)
        export_flow_model(student_dir, teacher, trainer.final_model(), "one-step student distilled from the 2-rectified flow",
                          {"sampler": "euler", "steps": 1, "guidance": 1.0},
                          {**pair_info, "student_targets": f"2-rectified flow, {cfg.student_steps} Euler steps"
                           if cfg.student_steps else "the teacher's pairs", "distill_steps": stats["steps"],
                           "perceptual_weight": cfg.perceptual_weight, **_timing("distill", stats)})
        mark_done(run, "distill", {"steps": stats["steps"], "seconds": round(stats["seconds"], 1)})
        log(f"5. distill: {stats['steps']} steps in {stats['seconds']:.0f}s -> {student_dir}")

    # 6. Straightness before and after reflow
    if stage_done(run, "measure") is None:
        res = measure_straightness(pipe, reflow, prompts, cfg)
        mark_done(run, "measure", res)
        log(f"6. straightness: {res}")
    shutil.copy(run / "train_log.txt", student_dir / "train_log.txt")
    write_text_atomic(student_dir / "distill_config.toml", to_toml(cfg))
    return student_dir


def measure_straightness(teacher, reflow, prompts: list[str], cfg: DistillConfig, steps: int = 16) -> dict:
    """InstaFlow's straightness on fresh noises (seeds apart from the training pairs) and random prompts: the
    teacher as a velocity field with its guidance, the 2-rectified flow with guidance baked in."""
    g = torch.Generator().manual_seed(cfg.seed + 99991)
    ids = torch.randint(len(prompts), (cfg.measure_samples,), generator=g)
    x1 = torch.randn((cfg.measure_samples, *teacher.latent_shape), generator=g)
    emb = teacher.encode_prompt([prompts[i] for i in ids.tolist()])
    uncond = teacher.encode_prompt([""] * len(ids))
    guidance = teacher.defaults.get("guidance", 4.0) if cfg.guidance < 0 else cfg.guidance
    t_alphas = network_alphas(teacher.index["objective"])
    t_u = velocity_from_v(teacher.model_fn(emb, uncond, guidance), t_alphas)
    r_u = reflow.model_fn(emb, None, 1.0)
    return {"teacher": round(straightness(t_u, x1, steps), 5), "reflow": round(straightness(r_u, x1, steps), 5),
            "samples": cfg.measure_samples, "euler_steps": steps, "teacher_guidance": guidance}


__all__ = ["DistillConfig", "EvaluatorFeatures", "distill_task", "draw_pairs", "export_flow_model", "load_distill_config",
           "measure_straightness", "perceptual_distance", "reflow_task", "run_distill", "teacher_prompts"]
