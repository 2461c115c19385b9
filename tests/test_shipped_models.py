"""Every mode on every shipped model (minicream/reference, full, onestep) with each model's own defaults, through the
library and the server: a one-step model's default steps are too few for img2img's default strength (issue 29, 4),
and the OpenAI routes have no strength field, so the default must work; the model a request names is the one run
(issue 29, 5). About 20-40 s: three small models, one image per mode."""
from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from minicream.errors import MinicreamError
from minicream.pipelines import SHIPPED, Pipeline
from minicream.serve import ServeSettings, create_app


@pytest.fixture(scope="module")
def shipped() -> dict[str, Pipeline]:
    return {name: Pipeline.from_pretrained(name) for name in SHIPPED}


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name", list(SHIPPED))
def test_every_mode_runs_with_the_models_defaults(shipped, name):
    pipe = shipped[name]
    [source] = pipe("red apple", seed=1)
    right = Image.new("L", (64, 64), 0)
    right.paste(255, (32, 0, 64, 64))
    cases = {"img2img": dict(image=source, prompt="rocket"), "inpaint": dict(image=source, prompt="rocket", mask=right),
             "outpaint": dict(image=source, prompt="red apple", right=32), "variation": dict(image=source, num_images=1),
             "blend": dict(a=source, b="rocket", frames=2), "scene": dict(prompt="a dog face to the left of a red apple"),
             "story": dict(scenes="a dog face to the left of a red apple | a red apple"),
             "fuse": dict(parts=[source, "rocket"], num_images=1)}
    assert set(cases) | {"text2img"} == set(pipe.modes)
    for mode, options in cases.items():
        if mode == "fuse" and not pipe.has_image_prompt:  # fusion draws through the image-prompt adapter
            with pytest.raises(MinicreamError, match="no image-prompt adapter"):
                pipe.run(mode, seed=2, **options)
            continue
        images = pipe.run(mode, seed=2, **options)
        p = images[0].info["minicream"]
        assert len(images) == {"blend": 2, "story": 2}.get(mode, 1) and p["steps"] >= 1, mode
        # a scene's canvas is sized from its layout: two objects side by side at the native size (issue 28)
        assert images[0].size == {"outpaint": (96, 64), "scene": (136, 64), "story": (136, 64)}.get(mode, (64, 64)), mode
        if "strength" in p:  # at least one step runs at the mode's default strength
            assert int(p["steps"] * p["strength"]) >= 1, (mode, p["steps"], p["strength"])
    if pipe.defaults.get("steps") == 1:  # the one-step model: img2img's 0.6 takes a 2-step schedule, its last step
        assert pipe.edit(source, "rocket", seed=2)[0].info["minicream"]["steps"] == 2
        with pytest.raises(MinicreamError, match="leaves no step to run"):  # steps given: kept, and refused clearly
            pipe.edit(source, "rocket", steps=1, seed=2)


def test_openai_edits_and_variations_on_the_one_step_model_run_that_model(shipped, tmp_path):
    """`serve --model reference --model onestep`: images.edit(..., model="onestep") runs onestep, at its defaults."""
    reference, onestep = shipped["reference"], shipped["onestep"]
    app = create_app({"reference": reference, "onestep": onestep}, ServeSettings(output_dir=tmp_path, token=None))
    source = png(reference("red apple", seed=1)[0])
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        for route, data in (("/v1/images/edits", {"prompt": "rocket", "model": "onestep"}),
                            ("/v1/images/variations", {"model": "onestep"}), ("/v1/images/edits", {"prompt": "rocket"})):
            r = c.post(route, files={"image": ("a.png", source, "image/png")}, data=data)
            assert r.status_code == 200, r.text
            params = Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))).text["minicream"]
            want = onestep if data.get("model") == "onestep" else reference
            assert f'"model_hash": "{want.model_hash}"' in params, (route, data)


def test_the_full_model_follows_a_sketch_with_its_shipped_controlnet(shipped):
    from PIL import ImageDraw

    pipe = shipped["full"]
    assert pipe.control_kinds == ["scribble"]
    sketch = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(sketch).ellipse((40, 40, 216, 216), outline="black", width=10)  # made for this UNet: not refused
    [im] = pipe("cat face", control=sketch, steps=4, seed=0)
    assert im.info["minicream"]["control"][0]["kind"] == "scribble"


def test_the_full_model_takes_image_prompts_with_its_shipped_adapter_and_prior(shipped):
    pipe = shipped["full"]
    assert pipe.has_image_prompt and pipe.has_prior  # made for this UNet and evaluator: not refused
    [source] = pipe("red apple", seed=1, steps=4)
    [im] = pipe(None, image_prompt=source, steps=4, seed=0)
    assert im.info["minicream"]["image_prompt"][0]["detail"] is True
    [im] = pipe("red apple", prior=True, steps=4, seed=0)
    assert im.info["minicream"]["image_prompt"][0]["prior"] is True
    [v] = pipe.run("variation", image=source, num_images=1, steps=4, seed=0)
    assert v.info["minicream"]["method"] == "embedding"
