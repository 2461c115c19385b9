"""End to end in a real browser: Playwright drives Debian's Chromium (never `playwright install`) against
`minicream serve` on loopback with the tiny model: type a prompt, click Generate, get a real PNG."""
from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from minicream.serve import ServeSettings, create_app
from minicream.serve.server import serve_in_thread

TOKEN = "browser-test-token"


def open_page(browser, url):
    """The page loaded against a token-less server, with its JavaScript errors collected."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.locator("#sampler option").first.wait_for(state="attached")
    return page, errors


def stroke(page, selector: str, points, steps: int = 1) -> None:
    """Press the mouse at the first point (fractions of the canvas `selector`), move through the others, release."""
    canvas = page.locator(selector)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    at = lambda fx, fy: (box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    page.mouse.move(*at(*points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*at(*p), steps=steps)
    page.mouse.up()


def test_page_generates_a_png(browser, tiny_pipe, tmp_path):
    app = create_app(tiny_pipe, ServeSettings(output_dir=tmp_path, token=TOKEN, timeout=120))
    with serve_in_thread(app) as url:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        # Without the token the page says so instead of failing silently.
        page.wait_for_selector("#error:not([hidden])")
        assert "token" in page.inner_text("#error")
        page.fill("#token", TOKEN)
        page.dispatch_event("#token", "change")
        # (locators, not wait_for_function: the page's CSP forbids evaluating strings)
        page.locator("#sampler option").first.wait_for(state="attached")
        assert page.input_value("#sampler") == tiny_pipe.defaults.get("sampler", "dpmpp_2m")

        page.fill("#prompt", "red apple")
        page.fill("#steps", "3")
        page.fill("#num_images", "2")
        page.uncheck("#random_seed")
        page.fill("#seed", "11")
        page.click("#generate")
        page.wait_for_selector("#results .card img", timeout=120_000)
        cards = page.locator("#results .card")
        assert cards.count() == 2
        src = page.get_attribute("#results .card img", "src")
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1])
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        im = Image.open(io.BytesIO(raw))
        assert im.format == "PNG" and im.size == (tiny_pipe.image_size, tiny_pipe.image_size)
        assert '"seed": 11' in im.info["minicream"]
        assert "11" in cards.first.inner_text()  # the card shows its settings
        download = page.get_attribute("#results .card a.download", "download")
        assert download.endswith(".png") and "red_apple" in download

        # The history holds the run and re-runs it with the same settings.
        assert page.locator("#history li").count() == 1
        page.fill("#prompt", "something else")
        page.click("#history li button.rerun")
        page.locator("#history li").nth(1).wait_for(timeout=120_000)
        assert page.input_value("#prompt") == "red apple"
        src2 = page.get_attribute("#results .card img", "src")
        assert base64.b64decode(src2.split(",", 1)[1]) == raw  # same seed, same settings: same image
        assert not errors, errors
        page.close()


def test_page_paints_a_mask_and_inpaints(browser, tiny_pipe, tmp_path):
    import numpy as np

    source = tiny_pipe("red apple", steps=3, seed=7)[0]
    path = tmp_path / "source.png"
    source.save(path)
    app = create_app(tiny_pipe, ServeSettings(output_dir=tmp_path / "out", token=None, timeout=120))
    with serve_in_thread(app) as url:
        page, errors = open_page(browser, url)
        page.set_input_files("#edit-file", str(path))
        page.wait_for_selector("#editor:not([hidden])")
        assert page.input_value("#edit-mode") == "inpaint"
        # Paint the right third with the mouse: down, drag down the canvas, up.
        page.locator("#edit-mask").scroll_into_view_if_needed()  # the mouse only reaches what is on screen
        box = page.locator("#edit-mask").bounding_box()
        page.fill("#brush", "24")
        page.dispatch_event("#brush", "input")
        x = box["x"] + box["width"] * 0.85
        page.mouse.move(x, box["y"] + 4)
        page.mouse.down()
        for k in range(1, 21):
            page.mouse.move(x, box["y"] + box["height"] * k / 20, steps=2)
        page.mouse.up()
        page.fill("#prompt", "rocket")
        page.fill("#steps", "3")
        page.fill("#num_images", "1")
        page.uncheck("#random_seed")
        page.fill("#seed", "3")
        page.click("#edit-run")
        page.wait_for_selector("#results .card img", timeout=120_000)
        assert "inpaint" in page.inner_text("#results .card")
        raw = base64.b64decode(page.get_attribute("#results .card img", "src").split(",", 1)[1])
        got = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).astype(int)
        src = np.asarray(source).astype(int)
        assert np.array_equal(got[:, :24], src[:, :24])  # unpainted pixels are the input's own
        assert np.abs(got[:, 48:] - src[:, 48:]).max() > 0  # the painted strip was repainted
        # Without paint, inpainting asks for a mask instead of sending nothing.
        page.click("#clear-mask")
        page.click("#edit-run")
        page.wait_for_selector("#error:not([hidden])")
        assert "Paint the area" in page.inner_text("#error")
        assert not errors, errors
        page.close()


def test_page_draws_a_layout(browser, tiny_pipe, tmp_path):
    app = create_app(tiny_pipe, ServeSettings(output_dir=tmp_path / "out", token=None, timeout=120))
    with serve_in_thread(app) as url:
        page, errors = open_page(browser, url)
        page.click("#layout-panel summary")

        def drag(x0, y0, x1, y1):
            stroke(page, "#layout-canvas", [(x0, y0), (x1, y1)], steps=5)

        page.fill("#box-caption", "red apple")
        drag(0.05, 0.3, 0.45, 0.7)
        page.fill("#box-caption", "rocket")
        drag(0.55, 0.3, 0.95, 0.7)
        assert page.locator("#layout-boxes li").count() == 2
        page.fill("#prompt", "an apple and a rocket")
        page.fill("#steps", "2")
        page.fill("#num_images", "1")
        page.click("#generate")
        page.wait_for_selector("#results .card img", timeout=120_000)
        raw = base64.b64decode(page.get_attribute("#results .card img", "src").split(",", 1)[1])
        params = __import__("json").loads(Image.open(io.BytesIO(raw)).info["minicream"])
        assert params["mode"] == "scene"
        objects = params["layout"]["objects"]
        assert [o["caption"] for o in objects] == ["red apple", "rocket"]
        assert objects[0]["box"][2] <= objects[1]["box"][0]  # drawn left of the rocket
        assert not errors, errors
        page.close()


def test_page_switches_models_and_takes_their_defaults(browser, tmp_path):
    from serve_fakes import FakePipe

    class OneStep(FakePipe):
        defaults = {"sampler": "ddim", "steps": 1, "guidance": 1.0}
        provenance = {"model_kind": "one-step student", "teacher": "fake-model (0123456789)"}

    teacher, student = FakePipe(), OneStep()
    app = create_app({"teacher": teacher, "onestep": student}, ServeSettings(output_dir=tmp_path, token=None))
    with serve_in_thread(app) as url:
        page, errors = open_page(browser, url)
        assert page.is_visible("#model") and page.input_value("#model") == "teacher"
        assert page.input_value("#steps") == "4"
        page.select_option("#model", "onestep")
        assert page.input_value("#steps") == "1" and page.input_value("#guidance") == "1"
        assert page.input_value("#sampler") == "ddim" and "one-step student" in page.inner_text("#model-info")
        page.fill("#prompt", "red apple")
        page.click("#generate")
        page.wait_for_selector("#results .card img", timeout=30_000)
        assert student.calls and student.calls[-1]["steps"] == 1 and not teacher.calls
        assert not errors, errors


def test_page_sends_guidance_max_noise_and_cads_only_when_changed(browser, tmp_path):
    from serve_fakes import TEXT2IMG, FakePipe, declared

    class Interval(FakePipe):
        modes = {"text2img": declared("text2img", *TEXT2IMG, "guidance_max_noise", "cads")}
        defaults = {"sampler": "euler", "steps": 2, "guidance": 4.0, "guidance_max_noise": 0.8, "cads": 0.0}

        def __call__(self, *args, guidance_max_noise=None, cads=None, **kwargs):
            images = super().__call__(*args, **kwargs)
            self.calls[-1].update(guidance_max_noise=guidance_max_noise, cads=cads)
            used = self.defaults["guidance_max_noise"] if guidance_max_noise is None else guidance_max_noise
            for im in images:
                im.info["minicream"]["guidance_max_noise"] = used
                if cads:
                    im.info["minicream"]["cads"] = cads
            return images

    pipe = Interval()
    app = create_app(pipe, ServeSettings(output_dir=tmp_path, token=None))
    with serve_in_thread(app) as url:
        page, errors = open_page(browser, url)
        assert page.input_value("#guidance_max_noise") == "0.8"  # the model's default
        assert page.input_value("#cads") == "0"
        page.fill("#prompt", "grapes")
        page.click("#generate")
        page.wait_for_selector("#results .card img", timeout=30_000)
        assert pipe.calls[-1]["guidance_max_noise"] is None and pipe.calls[-1]["cads"] is None  # the model's defaults
        page.fill("#guidance_max_noise", "0.6")
        page.click("#generate")
        page.locator("#results dd", has_text=re.compile(r"^0\.6$")).first.wait_for(timeout=30_000)  # on the new card
        assert pipe.calls[-1]["guidance_max_noise"] == 0.6 and pipe.calls[-1]["cads"] is None
        page.fill("#cads", "0.5")
        page.click("#generate")
        page.locator("#results dt", has_text="CADS").first.wait_for(timeout=30_000)
        assert pipe.calls[-1]["cads"] == 0.5
        assert not errors, errors
        page.close()
    plain = FakePipe()  # a pipeline without either option: the fields are disabled and never sent
    with serve_in_thread(create_app(plain, ServeSettings(output_dir=tmp_path, token=None))) as url:
        page, errors = open_page(browser, url)
        assert page.is_disabled("#guidance_max_noise") and page.is_disabled("#cads")
        page.fill("#prompt", "grapes")
        page.click("#generate")
        page.wait_for_selector("#results .card img", timeout=30_000)
        assert plain.calls and not errors, errors
        page.close()


def test_page_draws_at_256_through_the_upscaler(browser, tiny_upscaled_model, tmp_path):
    """A model with an upscaler: the page offers its sizes, and the larger one comes back at that size."""
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(tiny_upscaled_model)
    big = 4 * pipe.image_size
    with serve_in_thread(create_app(pipe, ServeSettings(output_dir=tmp_path, token=None, timeout=120))) as url:
        page, errors = open_page(browser, url)
        assert not page.locator("#size-label").is_hidden()
        page.select_option("#size", str(big))
        page.fill("#prompt", "red apple")
        page.fill("#steps", "2")
        page.fill("#num_images", "1")
        page.click("#generate")
        page.wait_for_selector("#results .card img", timeout=120_000)
        src = page.get_attribute("#results .card img", "src")
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert im.size == (big, big)
        assert "upscaler" in page.locator("#results .card").first.inner_text()
        assert not errors, errors
        page.close()
