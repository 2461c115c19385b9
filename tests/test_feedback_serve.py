"""People's ratings through the server (issue 35 item 3): /api/generate records a generation's candidates and
returns their hashes, POST /api/feedback records a pick (a known answer for every status it gives), keep_top on
/api/generate; and in a real browser, a pick on the page lands in the database."""
from __future__ import annotations

import base64
import hashlib
import os
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from minicream.evaluator.rerank import check_candidates
from minicream.feedback import FeedbackStore, Preference
from minicream.serve import ServeSettings, create_app
from serve_fakes import TEXT2IMG, FakePipe, declared
from test_serve import assert_one_line_error


class RankingPipe(FakePipe):
    """Best-of-N as the pipeline does it: num_candidates drawn per image, the best keep_top returned, best first
    (here candidate j of an image scores 1 / (j + 1), so the order is the seeds' order), each a distinct picture."""

    modes = {"text2img": declared("text2img", *TEXT2IMG, "num_candidates", "keep_top")}

    def __call__(self, prompt, negative_prompt="", num_images=1, steps=None, guidance=None, sampler=None, seed=None,
                 size=None, callback=None, num_candidates: int = 1, keep_top: int = 1):
        check_candidates(num_candidates, keep_top)  # as the pipeline checks them (a one-line 422)
        seed = 7 if seed is None else seed
        images = []
        for i in range(num_images):
            for j in range(keep_top):
                im = super().__call__(prompt, negative_prompt, 1, steps, guidance, sampler, seed + 100 * i + j, size, callback)[0]
                im.putpixel((j, i), (255, 255, 255))
                im.info["minicream"].update(num_candidates=num_candidates, score=round(1 / (j + 1), 5))
                images.append(im)
        self.calls[-1].update(num_candidates=num_candidates, keep_top=keep_top)
        return images


def client_for(tmp_path, pipe=None, **settings) -> TestClient:
    app = create_app(pipe or RankingPipe(), ServeSettings(output_dir=tmp_path / "out", **{"token": None, **settings}))
    return TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1")


def sha(b64: str) -> str:
    return hashlib.sha256(base64.b64decode(b64)).hexdigest()


def generate(c: TestClient, **body) -> dict:
    r = c.post("/api/generate", json={"prompt": "red apple", "seed": 3, **body})
    assert r.status_code == 200, r.text
    return r.json()


# -- recording the candidates, and keep_top -------------------------------------------------------------------
def test_generate_records_its_candidates_and_keep_top_returns_the_best_k(tmp_path):
    pipe = RankingPipe()
    with client_for(tmp_path, pipe) as c:
        assert c.get("/api/models").json()["models"][0]["features"]["keep_top"] is True
        body = generate(c, num_candidates=4, keep_top=3)
        assert pipe.calls[-1]["num_candidates"] == 4 and pipe.calls[-1]["keep_top"] == 3
        images, fb = body["images"], body["feedback"]
        assert [im["score"] for im in images] == [1.0, 0.5, 0.33333] and body["parameters"]["keep_top"] == 3
        assert fb == {"set_id": 1, "images": [sha(im["png_base64"]) for im in images], "error": None}
        store = FeedbackStore(tmp_path / "out" / "feedback.sqlite")
        s = store.candidate_set(1)
        assert s["prompt"] == "red apple" and s["images"] == fb["images"]
        assert s["settings"]["num_candidates"] == 4 and s["settings"]["seeds"] == [im["seed"] for im in images]
        assert store.image_png(fb["images"][1]) == base64.b64decode(images[1]["png_base64"])  # the PNG as served
        assert generate(c, num_images=1)["feedback"] is None  # one image: nothing to choose between
        assert generate(c, num_images=2)["feedback"]["set_id"] == 2  # several images of one prompt are candidates too
        assert_one_line_error(c.post("/api/generate", json={"prompt": "x", "num_candidates": 2, "keep_top": 3}), 422,
                              "keep_top", "1..num_candidates (2)")
        assert_one_line_error(c.post("/api/generate", json={"prompt": "x", "num_candidates": 2, "keep_top": 9}), 422, "keep_top")
    with client_for(tmp_path / "plain", FakePipe()) as c:  # a pipeline without best-of-N
        assert c.get("/api/models").json()["models"][0]["features"]["keep_top"] is False
        assert_one_line_error(c.post("/api/generate", json={"prompt": "x", "keep_top": 2}), 422, "keep_top")
    with client_for(tmp_path / "off", feedback=False) as c:
        assert generate(c, num_images=3)["feedback"] is None
        assert_one_line_error(c.post("/api/feedback", json={"action": "choose", "image": "a" * 64}), 404, "feedback is off")
    assert not (tmp_path / "off" / "out" / "feedback.sqlite").exists()


# -- POST /api/feedback: a known answer per status -------------------------------------------------------------
def test_feedback_answers(tmp_path):
    with client_for(tmp_path, feedback_per_minute=3) as c:
        fb = generate(c, num_candidates=4, keep_top=4)["feedback"]
        a, b, cc, d = fb["images"]
        # 200: the pick, preferred over every other candidate of the set
        r = c.post("/api/feedback", json={"action": "choose", "image": b, "set_id": fb["set_id"]})
        assert r.status_code == 200 and r.json() == {"rating_id": 1, "set_id": 1, "action": "choose", "image": b}
        r = c.post("/api/feedback", json={"action": "wrong", "image": d})
        assert r.status_code == 200 and r.json()["rating_id"] == 2
        store = FeedbackStore(tmp_path / "out" / "feedback.sqlite")
        assert store.preferences(include_wrong=False) == [Preference("red apple", b, x, "choice") for x in (a, cc, d)]
        assert store.count().wrong == 1
        # 404: an image this server never drew
        assert_one_line_error(c.post("/api/feedback", json={"action": "choose", "image": "e" * 64}), 404, "unknown image")
        # 422: bad fields, bad JSON
        for body, words in (({"action": "love", "image": a}, ("action",)), ({"action": "choose", "image": "xyz"}, ("sha256",)),
                            ({"action": "choose", "image": a, "extra": 1}, ("unknown field",)),
                            ({"action": "choose", "image": a, "set_id": "1"}, ("set_id",)), ([a], ("JSON object",))):
            assert_one_line_error(c.post("/api/feedback", json=body), 422, *words)
        assert_one_line_error(c.post("/api/feedback", content=b"{not json", headers={"Content-Type": "application/json"}),
                              422, "not valid JSON")
        assert_one_line_error(c.post("/api/feedback", content=b"[" * 15_000, headers={"Content-Type": "application/json"}),
                              422, "not valid JSON")
        # 413: over 16 KiB, by Content-Length or counted while a chunked body streams in
        big = b'{"action": "choose", "image": "%s", "prompt": "%s"}' % (a.encode(), b"x" * 17_000)
        assert_one_line_error(c.post("/api/feedback", content=big, headers={"Content-Type": "application/json"}), 413, "16384")
        assert_one_line_error(c.post("/api/feedback", content=iter([big[:9000], big[9000:]]),
                                     headers={"Content-Type": "application/json"}), 413, "too large")
        # 429: the third rating of this client within a minute, with Retry-After
        r = c.post("/api/feedback", json={"action": "choose", "image": a, "set_id": 1})
        assert r.status_code == 200
        r = c.post("/api/feedback", json={"action": "wrong", "image": cc, "set_id": 1})
        assert_one_line_error(r, 429, "too many ratings")
        assert r.headers["Retry-After"] == "60"
        assert store.count().choices == 1 and store.ratings()[-1].image == a  # a changed mind replaced the pick


def test_corrupt_database_refuses_ratings_not_generation_and_is_left_as_it_is(tmp_path):
    path = tmp_path / "out" / "feedback.sqlite"
    path.parent.mkdir()
    path.write_bytes(os.urandom(8192))
    before = path.read_bytes()
    with client_for(tmp_path) as c:
        body = generate(c, num_images=3)
        assert len(body["images"]) == 3 and body["feedback"]["set_id"] is None
        assert "not a SQLite database" in body["feedback"]["error"] and str(tmp_path) not in body["feedback"]["error"]
        r = c.post("/api/feedback", json={"action": "choose", "image": "a" * 64})
        message = assert_one_line_error(r, 503, "feedback.sqlite", "not a SQLite database", "left as it is")
        assert str(tmp_path) not in message  # the server's paths stay on the server
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".png")) == ["feedback.sqlite"]  # no -wal, no new file


def test_database_calls_run_off_the_event_loop_and_need_the_token(tmp_path, monkeypatch):
    threads = []
    original = FeedbackStore.record_choice

    def spy(self, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FeedbackStore, "record_choice", spy)
    with client_for(tmp_path, token="s3cret-token") as c:
        auth = {"Authorization": "Bearer s3cret-token"}
        r = c.post("/api/generate", json={"prompt": "red apple", "num_images": 2}, headers=auth)
        image = r.json()["feedback"]["images"][0]
        assert c.post("/api/feedback", json={"action": "choose", "image": image}).status_code == 401
        assert c.post("/api/feedback", json={"action": "choose", "image": image}, headers=auth).status_code == 200
    assert threads == ["minicream-feedback_0"]
    assert "/api/feedback" in c.app.openapi()["paths"]


# -- the page, in a real browser ---------------------------------------------------------------------------------
def test_page_picks_the_best_of_4_candidates_into_the_database(browser, tiny_evaluated_model, tmp_path):
    from minicream.pipelines import Pipeline
    from minicream.serve.server import serve_in_thread

    app = create_app(Pipeline.from_pretrained(tiny_evaluated_model), ServeSettings(output_dir=tmp_path / "out", token=None,
                                                                                    timeout=120))
    with serve_in_thread(app) as url:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.locator("#sampler option").first.wait_for(state="attached")
        assert page.is_enabled("#keep_top")
        page.fill("#prompt", "red apple")
        page.fill("#steps", "2")
        page.fill("#num_images", "1")
        page.fill("#num_candidates", "4")
        page.fill("#keep_top", "4")
        page.click("#generate")
        page.locator("#results .card button.pick").nth(3).wait_for(timeout=120_000)
        assert page.locator("#results .card").count() == 4
        page.locator("#results .card button.pick").nth(2).click()  # the third of the evaluator's order
        page.locator("#results .card.chosen").wait_for(timeout=30_000)
        assert "best of 4" in page.inner_text("#feedback-bar")
        src = page.locator("#results .card img").nth(2).get_attribute("src")
        page.close()
    chosen = hashlib.sha256(base64.b64decode(src.split(",", 1)[1])).hexdigest()
    store = FeedbackStore(tmp_path / "out" / "feedback.sqlite")
    [rating] = store.ratings()
    assert rating.kind == "choice" and rating.image == chosen and rating.prompt == "red apple" and len(rating.rejected) == 3
    assert set(store.candidate_set(rating.set_id)["images"]) == {chosen, *rating.rejected}
    assert not errors, errors
