"""One training loop for every model we train (autoencoder, UNet), on top of Hugging Face Accelerate.

The same code runs on one CPU, one GPU, or many processes (`accelerate launch` / `torchrun`; gloo on CPU).
Batches are a pure function of (seed, step): each step's indices come from a permutation seeded by the
epoch, and every process takes its own slice. Together with the saved RNG state this makes `--resume`
continue exactly, and `--deterministic` runs reproducible.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from tqdm.auto import tqdm

from ..precision import training_precision
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .ema import EMA


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # global batch per optimizer step (split across processes and accumulation)
    grad_accum: int = 1  # gradient accumulation micro-steps per optimizer step
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    decay_to: float = 0.1  # cosine decay of the learning rate down to lr * decay_to
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # 0 disables EMA
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    mixed_precision: str = "bf16"  # "bf16" | "no"; bf16 runs as fp32 where the hardware lacks it (precision.py)
    deterministic: bool = False
    max_minutes: float = 0.0  # stop (with a checkpoint) after this much training time; 0 = no limit
    # "steps": the cosine runs over `steps`; "time": over whichever of `steps` and `max_minutes` comes first, so a run
    # stopped by the clock still ends with its learning rate decayed (ignored by --deterministic runs: time varies)
    schedule_clock: str = "steps"
    # A schedule planned over several sittings (0 = off: the cosine is this run's own). The cosine runs over
    # `plan_samples` training samples counted from the first sitting; a warm-started sitting (recipe init_from) begins
    # where the model it starts from stopped (its model_index.json "training" record), after `warmup_steps` of warm-up
    # to that learning rate for its fresh optimizer.
    plan_samples: int = 0
    # The last `cooldown` fraction of a planned sitting (by steps, or by the clock under schedule_clock = "time")
    # decays the learning rate linearly to lr * decay_to, so that the weights it exports are annealed; the next
    # sitting resumes the plan where this one's position stands, not from the cooled rate.
    cooldown: float = 0.0


# loss_fn(model, batch_indices, generator) -> (loss scalar, dict of floats to log)
LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Generator], tuple[torch.Tensor, dict]]


class LRSchedule:
    """Linear warm-up over `warmup_steps`, then cosine decay from lr to lr * decay_to over the run's progress.

    Progress after warm-up is the fraction of the remaining steps done, or, once `time_progress` is set (the trainer
    sets it each step under schedule_clock = "time"), whichever of the two is further along. A callable object, not a
    closure, so LambdaLR keeps `time_progress` in its state_dict and a resumed run continues where it was.

    With `plan_samples` the cosine instead follows the plan's position, `plan_offset` samples (those of earlier
    sittings) plus this run's steps x batch; warm-up rises to the plan's rate there, and the last `cooldown` of the
    run's own progress decays linearly to lr * decay_to.
    """

    def __init__(self, cfg: TrainConfig, plan_offset: int = 0):
        self.warmup_steps, self.steps, self.decay_to = cfg.warmup_steps, cfg.steps, cfg.decay_to
        self.plan_samples, self.plan_offset, self.batch_size = cfg.plan_samples, plan_offset, cfg.batch_size
        self.cooldown = cfg.cooldown
        self.time_progress = 0.0

    def progress(self, step: int) -> float:
        p = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return min(1.0, max(p, self.time_progress))

    def _cosine(self, progress: float) -> float:
        return self.decay_to + (1 - self.decay_to) * 0.5 * (1 + math.cos(math.pi * progress))

    def plan_position(self, step: int) -> int:
        """Training samples seen along the plan after `step` optimizer steps of this run."""
        return self.plan_offset + step * self.batch_size

    def __call__(self, step: int) -> float:
        # the rate warm-up rises to: the peak, or the plan's rate where this sitting stands
        target = self._cosine(min(1.0, self.plan_position(step) / self.plan_samples)) if self.plan_samples else 1.0
        if step < self.warmup_steps:
            return target * (step + 1) / self.warmup_steps
        if not self.plan_samples:
            return self._cosine(self.progress(step))
        left = 1.0 - self.progress(step)  # of this sitting
        if self.cooldown > 0 and left < self.cooldown:
            return self.decay_to + (target - self.decay_to) * left / self.cooldown
        return target


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    return LRSchedule(cfg)


def batch_indices(step: int, micro: int, n: int, cfg: TrainConfig, rank: int, world: int) -> torch.Tensor:
    """Indices of one process's micro-batch: a pure function of (seed, step, micro, rank)."""
    per_opt_step = cfg.batch_size
    per_epoch = max(1, n // per_opt_step)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
    if n < per_opt_step:  # tiny datasets: repeat the permutation to fill a batch
        perm = perm.repeat(math.ceil(per_opt_step / n))
    batch = perm[pos * per_opt_step:(pos + 1) * per_opt_step]
    micro_size = per_opt_step // cfg.grad_accum
    batch = batch[micro * micro_size:(micro + 1) * micro_size]
    return batch[rank::world]


class Trainer:
    def __init__(self, model: torch.nn.Module, loss_fn: LossFn, num_examples: int, cfg: TrainConfig,
                 run_dir: str | Path, name: str, cpu: bool | None = None, log_fn: Callable | None = None,
                 plan_offset: int = 0):
        self.cfg, self.loss_fn, self.n, self.name = cfg, loss_fn, num_examples, name
        self.run_dir = Path(run_dir)
        self.log_fn = log_fn
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        # step_scheduler_with_optimizer=False: our schedule counts optimizer steps of the global batch,
        # not per-process steps (Accelerate would otherwise step it once per process).
        on_cpu = bool(cpu) if cpu is not None else not torch.cuda.is_available()
        self.precision = training_precision(cfg.mixed_precision, "cpu" if on_cpu else "cuda")
        self.acc = Accelerator(mixed_precision=self.precision, step_scheduler_with_optimizer=False, cpu=on_cpu,
                               log_with="tensorboard", project_dir=str(self.run_dir / "logs"),
                               # MoE experts that receive no token in a step have no gradient there.
                               kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        set_seed(cfg.seed)
        if self.acc.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        model = model.to(self.acc.device, memory_format=torch.channels_last)
        # Fused AdamW (one kernel over all parameters) on CPU too: half the optimizer time of foreach here.
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99), fused=True)
        self.schedule = LRSchedule(cfg, plan_offset)  # plan_offset: samples of earlier sittings (plan_samples)
        # By the clock only when there is a clock to follow and the run need not be reproducible.
        self.time_clock = cfg.schedule_clock == "time" and cfg.max_minutes > 0 and not cfg.deterministic
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.schedule)
        self.model, self.opt, self.sched = self.acc.prepare(model, opt, sched)
        self.ema = EMA(self.acc.unwrap_model(self.model), cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.gen = torch.Generator().manual_seed(cfg.seed * 7919 + self.acc.process_index)
        self.step = 0

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self, extra: dict | None = None) -> None:
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            rng = {"torch": torch.get_rng_state(), "noise": self.gen.get_state()}
            ema = self.ema.state_dict() if self.ema else None
            save_checkpoint(self.run_dir / self.name, self.step, self.acc.unwrap_model(self.model).state_dict(), ema,
                            self.opt, rng, {"ema_updates": self.ema.num_updates if self.ema else 0,
                                            "lr_scheduler": self.sched.scheduler.state_dict(), **(extra or {})})
        self.acc.wait_for_everyone()

    def resume(self) -> bool:
        ckpt = latest_checkpoint(self.run_dir / self.name)
        if ckpt is None:
            return False
        state = load_checkpoint(ckpt)
        self.acc.unwrap_model(self.model).load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        # Saved state is contiguous; give each moment its parameter's strides (channels-last convs), which the
        # fused AdamW kernel assumes (it walks parameter and state memory in the same order).
        for group in self.opt.param_groups:
            for p in group["params"]:
                st = self.opt.state.get(p, {})
                for k, v in st.items():
                    if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                        st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)
        if self.ema and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"], state["extra"].get("ema_updates", 0))
        torch.set_rng_state(state["rng"]["torch"])
        if self.acc.num_processes == 1:  # each process's noise stream is re-derived from its rank otherwise
            self.gen.set_state(state["rng"]["noise"])
        else:
            self.gen.manual_seed(self.cfg.seed * 7919 + self.acc.process_index + 104729 * state["step"])
        self.step = state["step"]
        self.sched.scheduler.load_state_dict(state["extra"]["lr_scheduler"])  # last_epoch = step (+ time_progress)
        self.schedule.warmup_steps, self.schedule.steps = self.cfg.warmup_steps, self.cfg.steps  # today's settings
        self.schedule.decay_to = self.cfg.decay_to
        self.schedule.plan_samples, self.schedule.cooldown = self.cfg.plan_samples, self.cfg.cooldown
        return True

    # -- loop --------------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg, acc = self.cfg, self.acc
        acc.init_trackers(self.name)
        model = self.model
        model.train()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {self.name}", disable=not acc.is_local_main_process,
                   unit="step", dynamic_ncols=True)
        t_start, samples, t_last, ema_loss = time.time(), 0, time.time(), None
        history = []
        try:
            self._loop(bar, t_start, samples, t_last, ema_loss, history)
        finally:
            bar.close()  # an error message then starts on its own line, not after the progress bar
        acc.end_training()
        return {"steps": self.step, "seconds": time.time() - t_start, "history": history}

    def _loop(self, bar, t_start, samples, t_last, ema_loss, history) -> None:
        cfg, acc, model = self.cfg, self.acc, self.model
        p0 = max(0.0, self.schedule.progress(self.step))  # a resumed run spreads what is left over its own clock
        while self.step < cfg.steps:
            logs = {}
            for micro in range(cfg.grad_accum):
                idx = batch_indices(self.step, micro, self.n, cfg, acc.process_index, acc.num_processes)
                with acc.autocast():
                    loss, logs = self.loss_fn(model, idx, self.gen)
                acc.backward(loss / cfg.grad_accum)
                samples += len(idx) * acc.num_processes
            if cfg.grad_clip > 0:
                acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.opt.step()
            if self.time_clock:
                frac = min(1.0, (time.time() - t_start) / (cfg.max_minutes * 60))
                self.schedule.time_progress = max(self.schedule.time_progress, p0 + (1 - p0) * frac)
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            if self.ema:
                self.ema.update(acc.unwrap_model(model))
            self.step += 1
            lval = loss.item()
            ema_loss = lval if ema_loss is None else 0.95 * ema_loss + 0.05 * lval
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                dt = time.time() - t_last
                rate = samples / max(dt, 1e-9)
                record = {"loss": lval, "loss_avg": ema_loss, "lr": self.sched.get_last_lr()[0], "samples_per_s": rate, **logs}
                acc.log(record, step=self.step)
                history.append({"step": self.step, "time_s": round(time.time() - t_start, 1), **{k: round(v, 5) for k, v in record.items() if isinstance(v, float)}})
                if self.log_fn and acc.is_main_process:
                    self.log_fn(self.step, history[-1])
                bar.set_postfix(loss=f"{ema_loss:.4f}", sps=f"{rate:.0f}")
                samples, t_last = 0, time.time()
            bar.update(1)
            out_of_time = cfg.max_minutes > 0 and (time.time() - t_start) > cfg.max_minutes * 60
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or out_of_time:
                self.save()
            if out_of_time:
                break

    def final_model(self, use_ema: bool = True) -> torch.nn.Module:
        model = self.acc.unwrap_model(self.model)
        if use_ema and self.ema:
            self.ema.copy_to(model)
        return model.eval()


def train_logged(model: torch.nn.Module, loss_fn: LossFn, num_examples: int, cfg: TrainConfig, run_dir: str | Path,
                 name: str, log: Callable[[str], None], resume: bool, label: str | None = None) -> tuple[torch.nn.Module, dict]:
    """A recipe's training stage: `model` trained with a log line every cfg.log_every steps, continued from the run's
    last checkpoint when `resume`; (the final (EMA) model in fp32, in eval mode; the trainer's stats: steps, seconds)."""
    label = label or name
    trainer = Trainer(model, loss_fn, num_examples, cfg, run_dir, name,
                      log_fn=lambda s, r: log(f"{label} step {s}/{cfg.steps} loss {r['loss_avg']:.4f} "
                                              f"{r['samples_per_s']:.1f} samples/s"))
    if resume and trainer.resume():
        log(f"{label}: resumed at step {trainer.step}")
    stats = trainer.train()
    log(f"2. train: {stats['steps']} steps in {stats['seconds']:.0f}s")
    return trainer.final_model().float().eval(), stats
