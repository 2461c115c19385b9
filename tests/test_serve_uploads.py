"""Issue 29's server cases, on a pipeline stand-in (serve_fakes.FakeEditPipe): uploads decoded in the worker after
admission (the event loop stays free, a full queue answers 429 at once), bounded decodes, the multipart fields
(ASCII `n`, the `model` named, case-insensitive media type), uploads as displayed, clients that leave or stall,
and cross-site requests."""
from __future__ import annotations

import gc
import io
import re
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from minicream.serve import ServeSettings, create_app, uploads
from minicream.serve.server import serve_in_thread
from serve_fakes import FakeEditPipe

TOKEN = "upload-token"


@pytest.fixture(autouse=True)
def _collected():
    """The timing checks below measure the server, not a garbage collection of what earlier test modules left (the
    whole suite's models: a pause of ~1 s was seen once in a full run, never alone)."""
    gc.collect()


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def many_scan_jpeg(side: int, scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated: every repeat costs the decoder a pass over all pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (120, 130, 140)).save(buf, "JPEG", quality=1, progressive=True)
    data = buf.getvalue()
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * scans + b"\xff\xd9"


def client(tmp_path, pipe=None, **settings) -> TestClient:
    app = create_app(pipe or FakeEditPipe(), ServeSettings(output_dir=tmp_path / "out", **{"token": None, **settings}))
    return TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1")


def edit(c, image: bytes, data=None, mask: bytes | None = None, **kwargs):
    files = {"image": ("a.png", image, "image/png"), **({"mask": ("m.png", mask, "image/png")} if mask else {})}
    return c.post("/v1/images/edits", files=files, data={"prompt": "rocket", **(data or {})}, **kwargs)


def one_line_error(r, status: int, *words: str) -> str:
    assert r.status_code == status, r.text
    assert "\n" not in r.text and "Traceback" not in r.text
    message = r.json()["error"]["message"]
    assert all(w in message for w in words), message
    return message


def poll(url: str, seconds: float) -> list[float]:
    """/healthz answer times over `seconds`."""
    times = []
    with httpx.Client(timeout=30) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            assert c.get(f"{url}/healthz").status_code == 200
            times.append(time.perf_counter() - t)
            time.sleep(0.02)
    return times


# -- 1. decoding: in the worker, after admission, bounded -----------------------------------------------------
def test_healthz_answers_within_100_ms_while_an_upload_decodes(tmp_path, monkeypatch):
    """A slow decode (mocked: 1.5 s) runs in the generation worker, never on the event loop: /healthz answers at once
    throughout, and the edit itself succeeds."""
    decoding, real = threading.Event(), uploads.read_image

    def slow(data, field, *args, **kwargs):
        decoding.set()
        time.sleep(1.5)
        return real(data, field, *args, **kwargs)

    monkeypatch.setattr(uploads, "read_image", slow)
    pipe = FakeEditPipe()
    app = create_app(pipe, ServeSettings(output_dir=tmp_path / "out", token=None))
    with serve_in_thread(app) as url, ThreadPoolExecutor(1) as pool:
        job = pool.submit(httpx.post, f"{url}/v1/images/edits", files={"image": ("a.png", png(Image.new("RGB", (64, 64))))},
                          data={"prompt": "rocket"}, timeout=30)
        assert decoding.wait(10), "the upload was not decoded by uploads.read_image"
        times = poll(url, 1.0)
        assert job.result().status_code == 200 and pipe.runs[0]["image"].size == (64, 64)
    assert statistics.median(times) < 0.1 and max(times) < 0.75, times  # a blocked loop: ~1.5 s


def test_a_progressive_jpeg_with_thousands_of_scans_is_refused_at_once(tmp_path):
    """Each scan costs a pass over every pixel (5,000 of them: seconds of decoding); they are counted first."""
    bomb = many_scan_jpeg(1024, 5000)
    app = create_app(FakeEditPipe(), ServeSettings(output_dir=tmp_path / "out", token=None))
    with serve_in_thread(app) as url, ThreadPoolExecutor(1) as pool:
        health = pool.submit(poll, url, 1.0)
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/v1/images/edits", files={"image": ("a.jpg", bomb, "image/jpeg")}, data={"prompt": "x"},
                       timeout=60)
        took = time.perf_counter() - t0
        one_line_error(r, 400, "JPEG with more than 100 scans")
        times = health.result()
    assert took < 1.0 and statistics.median(times) < 0.1, (took, times)


def test_jpeg_scans_are_counted_by_segment():
    assert uploads.jpeg_scans(many_scan_jpeg(64, 0)) == 10  # libjpeg's progressive script (colour)
    assert uploads.jpeg_scans(many_scan_jpeg(64, 500)) == uploads.MAX_SCANS + 1  # counting stops past the limit
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "JPEG")
    assert uploads.jpeg_scans(buf.getvalue()) == 1


def test_a_decode_that_runs_out_of_time_stops(monkeypatch):
    """The time limit stops a decode midway (Pillow reads its input block by block), even one the scan count let by."""
    monkeypatch.setattr(uploads, "MAX_SCANS", 10 ** 6)
    slow = many_scan_jpeg(512, 20000)  # decoded in full: seconds
    t0 = time.perf_counter()
    with pytest.raises(uploads.UploadError, match="decoding took longer than 0.2 s"):
        uploads.read_image(slow, "image", seconds=0.2)
    assert time.perf_counter() - t0 < 1.5


def test_pixel_cap_is_what_the_models_can_use():
    too_big = png(Image.new("L", (2049, 2048)))
    with pytest.raises(uploads.UploadError, match="too many pixels"):
        uploads.read_image(too_big, "image")
    assert uploads.read_image(png(Image.new("L", (2048, 2048))), "image").size == (2048, 2048)


def test_a_full_queue_answers_429_within_100_ms_to_a_flood_of_large_uploads(tmp_path, monkeypatch):
    """One edit running, one waiting (queue full): 16 parallel 2048x2048 uploads (3.6 MB each) get their 429 before
    anything of theirs is read or decoded. Decoding each first, on the event loop, took the flood seconds.

    The server's own latency histogram times each answer from the request's headers; what a client sees adds the
    3.6 MB it insists on sending first, shared here with the server's thread on a loaded machine."""
    decoded = []
    monkeypatch.setattr(uploads, "read_image", lambda data, field, real=uploads.read_image: decoded.append(field)
                        or real(data, field))
    gate = threading.Event()
    pipe = FakeEditPipe(gate=gate)
    app = create_app(pipe, ServeSettings(output_dir=tmp_path / "out", token=None, concurrency=1, queue_size=1))
    queue = app.state.queue
    rng = np.random.default_rng(0)
    large = png(Image.fromarray(rng.integers(0, 16, (2048, 2048), dtype=np.uint8) * 16, "L").convert("RGB"))
    assert len(large) < uploads.UPLOAD_BYTES
    small = png(Image.new("RGB", (64, 64)))

    def post(image: bytes):
        return httpx.post(f"{url}/v1/images/edits", files={"image": ("a.png", image, "image/png")}, data={"prompt": "x"},
                          timeout=60)

    with serve_in_thread(app) as url, ThreadPoolExecutor(16) as pool:
        first = pool.submit(post, small)
        while queue.running < 1:
            time.sleep(0.01)
        second = pool.submit(post, small)
        while queue.queued < 1:
            time.sleep(0.01)
        t0 = time.perf_counter()
        flood = [f.result() for f in [pool.submit(post, large) for _ in range(16)]]
        took = time.perf_counter() - t0
        # read before the gate opens: the route's histogram then holds the flood's 16 answers alone (on a fast
        # machine the 2 admitted ones, timed from their headers, would also land within 250 ms afterwards)
        metrics = httpx.get(f"{url}/metrics").text
        gate.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
    for r in flood:
        one_line_error(r, 429, "queue is full")
    assert decoded == ["image", "image"] and len(pipe.runs) == 2  # the flood: never decoded
    # Answered within 100 ms (the 2 admitted ones wait for the gate): all of them on an idle machine; on a core shared
    # with other work some meet a scheduling hiccup (11 of 16 within 100 ms seen with the suite pinned to one busy
    # core), all within 250 ms, never the seconds that decoding the flood first took.
    within = {le: float(re.search(rf'bucket{{le="{le}",route="/v1/images/edits"}} (\S+)', metrics).group(1))
              for le in ("0.1", "0.25")}
    assert within["0.1"] >= 8 and within["0.25"] == 16, (within, took)
    assert "minicream_queue_rejected_total 16.0" in metrics and took < 30


# -- 2, 5, 10: the multipart fields ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", ["²", "¹", "٣", "1²", "-1", "0", "9", "1" * 5000])
def test_multipart_n_takes_ascii_digits_only(tmp_path, n):
    with client(tmp_path) as c:
        one_line_error(edit(c, png(Image.new("RGB", (64, 64))), {"n": n}), 400, "n: an integer in 1..8")


def test_multipart_n_in_ascii_digits(tmp_path):
    with client(tmp_path) as c:
        r = edit(c, png(Image.new("RGB", (64, 64))), {"n": "3"})
    assert r.status_code == 200 and len(r.json()["data"]) == 3


def test_edits_and_variations_run_the_model_they_name(tmp_path):
    reference, onestep = FakeEditPipe(name="reference"), FakeEditPipe(name="onestep")
    image = png(Image.new("RGB", (64, 64)))
    with client(tmp_path, [reference, onestep]) as c:
        assert edit(c, image, {"model": "onestep"}).status_code == 200
        r = c.post("/v1/images/variations", files={"image": ("a.png", image, "image/png")}, data={"model": "onestep"})
        assert r.status_code == 200
        assert [run["mode"] for run in onestep.runs] == ["img2img", "variation"] and not reference.runs
        assert edit(c, image).status_code == 200 and edit(c, image, {"model": "dall-e-2"}).status_code == 200
        assert len(reference.runs) == 2 and len(onestep.runs) == 2  # no model, or OpenAI's names: the default
        r = c.post("/api/edit", json={"mode": "variation", "model": "onestep", "image": "data:image/png;base64,"
                                      + __import__("base64").b64encode(image).decode()})
        assert r.status_code == 200 and len(onestep.runs) == 3


@pytest.mark.parametrize("media_type", ["Multipart/Form-Data", "MULTIPART/FORM-DATA", " multipart/form-data"])
def test_multipart_media_type_is_case_insensitive(tmp_path, media_type):
    body = (b'--xyz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nrocket\r\n'
            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
            + png(Image.new("RGB", (64, 64))) + b"\r\n--xyz--\r\n")
    with client(tmp_path) as c:
        r = c.post("/v1/images/edits", content=body, headers={"content-type": f"{media_type}; boundary=xyz"})
    assert r.status_code == 200, r.text


# -- 9. uploads as displayed ----------------------------------------------------------------------------------
def test_uploads_are_read_as_displayed(tmp_path):
    """16-bit greyscale keeps its grey levels (it came out near white); an EXIF-rotated photo is edited upright, and
    a mask drawn over the displayed photo fits it."""
    gradient = Image.fromarray((np.arange(256 * 256).reshape(256, 256)).astype(np.uint16))  # I;16, 0..65535
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 80x40, displayed 40x80
    Image.new("RGB", (80, 40), (200, 30, 30)).save(rotated, "JPEG", exif=exif.tobytes())
    mask = Image.new("RGBA", (40, 80), (0, 0, 0, 255))
    mask.putpixel((5, 5), (0, 0, 0, 0))
    pipe = FakeEditPipe()
    with client(tmp_path, pipe) as c:
        assert edit(c, png(gradient)).status_code == 200
        r = edit(c, rotated.getvalue(), mask=png(mask))
        assert r.status_code == 200, r.text
    grey = np.asarray(pipe.runs[0]["image"].convert("L"), dtype=np.float64)
    assert abs(grey.mean() - 127.5) < 1 and grey.min() == 0 and grey.max() == 255
    assert pipe.runs[1]["mode"] == "inpaint" and pipe.runs[1]["image"].size == (40, 80)


# -- 7. clients that leave or stall -------------------------------------------------------------------------
def _raw_upload(url: str, sent: bytes, length: int) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"POST /v1/images/edits HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; "
                 f"boundary=xyz\r\nContent-Length: {length}\r\n\r\n".encode() + sent)
    return sock


def test_a_client_that_leaves_mid_upload_is_not_a_server_error(tmp_path):
    app = create_app(FakeEditPipe(), ServeSettings(output_dir=tmp_path / "out", token=None))
    start = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n' + b"x" * 1000
    with serve_in_thread(app) as url:
        for _ in range(5):
            _raw_upload(url, start, 100_000).close()
        deadline = time.time() + 10  # the server notices each disconnect on its own; on a loaded machine, later
        while True:
            time.sleep(0.2)
            metrics = httpx.get(f"{url}/metrics").text
            if 'route="/v1/images/edits",status="499"} 5.0' in metrics or time.time() > deadline:
                break
    assert 'status="500"' not in metrics
    assert 'route="/v1/images/edits",status="499"} 5.0' in metrics


def test_a_stalled_upload_times_out_with_408(tmp_path):
    app = create_app(FakeEditPipe(), ServeSettings(output_dir=tmp_path / "out", token=None, body_timeout=0.5))
    with serve_in_thread(app) as url:
        t0 = time.perf_counter()
        with _raw_upload(url, b"--xyz\r\n", 100_000) as sock:
            reply = b""
            while chunk := sock.recv(65536):  # the server answers, then closes the connection
                reply += chunk
        took = time.perf_counter() - t0
        metrics = httpx.get(f"{url}/metrics").text
    assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in reply, reply
    assert 0.4 < took < 5.0, took
    assert 'route="/v1/images/edits",status="408"} 1.0' in metrics


# -- 8. cross-site requests -----------------------------------------------------------------------------------
def test_cross_site_posts_are_refused_without_a_token(tmp_path):
    pipe = FakeEditPipe()
    image = png(Image.new("RGB", (64, 64)))
    with client(tmp_path, pipe) as c:
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"}):
            one_line_error(edit(c, image, headers=headers), 403, "cross-site request refused", "--cors-origin")
            one_line_error(c.post("/api/generate", json={"prompt": "x"}, headers=headers), 403, "cross-site")
        assert not pipe.runs and not pipe.calls  # nothing ran
        for headers in ({}, {"Origin": "http://127.0.0.1"}, {"Sec-Fetch-Site": "same-origin"}):  # its own page, curl
            assert edit(c, image, headers=headers).status_code == 200
        assert c.get("/api/models", headers={"Origin": "http://evil.example"}).status_code == 200  # reads: CORS decides
    with client(tmp_path, cors_origins=("http://localhost:3000",)) as c:
        headers = {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "cross-site"}
        r = c.post("/api/generate", json={"prompt": "x"}, headers=headers)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        one_line_error(c.post("/api/generate", json={"prompt": "x"}, headers={"Origin": "http://evil.example"}), 403)


def test_cors_preflight_passes_the_token_check_for_allowed_origins(tmp_path):
    preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    with client(tmp_path, token=TOKEN, cors_origins=("http://localhost:3000",)) as c:
        r = c.options("/api/generate", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = c.post("/api/generate", json={"prompt": "x"}, headers={"Origin": "http://localhost:3000",
                                                                    "Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert c.post("/api/generate", json={"prompt": "x"}, headers={"Origin": "http://localhost:3000"}).status_code == 401
    with client(tmp_path, token=TOKEN) as c:  # no origins configured: no preflight passes
        assert c.options("/api/generate", headers=preflight).status_code == 401


def test_serve_flags_for_origins_and_body_time_are_checked(capsys):
    from minicream.cli import main

    for args in (["--body-timeout", "0"], ["--body-timeout", "nan"], ["--cors-origin", "localhost:3000"],
                 ["--cors-origin", "http://localhost:3000/"]):
        assert main(["serve", *args]) == 2, args
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err), err
    assert "--body-timeout" in err[0] and "--cors-origin" in err[2]


def test_a_jpeg_of_countless_segments_is_walked_briefly():
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    padded = data[:2] + b"\xff\xfe\x00\x02" * 1_000_000 + data[2:]  # a million empty comments: 4 MB
    t0 = time.perf_counter()
    assert uploads.jpeg_scans(padded) == uploads.MAX_SCANS + 1 and time.perf_counter() - t0 < 0.5
    with pytest.raises(uploads.UploadError, match="thousands of segments"):  # refused before Pillow walks them
        uploads.read_image(padded, "image")
