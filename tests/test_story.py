"""`minicream story` (issue 33 item 2): a recurring object is drawn once and is the same in every scene."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from minicream.errors import MinicreamError

SCENES = ["a red apple and a rocket", "a red apple", "two rockets"]


def crop(im: Image.Image, caption: str, k: int = 0) -> np.ndarray:
    boxes = [o["box"] for o in im.info["minicream"]["layout"]["objects"] if o["caption"] == caption]
    return np.asarray(im.crop(tuple(boxes[k])))


def test_a_recurring_object_is_the_same_in_every_scene(tiny_pipe):
    images = tiny_pipe.story(SCENES, seed=4, steps=3)
    assert len(images) == 3
    p = images[0].info["minicream"]
    assert p["mode"] == "story" and p["story"]["scenes"] == SCENES
    assert [c["concept"] for c in p["story"]["cast"]] == ["red apple", "rocket"]
    assert [im.info["minicream"]["scene"] for im in images] == [0, 1, 2]
    # the apple of scene 0 is scene 1's picture, pixel for pixel; the rocket of scene 0 is each rocket of scene 2
    apple = crop(images[0], "red apple")
    assert apple.shape[:2] == (tiny_pipe.image_size,) * 2
    assert np.array_equal(apple, np.asarray(images[1]))
    rocket = crop(images[0], "rocket")
    assert np.array_equal(rocket, crop(images[2], "rocket", 0)) and np.array_equal(rocket, crop(images[2], "rocket", 1))
    # the same story again is the same pictures; another seed draws other ones
    again = tiny_pipe.story(" | ".join(SCENES), seed=4, steps=3)
    assert [a.tobytes() for a in again] == [a.tobytes() for a in images]
    other = tiny_pipe.story(SCENES, seed=5, steps=3)
    assert other[1].tobytes() != images[1].tobytes()


def test_one_story_per_seed(tiny_pipe):
    images = tiny_pipe.story(SCENES, seed=1, num_images=2, steps=2)
    assert len(images) == 6 and [im.info["minicream"]["seed"] for im in images] == [1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("scenes, message", [
    (["a red apple"], "2 to 8 scene prompts"),
    (["a red apple"] * 9, "2 to 8 scene prompts"),
    (["a red apple", "   "], "2 to 8 scene prompts"),  # a blank scene is no scene
])
def test_bad_stories_are_one_line_errors(tiny_pipe, scenes, message):
    with pytest.raises(MinicreamError, match=message):
        tiny_pipe.story(scenes, steps=2)


def test_a_scene_with_nothing_to_draw_is_refused(tiny_pipe):
    with pytest.raises(MinicreamError, match="no object"):
        tiny_pipe.story(["a red apple", "zzqx"], steps=2, filter="none")


def test_cli_story_writes_one_png_per_scene(tiny_model, tmp_path):
    from minicream.io.pngmeta import read_png_params
    from test_cli import run_cli

    r = run_cli("story", " | ".join(SCENES), "--model", str(tiny_model), "--steps", "2", "--seed", "3", "--out",
                str(tmp_path))
    assert r.returncode == 0, r.stderr
    paths = sorted(tmp_path.glob("*.png"))
    assert [p.stem.rsplit("_", 1)[-1] for p in paths] == ["scene0", "scene1", "scene2"]
    assert read_png_params(paths[2])["prompt"] == "two rockets"
    r = run_cli("story", "a red apple", "--model", str(tiny_model), "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "2 to 8" in r.stderr, r.stderr


def test_http_story(tiny_pipe, tmp_path):
    from fastapi.testclient import TestClient

    from minicream.serve import ServeSettings, create_app

    app = create_app(tiny_pipe, ServeSettings(output_dir=tmp_path, token=None, timeout=120))
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        r = client.post("/api/modes/story", json={"scenes": "\n".join(SCENES), "steps": 2, "seed": 1})
        assert r.status_code == 200, r.text
        assert [im["parameters"]["scene"] for im in r.json()["images"]] == [0, 1, 2]
        r = client.post("/api/story", json={"scenes": "\n".join(SCENES), "steps": 2, "seed": 1})
        assert r.status_code == 200 and len(r.json()["images"]) == 3, r.text
        r = client.post("/api/modes/story", json={"scenes": "one scene", "steps": 2})
        assert r.status_code == 422 and "2 to 8" in r.text, r.text


def test_the_page_draws_a_story(browser, tiny_pipe, tmp_path):
    import base64
    import io
    import json

    from minicream.serve import ServeSettings, create_app
    from minicream.serve.server import serve_in_thread
    from test_serve_browser import open_page

    app = create_app(tiny_pipe, ServeSettings(output_dir=tmp_path, token=None, timeout=120))
    with serve_in_thread(app) as url:
        page, errors = open_page(browser, url)
        page.check("#story")
        page.fill("#prompt", "a red apple and a rocket\na red apple")
        page.fill("#steps", "2")
        page.fill("#num_images", "1")
        page.click("#generate")
        page.wait_for_selector("#results .card img", timeout=120_000)
        cards = page.locator("#results .card img")
        assert cards.count() == 2
        shown = [Image.open(io.BytesIO(base64.b64decode(cards.nth(i).get_attribute("src").split(",", 1)[1])))
                 for i in range(2)]
        params = [json.loads(im.info["minicream"]) for im in shown]
        assert [p["scene"] for p in params] == [0, 1] and params[0]["mode"] == "story"
        box = [o["box"] for o in params[0]["layout"]["objects"] if o["caption"] == "red apple"][0]
        assert np.array_equal(np.asarray(shown[0].convert("RGB").crop(tuple(box))), np.asarray(shown[1].convert("RGB")))
        assert not errors, errors
        page.close()
