"""Pipeline on the model trained once by the tiny recipe (session fixture `tiny_model` in conftest.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from minicream.errors import MinicreamError
from minicream.io.pngmeta import read_png_params, save_png
from minicream.io.weights import check_safetensors, short_hash
from minicream.precision import fast_bf16
from minicream.pipelines import MAX_STEPS, PARAMS_KEY, Pipeline

STEPS = 4


def arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im)


def assert_same_picture(a, b, context=None):
    """The same picture computed in batches of different sizes: CPU matmul/conv kernels (oneDNN, fp32 or bf16) may
    block a batch of 2 differently from a batch of 1 (CI saw this on another CPU), so a few levels at most, never
    a different drawing."""
    d = np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int))
    assert d.max() <= 4 and d.mean() < 0.5, (context, d.max(), d.mean())


def test_recipe_run_directory(tiny_run):
    for stage in ("autoencoder", "latents"):
        assert (tiny_run / "stages" / f"{stage}.json").is_file()
    assert (tiny_run / "config.toml").is_file() and (tiny_run / "train_log.txt").is_file()
    model = tiny_run / "model"
    index = json.loads((model / "model_index.json").read_text())
    assert index["format"] == "minicream" and index["image_size"] == 64
    assert index["objective"]["prediction_type"] == "v_prediction"
    assert index["sample"]["steps"] == 4  # the tiny preset's [sample]
    assert json.loads((model / "unet" / "config.json").read_text())["channels"] == [32, 64]
    header = check_safetensors(model / "unet" / "model.safetensors")
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} <= {"BF16", "I64"}
    vocab = json.loads((model / "vocabulary.json").read_text())
    assert "red apple, twemoji" in vocab
    # The recipe logs each step's expert usage (tiny: 2 experts, a line per step), counted by the recipe, not the model.
    lines = [line for line in (tiny_run / "train_log.txt").read_text().splitlines() if "unet step" in line]
    assert len(lines) == 4
    for line in lines:
        usage = [float(v) for v in line.split("expert usage [")[1].rstrip("]").split()]
        assert len(usage) == 2 and abs(sum(usage) - 1) <= 0.011


def test_output_is_rgb_images_of_the_model_size(tiny_pipe):
    images = tiny_pipe("red apple", num_images=3, steps=STEPS, seed=0)
    assert isinstance(images, list) and len(images) == 3
    for im in images:
        assert isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (64, 64)
    # Different seeds give different images.
    a = [arr(im) for im in images]
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp_2m", "euler", "euler_a", "heun", "plms"])
def test_image_depends_only_on_its_seed_not_on_the_batch(tiny_pipe, sampler):
    assert sampler in tiny_pipe.samplers
    alone = tiny_pipe("dog face", seed=12, steps=STEPS, sampler=sampler)[0]
    assert arr(alone).std() > 1  # a real image, not a constant (e.g. NaN latents decode to black)
    for batch_size in (2, 4):
        batch = tiny_pipe("dog face", num_images=4, seed=10, steps=STEPS, sampler=sampler, batch_size=batch_size)
        assert batch[2].info[PARAMS_KEY]["seed"] == 12
        assert_same_picture(alone, batch[2], (sampler, batch_size))  # the noise itself is per image
    again = tiny_pipe("dog face", seed=12, steps=STEPS, sampler=sampler)[0]
    assert np.array_equal(arr(alone), arr(again))
    assert not np.array_equal(arr(alone), arr(batch[0]))


def test_every_model_sampler_is_tested(tiny_pipe):
    assert sorted(tiny_pipe.samplers) == ["ddim", "ddpm", "dpmpp_2m", "euler", "euler_a", "heun", "plms"]


def test_explicit_seed_list(tiny_pipe):
    pair = tiny_pipe("rocket", num_images=2, seed=[7, 3], steps=STEPS)
    single = tiny_pipe("rocket", seed=3, steps=STEPS)[0]
    assert [im.info[PARAMS_KEY]["seed"] for im in pair] == [7, 3]
    assert_same_picture(pair[1], single)  # a batch of 2 against a batch of 1
    with pytest.raises(MinicreamError, match="seeds"):
        tiny_pipe("rocket", num_images=3, seed=[1, 2], steps=STEPS)


def test_negative_prompt_changes_the_output(tiny_pipe):
    base = tiny_pipe("pizza", seed=5, steps=STEPS, guidance=4.0)[0]
    neg = tiny_pipe("pizza", negative_prompt="banana", seed=5, steps=STEPS, guidance=4.0)[0]
    assert not np.array_equal(arr(base), arr(neg))
    assert neg.info[PARAMS_KEY]["negative_prompt"] == "banana"
    # With guidance 1 only the conditional branch runs: the negative prompt cannot matter.
    g1 = tiny_pipe("pizza", seed=5, steps=STEPS, guidance=1.0)[0]
    g1_neg = tiny_pipe("pizza", negative_prompt="banana", seed=5, steps=STEPS, guidance=1.0)[0]
    assert np.array_equal(arr(g1), arr(g1_neg))


def test_prompt_changes_the_output(tiny_pipe):
    a = tiny_pipe("pizza", seed=5, steps=STEPS)[0]
    b = tiny_pipe("rocket", seed=5, steps=STEPS)[0]
    assert not np.array_equal(arr(a), arr(b))


def test_generation_parameters(tiny_pipe, tiny_model, tmp_path):
    im = tiny_pipe("red apple", negative_prompt="blurry", seed=42, steps=STEPS, guidance=2.5, sampler="euler")[0]
    p = im.info[PARAMS_KEY]
    assert p["prompt"] == "red apple" and p["negative_prompt"] == "blurry"
    assert p["seed"] == 42 and p["steps"] == STEPS and p["sampler"] == "euler" and p["cfg_scale"] == 2.5
    assert p["width"] == p["height"] == 64
    assert p["model_hash"] == short_hash(tiny_model / "unet" / "model.safetensors") and len(p["model_hash"]) == 10
    save_png(im, tmp_path / "x.png", p)
    assert read_png_params(tmp_path / "x.png") == p


def test_defaults_come_from_the_model(tiny_pipe):
    calls = []
    im = tiny_pipe("banana", seed=1, callback=lambda i, n: calls.append((i, n)))[0]
    p = im.info[PARAMS_KEY]
    assert (p["steps"], p["sampler"], p["cfg_scale"]) == (4, "dpmpp_2m", 4.0)  # tiny preset [sample]
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_step_callback_sees_each_chunk_and_may_replace_the_latents(tiny_pipe):
    """step_callback(step, t, x) after every step of every chunk, with that chunk's images only (no padding rows);
    None changes nothing, a tensor replaces the latents: zeros after the last step decode to the zero latent's
    picture."""
    plain = tiny_pipe("red apple", num_images=3, seed=0, steps=STEPS, batch_size=2)
    seen = []
    watched = tiny_pipe("red apple", num_images=3, seed=0, steps=STEPS, batch_size=2,
                        step_callback=lambda step, t, x: seen.append((step, t, len(x))))
    assert all(np.array_equal(arr(a), arr(b)) for a, b in zip(plain, watched))
    assert seen == [(i + 1, t, n) for n in (2, 1) for i, t in enumerate((999, 749, 499, 249))]

    def zero_at_the_end(step, t, x):
        return torch.zeros_like(x) if step == STEPS else None

    images = tiny_pipe("red apple", num_images=3, seed=0, steps=STEPS, batch_size=2, step_callback=zero_at_the_end)
    zero = tiny_pipe.decode(torch.zeros(1, *tiny_pipe.latent_shape))[0].permute(1, 2, 0).numpy()
    for im in images:  # decoded in chunks of 2 and 1, against a batch of 1
        assert_same_picture(im, zero)


@pytest.mark.parametrize("kwargs, match", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   \n\t"}, "prompt"),
    ({"steps": 0}, "steps"),
    ({"steps": 10000}, "steps"),
    ({"steps": MAX_STEPS + 1}, "steps"),
    ({"guidance": -1.0}, "guidance"),
    ({"sampler": "nope"}, "nope"),
    ({"num_images": 0}, "num_images"),
    ({"num_images": -3}, "num_images"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_inputs_raise(tiny_pipe, kwargs, match):
    args = {"prompt": "red apple", "steps": 2, **kwargs}
    with pytest.raises(MinicreamError, match=match):
        tiny_pipe(args.pop("prompt"), **args)


def _copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_model_index(tiny_model, tmp_path):
    model = _copy_model(tiny_model, tmp_path / "m")
    (model / "model_index.json").unlink()
    with pytest.raises(MinicreamError, match="model_index.json"):
        Pipeline.from_pretrained(model)
    with pytest.raises(MinicreamError, match="model_index.json"):
        Pipeline.from_pretrained(tmp_path / "does-not-exist")


def test_corrupt_model_index(tiny_model, tmp_path):
    model = _copy_model(tiny_model, tmp_path / "m")
    (model / "model_index.json").write_text("{oops")
    with pytest.raises(MinicreamError, match="model_index.json"):
        Pipeline.from_pretrained(model)


@pytest.mark.parametrize("part", ["unet", "vae"])
def test_pickled_weights_are_refused(tiny_model, tmp_path, part):
    model = _copy_model(tiny_model, tmp_path / "m")
    weights = model / part / "model.safetensors"
    torch.save({"weight": torch.zeros(3)}, weights)  # a pickle (in a zip) under a .safetensors name
    with pytest.raises(MinicreamError, match=rf"{part}/model\.safetensors.*(pickle|torch\.save)"):
        Pipeline.from_pretrained(model)


def test_truncated_weights_are_refused(tiny_model, tmp_path):
    model = _copy_model(tiny_model, tmp_path / "m")
    weights = model / "unet" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(MinicreamError, match=r"unet/model\.safetensors.*truncated"):
        Pipeline.from_pretrained(model)


# --- UNet precision ----------------------------------------------------------------------------------


def test_unet_dtype_auto_follows_the_hardware_and_bf16_or_fp32_on_request(tiny_model, tiny_pipe):
    """auto (default): bf16 weights where bf16 is fast (AMX / AVX512-BF16 / CUDA), fp32 elsewhere."""
    auto = torch.bfloat16 if fast_bf16() else torch.float32
    assert tiny_pipe.unet_dtype == auto and next(tiny_pipe.unet.parameters()).dtype == auto
    bf16 = Pipeline.from_pretrained(tiny_model, dtype="bf16")
    fp32 = Pipeline.from_pretrained(tiny_model, dtype="fp32")
    assert next(bf16.unet.parameters()).dtype == torch.bfloat16 and next(fp32.unet.parameters()).dtype == torch.float32
    a = bf16("red apple", num_images=2, steps=STEPS, seed=3)
    b = fp32("red apple", num_images=2, steps=STEPS, seed=3)
    assert a[0].info[PARAMS_KEY]["dtype"] == "bf16" and b[0].info[PARAMS_KEY]["dtype"] == "fp32"
    for x, y in zip(a, b):  # the same model in two precisions: the same picture to within bf16 rounding
        d = np.abs(arr(x).astype(int) - arr(y).astype(int))
        assert d.mean() < 2.0 and d.max() <= 32
    again = fp32("red apple", num_images=2, steps=STEPS, seed=3)
    assert all(np.array_equal(arr(x), arr(y)) for x, y in zip(b, again))


def test_precision_switch_known_answers(monkeypatch):
    from minicream.precision import training_precision

    monkeypatch.setenv("MINICREAM_BF16", "0")
    assert not fast_bf16() and training_precision("bf16", "cpu") == "no" and training_precision("no", "cpu") == "no"
    monkeypatch.setenv("MINICREAM_BF16", "1")
    assert fast_bf16("cpu") and training_precision("bf16", "cpu") == "bf16"


def test_bf16_is_chosen_only_where_timed_faster(monkeypatch):
    """Flags that promise bf16 are not enough: a CPU whose bf16 convolution and GEMM time slower than fp32 runs fp32."""
    from minicream import precision

    monkeypatch.delenv("MINICREAM_BF16", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    for fp32_s, bf16_s, expected in [(1.0, 0.1, True), (1.0, 1.6, False), (1.0, 0.9, False)]:
        monkeypatch.setattr(precision, "_cpu_seconds", lambda dt, a=fp32_s, b=bf16_s: a if dt == torch.float32 else b)
        precision._cpu_fast_bf16.cache_clear()
        assert precision.fast_bf16("cpu") is expected
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(precision, "_cpu_seconds", lambda dt: 1.0 if dt == torch.float32 else 0.1)
    precision._cpu_fast_bf16.cache_clear()
    assert precision.fast_bf16("cpu") is False  # no bf16 instructions: never timed, fp32
    precision._cpu_fast_bf16.cache_clear()


def test_unknown_dtype_is_refused(tiny_model):
    with pytest.raises(MinicreamError, match="unknown dtype 'fp8'"):
        Pipeline.from_pretrained(tiny_model, dtype="fp8")
