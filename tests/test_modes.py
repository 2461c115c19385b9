"""Pipeline modes: declared options, MultiDiffusion windows (known answers), outpainting and blending on the tiny
model, and the model-folder checks. Inference never imports training."""
from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from minicream.diffusion.tiling import tiled_model_fn, windows
from minicream.editing import SEAM
from minicream.errors import MinicreamError
from minicream.io.model_dir import ModelDir
from minicream.pipelines import PARAMS_KEY, Pipeline
from minicream.pipelines.blend import mix, slerp
from minicream.pipelines.modes import SAMPLING_NAMES
from minicream.pipelines.upscale import LoadedUpscaler

STEPS = 4


def test_every_mode_declares_exactly_what_it_takes():
    assert {"text2img", "img2img", "inpaint", "outpaint", "variation", "blend"} <= set(Pipeline.modes)
    for mode in Pipeline.modes.values():
        signature = inspect.signature(mode.run).parameters
        params = [n for n, p in signature.items() if p.kind != p.VAR_KEYWORD]
        # the shared sampling options reach the function as one SamplingSettings (built once by Pipeline.run); the
        # upscaler's as `**upscale`, handed whole to LoadedUpscaler.settings, which names each of them
        if "upscale" in signature:
            assert signature["upscale"].kind == inspect.Parameter.VAR_KEYWORD, mode.name
            params += list(inspect.signature(LoadedUpscaler.settings).parameters)[1:]
        assert params[:2] == ["pipe", "settings"], mode.name
        assert sorted(params[2:]) == sorted(n for n in mode.names if n not in SAMPLING_NAMES), mode.name
        assert ("guidance" in mode.names) == ("guidance_max_noise" in mode.names), mode.name


def test_unknown_options_and_modes_are_one_line_errors(tiny_pipe):
    with pytest.raises(MinicreamError, match="unknown option.*nmu_images"):
        tiny_pipe("rocket", nmu_images=2)
    with pytest.raises(MinicreamError, match="unknown mode"):
        tiny_pipe.run("paint-by-numbers")


def test_windows_cover_the_canvas_with_half_overlap():
    assert windows((16, 16), (16, 16)) == [(0, 0)]
    assert windows((16, 24), (16, 16)) == [(0, 0), (0, 8)]
    assert windows((16, 28), (16, 16)) == [(0, 0), (0, 8), (0, 12)]  # the last window ends at the border
    assert windows((32, 16), (16, 16)) == [(0, 0), (8, 0), (16, 0)]


def test_tiled_model_fn_known_answers():
    x = torch.randn(2, 4, 16, 40)
    t = torch.tensor([5.0, 7.0])
    seen = []

    def pointwise(z, tt):
        seen.append((z.shape, tt.tolist()))
        return 2 * z + 1

    out = tiled_model_fn(pointwise, (16, 40), (16, 16))(x, t)
    assert torch.allclose(out, 2 * x + 1, atol=1e-6)  # a per-latent model is unchanged by windowing
    n = len(windows((16, 40), (16, 16)))
    assert seen == [((2 * n, 4, 16, 16), [5.0] * n + [7.0] * n)]  # one batch, window-major per image
    # Each latent is the mean over the windows covering it: a model answering its window index gives that mean.
    ids = tiled_model_fn(lambda z, tt: torch.arange(len(z)).float().view(-1, 1, 1, 1).expand_as(z) % n, (16, 40), (16, 16))(x, t)
    corners = windows((16, 40), (16, 16))
    for col in range(40):
        covering = [k for k, (_, c) in enumerate(corners) if c <= col < c + 16]
        assert torch.allclose(ids[:, :, :, col], torch.tensor(sum(covering) / len(covering)))


def test_slerp_and_mix_ends_are_exact():
    a, b = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5)
    assert abs(mid.std().item() - 1.0) < 0.1  # slerp keeps the noise near unit variance (a lerp would shrink it)


@pytest.fixture(scope="module")
def source(tiny_pipe):
    return tiny_pipe("red apple", num_images=1, steps=STEPS, seed=1)[0]


def test_outpaint_extends_the_canvas_and_keeps_the_input(tiny_pipe, source):
    out = tiny_pipe.outpaint(source, "red apple", right=32, top=16, num_images=2, steps=STEPS, seed=4)
    assert [im.size for im in out] == [(96, 80), (96, 80)]
    src = np.asarray(source)
    for im in out:
        arr = np.asarray(im)
        # the input's own pixels, away from the feathered seam next to the new area
        m = SEAM + 2
        np.testing.assert_array_equal(arr[16 + m:16 + 64, 0:64 - m], src[m:, :64 - m])
        assert im.info[PARAMS_KEY]["mode"] == "outpaint" and im.info[PARAMS_KEY]["extend"]["right"] == 32
    again = tiny_pipe.outpaint(source, "red apple", right=32, top=16, num_images=2, steps=STEPS, seed=4)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(out, again))
    with pytest.raises(MinicreamError, match="at least one of left"):
        tiny_pipe.outpaint(source, "red apple", steps=STEPS)
    with pytest.raises(MinicreamError, match="right must be a multiple"):
        tiny_pipe.outpaint(source, "red apple", right=30, steps=STEPS)


def test_blend_between_prompts_starts_and_ends_on_the_prompts(tiny_pipe):
    frames = tiny_pipe.blend("red apple", "rocket", frames=3, steps=STEPS, seed=11)
    assert len(frames) == 3 and all(f.info[PARAMS_KEY]["mode"] == "blend" for f in frames)
    assert [f.info[PARAMS_KEY]["weight"] for f in frames] == [0.0, 0.5, 1.0]
    for frame, prompt in ((frames[0], "red apple"), (frames[-1], "rocket")):
        [plain] = tiny_pipe(prompt, steps=STEPS, seed=11)
        diff = np.abs(np.asarray(frame).astype(int) - np.asarray(plain).astype(int)).max()
        assert diff <= 4  # the same noise and text: the same picture (within batch-size rounding on CPUs without fast bf16)
    with pytest.raises(MinicreamError, match="frames must be in"):
        tiny_pipe.blend("red apple", "rocket", frames=1)


def test_blend_with_an_image_end_inverts_it(tiny_pipe, source, tmp_path):
    path = tmp_path / "a.png"
    source.save(path)
    frames = tiny_pipe.blend(path, "rocket", frames=2, steps=STEPS, seed=2, prompt="red apple")
    ends = frames[0].info[PARAMS_KEY]["ends"]
    assert ends["a"]["prompt"] == "red apple" and "image_sha256" in ends["a"] and ends["b"] == {"prompt": "rocket"}
    assert frames[0].info[PARAMS_KEY]["sampler"] == "ddim" and frames[0].info[PARAMS_KEY]["cfg_scale"] == 1.0


def test_mix_uses_each_ends_own_embedding(tiny_pipe):
    a, b = tiny_pipe.encode_prompt("red apple"), tiny_pipe.encode_prompt("rocket")
    assert mix(a, b, 0.0) is a and mix(a, b, 1.0) is b
    assert torch.equal(mix(a, b, 0.5).mask, a.mask | b.mask)


def test_model_folder_is_checked_on_load(tiny_model, tmp_path):
    bad = tmp_path / "m"
    shutil.copytree(tiny_model, bad)
    index = json.loads((bad / "model_index.json").read_text())
    for broken, words in ((dict(index, image_size="64"), "image_size"), (dict(index, objective={"prediction_type": "x"}), "prediction_type"),
                          ({k: v for k, v in index.items() if k != "text_encoder"}, "text_encoder"), ([1, 2], "JSON object")):
        (bad / "model_index.json").write_text(json.dumps(broken))
        with pytest.raises(MinicreamError, match=words):
            ModelDir.open(bad)
    (bad / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(bad / "vae")
    with pytest.raises(MinicreamError, match="vae/config.json"):
        Pipeline.from_pretrained(bad)


def test_inference_imports_nothing_from_training():
    code = ("import sys, minicream.pipelines, minicream.serve.app; "
            "print([m for m in sys.modules if m.startswith(('minicream.training', 'minicream.config'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_outpaint_and_blend(tiny_model, tiny_pipe, source, tmp_path, capsys):
    from minicream.cli import main

    src = tmp_path / "src.png"
    source.save(src)
    main(["outpaint", str(src), "red apple", "--left", "32", "--steps", str(STEPS), "--seed", "1", "--model", str(tiny_model),
          "--out", str(tmp_path / "o")])
    [path] = capsys.readouterr().out.split()
    assert Image.open(path).size == (96, 64)
    assert main(["blend", "red apple", str(src), "--frames", "3", "--steps", str(STEPS), "--prompt", "red apple",
                 "--model", str(tiny_model), "--out", str(tmp_path / "b")]) == 0
    strip, gif = capsys.readouterr().out.split()
    assert Image.open(strip).size[0] >= 3 * 64 and Image.open(gif).n_frames == 4  # there and back
    assert main(["outpaint", str(src), "red apple", "--steps", str(STEPS), "--model", str(tiny_model)]) == 2
    assert "at least one of left" in capsys.readouterr().err


def test_edit_reruns_from_its_png(tiny_model, source, tmp_path, capsys):
    from minicream.cli import main

    src, mask = tmp_path / "src.png", tmp_path / "mask.png"
    source.save(src)
    m = np.zeros((64, 64), np.uint8)
    m[:, 32:] = 255
    Image.fromarray(m, "L").save(mask)
    common = ["--steps", str(STEPS), "--model", str(tiny_model)]
    assert main(["edit", str(src), "rocket", "--mask", str(mask), "--seed", "4", "--out", str(tmp_path / "a"), *common]) == 0
    [first] = [p for p in capsys.readouterr().out.split() if p.endswith(".png")]
    assert main(["edit", "--from", first, str(src), "--mask", str(mask), "--model", str(tiny_model), "--out", str(tmp_path / "b")]) == 0
    [again] = [p for p in capsys.readouterr().out.split() if p.endswith(".png")]
    assert Image.open(again).tobytes() == Image.open(first).tobytes()  # prompt, seed, steps, strength from the PNG
    other = tmp_path / "other.png"
    Image.new("RGB", (64, 64), "white").save(other)
    assert main(["edit", "--from", first, str(other), "--mask", str(mask), "--model", str(tiny_model)]) == 2
    assert "not the one the --from PNG was made from" in capsys.readouterr().err
    assert main(["edit", "--from", first, str(src), "--model", str(tiny_model)]) == 2
    assert "give the same --mask" in capsys.readouterr().err
    assert main(["generate", "--from", first, "--model", str(tiny_model)]) == 2
    assert "minicream edit --from" in capsys.readouterr().err
    assert main(["outpaint", str(src), "red apple", "--right", "32", "--seed", "2", "--out", str(tmp_path / "c"), *common]) == 0
    [wide] = [p for p in capsys.readouterr().out.split() if p.endswith(".png")]
    assert main(["outpaint", "--from", wide, str(src), "--model", str(tiny_model), "--out", str(tmp_path / "d")]) == 0
    [wide2] = [p for p in capsys.readouterr().out.split() if p.endswith(".png")]
    assert Image.open(wide2).tobytes() == Image.open(wide).tobytes()
