"""Trainer, checkpoints, EMA, batch selection, exact resume and 2-process (gloo) data parallelism."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from minicream.diffusion.objectives import make_objective
from minicream.errors import MinicreamError
from minicream.io.weights import check_safetensors, load_state_dict
from minicream.models.unet import MoEUNet, UNetConfig
from minicream.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from minicream.training.ema import EMA
from minicream.training.tasks import unet_loss
from minicream.training.trainer import LRSchedule, TrainConfig, Trainer, batch_indices, lr_lambda

CTX, POOLED, T_TEXT, N_EXAMPLES = 24, 20, 5, 10


def tiny_unet(seed: int = 0) -> MoEUNet:
    cfg = UNetConfig(channels=(32, 64), attention=(True, True), head_dim=32, layers_per_block=1,
                     context_dim=CTX, pooled_dim=POOLED, num_experts=2)
    torch.manual_seed(seed)
    model = MoEUNet(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # no zero-initialised layers: every parameter gets a gradient from step 1
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def fake_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(N_EXAMPLES, 4, 16, 16, generator=g)
    mask = torch.ones(3, T_TEXT, dtype=torch.bool)
    mask[:, 3:] = False
    text = SimpleNamespace(hidden=torch.randn(3, T_TEXT, CTX, generator=g), mask=mask,
                           pooled=torch.randn(3, POOLED, generator=g))
    caption_choices = [[i % 2] if i % 3 else [0, 1] for i in range(N_EXAMPLES)]
    return latents, caption_choices, text


def make_trainer(run_dir: Path, model: MoEUNet, cfg: TrainConfig) -> Trainer:
    latents, choices, text = fake_data()
    loss = unet_loss(latents, choices, text, empty_id=2, objective=make_objective("v"), cfg_dropout=0.2,
                     aux_weight=0.01, z_weight=0.001)
    return Trainer(model, loss, N_EXAMPLES, cfg, run_dir, "unet", cpu=True)


def train_config(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, lr=1e-3, warmup_steps=1, checkpoint_every=2, log_every=1, ema_decay=0.9,
                seed=3, mixed_precision="bf16")
    base.update(kw)
    return TrainConfig(**base)


def state_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.acc.unwrap_model(trainer.model).state_dict().items()}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """4 steps without interruption (checkpoints at steps 2 and 4)."""
    run = tmp_path_factory.mktemp("straight")
    model = tiny_unet()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = make_trainer(run, model, train_config())
    stats = trainer.train()
    return SimpleNamespace(run=run, init=init, trainer=trainer, stats=stats, final=state_of(trainer),
                           ema=trainer.ema.state_dict())


def test_training_changes_the_weights_and_logs(straight_run):
    assert straight_run.stats["steps"] == 4
    hist = straight_run.stats["history"]
    assert [h["step"] for h in hist] == [1, 2, 3, 4]
    for h in hist:
        assert all(k in h for k in ("loss", "lr", "denoise", "moe_balance", "moe_z", "moe_expert0", "moe_expert1"))
        assert h["moe_expert0"] + h["moe_expert1"] == pytest.approx(1.0, abs=1e-4)
    changed = [k for k, v in straight_run.final.items() if v.is_floating_point() and not torch.equal(v, straight_run.init[k])]
    n_float = sum(v.is_floating_point() for v in straight_run.final.values())
    assert len(changed) == n_float  # every parameter was updated
    assert all(torch.isfinite(v).all() for v in straight_run.final.values())


def test_moe_terms_come_back_from_the_forward_and_usage_is_the_callers():
    """The loss gets the balance and z-losses from the forward it made (the model keeps nothing), and adds each
    call's routed-token counts to the caller's usage tensor: 4 images x 16 mid-block tokens x top-1 per call."""
    model = tiny_unet()
    latents, choices, text = fake_data()
    usage = torch.zeros(len(model.moe_layers), 2)
    loss_fn = unet_loss(latents, choices, text, empty_id=2, objective=make_objective("v"), cfg_dropout=0.0,
                        aux_weight=0.01, z_weight=0.001, usage=usage)
    attrs = [set(vars(m)) for m in model.moe_layers]
    loss, logs = loss_fn(model, torch.arange(4), torch.Generator().manual_seed(0))
    assert usage.sum().item() == 4 * 16
    loss_fn(model, torch.arange(4, 8), torch.Generator().manual_seed(1))
    assert usage.sum().item() == 2 * 4 * 16
    assert logs["moe_expert0"] + logs["moe_expert1"] == pytest.approx(1.0) and logs["moe_balance"] >= 1.0 - 1e-6
    loss.backward()  # the balance loss reaches the router
    assert all(m.router.weight.grad is not None and m.router.weight.grad.abs().sum() > 0 for m in model.moe_layers)
    assert [set(vars(m)) for m in model.moe_layers] == attrs


def test_checkpoint_layout(straight_run):
    ckpts = sorted((straight_run.run / "unet" / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["step_0000002", "step_0000004"]
    assert latest_checkpoint(straight_run.run / "unet") == ckpts[-1]
    for c in ckpts:
        names = sorted(p.name for p in c.iterdir())
        assert names == ["ema.safetensors", "model.safetensors", "optimizer.safetensors", "state.json"]
        for f in c.glob("*.safetensors"):
            check_safetensors(f)  # real safetensors, not a pickle
        state = json.loads((c / "state.json").read_text())
        assert state["step"] == int(c.name.split("_")[1])
        assert state["ema_updates"] == state["step"]
    final = load_state_dict(ckpts[-1] / "model.safetensors")
    assert final.keys() == straight_run.final.keys()
    for k, v in straight_run.final.items():
        assert torch.equal(final[k], v), k
    ema = load_state_dict(ckpts[-1] / "ema.safetensors")
    for k, v in straight_run.ema.items():
        assert torch.equal(ema[k], v), k


def test_resume_is_exact(straight_run, tmp_path):
    """2 steps + save + a new Trainer (and a differently initialised model) + resume + 2 steps == 4 steps straight."""
    src = straight_run.run / "unet" / "checkpoints" / "step_0000002"
    dst = tmp_path / "unet" / "checkpoints" / "step_0000002"
    shutil.copytree(src, dst)
    trainer = make_trainer(tmp_path, tiny_unet(seed=99), train_config())
    assert trainer.resume()
    assert trainer.step == 2
    assert trainer.sched.get_last_lr() == pytest.approx([1e-3 * lr_lambda(trainer.cfg)(2)])
    stats = trainer.train()
    assert stats["steps"] == 4
    final = state_of(trainer)
    for k, v in straight_run.final.items():
        assert torch.equal(final[k], v), k
    for k, v in straight_run.ema.items():
        assert torch.equal(trainer.ema.state_dict()[k], v), k
    # The resumed run's losses match the straight run's at steps 3 and 4.
    assert [h["loss"] for h in stats["history"]] == [h["loss"] for h in straight_run.stats["history"][2:]]


def test_resume_without_checkpoint_returns_false(tmp_path):
    trainer = make_trainer(tmp_path, tiny_unet(), train_config(steps=1))
    assert trainer.resume() is False and trainer.step == 0


def test_final_model_uses_ema(straight_run):
    model = straight_run.trainer.final_model()
    assert not model.training
    for k, v in straight_run.ema.items():
        assert torch.equal(model.state_dict()[k], v), k


# --- checkpoint module ------------------------------------------------------------------------------


def test_save_checkpoint_keeps_the_last_two_and_round_trips_optimizer(tmp_path):
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for step in (1, 2, 3):
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
        save_checkpoint(tmp_path, step, model.state_dict(), None, opt, {"torch": torch.get_rng_state()}, {"note": "x"})
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_0000002", "step_0000003"]  # no temp dirs left
    assert latest_checkpoint(tmp_path) == root / "step_0000003"
    ck = load_checkpoint(root / "step_0000003")
    assert ck["step"] == 3 and ck["extra"] == {"note": "x"} and ck["ema"] is None
    assert torch.equal(ck["rng"]["torch"], torch.get_rng_state())
    for k, v in model.state_dict().items():
        assert torch.equal(ck["model"][k], v)
    opt2 = torch.optim.AdamW(nn.Linear(3, 2).parameters(), lr=0.1)
    opt2.load_state_dict(ck["optimizer"])
    a, b = opt.state_dict(), opt2.state_dict()
    # JSON turns the betas tuple into a list; AdamW unpacks either.
    assert [{**g, "betas": tuple(g["betas"])} for g in b["param_groups"]] == a["param_groups"]
    for i in a["state"]:
        for name, v in a["state"][i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][i][name])), name


def test_latest_checkpoint_orders_numerically_and_handles_empty(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for step in (9, 10, 100):
        (tmp_path / "checkpoints" / f"step_{step:07d}").mkdir(parents=True)
    assert latest_checkpoint(tmp_path).name == "step_0000100"


def test_load_checkpoint_refuses_non_checkpoints(tmp_path):
    with pytest.raises(MinicreamError, match="state.json"):
        load_checkpoint(tmp_path)


# --- EMA --------------------------------------------------------------------------------------------


class _Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(1, dtype=torch.long))


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_decay_math(warmup):
    model = _Scalar()
    ema = EMA(model, decay=0.9, warmup=warmup)
    assert set(ema.shadow) == {"w"}  # integer buffers are not averaged
    expected, values = 0.0, [1.0, 1.0, -2.0, 5.0]
    for n, value in enumerate(values, start=1):
        model.w.data.fill_(value)
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n)) if warmup else 0.9
        assert ema.current_decay() == pytest.approx(d)
        expected = d * expected + (1 - d) * value
        assert ema.shadow["w"].item() == pytest.approx(expected, rel=1e-6)
    # Hand-computed first update with warm-up: d = 2/11, shadow = 9/11 * 1.
    if warmup:
        first = EMA(_Scalar(), decay=0.9)
        m = _Scalar()
        m.w.data.fill_(1.0)
        first.update(m)
        assert first.shadow["w"].item() == pytest.approx(9 / 11)
    target = _Scalar()
    ema.copy_to(target)
    assert target.w.item() == pytest.approx(expected)


# --- batches ----------------------------------------------------------------------------------------


def test_batch_indices_is_pure_and_partitions_ranks():
    cfg = TrainConfig(batch_size=8, seed=5)
    n = 20
    for step in range(6):
        full = batch_indices(step, 0, n, cfg, rank=0, world=1)
        assert torch.equal(full, batch_indices(step, 0, n, cfg, rank=0, world=1))  # pure
        r0, r1 = batch_indices(step, 0, n, cfg, 0, 2), batch_indices(step, 0, n, cfg, 1, 2)
        assert len(r0) == len(r1) == 4
        assert set(r0.tolist()).isdisjoint(r1.tolist())
        assert sorted(r0.tolist() + r1.tolist()) == sorted(full.tolist())
    # Within an epoch (n // batch = 2 steps) batches are disjoint; the seed changes them.
    e0 = batch_indices(0, 0, n, cfg, 0, 1).tolist() + batch_indices(1, 0, n, cfg, 0, 1).tolist()
    assert len(set(e0)) == 16
    assert not torch.equal(batch_indices(0, 0, n, TrainConfig(batch_size=8, seed=6), 0, 1), batch_indices(0, 0, n, cfg, 0, 1))


def test_batch_indices_grad_accum_and_tiny_datasets():
    cfg = TrainConfig(batch_size=8, grad_accum=2, seed=1)
    full = batch_indices(3, 0, 40, TrainConfig(batch_size=8, seed=1), 0, 1)
    m0, m1 = batch_indices(3, 0, 40, cfg, 0, 1), batch_indices(3, 1, 40, cfg, 0, 1)
    assert torch.equal(torch.cat([m0, m1]), full)
    small = batch_indices(0, 0, 3, TrainConfig(batch_size=8), 0, 1)  # fewer examples than the batch
    assert len(small) == 8 and set(small.tolist()) == {0, 1, 2}


def test_lr_schedule_known_values():
    cfg = TrainConfig(steps=10, warmup_steps=2, decay_to=0.1)
    f = lr_lambda(cfg)
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert f(10) == pytest.approx(0.1) and f(50) == pytest.approx(0.1)


def test_lr_schedule_follows_the_clock_when_it_is_further_along():
    f = LRSchedule(TrainConfig(steps=10, warmup_steps=2, decay_to=0.1))
    f.time_progress = 0.5  # half the time limit used after 1 of 8 cosine steps: the clock leads
    assert f(3) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(1) == 1.0  # warm-up counts steps only
    assert f(8) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.75)))  # the steps lead
    f.time_progress = 1.0
    assert f(3) == pytest.approx(0.1)


@pytest.mark.parametrize("clock", ["steps", "time"])
def test_a_run_stopped_by_the_clock_ends_decayed_only_under_the_time_clock(tmp_path, clock):
    cfg = train_config(steps=100_000, warmup_steps=1, max_minutes=0.02, checkpoint_every=100_000, log_every=1000,
                       schedule_clock=clock, ema_decay=0.0)
    trainer = make_trainer(tmp_path, tiny_unet(), cfg)
    stats = trainer.train()
    assert 1 < stats["steps"] < 100_000  # stopped by the clock (1.2 s)
    last = trainer.sched.get_last_lr()[0] / cfg.lr
    if clock == "time":
        assert last == pytest.approx(cfg.decay_to, abs=0.01)
        state = json.loads((latest_checkpoint(tmp_path / "unet") / "state.json").read_text())
        assert state["lr_scheduler"]["lr_lambdas"][0]["time_progress"] == pytest.approx(1.0, abs=0.05)
        resumed = make_trainer(tmp_path, tiny_unet(), cfg)  # the clock's progress survives --resume
        assert resumed.resume() and resumed.schedule.time_progress == pytest.approx(1.0, abs=0.05)
        assert resumed.sched.get_last_lr()[0] / cfg.lr == pytest.approx(last)
    else:
        assert last > 0.99  # a few hundred steps into 100,000: the learning rate has barely moved


def test_planned_schedule_resumes_the_plans_rate_after_a_short_warm_up():
    """A sitting of a plan over 1,000 samples that starts at sample 500 (half way): warm-up rises to the plan's rate
    there, the cosine then follows the samples seen along the plan, and the last 20% of the sitting cools down."""
    cfg = TrainConfig(steps=20, batch_size=10, warmup_steps=2, decay_to=0.1, plan_samples=1000, cooldown=0.2)
    f = LRSchedule(cfg, plan_offset=500)
    half = 0.1 + 0.9 * 0.5  # the cosine half way through the plan
    assert f.plan_position(0) == 500 and f.plan_position(20) == 700
    assert f(0) == pytest.approx(half / 2)  # warm-up step 1 of 2 towards the plan's rate at sample 500
    assert f(1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.51)))  # end of warm-up: the plan's rate
    assert f(10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.6)))  # 600 of 1,000 samples
    # the sitting's progress after warm-up is (step - 2) / 18; cooldown starts when 20% of it is left
    at = 2 + 0.9 * 18  # 90% of the sitting: half way down from the plan's rate to decay_to
    plan = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (500 + at * 10) / 1000))
    assert f(at) == pytest.approx(0.1 + (plan - 0.1) * 0.5)
    assert f(20) == pytest.approx(0.1)  # a sitting ends annealed
    f.time_progress = 0.85  # stopped by the clock: the cooldown follows the clock too
    assert f(5) == pytest.approx(0.1 + (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.55)) - 0.1) * 0.75)
    plain = LRSchedule(TrainConfig(steps=20, batch_size=10, warmup_steps=2, decay_to=0.1, plan_samples=1000))
    assert plain(19) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.19)))  # no cooldown: the plan alone
    assert LRSchedule(TrainConfig(plan_samples=1000, batch_size=10), plan_offset=5000)(500) == pytest.approx(0.1)


def test_planned_schedule_is_validated():
    from minicream.config import load_config

    with pytest.raises(MinicreamError, match="plan_samples"):
        load_config("tiny", ["unet.train.plan_samples=-1"])
    with pytest.raises(MinicreamError, match="cooldown"):
        load_config("tiny", ["unet.train.cooldown=1.5"])
    with pytest.raises(MinicreamError, match="seed"):  # --set bypasses the CLI's --seed range
        load_config("tiny", ["unet.train.seed=99999999999999999999999"])


def test_deterministic_runs_ignore_the_time_clock(tmp_path):
    cfg = train_config(max_minutes=5.0, schedule_clock="time", deterministic=True)
    assert not make_trainer(tmp_path, tiny_unet(), cfg).time_clock
    assert make_trainer(tmp_path / "b", tiny_unet(), train_config(max_minutes=5.0, schedule_clock="time")).time_clock


# --- 2 processes ------------------------------------------------------------------------------------

DDP_SCRIPT = textwrap.dedent('''
    import hashlib, json, os, sys
    import torch
    sys.path.insert(0, {tests_dir!r})
    from test_training import make_trainer, tiny_unet, train_config, state_of

    trainer = make_trainer({run_dir!r}, tiny_unet(), train_config(steps=3, checkpoint_every=3, batch_size=4, warmup_steps=3))
    init = state_of(trainer)
    stats = trainer.train()
    final = state_of(trainer)
    h = hashlib.sha256()
    for k in sorted(final):
        h.update(k.encode()); h.update(final[k].float().numpy().tobytes())
    rank = trainer.acc.process_index
    with open(os.path.join({out_dir!r}, f"rank{{rank}}.json"), "w") as f:
        json.dump({{"checksum": h.hexdigest(), "num_processes": trainer.acc.num_processes,
                   "distributed_type": str(trainer.acc.distributed_type),
                   "changed": any(not torch.equal(init[k], final[k]) for k in final),
                   "lr": [r["lr"] for r in stats["history"]]}}, f)
''')


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One `torchrun --nproc_per_node 2` training of 3 steps on CPU (gloo); each rank reports its weights' hash."""
    tmp = tmp_path_factory.mktemp("ddp")
    script, out = tmp / "ddp_train.py", tmp / "out"
    out.mkdir()
    script.write_text(DDP_SCRIPT.format(tests_dir=str(Path(__file__).parent), run_dir=str(tmp / "run"), out_dir=str(out)))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)],
                          capture_output=True, text=True, timeout=180, env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return SimpleNamespace(run=tmp / "run", reports=reports)


def test_two_process_gloo_training_keeps_replicas_identical(ddp_run):
    r0, r1 = ddp_run.reports
    assert r0["num_processes"] == r1["num_processes"] == 2
    assert "MULTI_CPU" in r0["distributed_type"]
    assert r0["changed"] and r1["changed"]
    assert len(r0["checksum"]) == 64 and r0["checksum"] == r1["checksum"]
    # Only the main process writes checkpoints.
    assert [p.name for p in (ddp_run.run / "unet" / "checkpoints").iterdir()] == ["step_0000003"]


def test_two_process_lr_schedule_matches_one_process(ddp_run):
    """batch_size is global, so the LR schedule counts optimizer steps, however many processes share a step
    (Accelerate's default would step the schedule once per process)."""
    cfg = train_config(steps=3, warmup_steps=3)
    expected = [cfg.lr * lr_lambda(cfg)(s) for s in (1, 2, 3)]  # lr after optimizer steps 1..3: 2/3, 1, 1 of lr
    assert make_trainer_lrs(cfg) == pytest.approx(expected, abs=1e-5)  # history rounds to 5 decimals
    assert ddp_run.reports[0]["lr"] == pytest.approx(expected, abs=1e-5)


def make_trainer_lrs(cfg: TrainConfig) -> list[float]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        stats = make_trainer(Path(d), tiny_unet(), cfg).train()
    return [h["lr"] for h in stats["history"]]


# --- the recipe: stage resume -----------------------------------------------------------------------


def _copy_run(tiny_run, dst, keep_unet: bool):
    """A copy of the tiny run whose data/text/autoencoder/latents stages are done (they are skipped on resume)."""
    ignore = shutil.ignore_patterns("model", "export.json", "logs", *(() if keep_unet else ("unet",)))
    shutil.copytree(tiny_run, dst, ignore=ignore)
    return dst


def test_recipe_refuses_non_empty_run_dir_without_resume(tiny_run, emoji_root):
    from conftest import tiny_config
    from minicream.training.recipe import run_recipe

    with pytest.raises(MinicreamError, match="--resume"):
        run_recipe(tiny_config(emoji_root), tiny_run)


def test_recipe_resume_continues_unet_training(tiny_run, emoji_root, tmp_path):
    """Resume with more UNet steps: stages 1-4 are skipped, the UNet continues from its step-4 checkpoint."""
    from conftest import tiny_config
    from minicream.training.recipe import run_recipe

    run = _copy_run(tiny_run, tmp_path / "run", keep_unet=True)
    vae_before = (run / "vae" / "model.safetensors").read_bytes()
    model = run_recipe(tiny_config(emoji_root, "unet.train.steps=6"), run, resume=True, cpu=True)
    log = (run / "train_log.txt").read_text()
    assert "unet: resumed at step 4" in log
    assert "unet step 5/6" in log and "unet step 1/6" not in log.split("resumed at step 4")[1]
    assert (run / "vae" / "model.safetensors").read_bytes() == vae_before  # autoencoder not retrained
    assert latest_checkpoint(run / "unet").name == "step_0000006"
    assert (model / "model_index.json").is_file()




def test_recipe_stage_7_trains_the_evaluator_and_resume_skips_done_stages(tiny_run, emoji_root, tmp_path):
    from conftest import TINY_EVALUATOR, tiny_config
    from minicream.evaluator.train import load_recipe
    from minicream.training.recipe import run_recipe

    run = _copy_run(tiny_run, tmp_path / "run", keep_unet=True)
    preset = tmp_path / "tiny_evaluator.toml"  # the evaluator preset with tiny networks, as a TOML file
    recipe = load_recipe("evaluator", TINY_EVALUATOR)
    preset.write_text("\n".join(f"[{k}]\n" + "\n".join(f"{f} = {json.dumps(v)}" for f, v in sec.items() if v is not None)
                                for k, sec in ((k, dataclasses.asdict(getattr(recipe, k))) for k in ("model", "train", "judge", "judge_train"))))
    cfg = tiny_config(emoji_root, f"evaluator.preset={str(preset)!r}", "evaluator.judge_steps=1")
    model = run_recipe(cfg, run, resume=True, cpu=True)
    assert (model / "evaluator" / "model.safetensors").is_file() and (model / "evaluator" / "judge" / "config.json").is_file()
    stage = json.loads((run / "stages" / "evaluator.json").read_text())
    assert stage["evaluator"]["steps"] == 3 and stage["judge"]["steps"] == 1
    log = (run / "train_log.txt").read_text()
    assert "6. export" in log and "7. evaluator" in log
    unet_before = (model / "unet" / "model.safetensors").read_bytes()
    run_recipe(cfg, run, resume=True, cpu=True)  # everything done: stages 5-7 are skipped
    second = (run / "train_log.txt").read_text()[len(log):]
    assert "5. unet" not in second and "7. evaluator" not in second
    assert (model / "unet" / "model.safetensors").read_bytes() == unet_before

    # A warm-started sitting with the same evaluator recipe and data copies the evaluator instead of retraining it
    warm_cfg = tiny_config(emoji_root, f"evaluator.preset={str(preset)!r}", "evaluator.judge_steps=1",
                           f"init_from={str(model)!r}", "unet.train.steps=1")
    warm = run_recipe(warm_cfg, tmp_path / "warm", cpu=True)
    assert "copied, not retrained" in (tmp_path / "warm" / "train_log.txt").read_text()
    for f in ("model.safetensors", "results.json", "judge/model.safetensors"):
        assert (warm / "evaluator" / f).read_bytes() == (model / "evaluator" / f).read_bytes(), f
    from minicream.evaluator.train import reuse_evaluator

    changed = load_recipe(str(preset), ["judge_train.steps=2"])
    assert reuse_evaluator(model / "evaluator", changed, emoji_root, tmp_path / "other") is None
    assert not (tmp_path / "other").exists()


def test_repa_recipe_trains_the_head_and_exports_only_the_unet(tiny_run, emoji_root, tmp_path):
    """REPA (unet.repa_weight): targets from the shipped reference evaluator at the UNet's first token resolution,
    the alignment loss logged, the exported UNet the same tensors as a plain run's (no head), and it generates."""
    from conftest import tiny_config
    from safetensors.torch import load_file

    from minicream.pipelines import Pipeline
    from minicream.training.recipe import run_recipe

    run = _copy_run(tiny_run, tmp_path / "run", keep_unet=False)
    model = run_recipe(tiny_config(emoji_root, "unet.repa_weight=0.5", 'unet.repa_encoder="reference"'), run,
                       resume=True, cpu=True)
    log = (run / "train_log.txt").read_text()
    assert "REPA targets (" in log and "from reference's evaluator" in log
    align = float(re.search(r"unet step 4/4 loss \S+ \d+ samples/s repa (\S+)", log).group(1))
    assert 0.0 < align < 2.0  # 1 - cosine similarity, logged beside the denoising loss
    plain = load_file(tiny_run / "model" / "unet" / "model.safetensors")
    ours = load_file(model / "unet" / "model.safetensors")
    assert sorted(ours) == sorted(plain) and not any("head" in k for k in ours)
    assert np.asarray(Pipeline.from_pretrained(model)("red apple", seed=1, steps=3)[0]).std() > 1


def test_repa_alignment_loss_known_answers():
    """Cosine alignment: head output equal to the targets -> 0, opposite -> 2, orthogonal -> 1; the targets come
    from the evaluator stage at the requested resolution (64 px tower: 8x8 is its third stage, 128 channels)."""
    from minicream.models.build import build_unet
    from minicream.io.model_dir import shipped_model_dir
    from minicream.training.repa import WithREPA, encoder_targets

    unet = build_unet(UNetConfig(channels=[32, 64], attention=[False, True], context_dim=384, pooled_dim=384))
    wrapped = WithREPA(unet, 32)
    wrapped.head = torch.nn.Identity()
    x = torch.randn(2, 32, 4, 4)
    for target, answer in ((x, 0.0), (-x, 2.0), (3 * x, 0.0)):
        wrapped.captured = x
        assert abs(wrapped.alignment_loss(target).item() - answer) < 1e-5
    wrapped.captured = torch.tensor([[[[1.0]], [[0.0]]]])
    assert abs(wrapped.alignment_loss(torch.tensor([[[[0.0]], [[3.0]]]])).item() - 1.0) < 1e-6
    with pytest.raises(RuntimeError, match="before a forward"):
        wrapped.alignment_loss(x)
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    t = encoder_targets(shipped_model_dir("reference"), images, 8)
    assert t.shape == (3, 128, 8, 8) and t.dtype == torch.bfloat16
    with pytest.raises(MinicreamError, match="no evaluator"):
        encoder_targets("/nonexistent", images, 8)


def test_flow_recipe_model_generates(tiny_run, emoji_root, tmp_path):
    from conftest import tiny_config
    from minicream.pipelines import Pipeline
    from minicream.training.recipe import run_recipe

    run = _copy_run(tiny_run, tmp_path / "run", keep_unet=False)
    model = run_recipe(tiny_config(emoji_root, 'unet.objective="flow"'), run, resume=True, cpu=True)
    index = json.loads((model / "model_index.json").read_text())
    assert index["objective"]["prediction_type"] == "flow"
    pipe = Pipeline.from_pretrained(model)
    assert pipe.samplers == ["dpmpp_2m", "euler", "heun"]
    for sampler in pipe.samplers:
        im = pipe("red apple", seed=1, steps=3, sampler=sampler)[0]
        assert im.size == (64, 64)
        assert np.asarray(im).std() > 1


def test_recipe_trains_the_stock_diffusers_unet(tiny_run, emoji_root, tmp_path):
    """unet.model.arch="diffusers": the same recipe trains the stock UNet, and the Pipeline loads and samples it."""
    from conftest import tiny_config
    from minicream.models.stock_unet import StockUNet
    from minicream.pipelines import Pipeline
    from minicream.training.recipe import run_recipe

    run = _copy_run(tiny_run, tmp_path / "run", keep_unet=False)
    model = run_recipe(tiny_config(emoji_root, 'unet.model.arch="diffusers"'), run, resume=True, cpu=True)
    assert json.loads((model / "unet" / "config.json").read_text())["arch"] == "diffusers"
    pipe = Pipeline.from_pretrained(model)
    assert isinstance(pipe.unet, StockUNet)
    im = pipe("red apple", seed=1, steps=3)[0]
    assert im.size == (64, 64) and np.asarray(im).std() > 1


def _weights(model_dir: Path, part: str) -> dict:
    return load_state_dict(model_dir / part / "model.safetensors")


def test_two_deterministic_tiny_runs_end_in_bit_identical_weights(emoji_root, tmp_path):
    """The models are built after the seed is set, so two --deterministic runs are the same run."""
    from conftest import tiny_config
    from minicream.training.recipe import run_recipe

    cfg = tiny_config(emoji_root, "unet.train.deterministic=true", "autoencoder.train.deterministic=true")
    a, b = (run_recipe(cfg, tmp_path / name, cpu=True) for name in ("a", "b"))
    for part in ("vae", "unet"):
        wa, wb = _weights(a, part), _weights(b, part)
        assert wa.keys() == wb.keys()
        differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
        assert not differ, f"{part}: {len(differ)} of {len(wa)} tensors differ, e.g. {differ[:3]}"


def test_init_from_warm_starts_from_exported_weights(tiny_model, emoji_root, tmp_path):
    """--init-from takes the model's autoencoder and UNet weights; with lr 0 the export is the input again."""
    from conftest import tiny_config
    from minicream.training.recipe import run_recipe

    cfg = tiny_config(emoji_root, f"init_from={str(tiny_model)!r}", "unet.train.lr=0.0", "unet.train.steps=2")
    out = run_recipe(cfg, tmp_path / "warm", cpu=True)
    assert "3. autoencoder: taken from" in (tmp_path / "warm" / "train_log.txt").read_text()
    for part in ("vae", "unet"):
        before, after = _weights(tiny_model, part), _weights(out, part)
        assert all(torch.equal(before[k], after[k]) for k in before), part


def test_sittings_record_their_place_in_the_plan(tiny_model, emoji_root, tmp_path):
    """An export records the samples seen over every sitting; a sitting warm-started from it continues the count and
    the planned schedule from there (the continuation point of a model trained over several sittings)."""
    from conftest import tiny_config
    from minicream.training.recipe import run_recipe, training_record

    first = training_record(tiny_model)
    assert first["sittings"] == 1 and first["samples"] > 0
    cfg = tiny_config(emoji_root, f"init_from={str(tiny_model)!r}", "unet.train.steps=3", "unet.train.batch_size=4",
                      f"unet.train.plan_samples={first['samples'] * 10}", "unet.train.cooldown=0.5")
    out = run_recipe(cfg, tmp_path / "sitting2", cpu=True)
    second = training_record(out)
    assert second == {"samples": first["samples"] + 3 * 4, "sittings": 2, "plan_samples": first["samples"] * 10}
    log = (tmp_path / "sitting2" / "train_log.txt").read_text()
    assert f"this sitting starts at {first['samples']:,}" in log


def test_init_from_refuses_another_unet_architecture(tiny_model, emoji_root, tmp_path):
    from conftest import tiny_config
    from minicream.training.recipe import run_recipe

    cfg = tiny_config(emoji_root, f"init_from={str(tiny_model)!r}", "unet.model.channels=[32, 32]")
    with pytest.raises(MinicreamError, match="init_from: the UNet config differs .*channels"):
        run_recipe(cfg, tmp_path / "other", cpu=True)


def test_resume_refuses_another_config_or_dataset_before_touching_the_run(tiny_run, emoji_root, tmp_path):
    from conftest import tiny_config
    from minicream.training.recipe import run_recipe

    run = _copy_run(tiny_run, tmp_path / "run", keep_unet=True)
    saved = (run / "config.toml").read_text()
    with pytest.raises(MinicreamError, match=r"another config: unet\.model\.channels \(\[32, 64\] in the run, \[32, 32\] now\)"):
        run_recipe(tiny_config(emoji_root, "unet.model.channels=[32, 32]"), run, resume=True, cpu=True)
    assert (run / "config.toml").read_text() == saved  # refused before anything was written
    # The same config on a dataset whose captions changed since the run started.
    data = tmp_path / "data"
    shutil.copytree(emoji_root, data)
    cfg = tiny_config(data)
    run2 = tmp_path / "run2"
    run_recipe(cfg, run2, cpu=True)
    meta = data / "train" / "metadata.jsonl"
    meta.write_text("".join(meta.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(MinicreamError, match="not the one this run was trained on"):
        run_recipe(tiny_config(data, "unet.train.steps=6"), run2, resume=True, cpu=True)


@pytest.mark.parametrize("override, words", [
    ("unet.train.batch_size=0", "unet.train.batch_size = 0: must be at least 1"),
    ("unet.train.lr=nan", "unet.train.lr = nan: must be a finite number"),
    ("unet.model.top_k=5", "unet.model.top_k = 5: must not exceed unet.model.num_experts (4)"),
    ("unet.train.checkpoint_every=0", "unet.train.checkpoint_every = 0: must be at least 1"),
    ("unet.train.grad_accum=0", "unet.train.grad_accum = 0: must be at least 1"),
    ("unet.train.grad_accum=5", "must divide the batch size (48)"),
    ("data.size=63", "data.size = 63: must be a multiple of 16"),
    ("unet.train.steps=-5", "unet.train.steps = -5: must be at least 1"),
    ('unet.train.steps="abc"', "unet.train.steps = 'abc': must be an integer"),
    ("autoencoder.train.ema_decay=1.0", "must be below 1.0"),
    ('unet.objective="x0"', "unet.objective = 'x0': must be one of epsilon, v, flow"),
    ('unet.timesteps="cosine"', "unet.timesteps = 'cosine': must be one of uniform, logit_normal"),
    ("unet.logit_std=-1.0", "unet.logit_std = -1.0: must be at least 0.0"),
    ("data.augment=-1", "data.augment = -1: must be at least 0"),
    ("data.augment_zoom=1.5", "data.augment_zoom = 1.5: must be at most 1.0"),
    ('sample.style="noto"', "sample.style = 'noto': must be \"vary\", \"model\" or empty"),
    ('unet.train.schedule_clock="wall"', "unet.train.schedule_clock = 'wall': must be one of steps, time"),
])
def test_bad_config_values_are_one_line_errors(override, words, capsys):
    """Validated once, before any work, with the field named (these were ~45 tracebacks)."""
    from minicream.cli import main
    from minicream.config import load_config

    with pytest.raises(MinicreamError) as e:
        load_config("reference", [override])
    assert words in str(e.value) and "\n" not in str(e.value)
    assert main(["train", "--config", "reference", "--set", override, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
