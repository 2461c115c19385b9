"""Images as prompts (issue 34): the image-prompt adapter starts as the identity, the recipe on the tiny model, sampling
with an image alone, with text, stacked, at scale 0 (the plain model bit for bit), refusals, `--from` re-runs and HTTP."""
from __future__ import annotations

import base64
import json
import shutil

import pytest
import torch
from PIL import Image, ImageDraw

from minicream.errors import MinicreamError


@pytest.fixture(scope="module")
def prompted_model(tmp_path_factory, tiny_evaluated_model):
    """A copy of the tiny model (with its evaluator) and an image-prompt adapter from a few steps of the recipe."""
    from minicream.image_prompt.train import load_image_prompt_recipe, run_image_prompt

    model = tmp_path_factory.mktemp("prompted") / "model"
    shutil.copytree(tiny_evaluated_model, model)
    run = tmp_path_factory.mktemp("image_prompt_run") / "run"
    cfg = load_image_prompt_recipe("image_prompt", [f"model={str(model)!r}", "train.steps=4", "train.batch_size=8",
                                                    "train.warmup_steps=1", "train.lr=0.05", "train.ema_decay=0",
                                                    "train.max_minutes=0", "train.log_every=2"])
    folder = run_image_prompt(cfg, run)
    settings = json.loads((folder / "image_prompt.json").read_text())
    assert settings["steps"] == 4 and len(settings["evaluator_hash"]) == 10
    assert "1. data: 11 images" in (run / "train_log.txt").read_text()
    shutil.copytree(folder, model / "image_prompt")
    return model


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("picture") / "picture.png"
    im = Image.new("RGBA", (120, 120), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse((20, 20, 100, 100), fill=(220, 30, 30, 255))
    im.save(path)
    return path


def test_a_new_adapter_changes_nothing_and_rows_without_an_image_are_the_plain_unet(tiny_pipe):
    from minicream.models.image_adapter import ImagePromptAdapter

    import copy

    unet = copy.deepcopy(tiny_pipe.unet).float()  # the session's pipeline keeps its own dtype
    adapter = ImagePromptAdapter.from_unet(unet, image_dim=16)
    cond = tiny_pipe.encode_prompt("red apple")
    x = torch.randn(2, *tiny_pipe.latent_shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([300.0, 700.0])
    hidden, mask, pooled = cond.hidden.expand(2, -1, -1), cond.mask.expand(2, -1), cond.pooled.expand(2, -1)
    embeds = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    with torch.no_grad():
        plain = unet(x, t, hidden, mask, pooled)
        fresh = unet(x, t, hidden, mask, pooled, image=adapter.prepare(unet, embeds, torch.ones(2)))
        assert torch.equal(plain, fresh)  # gates and the conditioning MLP's last layer start at 0
        adapter.gates.fill_(1.0)
        torch.nn.init.normal_(adapter.to_emb[-1].weight, std=0.1)
        steered = unet(x, t, hidden, mask, pooled, image=adapter.prepare(unet, embeds, torch.tensor([0.0, 1.0])))
    assert torch.allclose(steered[0], plain[0], atol=1e-6)  # weight 0: the row is drawn without the image
    assert (steered[1] - plain[1]).abs().max() > 1e-3


def test_sampling_with_an_image_prompt(prompted_model, picture):
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(prompted_model)
    args = dict(num_images=2, steps=3, seed=5, filter="none")
    plain = pipe("red apple", **args)
    prompted = pipe("red apple", image_prompt=str(picture), **args)
    zero = pipe("red apple", image_prompt=str(picture), image_scale=0.0, image_strength=1.0, **args)
    assert [a.tobytes() for a in zero] == [a.tobytes() for a in plain]  # scale 0 is the plain model, bit for bit
    assert all(a.tobytes() != b.tobytes() for a, b in zip(prompted, plain))
    again = pipe("red apple", image_prompt=Image.open(picture), **args)
    assert [a.tobytes() for a in again] == [a.tobytes() for a in prompted]
    rec = prompted[0].info["minicream"]["image_prompt"]
    assert rec[0]["scale"] == 1.0 and len(rec[0]["sha256"]) == 16
    alone = pipe(None, image_prompt=str(picture), num_images=2, steps=3, seed=5)  # text is optional
    assert len(alone) == 2 and alone[0].info["minicream"]["prompt"] == ""
    stacked = pipe("red apple", image_prompt=[str(picture), str(picture)], image_scale=[0.5, 0.5], **args)
    assert len(stacked[0].info["minicream"]["image_prompt"]) == 2
    kept = pipe(None, image_prompt=str(picture), image_strength=0.5, num_images=1, steps=4, seed=1)
    assert kept[0].info["minicream"]["image_prompt"][0]["strength"] == 0.5  # from the picture's own noised latents
    best = pipe(None, image_prompt=str(picture), num_images=1, steps=2, seed=1, num_candidates=3)
    assert best[0].info["minicream"]["num_candidates"] == 3 and "score" in best[0].info["minicream"]


@pytest.mark.parametrize("options, message", [
    (dict(image_scale=3.0), "image_scale"),
    (dict(image_scale=[1.0, 1.0]), "one per image prompt"),
    (dict(image_strength=0.0), "image_strength"),
    (dict(layout={"objects": [{"caption": "red apple", "box": [0, 0, 32, 32]}]}), "layout"),
])
def test_bad_image_prompt_options_are_one_line_errors(prompted_model, picture, options, message):
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(prompted_model)
    with pytest.raises(MinicreamError, match=message):
        pipe("red apple", image_prompt=str(picture), num_images=1, steps=2, **options)


def test_missing_or_foreign_adapters_and_bad_images_are_refused(tiny_evaluated_model, prompted_model, picture, tmp_path):
    from minicream.pipelines import Pipeline

    with pytest.raises(MinicreamError, match="no image-prompt adapter"):
        Pipeline.from_pretrained(tiny_evaluated_model)("red apple", image_prompt=str(picture), num_images=1, steps=2)
    model = tmp_path / "model"
    shutil.copytree(prompted_model, model)
    settings = model / "image_prompt" / "image_prompt.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "evaluator_hash": "0123456789abcdef"}))
    with pytest.raises(MinicreamError, match="trained for other weights"):
        Pipeline.from_pretrained(model)("red apple", image_prompt=str(picture), num_images=1, steps=2)
    pipe = Pipeline.from_pretrained(prompted_model)
    with pytest.raises(MinicreamError, match="image"):
        pipe("red apple", image_prompt=str(tmp_path / "missing.png"), num_images=1, steps=2)
    with pytest.raises(MinicreamError, match="1 to 4 image prompts"):
        pipe("red apple", image_prompt=[str(picture)] * 5, num_images=1, steps=2)
    with pytest.raises(MinicreamError, match="prompt is empty"):
        pipe("  ", num_images=1, steps=2)


def test_cli_image_prompt_and_from(prompted_model, picture, tmp_path):
    from minicream.io.pngmeta import read_png_params
    from test_cli import run_cli

    r = run_cli("generate", "--model", str(prompted_model), "--image-prompt", str(picture), "--image-scale", "0.8",
                "-n", "1", "--steps", "2", "--seed", "3", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    first = next((tmp_path / "a").glob("*.png"))
    assert read_png_params(first)["image_prompt"][0]["scale"] == 0.8
    r = run_cli("generate", "--from", str(first), "--model", str(prompted_model), "--image-prompt", str(picture),
                "-n", "1", "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert Image.open(next((tmp_path / "b").glob("*.png"))).tobytes() == Image.open(first).tobytes()
    other = tmp_path / "other.png"
    Image.new("RGB", (64, 64), "white").save(other)
    for extra, words in (([], "give it again with --image-prompt"), (["--image-prompt", str(other)], "not the one")):
        r = run_cli("generate", "--from", str(first), "--model", str(prompted_model), *extra, "--out", str(tmp_path / "c"))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and words in r.stderr, r.stderr


def test_http_generate_with_an_image_prompt(prompted_model, picture, tmp_path):
    from fastapi.testclient import TestClient

    from minicream.pipelines import Pipeline
    from minicream.serve import ServeSettings, create_app

    pipe = Pipeline.from_pretrained(prompted_model)
    with TestClient(create_app(pipe, ServeSettings(output_dir=tmp_path, token=None, timeout=120)),
                    raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        assert client.get("/api/models").json()["models"][0]["image_prompt"] is True
        data = base64.b64encode(picture.read_bytes()).decode()
        r = client.post("/api/generate", json={"steps": 2, "num_images": 2, "seed": 1, "image_prompt": data,
                                               "image_scale": 0.5})
        assert r.status_code == 200, r.text
        assert r.json()["images"][0]["parameters"]["image_prompt"][0]["scale"] == 0.5
        for body, field in (({"image_prompt": "bm90IGFuIGltYWdl"}, "image_prompt"),
                            ({"image_prompt": data, "image_scale": 5}, "image_scale"), ({}, "prompt")):
            r = client.post("/api/generate", json={"steps": 2, **body})
            assert 400 <= r.status_code < 500 and field in r.text, r.text


# -- the prior ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prior_model(tmp_path_factory, prompted_model):
    """The prompted tiny model with a prior from a few steps of `minicream train-prior`."""
    from minicream.image_prompt.train_prior import load_prior_recipe, run_prior

    model = tmp_path_factory.mktemp("with_prior") / "model"
    shutil.copytree(prompted_model, model)
    run = tmp_path_factory.mktemp("prior_run") / "run"
    folder = run_prior(load_prior_recipe("prior", [f"model={str(model)!r}", "net.width=32", "net.depth=2",
                                                   "train.steps=4", "train.batch_size=8", "train.warmup_steps=1",
                                                   "train.max_minutes=0", "train.log_every=2"]), run)
    assert json.loads((folder / "prior.json").read_text())["steps"] == 4
    shutil.copytree(folder, model / "image_prompt" / "prior")
    return model


def test_the_prior_sampler_lands_on_the_target_of_an_exact_velocity():
    from torch import nn

    from minicream.models.prior import PriorConfig, sample_prior, to_prior_space

    target = torch.nn.functional.normalize(torch.randn(8), dim=0)

    class Exact(nn.Module):  # the flow's velocity when every embedding is `target`: (x_t - x0) / t
        config = PriorConfig(embed_dim=8, text_dim=4)

        def forward(self, x, t, pooled):
            return (x - to_prior_space(target[None])) / t[:, None]

    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    out = sample_prior(Exact(), torch.randn(2, 4), torch.zeros(1, 4), gens, steps=5, guidance=3.0)
    assert torch.allclose(out, target.expand(2, -1), atol=1e-5)


def test_drawing_through_the_prior(prior_model):
    from minicream.image_prompt.prior import prior_embeddings
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(prior_model)
    e = prior_embeddings(pipe, ["red apple", "red apple"], [1, 2])
    assert e.shape[0] == 2 and torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    # an image's draw depends on its seed only: not on the other images of the batch (up to the last bits, which
    # oneDNN's batch-size-dependent kernels move on some CPUs, as the README says of images)
    one = prior_embeddings(pipe, ["red apple"], [1])
    assert torch.allclose(one, e[:1], atol=1e-5) and not torch.allclose(e[1:], e[:1], atol=1e-2)
    args = dict(num_images=2, steps=2, seed=5, filter="none")
    a = pipe("red apple", prior=True, **args)
    assert a[0].info["minicream"]["image_prompt"][0]["prior"] is True
    assert [x.tobytes() for x in pipe("red apple", prior=True, **args)] == [x.tobytes() for x in a]
    with pytest.raises(MinicreamError, match="not both"):
        pipe("red apple", prior=True, image_prompt=Image.new("RGB", (64, 64)), num_images=1, steps=2)


def test_cli_prior_flag_and_rerun(prior_model, tmp_path):
    from minicream.io.pngmeta import read_png_params
    from test_cli import run_cli

    r = run_cli("generate", "red apple", "--prior", "--model", str(prior_model), "-n", "1", "--steps", "2", "--seed", "2",
                "--filter", "none", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    first = next((tmp_path / "a").glob("*.png"))
    assert read_png_params(first)["image_prompt"][0]["prior"] is True
    r = run_cli("generate", "--from", str(first), "--model", str(prior_model), "-n", "1", "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert Image.open(next((tmp_path / "b").glob("*.png"))).tobytes() == Image.open(first).tobytes()
    r = run_cli("generate", "red apple", "--no-prior", "--model", str(prior_model), "-n", "1", "--steps", "2",
                "--seed", "2", "--filter", "none", "--out", str(tmp_path / "c"))
    assert r.returncode == 0 and "image_prompt" not in read_png_params(next((tmp_path / "c").glob("*.png")))


def test_a_model_without_a_prior_refuses_it(prompted_model):
    from minicream.pipelines import Pipeline

    with pytest.raises(MinicreamError, match="no prior"):
        Pipeline.from_pretrained(prompted_model)("red apple", prior=True, num_images=1, steps=2)


# -- variations and fusion ------------------------------------------------------------------------------
def test_variations_from_the_embedding_and_their_rerun(prompted_model, picture, tmp_path):
    from minicream.io.pngmeta import read_png_params
    from minicream.pipelines import Pipeline
    from test_cli import run_cli

    pipe = Pipeline.from_pretrained(prompted_model)
    v = pipe.run("variation", image=str(picture), num_images=2, steps=2, seed=3)
    p = v[0].info["minicream"]
    assert p["mode"] == "variation" and p["method"] == "embedding" and p["image_prompt"][0]["scale"] == 1.0
    assert p["image_prompt"][0]["strength"] == 0.6 and p["image_prompt"][0]["detail"] is True
    old = pipe.run("variation", image=str(picture), num_images=1, steps=2, seed=3, method="renoise")
    assert old[0].info["minicream"].get("method") is None
    r = run_cli("vary", str(picture), "--model", str(prompted_model), "-n", "1", "--steps", "2", "--seed", "4",
                "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    first = next((tmp_path / "a").glob("*.png"))
    assert read_png_params(first)["method"] == "embedding"
    r = run_cli("vary", str(picture), "--from", str(first), "--model", str(prompted_model), "-n", "1",
                "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert Image.open(next((tmp_path / "b").glob("*.png"))).tobytes() == Image.open(first).tobytes()


def test_fusion_mixes_embeddings_by_weight(prior_model, picture, tmp_path):
    from minicream.image_prompt.use import image_embeddings, read_image
    from minicream.pipelines import Pipeline
    from minicream.pipelines.fuse import fused_prompt

    pipe = Pipeline.from_pretrained(prior_model)
    white = tmp_path / "white.png"
    Image.new("RGB", (64, 64), "white").save(white)
    ea = image_embeddings(pipe, read_image(str(picture), 64)[None])[0]
    eb = image_embeddings(pipe, read_image(str(white), 64)[None])[0]
    only_a = fused_prompt(pipe, [str(picture), str(white)], [1.0, 0.0], [1], 1.0).embeds[0, 0]
    assert torch.allclose(only_a, ea, atol=1e-5)
    half = fused_prompt(pipe, [str(picture), str(white)], [0.5, 0.5], [1], 1.0).embeds[0, 0]
    assert torch.allclose(half, torch.nn.functional.normalize(ea + eb, dim=0), atol=1e-5)
    out = pipe.fuse([str(picture), "red apple"], weights=[0.7, 0.3], num_images=2, steps=2, seed=1)
    rec = out[0].info["minicream"]
    assert rec["mode"] == "fuse" and [p.get("text") for p in rec["image_prompt"][0]["fused"]] == [None, "red apple"]
    assert rec["image_prompt"][0]["fused"][1]["by"] == "prior"


@pytest.mark.parametrize("parts, weights, message", [
    (["a", "b"], [1.0, -1.0], "positive"),
    (["a", "b"], [float("nan"), 1.0], "finite"),
    (["a", "b"], [1.0], "one per part"),
    (["a"] * 5, None, "1 to 4 parts"),
    (["a", "  "], None, "empty text"),
    (["a", "missing.png"], None, "looks like an image path"),
    ([{"image": None, "text": "a"}], None, "one of image or text"),
])
def test_bad_fusions_are_one_line_errors(prompted_model, parts, weights, message):
    from minicream.pipelines import Pipeline

    with pytest.raises(MinicreamError, match=message):
        Pipeline.from_pretrained(prompted_model).fuse(parts, weights=weights, num_images=1, steps=2)


def test_cli_and_http_fuse(prompted_model, picture, tmp_path):
    from fastapi.testclient import TestClient

    from minicream.pipelines import Pipeline
    from minicream.serve import ServeSettings, create_app
    from test_cli import run_cli

    r = run_cli("fuse", str(picture), "red apple", "--weights", "0.6", "0.4", "--model", str(prompted_model), "-n", "1",
                "--steps", "2", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    [png] = (tmp_path / "a").glob("fuse_*.png")
    assert png.name.startswith(f"fuse_{picture.stem}_")  # named after the first part's file, not its whole path
    r = run_cli("fuse", str(picture), "red apple", "--weights", "1", "-1", "--model", str(prompted_model), "--out",
                str(tmp_path / "b"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "positive" in r.stderr, r.stderr
    pipe = Pipeline.from_pretrained(prompted_model)
    with TestClient(create_app(pipe, ServeSettings(output_dir=tmp_path, token=None, timeout=120)),
                    raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        data = base64.b64encode(picture.read_bytes()).decode()
        body = {"parts": [{"image": data}, {"text": "red apple"}], "weights": [0.5, 0.5], "steps": 2, "num_images": 1}
        r = client.post("/api/fuse", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["images"][0]["parameters"]["mode"] == "fuse"
        for bad, field in (({"parts": [{"image": data, "text": "x"}]}, "parts"), ({"parts": [{"text": "a"}] * 5}, "parts"),
                           ({"parts": [{"image": "bm90IGFuIGltYWdl"}]}, "parts"),
                           ({"parts": [{"text": "a"}, {"text": "b"}], "weights": [1, -1]}, "weights"),
                           ({"parts": [{"text": "a"}], "weights": ["x"]}, "weights")):
            r = client.post("/api/fuse", json={"steps": 2, **bad})
            assert 400 <= r.status_code < 500 and field in r.text, (bad, r.text)


def test_the_page_generates_from_an_image_prompt_and_fuses_in_the_editor(browser, prior_model, picture, tmp_path):
    import io

    from minicream.pipelines import Pipeline
    from minicream.serve import ServeSettings, create_app
    from minicream.serve.server import serve_in_thread
    from test_serve_browser import open_page

    def params_of_first_card(page):
        raw = base64.b64decode(page.get_attribute("#results .card img", "src").split(",", 1)[1])
        return json.loads(Image.open(io.BytesIO(raw)).info["minicream"])

    app = create_app(Pipeline.from_pretrained(prior_model), ServeSettings(output_dir=tmp_path, token=None, timeout=120))
    with serve_in_thread(app) as url:
        page, errors = open_page(browser, url)
        assert not page.locator("#prior-label").is_hidden()
        page.click("#image-prompt-panel summary")
        page.set_input_files("#image-prompt-file", str(picture))
        page.wait_for_function("document.getElementById('image-prompt-state').textContent.includes('optional')")
        page.fill("#prompt", "")  # the picture alone
        page.fill("#steps", "2")
        page.fill("#num_images", "1")
        page.click("#generate")
        page.wait_for_selector("#results .card img, #error:not([hidden])", timeout=120_000)
        assert page.locator("#error").is_hidden(), page.inner_text("#error")
        p = params_of_first_card(page)
        assert p["prompt"] == "" and p["image_prompt"][0]["scale"] == 1.0
        # the editor's fuse: the image mixed with the prompt's text
        page.evaluate("document.getElementById('results').innerHTML = ''")
        page.set_input_files("#edit-file", str(picture))
        page.wait_for_selector("#editor:not([hidden])")
        page.select_option("#edit-mode", "fuse")
        page.fill("#opt-image-weight", "0.7")
        page.fill("#prompt", "red apple")
        page.click("#edit-run")
        page.wait_for_selector("#results .card img, #error:not([hidden])", timeout=120_000)
        assert page.locator("#error").is_hidden(), page.inner_text("#error")
        p = params_of_first_card(page)
        assert p["mode"] == "fuse" and [x["weight"] for x in p["image_prompt"][0]["fused"]] == [0.7, pytest.approx(0.3)]
        assert not errors, errors
        page.close()
