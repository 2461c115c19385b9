"""Adapters over HTTP and on the page (issue 31 item 2), on the tiny model with a LoRA and a textual inversion:
/api/models lists them; a request's `adapters` draws with exactly those (and leaves the served mix as it was);
OpenAI's `model` takes "base+adapter[:scale]"; bad choices are one-line 422s; the page's picker sends them."""
from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from minicream.pipelines import Pipeline
from minicream.serve import ServeSettings, create_app
from minicream.serve.server import serve_in_thread
from test_adapters import TOK, adapters, subject  # noqa: F401  (module fixtures: a LoRA "lo" and a textual inversion "ti")
from test_serve import assert_one_line_error
from test_serve_browser import open_page


@pytest.fixture(scope="module")
def adapted(tiny_model, adapters):  # noqa: F811
    pipe = Pipeline.from_pretrained(tiny_model)
    for folder in adapters:
        pipe.load_adapter(folder)
    return pipe


@pytest.fixture
def client(adapted, tmp_path):
    app = create_app(adapted, ServeSettings(output_dir=tmp_path / "out", token=None, timeout=120))
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
        yield c


def generate(c, **body) -> dict:
    r = c.post("/api/generate", json={"prompt": f"a {TOK}", "seed": 5, "steps": 2, "num_images": 1, **body})
    assert r.status_code == 200, r.text
    return r.json()


def pixels(answer: dict) -> bytes:
    return Image.open(io.BytesIO(base64.b64decode(answer["images"][0]["png_base64"]))).tobytes()


def test_api_models_lists_the_loaded_adapters(client):
    [model] = client.get("/api/models").json()["models"]
    listed = {a["name"]: a for a in model["adapters"]}
    assert set(listed) == {"lo", "ti"}
    assert listed["lo"]["token"] == TOK and listed["lo"]["method"] == "lora" and listed["lo"]["scale"] == 1.0
    assert listed["ti"]["method"] == "textual-inversion" and len(listed["lo"]["hash"]) >= 8
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == [model["name"], f"{model['name']}+lo"]  # a textual inversion is a word, not a model


def test_a_request_draws_with_exactly_the_adapters_it_names(client, adapted):
    served = pixels(generate(client))  # the served mix: lo at 1
    none = generate(client, adapters=[])
    assert pixels(none) != served
    assert {a["name"]: a["scale"] for a in none["images"][0]["parameters"]["adapters"]} == {"lo": 0.0, "ti": 1.0}
    assert pixels(generate(client, adapters=[{"name": "lo"}])) == served
    half = generate(client, adapters=[{"name": "lo", "scale": 0.5}])
    assert pixels(half) not in (served, pixels(none))
    assert {a["name"]: a["scale"] for a in half["images"][0]["parameters"]["adapters"]}["lo"] == 0.5
    assert {n: a.scale for n, a in adapted.adapters.items()} == {"lo": 1.0, "ti": 1.0}  # the served mix is back
    assert pixels(generate(client, adapters=[])) == pixels(none)


@pytest.mark.parametrize("choices, words", [
    ([{"name": "nope"}], ("adapters", "'nope' is not loaded", "lo, ti")),
    ([{"name": "ti", "scale": 0.5}], ("adapters", "textual inversion")),
    ([{"name": "lo"}, {"name": "lo", "scale": 0.3}], ("adapters", "named twice")),
    ([{"name": "lo", "scale": 3}], ("adapters", "scale")),
    ([{"name": "lo", "weight": 1}], ("adapters", "weight")),
])
def test_bad_adapter_choices_are_one_line_422s(client, choices, words):
    r = client.post("/api/generate", json={"prompt": "red apple", "steps": 1, "adapters": choices})
    assert_one_line_error(r, 422, *words)


def test_openai_model_names_base_plus_adapter(client):
    name = client.get("/api/models").json()["models"][0]["name"]
    body = {"prompt": f"a {TOK}", "n": 1, "response_format": "b64_json"}
    with_lo = client.post("/v1/images/generations", json={**body, "model": f"{name}+lo:0.5"})
    assert with_lo.status_code == 200, with_lo.text
    png = Image.open(io.BytesIO(base64.b64decode(with_lo.json()["data"][0]["b64_json"])))
    assert {a["name"]: a["scale"] for a in json.loads(png.info["minicream"])["adapters"]}["lo"] == 0.5
    for model, words in ((f"{name}+nope", ("'nope' is not loaded",)), (f"{name}+lo:big", ("ADAPTER:SCALE",)),
                         (f"{name}+lo:5", ("scale must be a number in 0..2",))):
        assert_one_line_error(client.post("/v1/images/generations", json={**body, "model": model}), 422, *words)


def test_the_page_picks_an_adapter_and_generates(browser, adapted, tmp_path):
    app = create_app(adapted, ServeSettings(output_dir=tmp_path / "out", token=None, timeout=120))
    with serve_in_thread(app) as url:
        page, errors = open_page(browser, url)
        page.locator("#adapter-list label.adapter").nth(1).wait_for(state="attached")
        assert page.is_visible("#adapters-panel") and TOK in page.inner_text("#adapter-list")
        lo = page.locator("#adapter-list label.adapter").first
        lo.locator("input[type=number]").fill("0.25")
        assert page.locator("#adapter-list label.adapter").nth(1).locator("input[type=number]").is_disabled()  # ti
        page.fill("#prompt", f"a {TOK}")
        page.fill("#steps", "2")
        page.fill("#num_images", "1")
        page.click("#generate")
        page.wait_for_selector("#results .card img", timeout=120_000)
        raw = base64.b64decode(page.get_attribute("#results .card img", "src").split(",", 1)[1])
        drawn = {a["name"]: a["scale"] for a in json.loads(Image.open(io.BytesIO(raw)).info["minicream"])["adapters"]}
        assert drawn == {"lo": 0.25, "ti": 1.0}
        lo.locator("input[type=checkbox]").uncheck()  # none ticked: drawn without the LoRA
        page.click("#generate")
        page.locator("#history li").nth(1).wait_for(timeout=120_000)
        raw = base64.b64decode(page.get_attribute("#results .card img", "src").split(",", 1)[1])
        assert {a["name"]: a["scale"] for a in json.loads(Image.open(io.BytesIO(raw)).info["minicream"])["adapters"]}["lo"] == 0.0
        assert not errors, errors
        page.close()
