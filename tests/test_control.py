"""ControlNet (issue 33 item 1): hints with known answers, a zero-initialised ControlNet that changes nothing, the
recipe on the tiny model, sampling with one or two controls, refusals, and `--from` re-runs with the control image."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from minicream.errors import MinicreamError


def square(size=64, lo=16, hi=48, fg=255, bg=0) -> np.ndarray:
    a = np.full((size, size, 3), bg, np.uint8)
    a[lo:hi, lo:hi] = fg
    return a


def test_edges_of_a_square_lie_on_its_border():
    from minicream.control.hints import edges_uint8

    e = edges_uint8(square()) > 0
    ys, xs = np.nonzero(e)
    assert e.any() and ys.min() >= 14 and ys.max() <= 49 and xs.min() >= 14 and xs.max() <= 49
    assert not e[20:44, 20:44].any()  # nothing inside the flat square
    # a border between two colours of the same brightness is found (edges per colour channel)
    a = np.zeros((64, 64, 3), np.uint8)
    a[:, :32] = (200, 0, 0)
    a[:, 32:] = (0, 0, 200)
    assert (edges_uint8(a)[:, 30:34] > 0).any()


def test_a_drawing_on_paper_is_inverted_and_edges_preprocess_a_picture():
    from minicream.control.hints import to_hint

    paper = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(paper).ellipse((64, 64, 192, 192), outline="black", width=12)
    hint = to_hint(paper, 64)
    assert hint.shape == (1, 64, 64) and hint.max() == 1 and hint[0, 0, 0] == 0  # lines 1, background 0
    assert hint[0, 32, 16:18].max() > 0.5 and hint[0, 32, 32] == 0  # the ring, not its inside
    transparent = Image.new("RGBA", (128, 128), (0, 0, 0, 0))  # a sketch pad's canvas: strokes on nothing
    ImageDraw.Draw(transparent).line((10, 64, 118, 64), fill=(0, 0, 0, 255), width=6)
    t = to_hint(transparent, 64)
    assert t[0, 32, 32] > 0.5 and t[0, 5, 5] == 0
    pic = to_hint(Image.fromarray(square()), 64, "edges")
    assert set(pic.unique().tolist()) <= {0.0, 1.0} and pic[0, 16:48, 14:18].sum() > 10
    with pytest.raises(ValueError):
        to_hint(paper, 64, "depth")


def test_scribbles_are_thick_jittered_and_partly_erased():
    from minicream.control.hints import edge_maps, scribbles

    edges = edge_maps(torch.from_numpy(square()).permute(2, 0, 1)[None]).float() / 255
    s = scribbles(edges.repeat(8, 1, 1, 1), torch.Generator().manual_seed(0))
    assert s.shape == (8, 1, 64, 64) and set(s.unique().tolist()) <= {0.0, 1.0}
    assert s.sum() > edges.sum() * 8  # thicker than the 1-px edges overall
    assert not torch.equal(s[0], s[1])  # each one drawn differently
    near = torch.nn.functional.max_pool2d(edges, 9, stride=1, padding=4)
    assert (s * (1 - near)).sum() == 0  # never far from the edges it came from


def test_edge_scores_known_answers():
    from minicream.control.metrics import edge_scores

    a = np.zeros((64, 64), bool)
    a[20, 10:50] = True
    assert edge_scores(a, a) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "chamfer": 0.0}
    b = np.roll(a, 1, axis=0)  # one pixel off
    s = edge_scores(b, a, tolerance=1.0)
    assert s["f1"] == 1.0 and s["chamfer"] == pytest.approx(1.0, abs=0.05)
    assert edge_scores(b, a, tolerance=0.5)["f1"] == 0.0
    half = a.copy()
    half[20, 30:50] = False  # half the line drawn: every drawn pixel right, half the target found
    s = edge_scores(half, a)
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx(0.5, abs=0.03)
    assert edge_scores(np.zeros_like(a), a)["f1"] == 0.0


def test_an_untrained_controlnet_changes_nothing(tiny_pipe):
    from minicream.models.controlnet import ControlNet

    unet = __import__("copy").deepcopy(tiny_pipe.unet).float()  # not the shared pipeline's own
    net = ControlNet.from_unet(unet, "edges", tiny_pipe.image_size)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *tiny_pipe.latent_shape, generator=g)
    emb = tiny_pipe.encode_prompt(["red apple", "rocket"])
    t = torch.tensor([900.0, 100.0])
    hint = torch.rand(2, 1, tiny_pipe.image_size, tiny_pipe.image_size, generator=g)
    with torch.no_grad():
        plain = unet(x, t, emb.hidden, emb.mask, emb.pooled)
        res = net(x, t, emb.hidden, emb.mask, emb.pooled, hint)
        controlled = unet(x, t, emb.hidden, emb.mask, emb.pooled, control=res)
    assert torch.equal(plain, controlled)
    assert len(res[0]) == len(unet.skip_channels) and all(r.abs().max() == 0 for r in res[0])
    # the encoder starts as the UNet's own
    assert torch.equal(net.encoder.conv_in.weight, unet.conv_in.weight)


@pytest.fixture(scope="module")
def controlled_model(tmp_path_factory, tiny_model):
    """A copy of the tiny model with a ControlNet of each kind from a few steps of `minicream train-control`."""
    from minicream.control.train import load_control_recipe, run_control

    model = tmp_path_factory.mktemp("controlled") / "model"
    shutil.copytree(tiny_model, model)
    run = tmp_path_factory.mktemp("control_run")
    cfg = load_control_recipe("control", [f"model={str(model)!r}", "train.steps=4", "train.batch_size=8",
                                          "train.warmup_steps=1", "train.lr=0.05", "train.ema_decay=0",
                                          "train.max_minutes=0", "train.log_every=2", "hint_width=8"])
    folder = run_control(cfg, run / "edges")
    assert (folder / "model.safetensors").is_file() and json.loads((folder / "control.json").read_text())["kind"] == "edges"
    shutil.copytree(folder, model / "control" / "edges")
    # a second kind (the same weights, declared as scribble) to stack two controls
    shutil.copytree(folder, model / "control" / "scribble")
    conf = json.loads((model / "control" / "scribble" / "config.json").read_text())
    (model / "control" / "scribble" / "config.json").write_text(json.dumps({**conf, "kind": "scribble"}))
    return model


@pytest.fixture(scope="module")
def sketch(tmp_path_factory):
    path = tmp_path_factory.mktemp("sketch") / "sketch.png"
    im = Image.new("RGB", (200, 200), "white")
    ImageDraw.Draw(im).ellipse((30, 30, 170, 170), outline="black", width=10)
    im.save(path)
    return path


def test_training_resumes_at_its_checkpoint(tiny_model, tmp_path):
    from minicream.control.train import load_control_recipe, run_control

    base = [f"model={str(tiny_model)!r}", "train.batch_size=4", "train.warmup_steps=1", "train.ema_decay=0",
            "train.max_minutes=0", "train.checkpoint_every=2", "hint_width=8", "kind='scribble'", "limit=8"]
    run_control(load_control_recipe("control", base + ["train.steps=2"]), tmp_path / "r")
    with pytest.raises(MinicreamError, match="not empty"):
        run_control(load_control_recipe("control", base + ["train.steps=2"]), tmp_path / "r")
    (tmp_path / "r" / "stages" / "export.json").unlink()  # as if stopped after its step-2 checkpoint
    run_control(load_control_recipe("control", base + ["train.steps=4"]), tmp_path / "r", resume=True)
    log = (tmp_path / "r" / "train_log.txt").read_text()
    assert "1. data: 24 images (2 zoomed/moved copies each)" in log and "resumed at step 2" in log and "2. train: 4 steps" in log


def test_sampling_with_controls(controlled_model, sketch):
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(controlled_model)
    args = dict(num_images=2, steps=3, seed=5, filter="none")
    plain = pipe("red apple", **args)
    ctl = pipe("red apple", control=str(sketch), **args)
    zero = pipe("red apple", control=str(sketch), control_scale=0.0, **args)
    assert [a.tobytes() for a in zero] == [a.tobytes() for a in plain]  # scale 0 is the plain model, bit for bit
    assert all(a.tobytes() != b.tobytes() for a, b in zip(ctl, plain))
    again = pipe("red apple", control=Image.open(sketch), **args)
    assert [a.tobytes() for a in again] == [a.tobytes() for a in ctl]
    rec = ctl[0].info["minicream"]["control"]
    assert rec[0]["kind"] == "edges" and rec[0]["scale"] == 1.0 and len(rec[0]["sha256"]) == 16
    # two controls stack: the same network twice at half scale draws what it draws once at full scale
    cond = pipe.encode_prompt("red apple")
    from minicream.control.use import build_control

    one = build_control(pipe, str(sketch), "edges", 1.0)
    two = build_control(pipe, [str(sketch), str(sketch)], ["edges", "scribble"], [0.5, 0.5])
    x = torch.randn(1, *pipe.latent_shape, generator=torch.Generator().manual_seed(0)).to(pipe.unet_dtype)
    cond.hidden = cond.hidden.to(pipe.unet_dtype)
    with torch.no_grad():
        a = pipe.unet(x, torch.tensor([500.0]), cond.hidden, cond.mask, cond.pooled,
                      control=one.residuals(x, torch.tensor([500.0]), cond.hidden, cond.mask, cond.pooled))
        b = pipe.unet(x, torch.tensor([500.0]), cond.hidden, cond.mask, cond.pooled,
                      control=two.residuals(x, torch.tensor([500.0]), cond.hidden, cond.mask, cond.pooled))
    assert torch.allclose(a.float(), b.float(), atol=2e-2)
    stacked = pipe("red apple", control=[str(sketch), str(sketch)], control_kind=["edges", "scribble"],
                   control_scale=[1.0, 0.5], **args)
    assert len(stacked[0].info["minicream"]["control"]) == 2


def test_a_control_steers_only_inside_its_window(controlled_model, sketch):
    from minicream.control.use import build_control
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(controlled_model)
    cond = pipe.encode_prompt("red apple")
    cond.hidden, x = cond.hidden.to(pipe.unet_dtype), torch.zeros(1, *pipe.latent_shape, dtype=pipe.unet_dtype)
    late = build_control(pipe, str(sketch), "edges", 1.0, start=0.0, end=0.4)  # steers while t/T >= 0.6
    residual = lambda c, t: c.residuals(x, torch.tensor([t]), cond.hidden, cond.mask, cond.pooled)
    assert residual(late, 900.0) is not None and residual(late, 600.0) is not None
    assert residual(late, 599.0) is None and residual(late, 10.0) is None
    early = build_control(pipe, str(sketch), "edges", 1.0, start=0.5, end=1.0)
    assert residual(early, 900.0) is None and residual(early, 100.0) is not None
    both = build_control(pipe, [str(sketch), str(sketch)], ["edges", "scribble"], 1.0, start=[0.0, 0.5], end=[0.4, 1.0])
    assert residual(both, 900.0) is not None and residual(both, 550.0) is None and residual(both, 100.0) is not None

    args = dict(num_images=1, steps=4, seed=2, filter="none", control=str(sketch))
    full = pipe("red apple", **args)
    assert pipe("red apple", control_start=0.0, control_end=1.0, **args)[0].tobytes() == full[0].tobytes()
    plain = pipe("red apple", num_images=1, steps=4, seed=2, filter="none")
    half = pipe("red apple", control_end=0.5, **args)
    assert half[0].tobytes() not in (full[0].tobytes(), plain[0].tobytes())
    assert half[0].info["minicream"]["control"][0]["end"] == 0.5


@pytest.mark.parametrize("options, message", [
    (dict(control_scale=3.0), "control_scale"),
    (dict(control_kind="depth"), "control_kind"),
    (dict(control_preprocess="blur"), "control_preprocess"),
    (dict(layout={"objects": [{"caption": "red apple", "box": [0, 0, 32, 32]}]}), "layout"),
    (dict(control_kind=["edges", "edges"]), "one per control image"),
    (dict(control_start=0.6, control_end=0.5), "control_start"),
    (dict(control_end=1.5), "control_end"),
])
def test_bad_control_options_are_one_line_errors(controlled_model, sketch, options, message):
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(controlled_model)
    with pytest.raises(MinicreamError, match=message):
        pipe("red apple", control=str(sketch), num_images=1, steps=2, **options)


def test_missing_or_foreign_controlnets_are_refused(tiny_pipe, controlled_model, sketch, tmp_path):
    from minicream.pipelines import Pipeline

    with pytest.raises(MinicreamError, match="has no ControlNet"):
        tiny_pipe("red apple", control=str(sketch), num_images=1, steps=2)
    model = tmp_path / "model"
    shutil.copytree(controlled_model, model)
    settings = model / "control" / "edges" / "control.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "model_hash": "0123456789abcdef"}))
    with pytest.raises(MinicreamError, match="trained for another UNet"):
        Pipeline.from_pretrained(model)("red apple", control=str(sketch), control_kind="edges", num_images=1, steps=2)
    with pytest.raises(MinicreamError, match="not a readable image|control image"):
        Pipeline.from_pretrained(controlled_model)("red apple", control=str(tmp_path / "missing.png"), num_images=1,
                                                   steps=2)


def test_cli_control_and_from(controlled_model, sketch, tmp_path):
    from minicream.io.pngmeta import read_png_params
    from test_cli import run_cli

    r = run_cli("generate", "red apple", "--model", str(controlled_model), "--control", str(sketch), "--control-scale",
                "0.8", "--control-end", "0.7", "-n", "1", "--steps", "2", "--seed", "3", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    first = next((tmp_path / "a").glob("*.png"))
    assert read_png_params(first)["control"][0]["scale"] == 0.8 and read_png_params(first)["control"][0]["end"] == 0.7
    r = run_cli("generate", "--from", str(first), "--model", str(controlled_model), "--control", str(sketch),
                "-n", "1", "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert Image.open(next((tmp_path / "b").glob("*.png"))).tobytes() == Image.open(first).tobytes()
    other = tmp_path / "other.png"
    Image.new("RGB", (64, 64), "white").save(other)
    for extra, words in (([], "give it again with --control"), (["--control", str(other)], "not the one")):
        r = run_cli("generate", "--from", str(first), "--model", str(controlled_model), *extra, "--out", str(tmp_path / "c"))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and words in r.stderr, r.stderr
    r = run_cli("train-control", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "model_index.json" in r.stderr, r.stderr


def test_http_generate_with_a_control_image(controlled_model, sketch, tmp_path):
    import base64

    from fastapi.testclient import TestClient

    from minicream.pipelines import Pipeline
    from minicream.serve import ServeSettings, create_app

    pipe = Pipeline.from_pretrained(controlled_model)
    with TestClient(create_app(pipe, ServeSettings(output_dir=tmp_path, token=None, timeout=120)),
                    raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        assert client.get("/api/models").json()["models"][0]["controls"] == ["edges", "scribble"]
        data = base64.b64encode(sketch.read_bytes()).decode()
        r = client.post("/api/generate", json={"prompt": "red apple", "steps": 2, "num_images": 1, "seed": 1,
                                               "control": data, "control_kind": "scribble", "control_scale": 0.5})
        assert r.status_code == 200, r.text
        assert r.json()["images"][0]["parameters"]["control"][0]["kind"] == "scribble"
        for body, field in (({"control": "bm90IGFuIGltYWdl"}, "control"), ({"control": data, "control_scale": 5}, "control_scale"),
                            ({"control": data, "control_kind": "depth"}, "control_kind")):
            r = client.post("/api/generate", json={"prompt": "red apple", "steps": 2, **body})
            assert 400 <= r.status_code < 500 and field in r.text, r.text


def test_the_page_sketch_pad_draws_a_circle_and_generates(browser, controlled_model, tmp_path):
    import base64
    import io
    import math

    from minicream.pipelines import Pipeline
    from minicream.serve import ServeSettings, create_app
    from minicream.serve.server import serve_in_thread
    from test_serve_browser import open_page, stroke

    app = create_app(Pipeline.from_pretrained(controlled_model), ServeSettings(output_dir=tmp_path, token=None, timeout=120))
    with serve_in_thread(app) as url:
        page, errors = open_page(browser, url)
        page.click("#sketch-panel summary")
        circle = [(0.5 + 0.3 * math.cos(k * math.pi / 20), 0.5 + 0.3 * math.sin(k * math.pi / 20)) for k in range(41)]
        stroke(page, "#sketch-canvas", circle)
        assert "1 stroke" in page.inner_text("#sketch-state")
        page.fill("#prompt", "red apple")
        page.fill("#steps", "2")
        page.fill("#num_images", "1")
        page.fill("#sketch-end", "0.8")
        page.click("#generate")
        page.wait_for_selector("#results .card img", timeout=120_000)
        raw = base64.b64decode(page.get_attribute("#results .card img", "src").split(",", 1)[1])
        params = json.loads(Image.open(io.BytesIO(raw)).info["minicream"])
        [control] = params["control"]
        assert control["kind"] == "scribble" and control["scale"] == 1.0 and control["end"] == 0.8
        from minicream.control.use import hint_sha

        assert control["sha256"] != hint_sha(torch.zeros(1, 64, 64))  # the drawing, not an empty pad
        assert not errors, errors
        page.close()
