"""Editing on the tiny model: img2img and inpainting through the Python API and the CLI, with known answers for
what must not change (the kept pixels, the seeds, the recorded settings)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from minicream.editing import SEAM, load_mask, paste_back
from minicream.errors import MinicreamError
from minicream.pipeline import PARAMS_KEY

STEPS = 4


@pytest.fixture(scope="module")
def source(tiny_pipe):
    return tiny_pipe("red apple", num_images=1, steps=STEPS, seed=1)[0]


def right_half_mask(size=64) -> Image.Image:
    m = np.zeros((size, size), np.uint8)
    m[:, size // 2:] = 255
    return Image.fromarray(m, "L")


def test_img2img_is_seeded_and_records_its_inputs(tiny_pipe, source):
    a = tiny_pipe.edit(source, "rocket", strength=0.5, num_images=2, steps=STEPS, seed=5)
    b = tiny_pipe.edit(source, "rocket", strength=0.5, num_images=2, steps=STEPS, seed=5)
    assert [np.asarray(x).tobytes() for x in a] == [np.asarray(x).tobytes() for x in b]
    assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))  # seeds 5 and 6
    p = a[0].info[PARAMS_KEY]
    assert p["mode"] == "img2img" and p["strength"] == 0.5 and p["seed"] == 5 and len(p["init_image_sha256"]) == 16


def test_inpainting_keeps_the_unmasked_pixels_exactly(tiny_pipe, source):
    out = tiny_pipe.edit(source, "rocket", mask=right_half_mask(), num_images=2, steps=STEPS, seed=3)
    src = np.asarray(source)
    for im in out:
        got = np.asarray(im)
        keep = slice(0, 32 - SEAM - 2)  # away from the feathered seam
        assert np.array_equal(got[:, keep], src[:, keep])
        assert im.info[PARAMS_KEY]["mode"] == "inpaint" and im.info[PARAMS_KEY]["strength"] == 1.0
    assert not np.array_equal(np.asarray(out[0])[:, 40:], src[:, 40:])  # the masked half was redrawn


def test_paste_back_known_answer():
    src = torch.zeros(3, 16, 16, dtype=torch.uint8)
    gen = torch.full((1, 3, 16, 16), 200, dtype=torch.uint8)
    repaint = torch.zeros(16, 16, dtype=torch.bool)
    repaint[:, 10:] = True
    out = paste_back(src, gen, repaint)[0]
    assert torch.all(out[:, :, 10:] == 200)  # inside: generated
    assert torch.all(out[:, :, :10 - SEAM - 1] == 0)  # far outside: the source's own pixels
    assert 0 < out[0, 0, 9] < 200  # the seam blends


def test_transparent_mask_pixels_mean_repaint(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:, :20, 3] = 0  # transparent = edit here (OpenAI's convention)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png", 64)
    assert m[:, :19].all() and not m[:, 21:].any()


def test_edit_errors_are_one_line(tiny_pipe, source, tmp_path):
    with pytest.raises(MinicreamError, match="repaints nothing"):
        tiny_pipe.edit(source, "rocket", mask=Image.new("L", (64, 64), 0), steps=STEPS)
    with pytest.raises(MinicreamError, match="strength must be in"):
        tiny_pipe.edit(source, "rocket", strength=1.5, steps=STEPS)
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(MinicreamError, match="not a readable image"):
        tiny_pipe.edit(tmp_path / "x.png", "rocket", steps=STEPS)


def test_cli_edit(tiny_model, source, tmp_path, capsys):
    from minicream.cli import main

    source.save(tmp_path / "in.png")
    right_half_mask().save(tmp_path / "mask.png")
    assert main(["edit", str(tmp_path / "in.png"), "rocket", "--mask", str(tmp_path / "mask.png"), "--model",
                 str(tiny_model), "-n", "2", "--steps", str(STEPS), "--seed", "4", "--out", str(tmp_path / "o")]) == 0
    outs = sorted((tmp_path / "o").glob("*.png"))
    assert len(outs) == 2
    assert main(["edit", str(tmp_path / "missing.png"), "rocket", "--model", str(tiny_model)]) == 2
    assert "not a readable image" in capsys.readouterr().err


@pytest.mark.parametrize("seed, words", [("12", "must be an integer"), (1.5, "must be an integer"), (True, "must be an integer"),
                                         ([1, "2"], "seeds must be integers"), (2**70, "0..2**63-1"), (-1, "0..2**63-1")])
def test_bad_seeds_are_refused(seed, words):
    from minicream.pipeline import _seeds

    with pytest.raises(MinicreamError, match=words.replace("*", r"\*")):
        _seeds(seed, 2 if isinstance(seed, list) else 1)
    assert _seeds(7, 3) == [7, 8, 9] and _seeds(np.int64(4), 1) == [4] and _seeds((3, 1), 2) == [3, 1]


@pytest.mark.parametrize("row, words", [({"file_name": 5, "text": "x"}, "non-empty string"),
                                        ({"file_name": None, "text": "x"}, "non-empty string"),
                                        ({"file_name": "../x.png", "text": "x"}, "outside the dataset folder"),
                                        ({"file_name": "/etc/passwd", "text": "x"}, "outside the dataset folder")])
def test_dataset_rows_are_validated_and_confined(tmp_path, row, words):
    import json

    from minicream.data.folder import load_caption_folder

    (tmp_path / "metadata.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(MinicreamError, match=words):
        load_caption_folder(tmp_path)
    (tmp_path / "metadata.jsonl").write_bytes(b'{"file_name": "a.png", "text": "caf\xe9"}\n')  # Latin-1
    with pytest.raises(MinicreamError, match="metadata.jsonl:1: not UTF-8"):
        load_caption_folder(tmp_path)


def test_variations_keep_the_evaluators_name_for_the_image(tiny_evaluated_model, tmp_path, capsys):
    """Without a prompt the evaluator names the image among the model's concepts; that name drives the redraw."""
    from minicream.cli import main
    from minicream.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(tiny_evaluated_model)
    src = pipe("rocket", steps=STEPS, seed=2)[0]
    out = pipe.vary(src, num_images=2, steps=STEPS, seed=9)
    p = out[0].info[PARAMS_KEY]
    assert p["prompt"] in pipe.vocabulary.by_name and p["mode"] == "variation" and p["strength"] == 0.6
    assert [im.info[PARAMS_KEY]["seed"] for im in out] == [9, 10]
    src.save(tmp_path / "in.png")
    assert main(["vary", str(tmp_path / "in.png"), "--model", str(tiny_evaluated_model), "-n", "2", "--steps",
                 str(STEPS), "--out", str(tmp_path / "v")]) == 0
    assert len(list((tmp_path / "v").glob("variation_*.png"))) == 2
