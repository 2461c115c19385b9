"""Issue 30: adding a mode is one file. A throwaway mode file, written into a folder added to the
minicream.pipelines package path, appears with its options in the CLI (--help and a run), the OpenAPI schema,
/api/models, its own HTTP route and /api/edit, and the page's editor, with no other file changed. Its function
is exact (one colour channel set to a level), so every surface is checked against a known answer."""
from __future__ import annotations

import base64
import io
import json
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from minicream.cli import main
from minicream.serve import ServeSettings, create_app

MODE_FILE = '''
"""A throwaway mode: the input image, squared to the model's size, with one colour channel set to `level`."""
from minicream.editing import load_image
from minicream.pipelines.modes import SAMPLING, Mode, Option

CHANNELS = ("red", "green", "blue")


def tint(pipe, settings, image, channel, level):
    pixels = load_image(image, pipe.image_size).clone()
    pixels[CHANNELS.index(channel)] = level
    n = len(settings.seeds)
    return pipe.attach(pixels[None].repeat(n, 1, 1, 1), settings.seeds, f"tint {channel}", settings, None,
                       {"mode": "tint", "channel": channel, "level": level})


MODE = Mode("tint", "set one colour channel of an image to a level", (
    Option("image", "image", None, "the input image", cli=False, required=True),
    Option("channel", "str", "red", "the channel to set", choices=CHANNELS),
    Option("level", "int", 255, "the channel's new value", limits={"ge": 0, "le": 255}),
    *SAMPLING,
), tint)
'''
SOURCE = (10, 20, 30)  # a flat source image: every output pixel is known


@pytest.fixture
def tint(tmp_path, monkeypatch):
    """The mode file in its own folder on the package path, the modes discovered again; all undone afterwards."""
    import minicream.pipelines as package
    from minicream.pipelines import Pipeline
    from minicream.pipelines.modes import discover

    folder = tmp_path / "more_modes"
    folder.mkdir()
    (folder / "tint.py").write_text(MODE_FILE)
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    monkeypatch.setattr(Pipeline, "modes", discover())
    yield Pipeline.modes["tint"]
    sys.modules.pop("minicream.pipelines.tint", None)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "flat.png"
    Image.new("RGB", (40, 40), SOURCE).save(path)
    return path


def pixels_of(im: Image.Image) -> set:
    return {tuple(p) for p in np.asarray(im.convert("RGB")).reshape(-1, 3)}


def test_the_mode_is_a_cli_command(tint, source, tiny_model, tiny_pipe, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["tint", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: minicream tint")
    assert "IMAGE" in out and "--channel {red,green,blue}" in out and "--level LEVEL" in out and "(default 255)" in out
    assert "--steps" in out and "--seed" in out  # the shared sampling options, as every mode declares them

    code = main(["tint", str(source), "--channel", "green", "--level", "7", "-n", "2", "--seed", "5",
                 "--model", str(tiny_model), "--out", str(tmp_path / "o")])
    assert code == 0
    written = sorted((tmp_path / "o").glob("*.png"))
    assert [p.name for p in written] == ["tint_flat_5.png", "tint_flat_6.png"]  # named after the IMAGE input
    for path in written:
        im = Image.open(path)
        assert im.size == (tiny_pipe.image_size,) * 2 and pixels_of(im) == {(10, 7, 30)}
        assert json.loads(im.info["minicream"])["level"] == 7

    with pytest.raises(SystemExit) as e:  # argparse: a value outside the declared choices
        main(["tint", str(source), "--channel", "pink"])
    assert e.value.code == 2 and "invalid choice: 'pink'" in capsys.readouterr().err


def client_for(pipe, tmp_path):
    return TestClient(create_app(pipe, ServeSettings(output_dir=tmp_path / "served", token=None)),
                      base_url="http://127.0.0.1")


def b64_png(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_the_mode_is_in_openapi_api_models_and_callable_over_http(tint, source, tiny_pipe, tmp_path):
    with client_for(tiny_pipe, tmp_path) as c:
        spec = c.get("/openapi.json").json()
        assert "/api/modes/tint" in spec["paths"]
        schema = spec["components"]["schemas"]["TintRequest"]
        assert schema["required"] == ["image"]
        level, channel = schema["properties"]["level"], schema["properties"]["channel"]  # optional: anyOf [T, null]
        assert level["default"] == 255 and {"type": "integer", "minimum": 0, "maximum": 255} in level["anyOf"]
        assert level["description"] == "the channel's new value"
        assert channel["default"] == "red" and ["red", "green", "blue"] in [a.get("enum") for a in channel["anyOf"]]
        assert "tint" in spec["components"]["schemas"]["EditRequest"]["properties"]["mode"]["enum"]

        listed = c.get("/api/models").json()["models"][0]["modes"]["tint"]
        assert listed["help"] == "set one colour channel of an image to a level"
        options = {o["name"]: o for o in listed["options"]}
        assert options["channel"] == {"name": "channel", "field": "channel", "kind": "str", "default": "red",
                                      "help": "the channel to set", "choices": ["red", "green", "blue"],
                                      "required": False, "limits": {}}
        assert options["image"]["required"] and options["level"]["limits"] == {"ge": 0, "le": 255}
        assert "callback" not in options and "batch_size" not in options  # API-only options are not offered

        r = c.post("/api/modes/tint", json={"image": b64_png(source), "channel": "blue", "level": 200, "seed": 3})
        assert r.status_code == 200, r.text
        [image] = r.json()["images"]
        assert image["seed"] == 3 and image["parameters"]["mode"] == "tint"
        assert pixels_of(Image.open(io.BytesIO(base64.b64decode(image["png_base64"])))) == {(10, 20, 200)}
        # /api/edit dispatches to it by the declaration alone
        r = c.post("/api/edit", json={"mode": "tint", "image": b64_png(source), "level": 0, "num_images": 2})
        assert r.status_code == 200, r.text
        assert [pixels_of(Image.open(io.BytesIO(base64.b64decode(im["png_base64"])))) for im in r.json()["images"]] \
            == [{(0, 20, 30)}] * 2  # channel: its declared default, red
        # its declared bounds and choices hold over HTTP: one-line 422s
        for body, words in [({"level": 256}, "level: Input should be less than or equal to 255"),
                            ({"channel": "pink"}, "channel: Input should be 'red', 'green' or 'blue'"),
                            ({"frames": 3}, "frames: unknown field")]:
            r = c.post("/api/modes/tint", json={"image": b64_png(source), **body})
            assert r.status_code == 422 and words in r.json()["error"]["message"], r.text
        r = c.post("/api/modes/tint", json={"channel": "red"})
        assert r.status_code == 422 and "image: Field required" in r.json()["error"]["message"]


def test_the_mode_is_in_the_page(browser, tint, source, tiny_pipe, tmp_path):
    from minicream.serve.server import serve_in_thread
    from test_serve_browser import open_page

    app = create_app(tiny_pipe, ServeSettings(output_dir=tmp_path / "served", token=None, timeout=120))
    with serve_in_thread(app) as url:
        page, errors = open_page(browser, url)
        page.locator("#edit-mode option[value=tint]").wait_for(state="attached")
        page.set_input_files("#edit-file", str(source))
        page.wait_for_selector("#editor:not([hidden])")
        page.select_option("#edit-mode", "tint")
        assert page.inner_text("#mode-help") == "set one colour channel of an image to a level"
        # its own options get inputs of their kind, with the declared defaults, choices and bounds
        assert page.input_value("#opt-channel") == "red"
        assert page.locator("#opt-channel option").all_inner_texts() == ["(default)", "red", "green", "blue"]
        assert page.input_value("#opt-level") == "255" and page.get_attribute("#opt-level", "max") == "255"
        page.select_option("#opt-channel", "green")
        page.fill("#opt-level", "99")
        page.fill("#num_images", "1")
        page.uncheck("#random_seed")
        page.fill("#seed", "4")
        page.click("#edit-run")
        page.wait_for_selector("#results .card img", timeout=60_000)
        raw = base64.b64decode(page.get_attribute("#results .card img", "src").split(",", 1)[1])
        im = Image.open(io.BytesIO(raw))
        assert pixels_of(im) == {(10, 99, 30)} and json.loads(im.info["minicream"])["seed"] == 4
        assert "tint" in page.inner_text("#results .card")
        assert not errors, errors
        page.close()


def test_an_option_declared_by_every_mode_reaches_every_surface(monkeypatch, tiny_pipe, tmp_path, capsys):
    """An option shared by all modes is declared once (modes.SAMPLING or FILTER); here it is added to every mode's
    declaration, as that one edit does, and every command, request model and /api/models entry has it."""
    import dataclasses

    from minicream.pipelines import Pipeline
    from minicream.pipelines.modes import Option

    shared = Option("sparkle", "float", 0.5, "a throwaway option every mode takes", limits={"ge": 0.0, "le": 1.0})
    monkeypatch.setattr(Pipeline, "modes", {name: dataclasses.replace(m, options=(*m.options, shared))
                                            for name, m in Pipeline.modes.items()})
    for command in ("generate", "edit", "vary", "outpaint", "blend"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--sparkle SPARKLE" in capsys.readouterr().out, command
    with client_for(tiny_pipe, tmp_path) as c:
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
        models = ["GenerateRequest", "EditRequest", *(f"{name.capitalize()}Request" for name in Pipeline.modes)]
        for name in models:
            field = schemas[name]["properties"]["sparkle"]
            assert {"type": "number", "minimum": 0.0, "maximum": 1.0} in field["anyOf"], name
        listed = c.get("/api/models").json()["models"][0]["modes"]
        assert set(listed) == set(Pipeline.modes)
        for mode in listed.values():
            assert {"name": "sparkle", "default": 0.5, "required": False}.items() <= mode["options"][-1].items()
        # a value outside its declared range is refused before any work
        r = c.post("/api/generate", json={"prompt": "red apple", "sparkle": 2})
        assert r.status_code == 422 and "sparkle: Input should be less than or equal to 1" in r.json()["error"]["message"]
