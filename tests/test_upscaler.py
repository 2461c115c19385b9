"""The diffusion upscaler (models/upscaler.py, diffusion/upscale.py, training/upscaler.py): known answers of the
objective and sampler, a tiny recipe run end to end, and its refusals."""
import json

import pytest
import torch

from minicream.errors import MinicreamError

TINY = ["model.channels=[8, 16]", "model.layers_per_block=1", "crop=16", "heldout=4", "report_steps=[1, 2]",
        "train.steps=6", "train.batch_size=4", "train.warmup_steps=1", "train.log_every=2", "train.checkpoint_every=3",
        "train.max_minutes=0", "train.ema_decay=0.9"]


@pytest.fixture(scope="module")
def data32(tmp_path_factory):
    from conftest import TEST_CONCEPTS
    from minicream.data.emoji import build_emoji_dataset

    root = tmp_path_factory.mktemp("up_data") / "emoji32"
    build_emoji_dataset(root, size=32, styles=("twemoji", "openmoji"), limit=30, concepts=TEST_CONCEPTS,
                        skin_tones=False, heldout_fraction=0.3, progress=False)
    return root


def _tiny_model(**kw):
    from minicream.models.upscaler import Upscaler, UpscalerConfig

    torch.manual_seed(0)
    return Upscaler(UpscalerConfig(channels=(8, 16), layers_per_block=1, **kw)).eval()


def test_resampling_known_answers():
    from minicream.diffusion.upscale import downsample, gaussian_blur, upsample

    flat = torch.full((1, 3, 16, 16), 0.25)
    assert torch.allclose(downsample(flat, 4), torch.full((1, 3, 4, 4), 0.25), atol=1e-6)
    assert torch.allclose(upsample(downsample(flat, 4), 4), flat, atol=1e-6)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat, atol=1e-6)
    assert torch.equal(gaussian_blur(flat, 0.0), flat)
    dot = torch.zeros(1, 1, 9, 9)
    dot[..., 4, 4] = 1.0
    blurred = gaussian_blur(dot, 1.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)  # mass kept
    assert blurred[..., 4, 4].item() == pytest.approx(1 / (2 * torch.pi), rel=0.05)  # the 2-D Gaussian's peak
    assert upsample(torch.full((1, 3, 2, 2), 5.0), 4).max() == 1.0  # clamped to the image range


def test_a_network_that_predicts_no_residual_returns_bicubic():
    from minicream.diffusion.upscale import sample_upscale, upsample

    model = _tiny_model()
    last = model.net.conv_out
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    low = torch.rand(2, 3, 8, 8) * 2 - 1
    # velocity 0: the residual stays the starting noise; with zero noise the result is exactly bicubic
    out = sample_upscale(model, low, torch.zeros(2, 3, 32, 32), steps=3)
    assert torch.allclose(out, upsample(low, 4), atol=1e-6)
    with pytest.raises(ValueError, match="noise level"):
        sample_upscale(model, low, torch.zeros(2, 3, 32, 32), noise_level=0.9)
    with pytest.raises(ValueError, match="steps"):
        sample_upscale(model, low, torch.zeros(2, 3, 32, 32), steps=0)


class _KnowsTheResidual(torch.nn.Module):
    """A perfect network for one known residual r0: at x_t = (1 - t) r0 + t eps the velocity eps - r0 is
    (x_t - r0) / t."""

    def __init__(self, r0):
        from minicream.models.upscaler import UpscalerConfig

        super().__init__()
        self.r0, self.config = r0, UpscalerConfig(channels=(8, 16), layers_per_block=1)

    def forward(self, x, t, cond, levels):
        return (x - self.r0) / t.view(-1, 1, 1, 1)


def test_both_samplers_known_answers():
    from minicream.diffusion.upscale import sample_upscale, upsample

    low = torch.rand(2, 3, 8, 8) * 2 - 1
    r0 = torch.randn(2, 3, 32, 32)
    model = _KnowsTheResidual(r0)
    want = (upsample(low, 4) + r0 / model.config.residual_scale).clamp(-1, 1)
    noise = torch.randn(2, 3, 32, 32)
    for sampler in ("euler", "euler_a"):  # a perfect velocity lands on the residual whatever the path
        out = sample_upscale(model, low, noise, steps=5, sampler=sampler, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(out, want, atol=1e-5), sampler
    # one step: both move straight from the noise by the velocity, and draw no fresh noise
    tiny = _tiny_model()
    one = [sample_upscale(tiny, low, noise, steps=1, sampler=s, generator=torch.Generator().manual_seed(1))
           for s in ("euler", "euler_a")]
    assert torch.equal(one[0], one[1])
    # several steps: euler_a's fresh noise comes from the generator alone (same seed, same picture), and moves it
    runs = [sample_upscale(tiny, low, noise, steps=3, sampler="euler_a", generator=torch.Generator().manual_seed(s))
            for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert not torch.equal(runs[0], sample_upscale(tiny, low, noise, steps=3))
    with pytest.raises(ValueError, match="sampler"):
        sample_upscale(tiny, low, noise, sampler="heun")


def test_back_projection_fits_the_input_and_keeps_detail_above_its_grid():
    from minicream.diffusion.upscale import back_project, downsample, gaussian_blur, upsample

    gen = torch.Generator().manual_seed(0)
    high = gaussian_blur(torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1, 2.0)
    low = downsample(gaussian_blur(torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1, 2.0), 4)
    miss = [(downsample(back_project(high, low, 4, k), 4) - low).abs().mean().item() for k in (0, 1, 2, 4)]
    assert miss[0] > 0.05 and all(b < a / 2 for a, b in zip(miss, miss[1:])), miss  # each round halves the miss
    assert torch.equal(back_project(high, low, 4, 0), high)
    # a checkerboard of single pixels is above the 16-px grid's Nyquist frequency: its downsample is (nearly) zero,
    # and back-projection, which is affine in the image, passes it through untouched
    checker = ((torch.arange(64).view(-1, 1) + torch.arange(64).view(1, -1)) % 2 * 2 - 1).float().expand(2, 3, 64, 64)
    assert downsample(checker, 4).abs().max() < 1e-2  # (the borders, where the kernel is cut, leave a trace)
    base = upsample(low, 4)
    assert torch.allclose(back_project(base + 0.1 * checker, low, 4) - back_project(base, low, 4), 0.1 * checker,
                          atol=2e-3)


def test_a_consistent_upscale_downsamples_to_its_input():
    from minicream.diffusion.upscale import downsample, gaussian_blur, sample_upscale

    gen = torch.Generator().manual_seed(3)
    low = gaussian_blur(torch.rand(2, 3, 8, 8, generator=gen) * 1.6 - 0.8, 0.7)
    r0 = torch.randn(2, 3, 32, 32, generator=gen)  # a residual that also moves what the picture shows at 8 px
    model, noise = _KnowsTheResidual(r0), torch.randn(2, 3, 32, 32, generator=gen)
    miss = {}
    for consistent in (False, True):
        for sampler in ("euler", "euler_a"):
            out = sample_upscale(model, low, noise, steps=4, sampler=sampler, consistent=consistent,
                                 generator=torch.Generator().manual_seed(1))
            miss[consistent, sampler] = (downsample(out, 4) - low).abs().mean().item()
    for sampler in ("euler", "euler_a"):
        assert miss[True, sampler] < miss[False, sampler] / 4, miss
    tiny = _tiny_model()  # a network's own residual: both samplers, run twice, give the same picture
    runs = [sample_upscale(tiny, low, noise, steps=3, sampler="euler_a", consistent=True,
                           generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_the_flow_loss_has_the_velocity_target():
    """A network that returns the exact velocity eps - r0 has zero loss: check through a stub with the same
    interface, which recovers eps and r0 from what it is given."""
    from minicream.diffusion.upscale import flow_loss, upsample
    from minicream.models.upscaler import UpscalerConfig

    high = torch.rand(2, 3, 16, 16) * 2 - 1
    low = torch.rand(2, 3, 4, 4) * 2 - 1
    seen = {}

    class Stub(torch.nn.Module):
        config = UpscalerConfig(channels=(8, 16))

        def forward(self, x, t, cond, levels):
            seen.update(x=x, t=t, cond=cond, levels=levels)
            return torch.zeros_like(x)

    gen = torch.Generator().manual_seed(0)
    loss = flow_loss(Stub(), high, low, torch.zeros(2), gen)
    r0 = (high - upsample(low, 4)) * Stub.config.residual_scale
    t = seen["t"].view(-1, 1, 1, 1)
    eps = (seen["x"] - (1 - t) * r0) / t
    assert loss.item() == pytest.approx((eps - r0).pow(2).mean().item(), rel=1e-4)
    assert torch.allclose(seen["cond"], upsample(low, 4))  # level 0: the condition is the clean low image
    assert seen["x"].shape == high.shape
    loss = flow_loss(Stub(), high, low, torch.zeros(2), gen, crop=8)
    assert seen["x"].shape == (2, 3, 8, 8) and seen["cond"].shape == (2, 3, 8, 8)


def test_recipe_trains_exports_and_reports(data32, tmp_path):
    from minicream.diffusion.upscale import UpscaleSettings
    from minicream.models.upscaler import Upscaler
    from minicream.training.upscaler import load_upscaler_recipe, run_upscaler, upscale_uint8

    cfg = load_upscaler_recipe("upscaler", [f"data={str(data32)!r}", *TINY])
    folder = run_upscaler(cfg, tmp_path / "run")
    model = Upscaler.from_pretrained(folder)
    settings = json.loads((folder / "upscaler.json").read_text())
    assert settings["steps"] == cfg.steps and settings["recipe"]["model"]["channels"] == [8, 16]
    assert settings["sampler"] == cfg.sampler == "euler_a"  # the preset's measured default, written with the model
    assert settings["consistent"] is cfg.consistent and settings["report"]["consistent"] is cfg.consistent
    report = settings["report"]
    assert set(report["methods"]) == {"bicubic", "lanczos", "upscaler_1", "upscaler_2"}
    assert report["size"] == 32 and 1 <= report["n"] <= 4
    for m in report["methods"].values():
        assert 5 < m["psnr_db"] < 60 and 0 < m["ssim"] <= 1 and m["sharpness"] > 0
    log = (tmp_path / "run" / "train_log.txt").read_text()
    assert "2. train: 6 steps" in log and "4. report" in log
    low = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    s = UpscaleSettings(2, 0.1)
    a, b = upscale_uint8(model, low, s, seed=5), upscale_uint8(model, low, s, seed=5)
    assert a.shape == (2, 3, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)  # seeded
    assert not torch.equal(a, upscale_uint8(model, low, s, seed=6))
    # a finished run is not redone; a non-empty folder without --resume is refused
    assert run_upscaler(cfg, tmp_path / "run", resume=True) == folder
    with pytest.raises(MinicreamError, match="not empty"):
        run_upscaler(cfg, tmp_path / "run")


@pytest.mark.parametrize("override, message", [
    ("crop=18", "crop"), ("model.channels=[12, 16]", "channels"), ("noise_level=0.5", "noise_level"),
    ("report_steps=[]", "report_steps"), ("sampler='heun'", "sampler"), ("consistent='yes'", "consistent"), ("blur_prob=2", "blur_prob"), ("model.scale=1", "scale"),
])
def test_bad_settings_are_one_line_errors(override, message):
    from minicream.training.upscaler import load_upscaler_recipe

    with pytest.raises(MinicreamError, match=message):
        load_upscaler_recipe("upscaler", [override])


def test_a_dataset_of_the_wrong_size_is_refused(data32, tmp_path):
    from minicream.training.upscaler import load_upscaler_recipe, run_upscaler

    cfg = load_upscaler_recipe("upscaler", [f"data={str(data32)!r}", *TINY, "model.scale=3"])
    with pytest.raises(MinicreamError, match="whole x3"):
        run_upscaler(cfg, tmp_path / "run")
    cfg = load_upscaler_recipe("upscaler", [f"data={str(tmp_path)!r}", *TINY])
    with pytest.raises(MinicreamError, match="dataset_info"):
        run_upscaler(cfg, tmp_path / "run2")


def test_twemoji_is_drawn_from_its_svg_above_its_png_size():
    from minicream.data.emoji_sources import list_sources, rasterize

    src = next(s for s in list_sources("twemoji") if s.stem == "1f34e")
    assert rasterize(src, 64).size == (72, 72)  # the PNG: the 64-px datasets do not change
    assert rasterize(src, 256).size == (512, 512)  # the SVG, at twice the size


# --- the stage in the pipeline, the CLI and the OpenAI API ------------------------------------------------------------
@pytest.fixture(scope="module")
def up_pipe(tiny_upscaled_model):
    from minicream.pipelines import Pipeline

    return Pipeline.from_pretrained(tiny_upscaled_model)


def test_a_model_without_an_upscaler_draws_its_native_size_only(tiny_pipe):
    n = tiny_pipe.image_size
    assert tiny_pipe.sizes == [n]
    with pytest.raises(MinicreamError, match="also draws larger"):
        tiny_pipe("red apple", size=4 * n, num_images=1, steps=2)


def test_size_runs_the_upscaler_after_the_base_model(up_pipe):
    from minicream.pipelines import PARAMS_KEY

    n = up_pipe.image_size
    assert up_pipe.sizes == [n, 2 * n, 4 * n]
    base = up_pipe("red apple", num_images=2, seed=3, steps=2)
    big = up_pipe("red apple", num_images=2, seed=3, steps=2, size=4 * n)
    again = up_pipe("red apple", num_images=1, seed=4, steps=2, size=4 * n)  # the second image alone
    assert [im.size for im in big] == [(4 * n, 4 * n)] * 2
    assert big[1].tobytes() == again[0].tobytes()  # an image depends on its own seed only
    p = big[0].info[PARAMS_KEY]
    assert (p["size"], p["width"], p["upscale_steps"], p["upscale_noise"]) == (4 * n, 4 * n, 2, 0.05)
    assert p["upscale_sampler"] == "euler"  # the upscaler's own (its upscaler.json names none: the ODE)
    crisp = up_pipe("red apple", num_images=1, seed=3, steps=2, size=4 * n, upscale_sampler="euler_a")
    assert crisp[0].info[PARAMS_KEY]["upscale_sampler"] == "euler_a" and crisp[0].tobytes() != big[0].tobytes()
    assert p["upscale_consistent"] is False  # the upscaler's own (its upscaler.json says nothing: not back-projected)
    fitted = up_pipe("red apple", num_images=1, seed=3, steps=2, size=4 * n, upscale_consistent=True)
    assert fitted[0].info[PARAMS_KEY]["upscale_consistent"] is True and fitted[0].tobytes() != big[0].tobytes()
    assert p["seed"] == base[0].info[PARAMS_KEY]["seed"] and len(p["upscaler_hash"]) == 10
    # downsampled back, the upscaled image is close to what the base model drew (the condition is kept)
    small = big[0].resize((n, n), resample=3)
    a, b = (torch.tensor(list(im.tobytes()), dtype=torch.float) for im in (small, base[0]))
    assert (a - b).abs().mean() < 40
    half = up_pipe("red apple", num_images=1, seed=3, steps=2, size=2 * n, upscale_steps=1, upscale_noise=0.0)
    assert half[0].size == (2 * n, 2 * n) and half[0].info[PARAMS_KEY]["upscale_steps"] == 1
    for bad, message in ((dict(size=3 * n), "not supported"), (dict(size=4 * n, upscale_noise=0.9), "upscale_noise"),
                         (dict(size=4 * n, upscale_steps=0), "upscale_steps"),
                         (dict(size=4 * n, upscale_sampler="heun"), "upscale_sampler"),
                         (dict(size=4 * n, upscale_consistent="yes"), "upscale_consistent")):
        with pytest.raises(MinicreamError, match=message):
            up_pipe("red apple", num_images=1, steps=2, **bad)


def test_cli_size_from_and_upscale(tiny_upscaled_model, tmp_path):
    from PIL import Image

    from minicream.io.pngmeta import read_png_params
    from test_cli import run_cli

    r = run_cli("generate", "red apple", "--model", str(tiny_upscaled_model), "--size", "128", "-n", "1", "--steps",
                "2", "--seed", "7", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    first = next((tmp_path / "a").glob("*.png"))
    assert Image.open(first).size == (128, 128) and read_png_params(first)["size"] == 128
    r = run_cli("generate", "--from", str(first), "--model", str(tiny_upscaled_model), "-n", "1", "--out",
                str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    second = next((tmp_path / "b").glob("*.png"))
    assert Image.open(second).tobytes() == Image.open(first).tobytes()  # bit-identical re-run, upscaler included
    # a PNG from before the upscaler had samplers (no upscale_sampler recorded) re-runs with its ODE, whatever the
    # upscaler's default; one that records euler_a re-runs with euler_a
    from minicream.cli.rerun import stored_options

    params = {k: v for k, v in read_png_params(first).items() if k not in ("upscale_sampler", "upscale_consistent")}
    assert stored_options(params)["upscale_sampler"] == "euler"
    assert stored_options(params)["upscale_consistent"] is False  # and before back-projection: without it
    assert stored_options({**params, "upscale_sampler": "euler_a"})["upscale_sampler"] == "euler_a"
    assert stored_options({**params, "upscale_consistent": True})["upscale_consistent"] is True
    assert "upscale_sampler" not in stored_options({"prompt": "red apple", "seed": 1})  # not upscaled
    r = run_cli("generate", "--from", str(first), "--model", str(tiny_upscaled_model), "-n", "1", "--out",
                str(tmp_path / "b2"), "--upscale-sampler", "euler_a", "--upscale-consistent")
    assert r.returncode == 0, r.stderr
    third = next((tmp_path / "b2").glob("*.png"))
    assert read_png_params(third)["upscale_sampler"] == "euler_a" and read_png_params(third)["upscale_consistent"]
    r = run_cli("upscale", str(first.parent / first.name), "--model", str(tiny_upscaled_model), "--out",
                str(tmp_path / "c"), "--steps", "1", "--consistent")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "c" / f"{first.stem}_x4.png"
    assert Image.open(out).size == (512, 512)
    assert read_png_params(out)["mode"] == "upscale" and read_png_params(out)["upscale_consistent"] is True
    Image.new("RGB", (300, 20)).save(tmp_path / "wide.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    for args, words in ((["upscale", str(tmp_path / "wide.png")], "up to 256"),
                        (["upscale", str(tmp_path / "junk.png")], "not a readable image"),
                        (["upscale", str(first), "--noise", "5"], "upscale_noise"),
                        (["upscale", str(first), "--sampler", "heun"], "upscale_sampler")):
        r = run_cli(*args, "--model", str(tiny_upscaled_model), "--out", str(tmp_path / "d"))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and words in r.stderr, r.stderr
    r = run_cli("upscale", str(first), "--out", str(tmp_path / "e"), "--model", str(tmp_path))
    assert r.returncode == 2 and "model_index.json" in r.stderr, r.stderr


def test_openai_size_256(tiny_upscaled_model, tmp_path):
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from minicream.pipelines import Pipeline
    from minicream.serve import ServeSettings, create_app

    pipe = Pipeline.from_pretrained(tiny_upscaled_model)
    n = pipe.image_size
    app = create_app(pipe, ServeSettings(output_dir=tmp_path / "out", token=None))
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
        r = c.post("/v1/images/generations", json={"prompt": "red apple", "size": f"{4 * n}x{4 * n}"})
        assert r.status_code == 200, r.text
        im = Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"])))
        assert im.size == (4 * n, 4 * n)
        r = c.post("/v1/images/generations", json={"prompt": "red apple", "size": f"{3 * n}x{3 * n}"})
        assert r.status_code == 422 and f"{4 * n}x{4 * n}" in r.json()["error"]["message"]
    from openai import OpenAI

    from minicream.serve.server import serve_in_thread

    app = create_app(pipe, ServeSettings(output_dir=tmp_path / "out2", token=None))  # fresh: the first one shut down
    with serve_in_thread(app) as url:  # the official client, as a user calls it
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        result = client.images.generate(prompt="rocket", size=f"{4 * n}x{4 * n}", response_format="b64_json")
        assert Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).size == (4 * n, 4 * n)


def test_inpaint_at_the_upscaled_size_keeps_the_input_outside_the_mask(up_pipe):
    import numpy as np
    from PIL import Image

    from minicream.pipelines import PARAMS_KEY

    big = 4 * up_pipe.image_size
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (big, big, 3), dtype=np.uint8), "RGB")
    mask = np.zeros((big, big), dtype=np.uint8)
    mask[: big // 2, : big // 2] = 255  # repaint the top-left quarter
    out = up_pipe.edit(picture, "red apple", mask=Image.fromarray(mask, "L"), num_images=1, steps=2, seed=1, size=big)
    assert out[0].size == (big, big) and out[0].info[PARAMS_KEY]["size"] == big
    got, given = np.asarray(out[0]), np.asarray(picture)
    far = np.zeros((big, big), dtype=bool)
    far[big // 2 + 8:, :] = True  # well outside the mask and its feathered seam
    assert (got[far] == given[far]).all()
    assert not (got[: big // 4, : big // 4] == given[: big // 4, : big // 4]).all()  # inside: repainted
    redo = up_pipe.edit(picture, "red apple", num_images=1, steps=2, seed=1, size=2 * up_pipe.image_size, strength=0.5)
    assert redo[0].size == (2 * up_pipe.image_size,) * 2  # img2img too


def test_openai_edit_at_the_upscaled_size(tiny_upscaled_model, tmp_path):
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from minicream.pipelines import Pipeline
    from minicream.serve import ServeSettings, create_app

    pipe = Pipeline.from_pretrained(tiny_upscaled_model)
    big = 4 * pipe.image_size
    image = Image.new("RGBA", (big, big), (200, 30, 30, 255))
    image.paste((0, 0, 0, 0), (0, 0, big // 2, big // 2))  # transparent pixels mark the edit (OpenAI, no mask)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    app = create_app(pipe, ServeSettings(output_dir=tmp_path / "out", token=None))
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
        r = c.post("/v1/images/edits", files={"image": ("a.png", buf.getvalue(), "image/png")},
                   data={"prompt": "red apple", "size": f"{big}x{big}"})
        assert r.status_code == 200, r.text
        out = Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"])))
        assert out.size == (big, big)
        r = c.post("/v1/images/variations", files={"image": ("a.png", buf.getvalue(), "image/png")},
                   data={"size": f"{big}x{big}"})
        assert r.status_code == 400 and "variations" in r.json()["error"]["message"]


def test_roundtrip_inputs_and_init_from(tiny_model, tmp_path):
    """roundtrip_prob: the low-resolution inputs through a model's autoencoder; init_from: a fine-tune that starts
    from an exported upscaler (a different network is refused)."""
    from conftest import TEST_CONCEPTS
    from minicream.data.emoji import build_emoji_dataset
    from minicream.models.upscaler import Upscaler
    from minicream.training.upscaler import load_images, load_upscaler_recipe, roundtrips, run_upscaler

    root = tmp_path / "emoji128"  # 128 px: the round trip runs at 32 px, the tiny model's size
    build_emoji_dataset(root, size=128, styles=("twemoji", "openmoji"), limit=30, concepts=TEST_CONCEPTS,
                        skin_tones=False, heldout_fraction=0.3, progress=False)
    base = [f"data={str(root)!r}", *TINY, "crop=32"]
    first = run_upscaler(load_upscaler_recipe("upscaler", base), tmp_path / "a")
    cfg = load_upscaler_recipe("upscaler", [*base, "roundtrip_prob=1.0", f"roundtrip_model={str(tiny_model)!r}",
                                            f"init_from={str(first)!r}"])
    images, _ = load_images(cfg, "train")
    trips = roundtrips(images, cfg, lambda s: None)
    assert trips.shape == (len(images), 3, 32, 32) and trips.dtype == torch.uint8
    folder = run_upscaler(cfg, tmp_path / "b")
    log = (tmp_path / "b" / "train_log.txt").read_text()
    assert "round trips through" in log and f"starting from {first}" in log
    assert Upscaler.from_pretrained(folder).config == Upscaler.from_pretrained(first).config
    with pytest.raises(MinicreamError, match="roundtrip_model"):
        load_upscaler_recipe("upscaler", ["roundtrip_prob=0.5"])
    wrong = load_upscaler_recipe("upscaler", [*base, f"init_from={str(first)!r}", "model.channels=[8, 24]"])
    with pytest.raises(MinicreamError, match="init_from"):
        run_upscaler(wrong, tmp_path / "c")


def test_the_recipe_trains_the_upscaler_as_stage_8(tiny_run, emoji_root, tmp_path):
    """[upscaler] preset set: stage 8 trains it on the dataset at the model's size x its scale and puts it in the
    model folder (without checkpoints), once; a dataset of another size is refused before any training."""
    import shutil

    from conftest import TEST_CONCEPTS, tiny_config
    from minicream.data.emoji import build_emoji_dataset
    from minicream.pipelines import Pipeline
    from minicream.training.recipe import run_recipe

    data128 = tmp_path / "emoji128"
    build_emoji_dataset(data128, size=128, styles=("twemoji", "openmoji"), limit=30, concepts=TEST_CONCEPTS, skin_tones=False,
                        heldout_fraction=0.3, progress=False)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    stage = [f"upscaler.preset='upscaler'", f"upscaler.data={str(data128)!r}", "upscaler.steps=4",
             "upscaler.overrides=['model.scale=2', 'model.channels=[8, 16]', 'crop=32', 'heldout=2', "
             "'report_steps=[1]', 'train.batch_size=4', 'train.warmup_steps=1', 'train.max_minutes=0']"]
    with pytest.raises(MinicreamError, match="128-px"):
        run_recipe(tiny_config(emoji_root, *stage[:1], "upscaler.overrides=['model.scale=4']", *stage[1:3]), run,
                   resume=True, cpu=True)
    model = run_recipe(tiny_config(emoji_root, *stage), run, resume=True, cpu=True)
    folder = model / "upscaler"
    assert (folder / "model.safetensors").is_file() and not (folder / "checkpoints").exists()
    log = (run / "train_log.txt").read_text()
    assert "8. upscaler" in log and "5. unet" not in log.split("recipe start (resume=True)")[-1]
    report = json.loads((run / "stages" / "upscaler.json").read_text())["report"]
    assert set(report["methods"]) == {"bicubic", "lanczos", "upscaler_1"}
    [im] = Pipeline.from_pretrained(model)("red apple", num_images=1, steps=2, size=128, upscale_steps=1)
    assert im.size == (128, 128)
    run_recipe(tiny_config(emoji_root, *stage), run, resume=True, cpu=True)  # done: not trained again
    assert (run / "train_log.txt").read_text().count("8. upscaler:") == 1
