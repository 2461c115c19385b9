"""OpenAI's image edits and variations on `minicream serve`: the official `openai` client against the tiny model
(with its tiny evaluator, which names an image for variations), and every bad upload refused with a one-line 4xx."""
from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from minicream.serve import ServeSettings, create_app
from minicream.serve.server import serve_in_thread
from minicream.serve.uploads import MAX_PIXELS, UPLOAD_BYTES

TOKEN = "edit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.fixture(scope="module")
def server(tiny_evaluated_model, tmp_path_factory):
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(tiny_evaluated_model)
    pipe.defaults = {**pipe.defaults, "steps": 3}  # quick
    app = create_app(pipe, ServeSettings(output_dir=tmp_path_factory.mktemp("edits_out"), token=TOKEN, concurrency=1,
                                         queue_size=4, timeout=60))
    with serve_in_thread(app) as url:
        yield url, pipe


@pytest.fixture(scope="module")
def source(server) -> Image.Image:
    _, pipe = server
    return pipe("red apple", seed=1)[0]


def right_half_transparent(size=64) -> Image.Image:
    a = np.full((size, size), 255, np.uint8)
    a[:, size // 2:] = 0
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., 3] = a
    return Image.fromarray(rgba, "RGBA")


def test_openai_client_edit_and_variation(server, source):
    from openai import OpenAI

    url, pipe = server
    client = OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
    result = client.images.edit(image=("a.png", png(source), "image/png"), mask=("m.png", png(right_half_transparent()), "image/png"),
                                prompt="rocket", n=2, response_format="b64_json")
    assert len(result.data) == 2
    src = np.asarray(source)
    for d in result.data:
        im = decode(d.b64_json)
        assert im.size == (64, 64)
        assert np.array_equal(np.asarray(im.convert("RGB"))[:, :24], src[:, :24])  # the opaque half is kept
    result = client.images.edit(image=("a.png", png(source), "image/png"), prompt="rocket")  # no mask: img2img
    assert len(result.data) == 1 and result.data[0].revised_prompt
    result = client.images.create_variation(image=("a.png", png(source), "image/png"), n=2, response_format="b64_json")
    assert len(result.data) == 2 and decode(result.data[0].b64_json).size == (64, 64)


@pytest.mark.parametrize("files, data, status, words", [
    ({}, {"prompt": "rocket"}, 400, "image: a file is required"),
    ({"image": ("a.png", b"not an image", "image/png")}, {"prompt": "rocket"}, 400, "not a readable"),
    ({"image": ("a.gif", None, "image/gif")}, {"prompt": "rocket"}, 400, "GIF images are not accepted"),
    ({"image": ("a.png", None, "image/png")}, {}, 400, "prompt"),
    ({"image": ("a.png", None, "image/png")}, {"prompt": "rocket", "n": "99"}, 400, "n: an integer"),
    ({"image": ("a.png", None, "image/png")}, {"prompt": "rocket", "size": "1024x1024"}, 400, "size"),
    ({"image": ("a.png", None, "image/png"), "mask": ("m.png", "small", "image/png")}, {"prompt": "rocket"}, 400, "differs"),
    ({"image": ("a.png", None, "image/png"), "mask": ("m.png", "opaque", "image/png")}, {"prompt": "rocket"}, 400, "no transparent"),
    ({"image": ("a.png", "bomb", "image/png")}, {"prompt": "rocket"}, 400, "too many pixels"),
])
def test_bad_uploads_get_one_line_4xx(server, source, files, data, status, words):
    url, _ = server
    content = {None: png(source), "small": png(right_half_transparent(32)),
               "opaque": png(Image.new("RGBA", (64, 64), (0, 0, 0, 255))), "bomb": png(Image.new("1", (4097, 4097)))}
    sent = {}
    for k, (name, body, ctype) in files.items():
        if ctype == "image/gif" and body is None:
            buf = io.BytesIO()
            source.save(buf, format="GIF")
            body = buf.getvalue()
        sent[k] = (name, content.get(body, body) if not isinstance(body, bytes) else body, ctype)
    r = httpx.post(f"{url}/v1/images/edits", files=sent or {"other": ("x", b"x")}, data=data, headers=AUTH, timeout=60)
    assert r.status_code == status, r.text
    assert "\n" not in r.text and words in r.json()["error"]["message"]


def test_upload_limits(server):
    url, _ = server
    r = httpx.post(f"{url}/v1/images/edits", json={"prompt": "rocket"}, headers=AUTH)
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]["message"]
    big = b"\0" * (UPLOAD_BYTES + 1)
    r = httpx.post(f"{url}/v1/images/variations", files={"image": ("a.png", big, "image/png")}, headers=AUTH)
    assert r.status_code == 413
    r = httpx.post(f"{url}/v1/images/variations", files={"image": ("a.png", b"x", "image/png")})  # no token: 401 first
    assert r.status_code == 401
    assert MAX_PIXELS < 4097 * 4097


def b64png(im: Image.Image) -> str:
    return base64.b64encode(png(im)).decode()


def test_native_edit_every_mode(server, source):
    url, pipe = server
    white_right = Image.fromarray(np.where(np.arange(64)[None, :] >= 32, 255, 0).astype(np.uint8).repeat(64, 0), "L")
    cases = [({"mode": "img2img", "prompt": "rocket", "strength": 0.5}, (64, 64), 1),
             ({"mode": "inpaint", "prompt": "rocket", "mask": "data:image/png;base64," + b64png(white_right)}, (64, 64), 1),
             ({"mode": "outpaint", "prompt": "red apple", "right": 32}, (96, 64), 1),
             ({"mode": "variation", "num_images": 2}, (64, 64), 2),
             ({"mode": "blend", "prompt": "rocket", "frames": 3}, (64, 64), 3)]
    for body, size, count in cases:
        r = httpx.post(f"{url}/api/edit", json={"image": b64png(source), "seed": 5, **body}, headers=AUTH, timeout=60)
        assert r.status_code == 200, (body["mode"], r.text)
        images = r.json()["images"]
        assert len(images) == count and images[0]["parameters"]["mode"] == body["mode"]
        assert Image.open(io.BytesIO(base64.b64decode(images[0]["png_base64"]))).size == size
    # the inpainted image keeps the left half (black = keep) as the library does
    r = httpx.post(f"{url}/api/edit", json={"image": b64png(source), "seed": 5, **cases[1][0]}, headers=AUTH, timeout=60)
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]["png_base64"]))).convert("RGB"))
    direct = np.asarray(pipe.edit(source, "rocket", mask=white_right, seed=5)[0])
    assert np.array_equal(got, direct)


@pytest.mark.parametrize("body, status, words", [
    ({"mode": "inpaint", "prompt": "rocket"}, 422, "inpaint needs a mask"),
    ({"mode": "img2img"}, 422, "needs a prompt"),
    ({"mode": "paint", "prompt": "x"}, 422, "mode"),
    ({"mode": "img2img", "prompt": "x", "image": "%%%"}, 400, "not valid base64"),
    ({"mode": "img2img", "prompt": "x", "strength": 1.5}, 422, "strength"),
    ({"mode": "outpaint", "prompt": "x", "right": 500}, 422, "right"),
])
def test_native_edit_bad_input(server, source, body, status, words):
    url, _ = server
    r = httpx.post(f"{url}/api/edit", json={"image": b64png(source), **body}, headers=AUTH, timeout=60)
    assert r.status_code == status, r.text
    assert "\n" not in r.text and words in r.json()["error"]["message"]
