"""Editing on the tiny model: img2img and inpainting through the Python API and the CLI, with known answers for
what must not change (the kept pixels, the seeds, the recorded settings)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from minicream.editing import SEAM, load_mask, paste_back
from minicream.errors import MinicreamError
from minicream.pipelines import PARAMS_KEY

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
    from minicream.pipelines import seeds_for as _seeds

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
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(tiny_evaluated_model)
    src = pipe("rocket", steps=STEPS, seed=2)[0]
    out = pipe.vary(src, num_images=2, steps=STEPS, seed=9)
    p = out[0].info[PARAMS_KEY]
    assert p["prompt"] in pipe.vocabulary.by_name and p["mode"] == "variation" and p["strength"] == 0.6
    assert [im.info[PARAMS_KEY]["seed"] for im in out] == [9, 10]
    pipe.defaults = {**pipe.defaults, "variation_strength": 0.35}  # a model's measured default strength (full: 0.35)
    assert pipe.vary(src, num_images=1, steps=STEPS, seed=9)[0].info[PARAMS_KEY]["strength"] == 0.35
    assert pipe.vary(src, strength=0.5, num_images=1, steps=STEPS, seed=9)[0].info[PARAMS_KEY]["strength"] == 0.5
    src.save(tmp_path / "in.png")
    assert main(["vary", str(tmp_path / "in.png"), "--model", str(tiny_evaluated_model), "-n", "2", "--steps",
                 str(STEPS), "--out", str(tmp_path / "v")]) == 0
    assert len(list((tmp_path / "v").glob("variation_*.png"))) == 2


def test_variations_take_a_design_each_by_seed_and_rerun_from_their_png(tiny_evaluated_model, tmp_path, capsys):
    """Issue 28, 6: under style "vary" (the default) variation k is drawn as "NAME, DESIGN" with the design chosen by
    its seed (seed s -> design s mod n, as text2img does), the PNG records the caption drawn and the style, and a
    `--from` re-run is bit-identical; style "model" draws every variation from the bare name."""
    from minicream.cli import main
    from minicream.filter.variety import common_styles
    from minicream.io.pngmeta import read_png_params
    from minicream.pipelines import Pipeline

    pipe = Pipeline.from_pretrained(tiny_evaluated_model)
    styles = common_styles(["rocket"], pipe.vocabulary)
    assert len(styles) >= 2
    src = pipe("rocket", steps=STEPS, seed=2)[0]
    out = pipe.vary(src, prompt="rocket", num_images=2, steps=STEPS, seed=9)
    for im, s in zip(out, (9, 10)):
        p = im.info[PARAMS_KEY]
        assert p["mode"] == "variation" and p["style"] == "vary" and p["seed"] == s
        assert p["rewritten_prompt"] == f"rocket, {styles[s % len(styles)]}"
    plain = pipe.vary(src, prompt="rocket", num_images=2, steps=STEPS, seed=9, style="model")
    assert [im.info[PARAMS_KEY]["rewritten_prompt"] for im in plain] == ["rocket", "rocket"]
    assert plain[0].tobytes() != out[0].tobytes() or plain[1].tobytes() != out[1].tobytes()
    src.save(tmp_path / "in.png")
    assert main(["vary", str(tmp_path / "in.png"), "--model", str(tiny_evaluated_model), "-n", "2", "--steps",
                 str(STEPS), "--seed", "9", "--out", str(tmp_path / "v")]) == 0
    pngs = sorted((tmp_path / "v").glob("variation_*.png"))
    assert read_png_params(pngs[1])["style"] == "vary"
    capsys.readouterr()
    assert main(["vary", str(tmp_path / "in.png"), "--from", str(pngs[1]), "-n", "1", "--model",
                 str(tiny_evaluated_model), "--out", str(tmp_path / "again")]) == 0
    [again] = [line for line in capsys.readouterr().out.split() if line.endswith(".png")]
    assert Image.open(again).tobytes() == Image.open(pngs[1]).tobytes()


# -- issue 29: a mask cropped as its image is, inputs as displayed -----------------------------------------------------
def test_a_non_square_images_mask_is_cropped_as_the_image_is(tiny_pipe, tmp_path):
    """A 128x64 image is edited as its centred 64x64 square (columns 32-95): a mask stripe over its columns 72-87 must
    repaint crop columns 40-55, not be stretched onto other pixels; a stripe outside the square repaints nothing."""
    stripe = np.zeros((64, 128), np.uint8)
    stripe[:, 72:88] = 255
    repaint = load_mask(Image.fromarray(stripe, "L"), 64, like=(128, 64)).numpy()
    assert repaint[:, 40:56].all() and not repaint[:, :39].any() and not repaint[:, 57:].any()
    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8))
    [out] = tiny_pipe.edit(wide, "rocket", mask=Image.fromarray(stripe, "L"), steps=STEPS, seed=1)
    kept = np.asarray(wide)[:, 32:96]
    far = np.r_[0:40 - SEAM - 2, 56 + SEAM + 2:64]  # away from the stripe and its feathered seam
    assert np.array_equal(np.asarray(out)[:, far], kept[:, far])
    edge = np.zeros((64, 128), np.uint8)
    edge[:, 112:] = 255  # the image's right stripe: outside the square the model edits
    with pytest.raises(MinicreamError, match="repaints nothing inside the image's centred square"):
        tiny_pipe.edit(wide, "rocket", mask=Image.fromarray(edge, "L"), steps=STEPS)
    with pytest.raises(MinicreamError, match="does not match the image's 128x64"):
        tiny_pipe.edit(wide, "rocket", mask=Image.new("L", (64, 64), 255), steps=STEPS)


def test_inputs_are_read_as_displayed(tiny_model, tmp_path, capsys):
    """16-bit greyscale PNGs keep their grey levels (Pillow's own conversion made them nearly white); an EXIF-rotated
    photo is edited upright, with a mask drawn over the displayed photo (it was refused as the wrong size)."""
    from minicream.cli import main
    from minicream.editing import load_image

    gradient = tmp_path / "grey16.png"
    Image.fromarray(np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)).save(gradient)  # mode I;16
    assert Image.open(gradient).mode in ("I;16", "I")
    grey = load_image(gradient, 64).float()
    assert abs(grey.mean().item() - 127.5) < 2 and grey.min() == 0 and grey.max() == 255
    photo, exif = tmp_path / "photo.jpg", Image.Exif()
    exif[0x0112] = 6  # stored 128x64 landscape, displayed 64x128 portrait (rotated 90 degrees clockwise)
    stored = np.zeros((64, 128, 3), np.uint8)
    stored[:, :64] = 255  # the stored left half: the displayed top half
    Image.fromarray(stored).save(photo, exif=exif.tobytes(), quality=95)
    mask = tmp_path / "mask.png"
    drawn = np.zeros((128, 64), np.uint8)
    drawn[40:60] = 255  # over the displayed photo, inside its centred square (rows 32-95)
    Image.fromarray(drawn, "L").save(mask)
    upright = load_image(photo, 64).float().mean(0)  # the centred square of the upright photo: white top half
    assert upright[:24].mean() > 240 and upright[40:].mean() < 15
    assert main(["edit", str(photo), "rocket", "--mask", str(mask), "--model", str(tiny_model), "--steps", str(STEPS),
                 "--seed", "1", "-n", "1", "--out", str(tmp_path / "o")]) == 0, capsys.readouterr().err
