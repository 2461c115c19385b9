"""Scene layouts (issue 15): known answers for the rules (left/right/above/below, counts, big/small), validation of
given layouts, the filter's scene parse, and layout-grounded drawing on the tiny model (each box holds the object
drawn from its own caption; a scene re-runs bit-identically from its PNG)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from minicream.cli import main
from minicream.data.images import cutout_from_white, paste_fitted
from minicream.errors import MinicreamError
from minicream.evaluator.rerank import candidate_seed
from minicream.filter import load_vocabulary, rewrite
from minicream.io.pngmeta import read_png_params
from minicream.pipelines.layout import Layout, layout_from_scene, native_canvas, native_layout
from minicream.pipelines import PARAMS_KEY, shipped_model_dir
from minicream.pipelines.scene import WHITE_THRESHOLD

STEPS = 3


def scene(*objects, relation=None, style=None):
    return {"relation": relation, "style": style,
            "objects": [{"concept": c, "count": n, "size": s} for c, n, s in objects]}


def box_of(layout, caption):
    [box] = [o.box for o in layout.objects if o.caption == caption]
    return box


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_left_right_above_below(seed):
    lay = layout_from_scene(scene(("dog face", 1, None), ("red apple", 1, None), relation="to the left of"), 64, seed=seed)
    assert box_of(lay, "dog face")[2] <= box_of(lay, "red apple")[0]
    lay = layout_from_scene(scene(("dog face", 1, None), ("red apple", 1, None), relation="to the right of"), 64, seed=seed)
    assert box_of(lay, "red apple")[2] <= box_of(lay, "dog face")[0]
    lay = layout_from_scene(scene(("sun", 1, None), ("house", 1, None), relation="above"), 64, seed=seed)
    assert box_of(lay, "sun")[3] <= box_of(lay, "house")[1]
    lay = layout_from_scene(scene(("sun", 1, None), ("house", 1, None), relation="below"), 64, seed=seed)
    assert box_of(lay, "house")[3] <= box_of(lay, "sun")[1]
    for o in lay.objects:
        x0, y0, x1, y1 = o.box
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64


@pytest.mark.parametrize("count", [2, 3, 4])
def test_counts_make_that_many_boxes_in_a_row(count):
    lay = layout_from_scene(scene(("banana", count, None)), 64, seed=3)
    boxes = [o.box for o in lay.objects]
    assert len(boxes) == count and all(o.caption == "banana" for o in lay.objects)
    assert all(a[2] <= b[0] for a, b in zip(boxes, boxes[1:]))  # left to right, no overlap
    centres = [(b[1] + b[3]) / 2 for b in boxes]
    assert max(centres) - min(centres) <= 4  # one row


def test_big_and_small():
    lay = layout_from_scene(scene(("sun", 1, "big"), ("house", 1, "small"), relation="and", style="twemoji"), 64, seed=0)
    big, small = box_of(lay, "sun, twemoji"), box_of(lay, "house, twemoji")  # the prompt's style word on every object
    assert (big[2] - big[0]) > 1.7 * (small[2] - small[0])


def test_seeds_jitter_the_layout_but_not_the_relation():
    s = scene(("dog face", 1, None), ("red apple", 1, None), relation="to the left of")
    assert layout_from_scene(s, 64, seed=1) == layout_from_scene(s, 64, seed=1)
    assert len({tuple(layout_from_scene(s, 64, seed=k).objects) for k in range(6)}) > 1


@pytest.mark.parametrize("data, words", [
    ({"objects": []}, "1..6 objects"), ({"objects": [{"box": [0, 0, 10, 10]}]}, "needs a caption"),
    ({"objects": [{"caption": "x", "box": [0, 0, 70, 10]}]}, "inside the 64x64"),
    ({"objects": [{"caption": "x", "box": [0, 0, "a", 10]}]}, "four integers"), ([1], "expected"),
])
def test_given_layouts_are_validated(data, words):
    with pytest.raises(MinicreamError, match=words):
        Layout.from_dict(data, 64, 64)


def test_filter_returns_the_scene():
    vocab = load_vocabulary(shipped_model_dir("reference"))
    r = rewrite("three bananas", "offline", vocab)
    assert r.scene["objects"] == [{"concept": "banana", "count": 3, "size": None}]
    r = rewrite("a dog face to the left of a red apple", "offline", vocab)
    assert r.scene["relation"] == "to the left of" and [o["concept"] for o in r.scene["objects"]] == ["dog face", "red apple"]
    assert rewrite("red apple", "offline", vocab).scene is None


def test_each_box_holds_its_own_caption(tiny_pipe):
    layout = {"objects": [{"caption": "red apple", "box": [0, 16, 32, 48]}, {"caption": "rocket", "box": [32, 16, 64, 48]}]}
    [im] = tiny_pipe("an apple and a rocket", layout=layout, seed=5, steps=STEPS, filter="none")
    info = im.info[PARAMS_KEY]
    assert info["mode"] == "scene" and info["layout"]["objects"][1]["caption"] == "rocket" and im.size == (64, 64)
    # Known answer: the rocket's box is the rocket drawn alone from its own seed, cut out and fitted there.
    [alone] = tiny_pipe("rocket", seed=candidate_seed(5, 2), steps=STEPS, filter="none", layout="none")
    expected = Image.new("RGB", (64, 64), "white")
    paste_fitted(expected, cutout_from_white(alone, WHITE_THRESHOLD), (32, 16, 64, 48))
    got, want = np.asarray(im).astype(int)[16:48, 32:], np.asarray(expected).astype(int)[16:48, 32:]
    assert np.abs(got - want).max() <= 16 and np.abs(got - want).mean() < 1.0  # batch-size rounding only
    [again] = tiny_pipe("an apple and a rocket", layout=layout, seed=5, steps=STEPS, filter="none")
    assert again.tobytes() == im.tobytes()


def test_cli_layout_file_explain_and_rerun(tiny_model, tmp_path, capsys):
    path = tmp_path / "layout.json"
    path.write_text(json.dumps({"objects": [{"caption": "red apple", "box": [4, 4, 30, 30]},
                                            {"caption": "rocket", "box": [34, 34, 60, 60]}]}))
    out = tmp_path / "o"
    assert main(["generate", "apple and rocket", "--layout", str(path), "-n", "1", "--seed", "2", "--steps", str(STEPS),
                 "--model", str(tiny_model), "--out", str(out), "--explain", "--filter", "none"]) == 0
    captured = capsys.readouterr()
    assert "'rocket' at x 34-60, y 34-60 of 64x64" in captured.err
    [png] = [line for line in captured.out.split() if line.endswith(".png")]
    assert read_png_params(png)["layout"]["objects"][0]["box"] == [4, 4, 30, 30]
    assert main(["generate", "--from", png, "-n", "1", "--model", str(tiny_model), "--out", str(tmp_path / "again")]) == 0
    [again] = [line for line in capsys.readouterr().out.split() if line.endswith(".png")]
    assert Image.open(again).tobytes() == Image.open(png).tobytes()
    path.write_text("{not json")
    assert main(["generate", "x", "--layout", str(path), "--model", str(tiny_model)]) == 2
    assert "not a readable JSON file" in capsys.readouterr().err


def test_api_generate_takes_a_layout(tiny_pipe, tmp_path):
    import base64
    import io

    from fastapi.testclient import TestClient

    from minicream.serve import ServeSettings, create_app

    client = TestClient(create_app(tiny_pipe, ServeSettings(output_dir=tmp_path, token=None)), base_url="http://127.0.0.1")
    layout = {"objects": [{"caption": "red apple", "box": [0, 0, 32, 32]}, {"caption": "rocket", "box": [32, 32, 64, 64]}]}
    r = client.post("/api/generate", json={"prompt": "apple and rocket", "layout": layout, "steps": 2, "seed": 1, "filter": "none"})
    assert r.status_code == 200, r.text
    image = r.json()["images"][0]
    assert image["parameters"]["mode"] == "scene" and image["parameters"]["layout"]["objects"][1]["box"] == [32, 32, 64, 64]
    assert Image.open(io.BytesIO(base64.b64decode(image["png_base64"]))).size == (64, 64)
    r = client.post("/api/generate", json={"prompt": "x", "layout": {"objects": [{"caption": "x", "box": [0, 0, 99, 9]}]}})
    assert r.status_code == 422 and "inside the 64x64" in r.json()["error"]["message"]


@pytest.mark.parametrize("width, height", [(32, 32), (64, 32), (1024, 8), (66, 64)])
def test_a_canvas_the_model_cannot_harmonize_is_refused_before_drawing(tiny_pipe, tmp_path, capsys, width, height):
    """Issue 29, 3: the joint redraw runs the model in windows of its size over latents: a canvas smaller than one
    window (or not divisible into latents) is refused at once, from the library, the API (422) and the CLI (exit 2)."""
    layout = {"width": width, "height": height, "objects": [{"caption": "red apple", "box": [0, 0, 8, 8]}]}
    with pytest.raises(MinicreamError, match=f"a {width}x{height} canvas cannot be harmonized"):
        tiny_pipe("red apple", layout=layout, harmonize=0.3, steps=STEPS)
    from fastapi.testclient import TestClient

    from minicream.serve import ServeSettings, create_app

    with TestClient(create_app(tiny_pipe, ServeSettings(output_dir=tmp_path, token=None)), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as c:
        r = c.post("/api/generate", json={"prompt": "red apple", "layout": layout, "harmonize": 0.3, "steps": STEPS})
    assert r.status_code == 422 and "cannot be harmonized" in r.json()["error"]["message"], r.text
    if (width, height) == (32, 32):  # without the redraw any canvas is fine; the CLI refuses the redraw in one line
        [im] = tiny_pipe("red apple", layout=layout, harmonize=0.0, steps=STEPS, seed=1)
        assert im.size == (32, 32)
        path = tmp_path / "small.json"
        path.write_text(json.dumps(layout))
        assert main(["generate", "red apple", "--layout", str(path), "--harmonize", "0.3", "--model",
                     str(tiny_pipe.model_dir), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert "cannot be harmonized" in err and "unexpected" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content, words", [("[" * 30_000 + "]" * 30_000, "nested deeper than"),
                                            ('{"objects": ' + "[" * 70 + "]" * 70 + "}", "nested deeper than"),
                                            (" " * (1 << 20), "larger than")])
def test_layout_files_are_bounded(tmp_path, content, words):
    """Issue 29, 11: deeply nested or huge layout files are one-line errors; /dev/zero is not read at all."""
    path = tmp_path / "layout.json"
    path.write_text(content)
    with pytest.raises(MinicreamError, match=words):
        Layout.read_json(path)
    with pytest.raises(MinicreamError, match="not a regular file"):
        Layout.read_json("/dev/zero")


# -- issue 28, 5: the default canvas is sized from the layout, objects at the model's native size -------------------

@pytest.mark.parametrize("objects, relation, size", [
    ([("red apple", 1, None)], None, (64, 64)),
    ([("dog face", 1, None), ("red apple", 1, None)], "to the left of", (136, 64)),
    ([("dog face", 1, None), ("red apple", 1, None)], "and", (136, 64)),
    ([("banana", 3, None)], None, (208, 64)),  # 3 x 64 + 2 gaps of 8
    ([("banana", 6, None)], None, (424, 64)),
    ([("sun", 1, None), ("house", 1, None)], "above", (64, 136)),
    ([("sun", 1, None), ("house", 1, None)], "below", (64, 136)),
    ([("sun", 1, "big"), ("house", 1, "small")], "and", (104, 64)),  # 64 + 8 + 32 (0.62 / 1.25 of 64)
])
def test_the_default_canvas_fits_native_size_boxes(objects, relation, size):
    s = scene(*objects, relation=relation)
    assert native_canvas(s, 64, 8) == size
    for seed in (0, 5):
        lay = native_layout(s, 64, 8, seed=seed)
        assert (lay.width, lay.height) == size and lay.width % 8 == 0 and lay.height % 8 == 0
        boxes = [o.box for o in lay.objects]
        if all(o[2] is None for o in objects):
            assert all((b[2] - b[0], b[3] - b[1]) == (64, 64) for b in boxes)  # every object at native size
        for a, b in zip(boxes, boxes[1:]):  # in order along the row (column), 8 px of white between neighbours
            assert (a[3] + 8 <= b[1]) if relation in ("above", "below") else (a[2] + 8 <= b[0])
        Layout.from_dict(lay.to_dict()).check_harmonizable(64, 8)  # valid, and the joint redraw can run over it


def test_the_default_canvas_keeps_the_relation():
    lay = native_layout(scene(("dog face", 1, None), ("red apple", 1, None), relation="to the right of"), 64, 8)
    assert box_of(lay, "red apple") == (0, 0, 64, 64) and box_of(lay, "dog face") == (72, 0, 136, 64)
    lay = native_layout(scene(("sun", 1, None), ("house", 1, None), relation="below"), 64, 8)
    assert box_of(lay, "house") == (0, 0, 64, 64) and box_of(lay, "sun") == (0, 72, 64, 136)
    lay = native_layout(scene(("sun", 1, "big"), ("house", 1, "small"), style="noto"), 64, 8, seed=1)
    big, small = box_of(lay, "sun, noto"), box_of(lay, "house, noto")
    assert big[2] - big[0] == 64 and small[2] - small[0] == 32 and small[1] == 16  # centred across


def test_a_scene_is_drawn_at_native_size_and_pasted_unscaled(tiny_pipe):
    """Known answer: on the default canvas each box holds the object drawn alone from its own seed, pixel for pixel
    where the object is (its white background made transparent), not shrunk; canvas="model" keeps the old canvas."""
    filtered = tiny_pipe.filter_prompt("a dog face to the left of a red apple", "offline")
    assert filtered.scene is not None
    [im] = tiny_pipe("a dog face to the left of a red apple", seed=4, steps=STEPS)
    info = im.info[PARAMS_KEY]
    assert im.size == (136, 64) and info["mode"] == "scene" and (info["layout"]["width"], info["layout"]["height"]) == (136, 64)
    for k, obj in enumerate(info["layout"]["objects"]):
        x0, y0, x1, y1 = obj["box"]
        assert (x1 - x0, y1 - y0) == (64, 64)
        [alone] = tiny_pipe(obj["caption"], seed=candidate_seed(4, k + 1), steps=STEPS, filter="none", layout="none")
        cut = np.asarray(cutout_from_white(alone, WHITE_THRESHOLD, crop=False))
        opaque = cut[..., 3] > 0
        got = np.asarray(im).astype(int)[y0:y1, x0:x1][opaque]
        want = cut[..., :3].astype(int)[opaque]
        assert opaque.any() and np.abs(got - want).max() <= 16 and np.abs(got - want).mean() < 1.0  # batch rounding only
    [old] = tiny_pipe("a dog face to the left of a red apple", seed=4, steps=STEPS, canvas="model")
    assert old.size == (64, 64)
    with pytest.raises(MinicreamError, match="canvas must be one of"):
        tiny_pipe("a dog face to the left of a red apple", seed=4, steps=STEPS, canvas="huge")


def test_a_scene_on_the_larger_canvas_harmonizes_and_reruns(tiny_model, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["generate", "a red apple above a dog face", "-n", "1", "--seed", "3", "--steps", "4", "--harmonize", "0.5",
                 "--model", str(tiny_model), "--out", str(out), "--explain"]) == 0
    captured = capsys.readouterr()
    assert "of 64x136" in captured.err
    [png] = [line for line in captured.out.split() if line.endswith(".png")]
    assert Image.open(png).size == (64, 136)
    assert main(["generate", "--from", png, "-n", "1", "--model", str(tiny_model), "--out", str(tmp_path / "again")]) == 0
    [again] = [line for line in capsys.readouterr().out.split() if line.endswith(".png")]
    assert Image.open(again).tobytes() == Image.open(png).tobytes()
    assert main(["generate", "a red apple above a dog face", "-n", "1", "--seed", "3", "--steps", str(STEPS), "--canvas", "model",
                 "--model", str(tiny_model), "--out", str(tmp_path / "m")]) == 0
    [small] = [line for line in capsys.readouterr().out.split() if line.endswith(".png")]
    assert Image.open(small).size == (64, 64)
