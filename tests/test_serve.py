"""`minicream serve`: the HTTP API with a pipeline stand-in (every bad input, the token, 429, time limit,
errors, paths), then real generation with the tiny model, the official openai client and a short load test."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from minicream.io.pngmeta import read_png_params
from minicream.serve import ServeSettings, create_app
from minicream.serve.server import serve_in_thread
from serve_fakes import FakePipe, FakePipeWithOptions

TOKEN = "s3cret-token"
PNG = b"\x89PNG\r\n\x1a\n"


def make_client(tmp_path, pipe=None, **settings):
    app = create_app(pipe or FakePipe(), ServeSettings(output_dir=tmp_path / "out", **{"token": None, **settings}))
    return TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1")


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path) as c:
        yield c


def assert_one_line_error(r, status, *words):
    assert r.status_code == status, r.text
    assert "\n" not in r.text and "Traceback" not in r.text
    message = r.json()["error"]["message"]
    for w in words:
        assert w in message, message
    return message


def decode_png(b64: str) -> Image.Image:
    raw = base64.b64decode(b64)
    assert raw.startswith(PNG)
    return Image.open(io.BytesIO(raw))


# -- routes -----------------------------------------------------------------------------------------
def test_info_routes(client):
    assert client.get("/healthz").json()["status"] == "ok"
    m = client.get("/api/models").json()["models"][0]
    assert m["image_size"] == 16 and m["samplers"] == ["ddim", "euler"] and m["name"] == "fake-model"
    assert m["features"] == {"num_candidates": False, "keep_top": False, "filter": False, "filter_modes": [], "filter_default": None,
                             "style": False, "layout": False, "guidance_max_noise": False, "cads": False}
    assert client.get("/api/samplers").json() == {"samplers": ["ddim", "euler"], "default": "euler"}
    assert client.get("/v1/models").json()["data"][0]["id"] == "fake-model"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/images/generations", "/api/generate", "/api/models", "/api/samplers", "/healthz", "/metrics"} <= set(paths)


def test_page_and_assets_are_served_by_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="prompt"' in page.text and "http" not in page.text.split("<body>")[0].replace(
        'content="width', "")  # no CDN: every asset comes from /static
    for asset, kind in [("/static/app.js", "javascript"), ("/static/style.css", "css")]:
        r = client.get(asset)
        assert r.status_code == 200 and kind in r.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/../app.py").status_code == 404


def test_native_generate(client):
    r = client.post("/api/generate", json={"prompt": "red apple", "negative_prompt": "blur", "seed": 5, "sampler": "ddim",
                                           "steps": 3, "guidance": 2.5, "num_images": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["parameters"] | {} == {**body["parameters"], "prompt": "red apple", "seed": 5, "sampler": "ddim", "steps": 3,
                                        "guidance": 2.5, "num_images": 2, "size": 16}
    assert [im["seed"] for im in body["images"]] == [5, 6]
    im = decode_png(body["images"][0]["png_base64"])
    assert im.size == (16, 16) and json.loads(im.info["minicream"])["negative_prompt"] == "blur"
    assert body["images"][0]["rewritten_prompt"] is None and body["images"][0]["score"] is None
    saved = client.get(body["images"][1]["url"])  # saved into the output dir, served back
    assert saved.status_code == 200 and saved.content.startswith(PNG)


def test_optional_pipeline_options_pass_through_only_when_supported(tmp_path, client):
    r = client.post("/api/generate", json={"prompt": "x", "num_candidates": 3})
    assert_one_line_error(r, 422, "num_candidates: unknown field")  # not declared by this pipeline
    assert_one_line_error(client.post("/api/generate", json={"prompt": "x", "filter": "rewrite"}), 422, "filter")
    pipe = FakePipeWithOptions()
    with make_client(tmp_path, pipe) as c:
        features = c.get("/api/models").json()["models"][0]["features"]
        assert features == {"num_candidates": True, "keep_top": False, "filter": True, "filter_modes": ["off", "rewrite"], "filter_default": "off",
                            "style": False, "layout": False, "guidance_max_noise": False, "cads": False}
        assert_one_line_error(c.post("/api/generate", json={"prompt": "x", "style": "bold"}), 422, "style")
        # options this pipeline does not declare are a 422 naming them, not a 500 (they reached it as unknown arguments)
        assert_one_line_error(c.post("/api/generate", json={"prompt": "x", "cads": 0.5}), 422, "cads: unknown field")
        assert_one_line_error(c.post("/api/generate", json={"prompt": "x", "guidance_max_noise": 0.5}), 422,
                              "guidance_max_noise")
        r = c.post("/api/generate", json={"prompt": "cat face", "num_candidates": 3, "filter": "rewrite"})
        assert r.status_code == 200, r.text
        img = r.json()["images"][0]
        assert img["rewritten_prompt"] == "CAT FACE" and img["score"] == 0.25
        assert pipe.calls[-1]["num_candidates"] == 3 and pipe.calls[-1]["filter"] == "rewrite"
        assert_one_line_error(c.post("/api/generate", json={"prompt": "x", "filter": "nope"}), 422,
                              "filter: Input should be 'off' or 'rewrite'")  # its declared choices
        r = c.post("/v1/images/generations", json={"prompt": "cat face"})
        assert r.json()["data"][0]["revised_prompt"] == "cat face"


def test_openai_route_shape(client):
    r = client.post("/v1/images/generations", json={"prompt": "dog face", "n": 2, "size": "16x16", "user": "u1",
                                                     "model": "dall-e-3", "quality": "hd"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["created"], int) and len(body["data"]) == 2
    assert set(body["data"][0]) == {"b64_json", "revised_prompt"} and decode_png(body["data"][0]["b64_json"]).size == (16, 16)
    r = client.post("/v1/images/generations", json={"prompt": "dog face", "response_format": "url", "size": "auto"})
    url = r.json()["data"][0]["url"]
    assert url.startswith("http://127.0.0.1/outputs/") and client.get(url).content.startswith(PNG)


BAD_NATIVE = [
    ({}, "prompt is empty"),  # text is optional beside an image prompt: without one, the pipeline refuses
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt is empty"),
    ({"prompt": "x" * 1001}, "at most 1000 characters"),
    ({"prompt": 5}, "prompt: Input should be a valid string"),
    ({"prompt": "x", "negative_prompt": "y" * 1001}, "negative_prompt"),
    ({"prompt": "x", "steps": 0}, "steps: Input should be greater than or equal to 1"),
    ({"prompt": "x", "steps": 151}, "steps: Input should be less than or equal to 150"),
    ({"prompt": "x", "steps": "many"}, "steps"),
    ({"prompt": "x", "guidance": -1}, "guidance"),
    ({"prompt": "x", "guidance": 31}, "guidance"),
    ({"prompt": "x", "guidance_max_noise": 0}, "guidance_max_noise"),
    ({"prompt": "x", "guidance_max_noise": 1.5}, "guidance_max_noise"),
    ({"prompt": "x", "cads": -0.1}, "cads"),
    ({"prompt": "x", "cads": 11}, "cads"),
    ({"prompt": "x", "num_images": 0}, "num_images"),
    ({"prompt": "x", "num_images": 9}, "num_images"),
    ({"prompt": "x", "num_candidates": 9}, "num_candidates"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "seed": 2**31}, "seed"),
    ({"prompt": "x", "size": 100000}, "size"),
    ({"prompt": "x", "sampler": "nope"}, "unknown sampler"),
    ({"prompt": "x", "client_id": "../../etc"}, "client_id"),
    ({"prompt": "x", "shell": "rm -rf /"}, "shell: unknown field"),
]


@pytest.mark.parametrize("body,words", BAD_NATIVE)
def test_native_bad_input(client, body, words):
    assert_one_line_error(client.post("/api/generate", json=body), 422, words)


BAD_OPENAI = [
    ({"n": 1}, "prompt: Field required"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x" * 1001}, "prompt"),
    ({"prompt": "x", "n": 0}, "n: Input should be greater than or equal to 1"),
    ({"prompt": "x", "n": 9}, "n: Input should be less than or equal to 8"),
    ({"prompt": "x", "size": "1024x1024"}, "this model draws 16x16"),
    ({"prompt": "x", "size": "16x16" * 10}, "size"),
    ({"prompt": "x", "response_format": "jpeg"}, "response_format"),
    ({"prompt": "x", "output_format": "webp"}, "output_format"),
    ({"prompt": "x", "stream": True}, "stream"),
    ({"prompt": "x", "user": "u" * 300}, "user"),
]


@pytest.mark.parametrize("body,words", BAD_OPENAI)
def test_openai_bad_input(client, body, words):
    assert_one_line_error(client.post("/v1/images/generations", json=body), 422, words)


def test_malformed_requests(client):
    r = client.post("/api/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert_one_line_error(r, 422, "not valid JSON")
    r = client.post("/api/generate", content=b"x" * 70_000, headers={"content-type": "application/json"})
    assert_one_line_error(r, 413, "too large")
    assert_one_line_error(client.get("/api/generate"), 405)
    assert_one_line_error(client.get("/no/such/route"), 404)


@pytest.mark.parametrize("name", ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2fsecret.png", "x.png",
                                  "0" * 32 + ".txt", "0" * 32 + ".png", "/etc/passwd", "..", "0" * 31 + "/.png",
                                  "x.png%00.png", "0" * 32 + "%00.png"])
def test_outputs_route_cannot_escape_output_dir(tmp_path, name):
    (tmp_path / "secret.png").write_bytes(PNG)  # next to the output dir, never reachable
    with make_client(tmp_path) as c:
        r = c.get("/outputs/" + name)
        assert not r.content.startswith(PNG)
        # (the client itself normalises "/outputs/.." to "/", which is the page)
        assert r.status_code == 404 or not r.url.path.startswith("/outputs")


def test_token_guards_every_api_route(tmp_path):
    with make_client(tmp_path, token=TOKEN) as c:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        gen = {"prompt": "red apple"}
        for method, path, body in [("post", "/api/generate", gen), ("post", "/v1/images/generations", gen),
                                   ("get", "/api/models", None), ("get", "/api/samplers", None), ("get", "/metrics", None),
                                   ("get", "/v1/models", None), ("get", "/api/progress/abc", None),
                                   ("get", "/outputs/" + "0" * 32 + ".png", None)]:
            for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}]:
                r = c.request(method, path, json=body, headers=headers)
                assert_one_line_error(r, 401, "bearer token")
                assert r.headers["www-authenticate"] == "Bearer"
            assert c.request(method, path, json=body, headers=auth).status_code in (200, 404), path
        r = c.post("/api/generate", json=gen, headers=auth)
        assert c.get(r.json()["images"][0]["url"], headers=auth).status_code == 200
        # The page, its assets, liveness and the schema stay public (the page asks for the token).
        for path in ["/", "/static/app.js", "/healthz", "/openapi.json"]:
            assert c.get(path).status_code == 200, path
        assert c.get("/healthz").json()["auth"] is True


def test_internal_errors_are_one_line_without_trace(tmp_path):
    with make_client(tmp_path, FakePipe(fail=RuntimeError("secret detail at /home/x/model.py line 3"))) as c:
        message = assert_one_line_error(c.post("/api/generate", json={"prompt": "x"}), 500, "internal server error")
        assert "secret" not in message and "RuntimeError" in message


def test_time_limit_gives_504_and_frees_the_worker(tmp_path):
    with make_client(tmp_path, FakePipe(step_seconds=0.1), timeout=0.25, concurrency=1) as c:
        assert_one_line_error(c.post("/api/generate", json={"prompt": "x", "steps": 50}), 504, "limit of 0.25 s")
        assert c.post("/api/generate", json={"prompt": "x", "steps": 1}).status_code == 200  # the worker is free again
        assert "minicream_generation_timeouts_total 1.0" in c.get("/metrics").text


def test_queue_full_gives_429_with_retry_after(tmp_path):
    gate = threading.Event()
    app = create_app(FakePipe(gate=gate), ServeSettings(output_dir=tmp_path, token=None, concurrency=1, queue_size=1))
    queue = app.state.queue
    with serve_in_thread(app) as url, ThreadPoolExecutor(2) as pool:
        post = lambda: httpx.post(f"{url}/api/generate", json={"prompt": "x"}, timeout=30)
        first = pool.submit(post)
        while queue.running < 1:
            time.sleep(0.01)
        second = pool.submit(post)
        while queue.queued < 1:
            time.sleep(0.01)
        r = post()  # one running + one waiting = full
        assert_one_line_error(r, 429, "queue is full")
        assert int(r.headers["retry-after"]) >= 1
        health = httpx.get(f"{url}/healthz").json()
        assert (health["running"], health["queued"]) == (1, 1)
        gate.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
    assert 'minicream_http_requests_total{method="POST",route="/api/generate",status="429"} 1.0' in metrics
    assert 'minicream_http_requests_total{method="POST",route="/api/generate",status="200"} 2.0' in metrics
    assert "minicream_queue_depth 0.0" in metrics and "minicream_queue_rejected_total 1.0" in metrics


def test_progress_route(tmp_path):
    gate = threading.Event()
    app = create_app(FakePipe(gate=gate), ServeSettings(output_dir=tmp_path, token=None))
    with serve_in_thread(app) as url, ThreadPoolExecutor(1) as pool:
        job = pool.submit(httpx.post, f"{url}/api/generate", json={"prompt": "x", "steps": 3, "client_id": "job-1"}, timeout=30)
        while httpx.get(f"{url}/api/progress/job-1").json()["state"] != "running":
            time.sleep(0.01)
        gate.set()
        assert job.result().status_code == 200
        assert httpx.get(f"{url}/api/progress/job-1").json() | {"queued": 0} == {"state": "done", "step": 3, "total": 3, "queued": 0}
        assert httpx.get(f"{url}/api/progress/other").json()["state"] == "unknown"


def _send_chunked(url: str, token: str, total: int, chunk: int = 1 << 16) -> tuple[int, int]:
    """POST a chunked body (no Content-Length) of `total` bytes on a raw socket; returns (status, bytes sent)."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=5)
    head = (f"POST /api/generate HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent, block = 0, b"%x\r\n" % chunk + b" " * chunk + b"\r\n"
    with sock:
        sock.sendall(head.encode())
        try:
            while sent < total:
                sock.sendall(block)
                sent += chunk
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and stopped reading: what we want
            pass
        reply = b""
        while b"\r\n" not in reply:
            part = sock.recv(4096)
            if not part:
                break
            reply += part
    return int(reply.split(b" ")[1]), sent


def test_chunked_bodies_are_limited_while_streaming_and_the_token_is_checked_first(tmp_path):
    """A chunked 100 MB upload is refused with bounded memory: 401 before any body byte is read when the token
    is wrong, 413 once 64 KiB have arrived when it is right."""
    import resource

    app = create_app(FakePipe(), ServeSettings(output_dir=tmp_path / "out", token=TOKEN))
    with serve_in_thread(app) as url:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert _send_chunked(url, "wrong-token", 100 << 20)[0] == 401
        assert _send_chunked(url, TOKEN, 100 << 20)[0] == 413
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
        assert grown_mb < 50, grown_mb
        r = httpx.post(f"{url}/api/generate", headers={"Authorization": f"Bearer {TOKEN}"}, json={"prompt": "x"})
        assert r.status_code == 200  # the server still answers


def test_wrong_token_is_refused_before_the_body_is_parsed(tmp_path):
    with make_client(tmp_path, token=TOKEN) as c:
        r = c.post("/api/generate", content=b"{not json", headers={"content-type": "application/json",
                                                                     "Authorization": "Bearer wrong-token"})
        assert_one_line_error(r, 401, "bearer token")


def test_host_header_is_checked_against_the_bound_address(tmp_path):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example; it is refused."""
    with make_client(tmp_path) as c:
        assert c.get("/healthz").status_code == 200
        for host in ("evil.example", "evil.example:7860", "127.0.0.1.evil.example"):
            assert_one_line_error(c.get("/healthz", headers={"host": host}), 400, "--allowed-host")
        for host in ("localhost:7860", "[::1]:7860", "127.0.0.1"):
            assert c.get("/healthz", headers={"host": host}).status_code == 200, host
    with make_client(tmp_path, allowed_hosts=("my.lan",)) as c:
        assert c.get("/healthz", headers={"host": "my.lan:7860"}).status_code == 200
    with make_client(tmp_path, host="0.0.0.0") as c:  # bound to every address: any name, unless listed
        assert c.get("/healthz", headers={"host": "box.lan"}).status_code == 200


def test_saved_images_are_pruned_and_a_failed_save_does_not_fail_the_request(tmp_path):
    with make_client(tmp_path, max_saved=3) as c:
        for _ in range(3):
            assert c.post("/api/generate", json={"prompt": "x", "num_images": 2}).status_code == 200
        assert len(list((tmp_path / "out").glob("*.png"))) == 3  # 6 saved, the 3 oldest deleted
    (tmp_path / "file").write_text("not a folder")
    app = create_app(FakePipe(), ServeSettings(output_dir=tmp_path / "file" / "out", token=None))  # every save fails
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
        r = c.post("/api/generate", json={"prompt": "x"})
        assert r.status_code == 200 and r.json()["images"][0]["url"] is None and r.json()["images"][0]["png_base64"]
        r = c.post("/v1/images/generations", json={"prompt": "x", "response_format": "url"})
        assert_one_line_error(r, 507, "b64_json")


def test_metric_labels_come_from_a_fixed_set(client):
    for i in range(20):
        client.request(f"INVENTED{i}", "/api/generate")
    text = client.get("/metrics").text
    assert "INVENTED" not in text and 'method="other"' in text


def test_metrics_text(client):
    client.post("/api/generate", json={"prompt": "x"})
    client.post("/api/generate", json={"prompt": ""})
    text = client.get("/metrics").text
    assert 'minicream_http_requests_total{method="POST",route="/api/generate",status="200"} 1.0' in text
    assert 'minicream_http_requests_total{method="POST",route="/api/generate",status="422"} 1.0' in text
    assert 'minicream_http_request_duration_seconds_bucket{le="+Inf",route="/api/generate"} 2.0' in text
    assert "minicream_queue_depth 0.0" in text and "minicream_images_generated_total 1.0" in text


def test_cli_rejects_bad_settings(capsys):
    from minicream.cli import main

    assert main(["serve", "--port", "70000"]) == 2
    assert main(["serve", "--token", "short"]) == 2
    assert main(["serve", "--concurrency", "0"]) == 2
    assert main(["serve", "--timeout", "nan"]) == 2
    assert main(["serve", "--max-saved", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("error: ") for line in err)


# -- real model -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_server(tiny_pipe, tmp_path_factory):
    app = create_app(tiny_pipe, ServeSettings(output_dir=tmp_path_factory.mktemp("serve_out"), token=TOKEN,
                                              concurrency=1, queue_size=4, timeout=60))
    with serve_in_thread(app) as url:
        yield url, app


def test_real_generation(tiny_server, tiny_pipe, tmp_path):
    url, _ = tiny_server
    r = httpx.post(f"{url}/api/generate", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
                   json={"prompt": "red apple", "seed": 3, "steps": 3, "num_images": 2, "sampler": "euler"})
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    path = tmp_path / "a.png"
    path.write_bytes(base64.b64decode(images[0]["png_base64"]))
    params = read_png_params(path)
    assert params["seed"] == 3 and params["steps"] == 3 and params["sampler"] == "euler" and params["prompt"] == "red apple"
    assert Image.open(path).size == (tiny_pipe.image_size,) * 2
    assert images[0]["rewritten_prompt"] == params.get("rewritten_prompt")  # None until a filter-aware pipeline
    # Same seed and settings as the library: the same pixels.
    direct = tiny_pipe("red apple", seed=3, steps=3, num_images=1, sampler="euler")[0]
    assert Image.open(path).convert("RGB").tobytes() == direct.tobytes()


def test_real_pipeline_options_pass_through(tiny_server):
    url, app = tiny_server
    auth = {"Authorization": f"Bearer {TOKEN}"}
    features = httpx.get(f"{url}/api/models", headers=auth).json()["models"][0]["features"]
    if features["filter"]:
        r = httpx.post(f"{url}/api/generate", json={"prompt": "red apple", "steps": 2, "filter": "none"}, headers=auth, timeout=60)
        image = r.json()["images"][0]
        assert image["rewritten_prompt"] == "red apple" and image["parameters"]["filter"] == "none"
    r = httpx.post(f"{url}/api/generate", json={"prompt": "red apple", "steps": 2, "guidance_max_noise": 0.6}, headers=auth, timeout=60)
    assert r.status_code == 200 and r.json()["images"][0]["parameters"]["guidance_max_noise"] == 0.6
    r = httpx.post(f"{url}/api/generate", json={"prompt": "red apple", "steps": 2, "cads": 0.5}, headers=auth, timeout=60)
    assert r.status_code == 200 and r.json()["images"][0]["parameters"]["cads"] == 0.5
    if features["style"]:  # style "vary": one design per image (dog face is in both of the tiny model's designs)
        r = httpx.post(f"{url}/api/generate", json={"prompt": "dog face", "steps": 2, "num_images": 2, "style": "vary"},
                       headers=auth, timeout=60)
        assert r.status_code == 200 and sorted(im["rewritten_prompt"] for im in r.json()["images"]) == \
            ["dog face, openmoji", "dog face, twemoji"]
    if features["num_candidates"]:
        r = httpx.post(f"{url}/api/generate", json={"prompt": "red apple", "steps": 2, "num_candidates": 2}, headers=auth, timeout=60)
        if r.status_code == 200:
            assert isinstance(r.json()["images"][0]["score"], float)
        else:  # the tiny model ships no evaluator: a clear refusal, not a crash
            assert_one_line_error(r, 422, "evaluator")


def test_openai_client_unchanged(tiny_server, tiny_pipe):
    from openai import OpenAI

    url, _ = tiny_server
    client = OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
    result = client.images.generate(prompt="rocket", n=2, size=f"{tiny_pipe.image_size}x{tiny_pipe.image_size}",
                                    response_format="b64_json", user="test")
    assert len(result.data) == 2 and result.data[0].revised_prompt == "rocket"
    im = decode_png(result.data[0].b64_json)
    assert im.size == (tiny_pipe.image_size,) * 2
    result = client.images.generate(prompt="pizza", response_format="url")
    got = httpx.get(result.data[0].url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert got.status_code == 200 and got.content.startswith(PNG)
    import openai

    with pytest.raises(openai.UnprocessableEntityError) as e:  # 422: the client's own error type, our message in it
        client.images.generate(prompt="pizza", n=9)
    assert "n: Input should be less than or equal to 8" in str(e.value)
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=f"{url}/v1", api_key="wrong-token", max_retries=0).images.generate(prompt="pizza")


def test_load_short(tiny_server):
    """8 clients for 3 s on loopback: every request answered, only 200 or 429; throughput and the p95 latency
    of successful requests printed (run with -s to see them)."""
    url, app = tiny_server
    clients, duration = 8, 3.0
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def client_loop():
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
            end = time.monotonic() + duration
            while time.monotonic() < end:
                t0 = time.monotonic()
                try:
                    r = http.post(f"{url}/api/generate", json={"prompt": "banana", "steps": 2})
                    status = r.status_code
                except httpx.HTTPError as e:  # a lost request: counted, and fails the test below
                    status, r = repr(e), None
                with lock:
                    results.append((status, time.monotonic() - t0))
                if status == 429:  # back off as told, a little (the test is short)
                    time.sleep(min(float(r.headers["retry-after"]), 0.25))

    t0 = time.monotonic()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    wall = time.monotonic() - t0
    statuses = [s for s, _ in results]
    ok = sorted(dt for s, dt in results if s == 200)
    assert set(statuses) <= {200, 429}, statuses
    assert ok, "no request succeeded"
    p95 = ok[min(len(ok) - 1, int(0.95 * len(ok)))]
    print(f"\nload: {clients} clients x {duration:g} s: {len(results)} requests, {len(ok)} ok, "
          f"{statuses.count(429)} x 429; {len(ok) / wall:.1f} images/s, p95 latency {p95 * 1000:.0f} ms")
    served = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in served.splitlines()
                  if line.startswith('minicream_http_requests_total{method="POST",route="/api/generate"'))
    assert counted >= len(results)  # the server saw every request the clients sent
    assert app.state.queue.queued == 0 and app.state.queue.running == 0
