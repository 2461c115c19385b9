"""One-step generation (issue 16): the velocity view of a v-network, reflow, straightness, distillation, with
known answers; and `minicream distill` end to end on the tiny model."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from minicream.diffusion.objectives import ddpm_alphas_cumprod
from minicream.diffusion.reflow import (euler_path, one_step, reflow_loss, straightness, velocity_from_v,
                                        vp_timestep)

ALPHAS = ddpm_alphas_cumprod("scaled_linear")
C = torch.tensor([0.7, -1.2, 0.3, 2.0]).view(1, 4, 1, 1).expand(1, 4, 2, 2)  # every sample of the data is C


def _lsnr_at(t: torch.Tensor) -> torch.Tensor:
    """log-SNR of the schedule at fractional timesteps, linear between the table's entries."""
    table = (ALPHAS / (1 - ALPHAS)).log().double()
    lo = t.double().floor().long().clamp(0, len(table) - 1)
    hi = (lo + 1).clamp(max=len(table) - 1)
    frac = t.double() - lo
    return table[lo] * (1 - frac) + table[hi] * frac


def exact_v(x_vp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact v-prediction for data that is always C, in the schedule's own coordinates."""
    lsnr = _lsnr_at(t).view(-1, 1, 1, 1)
    a, b = torch.sigmoid(lsnr).sqrt(), torch.sigmoid(-lsnr).sqrt()
    x1 = (x_vp.double() - a * C) / b
    return (a * x1 - b * C).float()


def straight(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact rectified-flow velocity towards C: (x_s - C) / s."""
    return (x - C) / (t / 1000).view(-1, 1, 1, 1)


def test_vp_timestep_inverts_the_schedule():
    t = torch.tensor([3.0, 10.5, 250.25, 600.0, 998.0])
    lsnr = _lsnr_at(t)
    s = 1 / (1 + (lsnr / 2).exp())  # 2 log((1-s)/s) = lsnr
    assert torch.allclose(vp_timestep(s, ALPHAS), t, atol=1e-3)
    assert vp_timestep(torch.tensor([1.0]), ALPHAS).item() == pytest.approx(999)  # pure noise: the last timestep
    assert vp_timestep(torch.tensor([0.0]), ALPHAS).item() == pytest.approx(0)


def test_velocity_from_exact_v_is_the_straight_velocity():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(6, 4, 2, 2, generator=g)
    s = torch.tensor([0.1, 0.25, 0.4, 0.5, 0.7, 0.9])
    x_s = (1 - s.view(-1, 1, 1, 1)) * C + s.view(-1, 1, 1, 1) * x1
    u = velocity_from_v(exact_v, ALPHAS)(x_s, s * 1000)
    assert torch.allclose(u, x1 - C, atol=1e-4)


def test_straight_flow_is_straight_and_one_step_lands_on_the_data():
    x1 = torch.randn(5, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    assert straightness(straight, x1, steps=8) == pytest.approx(0.0, abs=1e-10)
    end, vs = euler_path(straight, x1, steps=8)
    assert torch.allclose(end, C.expand_as(end), atol=1e-5) and len(vs) == 8
    assert torch.allclose(one_step(straight, x1), C.expand_as(x1), atol=1e-6)
    assert reflow_loss(straight, C.expand_as(x1), x1).abs().max() < 1e-8  # pairs on its own straight lines: no loss


def test_curved_flow_is_not_straight():
    def curved(x, t):  # straight towards C plus a swirl that grows and vanishes along the path
        s = (t / 1000).view(-1, 1, 1, 1)
        return straight(x, t) + torch.sin(6.28 * s) * x.flip(1)

    x1 = torch.randn(5, 4, 2, 2, generator=torch.Generator().manual_seed(2))
    assert straightness(curved, x1, steps=16) > 0.05


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, tiny_evaluated_model):
    out = tmp_path_factory.mktemp("distill") / "run"
    cmd = [sys.executable, "-m", "minicream.cli", "distill", "--teacher", str(tiny_evaluated_model), "--out", str(out),
           "--pairs", "12", "--set", "shard_size=8", "--set", "sample_batch=4", "--set", "scene_prompts=2",
           "--set", "steps=2", "--set", "student_steps=2", "--set", "measure_samples=2"]
    for stage in ("reflow", "distill"):
        cmd += ["--set", f"{stage}.steps=2", "--set", f"{stage}.batch_size=4", "--set", f"{stage}.warmup_steps=1",
                "--set", f"{stage}.log_every=1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_distill_writes_pairs_models_and_measurements(distilled):
    from safetensors.torch import load_file

    shards = sorted((distilled / "pairs").glob("shard_*.safetensors"))
    assert len(shards) == 2
    pairs = [load_file(str(p)) for p in shards]
    assert sum(len(p["noise"]) for p in pairs) == 12
    prompts = json.loads((distilled / "prompts.json").read_text())
    assert all(0 <= int(i) < len(prompts) for p in pairs for i in p["prompt_id"])
    index = json.loads((distilled / "model" / "model_index.json").read_text())
    assert index["objective"]["prediction_type"] == "flow" and index["objective"]["network"]["prediction_type"] == "v_prediction"
    assert index["sample"] == {"sampler": "euler", "steps": 1, "guidance": 1.0}
    assert index["distill"]["teacher_hash"] and "one-step" in index["distill"]["what"]
    measure = json.loads((distilled / "stages" / "measure.json").read_text())
    assert measure["teacher"] >= 0 and measure["reflow"] >= 0
    assert (distilled / "model" / "train_log.txt").is_file()


def test_pair_noise_is_the_noise_of_its_seed(distilled, tiny_evaluated_model):
    """The stored noise is what the teacher started from: redrawing a pair with its seed gives its latents."""
    from safetensors.torch import load_file

    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(tiny_evaluated_model)
    shard = load_file(str(distilled / "pairs" / "shard_0000.safetensors"))
    prompts = json.loads((distilled / "prompts.json").read_text())
    noise, _ = pipe.noise([0, 1], pipe.latent_shape)  # seed * 1_000_003 + i with seed 0
    assert torch.equal(noise, shard["noise"][:2])
    text = pipe.encode_prompt([prompts[int(i)] for i in shard["prompt_id"][:4]])
    steps, guidance, sampler = pipe.settings(2, None, None)
    again = pipe.denoise([0, 1, 2, 3], text, pipe.encode_prompt(""), guidance, sampler, steps, batch_size=4)
    assert torch.allclose(again, shard["latents"][:4], atol=1e-5)


def test_student_generates_in_one_step_and_says_what_it_is(distilled):
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(distilled / "model")
    calls = []
    unet_forward = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: calls.append(a[0].shape[0]) or unet_forward(*a, **k)
    images = pipe("red apple", num_images=2, seed=0)
    assert calls == [2]  # one evaluation, no unconditional pass (guidance is baked in)
    info = images[0].info["minicream"]
    assert info["steps"] == 1 and info["sampler"] == "euler" and info["cfg_scale"] == 1.0
    assert "one-step" in info["model_kind"] and info["teacher"].startswith("model (")


def test_perfectly_distilled_student_has_no_loss(tiny_evaluated_model):
    """The distillation loss is zero when the targets are the student's own one-step images."""
    from minicream.evaluator.model import MiniCLIP
    from minicream.models.autoencoder import load_autoencoder
    from minicream.models.build import load_unet
    from minicream.pipelines import Pipeline
    from minicream.training.distill import EvaluatorFeatures, _net, distill_task

    pipe = Pipeline.from_pretrained(tiny_evaluated_model)
    unet = load_unet(tiny_evaluated_model / "unet").float().eval()
    text = pipe.encode_prompt(["red apple", "rocket"])
    ids = torch.tensor([0, 1, 0])
    noise = torch.randn(3, *pipe.latent_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        targets = one_step(velocity_from_v(_net(unet, text, ids), ALPHAS), noise).float()
    feats = EvaluatorFeatures(MiniCLIP.from_pretrained(tiny_evaluated_model / "evaluator"))
    loss_fn = distill_task(noise, targets, ids, text, ALPHAS, load_autoencoder(tiny_evaluated_model / "vae"), feats, 1.0)
    with torch.no_grad():
        loss, logs = loss_fn(unet, torch.arange(3), torch.Generator().manual_seed(0))
    assert logs["l2"] < 1e-10 and logs["perceptual"] < 1e-8
    moved = targets + 0.5
    loss_fn = distill_task(noise, moved, ids, text, ALPHAS, load_autoencoder(tiny_evaluated_model / "vae"), feats, 1.0)
    with torch.no_grad():
        _, logs = loss_fn(unet, torch.arange(3), torch.Generator().manual_seed(0))
    assert logs["l2"] == pytest.approx(0.25, rel=1e-3) and logs["perceptual"] > 0


def test_distill_refuses_bad_settings(tmp_path):
    r = subprocess.run([sys.executable, "-m", "minicream.cli", "distill", "--out", str(tmp_path / "x"), "--pairs", "0"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "pairs" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "minicream.cli", "distill", "--out", str(tmp_path / "x"), "--set",
                        "reflow.lr=nan"], capture_output=True, text=True)
    assert r.returncode != 0 and "reflow.lr" in r.stderr and "Traceback" not in r.stderr


def test_server_switches_between_teacher_and_student(distilled, tiny_evaluated_model, tmp_path):
    from fastapi.testclient import TestClient

    from minicream.serve import ServeSettings, create_app

    app = create_app({"teacher": tiny_evaluated_model, "onestep": distilled / "model"},
                     ServeSettings(output_dir=tmp_path / "out", token=None))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        models = {m["name"]: m for m in c.get("/api/models").json()["models"]}
        assert list(models) == ["teacher", "onestep"]
        assert models["onestep"]["defaults"]["steps"] == 1 and "one-step" in models["onestep"]["kind"]
        assert models["teacher"]["kind"] is None
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["teacher", "onestep"]
        assert c.get("/api/samplers", params={"model": "onestep"}).json()["samplers"] == ["dpmpp_2m", "euler", "heun"]
        r = c.post("/api/generate", json={"prompt": "red apple", "model": "onestep", "seed": 1})
        assert r.status_code == 200 and r.json()["parameters"]["model"] == "onestep"
        assert r.json()["images"][0]["parameters"]["steps"] == 1
        r = c.post("/api/generate", json={"prompt": "red apple", "seed": 1})
        assert r.json()["images"][0]["parameters"]["steps"] != 1  # the default: the first model, the teacher
        r = c.post("/api/generate", json={"prompt": "red apple", "model": "nope"})
        assert r.status_code == 422 and "nope" in r.json()["error"]["message"] and "onestep" in r.json()["error"]["message"]
        r = c.post("/v1/images/generations", json={"prompt": "red apple", "model": "dall-e-2"})  # OpenAI's names: the default
        assert r.status_code == 200


# -- the shipped one-step model --------------------------------------------------------------------------------------
def test_shipped_onestep_model_draws_in_one_step_from_its_teacher(tmp_path, capsys):
    """`--model onestep` from a clean clone; its teacher is the shipped default model (re-distil when that changes)."""
    from minicream.cli import main
    from minicream.io.pngmeta import read_png_params
    from minicream.pipelines import Pipeline
    from minicream.io.model_dir import DEFAULT_MODEL, shipped_model_dir

    student = Pipeline.from_pretrained("onestep")
    default = Pipeline.from_pretrained()
    assert student.defaults == {"sampler": "euler", "steps": 1, "guidance": 1.0, "style": default.defaults["style"]}
    distill = student.index["distill"]
    assert distill["teacher"] == DEFAULT_MODEL and distill["teacher_hash"] == default.model_hash, \
        "the default model changed: re-distil the one-step model (`minicream distill`, then ship runs/onestep/model)"
    assert (shipped_model_dir("onestep") / "train_log.txt").is_file()
    size = sum(f.stat().st_size for f in (shipped_model_dir("onestep") / "unet").iterdir())
    assert size <= 80e6
    assert main(["generate", "red apple", "--model", "onestep", "-n", "8", "--seed", "0", "--out", str(tmp_path)]) == 0
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 8
    p = read_png_params(pngs[0])
    assert p["steps"] == 1 and p["model"] == "onestep" and "one-step" in p["model_kind"]
    assert p["teacher"] == f"{DEFAULT_MODEL} ({default.model_hash})"
    assert len({_pixels(f) for f in pngs}) == 8  # eight different pictures


def _pixels(path) -> bytes:
    from PIL import Image

    return Image.open(path).convert("RGB").tobytes()


def test_resume_may_change_only_the_training_lengths(distilled, tiny_evaluated_model):
    from minicream.errors import MinicreamError
    from minicream.training.distill import load_distill_config, run_distill

    saved = (distilled / "config.toml").read_text()
    with pytest.raises(MinicreamError, match=r"pairs \(12 in the run, 13 now\)"):
        run_distill(load_distill_config(distilled / "config.toml", ["pairs=13"]), distilled, resume=True)
    assert (distilled / "config.toml").read_text() == saved  # nothing written before the refusal
