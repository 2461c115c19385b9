"""The command line: exit codes, one-line errors, PNG round trips. Uses the tiny model from conftest.py."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from minicream.cli import main
from minicream.io.pngmeta import read_png_params, save_png
from minicream.precision import fast_bf16


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """`python -m minicream.cli ARGS` in a fresh interpreter (what a user sees, tracebacks included)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "minicream.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def call(capsys, *args: str) -> tuple[int, str, str]:
    """main(ARGS) in-process; argparse's exits (--help, bad flags) become return codes."""
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def nonempty_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = nonempty_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


# --- errors in a real subprocess ----------------------------------------------------------------------


def test_empty_prompt_is_one_line_error_without_traceback(tiny_model, tmp_path):
    proc = run_cli("generate", "", "--model", str(tiny_model), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert_one_line_error(proc.returncode, proc.stderr, "prompt")
    assert not (tmp_path / "o").exists()


def test_nonexistent_model_is_one_line_error(tmp_path):
    proc = run_cli("generate", "red apple", "--model", "/nonexistent/model", cwd=tmp_path)
    assert_one_line_error(proc.returncode, proc.stderr, "/nonexistent/model", "model_index.json")


# --- generate / info / --from -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_out")
    proc = run_cli("generate", "red apple", "--model", str(tiny_model), "-n", "2", "--steps", "3", "--seed", "100",
                   "--out", str(out), cwd=out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc


def test_generate_writes_pngs_with_parameters(generated):
    out, proc = generated
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["red_apple_100.png", "red_apple_101.png"]
    assert nonempty_lines(proc.stdout) == [str(p) for p in pngs]
    for seed, p in zip((100, 101), pngs):
        with Image.open(p) as im:
            assert im.mode == "RGB" and im.size == (64, 64)
        params = read_png_params(p)
        assert params["prompt"] == "red apple" and params["seed"] == seed and params["steps"] == 3
        assert params["sampler"] == "dpmpp_2m" and params["cfg_scale"] == 4.0  # the model's defaults


def test_info_prints_prompt_and_seed(generated, capsys):
    out, _ = generated
    code, stdout, err = call(capsys, "info", str(out / "red_apple_101.png"))
    assert code == 0
    lines = stdout.splitlines()
    assert "prompt: red apple" in lines and "seed: 101" in lines and "steps: 3" in lines


def test_generate_from_png_reproduces_the_image(generated, tiny_model, tmp_path):
    out, _ = generated
    src = out / "red_apple_101.png"
    proc = run_cli("generate", "--from", str(src), "--model", str(tiny_model), "--out", str(tmp_path / "again"),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = tmp_path / "again" / "red_apple_101.png"  # -n defaults to 4: seeds 101..104
    assert again.is_file()
    assert len(list((tmp_path / "again").glob("*.png"))) == 4
    with Image.open(src) as a, Image.open(again) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert read_png_params(again) == read_png_params(src)


def test_generate_from_png_with_overrides(generated, tiny_model, tmp_path, capsys):
    out, _ = generated
    code, stdout, err = call(capsys, "generate", "--from", str(out / "red_apple_100.png"), "--model", str(tiny_model),
                             "-n", "1", "--steps", "2", "--sampler", "euler", "--out", str(tmp_path), "--grid")
    assert code == 0, err
    params = read_png_params(tmp_path / "red_apple_100.png")
    assert (params["prompt"], params["seed"], params["steps"], params["sampler"]) == ("red apple", 100, 2, "euler")
    assert not (tmp_path / "red_apple_grid.png").exists()  # a grid only for more than one image


def test_guidance_max_noise_is_recorded_and_rerun(generated, tiny_model, tmp_path, capsys):
    """--guidance-max-noise changes the image, is stored in the PNG, and --from re-runs it (and an image that
    stores none re-runs at 1, guidance at every step, whatever the model's default)."""
    out, _ = generated
    code, _, err = call(capsys, "generate", "red apple", "--model", str(tiny_model), "-n", "1", "--steps", "3",
                        "--seed", "100", "--guidance-max-noise", "0.5", "--out", str(tmp_path / "half"))
    assert code == 0, err
    half = tmp_path / "half" / "red_apple_100.png"
    assert read_png_params(half)["guidance_max_noise"] == 0.5
    assert "Guidance max noise: 0.5" in Image.open(half).text["parameters"]
    with Image.open(half) as a, Image.open(out / "red_apple_100.png") as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))
    assert "guidance_max_noise" not in read_png_params(out / "red_apple_100.png")  # 1 is not written
    code, _, err = call(capsys, "generate", "--from", str(half), "--model", str(tiny_model), "-n", "1",
                        "--out", str(tmp_path / "again"))
    assert code == 0, err
    with Image.open(half) as a, Image.open(tmp_path / "again" / "red_apple_100.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    code, _, err = call(capsys, "generate", "red apple", "--model", str(tiny_model), "-n", "1", "--steps", "1",
                        "--guidance-max-noise", "0", "--out", str(tmp_path / "bad"))
    assert code == 2 and "guidance_max_noise must be a number in (0, 1]" in err and not (tmp_path / "bad").exists()


def test_cads_is_recorded_and_rerun(generated, tiny_model, tmp_path, capsys):
    """--cads changes the image, is stored in the PNG, and --from re-runs it exactly; a bad scale is a one-line error."""
    out, _ = generated
    code, _, err = call(capsys, "generate", "red apple", "--model", str(tiny_model), "-n", "2", "--steps", "3",
                        "--seed", "100", "--cads", "0.5", "--out", str(tmp_path / "cads"))
    assert code == 0, err
    first = tmp_path / "cads" / "red_apple_100.png"
    assert read_png_params(first)["cads"] == 0.5 and "cads" not in read_png_params(out / "red_apple_100.png")
    with Image.open(first) as a, Image.open(out / "red_apple_100.png") as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))
    code, _, err = call(capsys, "generate", "--from", str(first), "--model", str(tiny_model), "-n", "2",
                        "--out", str(tmp_path / "again"))
    assert code == 0, err
    with Image.open(first) as a, Image.open(tmp_path / "again" / "red_apple_100.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # the same -n: bit for bit (README, "Seeds are per image")
    second = tmp_path / "cads" / "red_apple_101.png"
    code, _, err = call(capsys, "generate", "--from", str(second), "--model", str(tiny_model), "-n", "1",
                        "--out", str(tmp_path / "alone"))
    assert code == 0, err
    with Image.open(second) as a, Image.open(tmp_path / "alone" / "red_apple_101.png") as b:
        # Alone, the second image's CADS noise is still the image's own (seeded), not the batch's: the image moves only by what another
        # batch size moves any image (oneDNN's kernels depend on it; test_pipeline allows 4 levels, mean 0.5).
        d = np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int))
        assert d.max() <= 4 and d.mean() < 0.5, d.max()
    code, _, err = call(capsys, "generate", "red apple", "--model", str(tiny_model), "-n", "1", "--steps", "1",
                        "--cads", "-1", "--out", str(tmp_path / "bad"))
    assert code == 2 and "cads must be a number in [0, 10]" in err and not (tmp_path / "bad").exists()


def test_generate_grid(tiny_model, tmp_path, capsys):
    code, stdout, err = call(capsys, "generate", "dog face", "--model", str(tiny_model), "-n", "2", "--steps", "1",
                             "--out", str(tmp_path), "--grid", "--seed", "0")
    assert code == 0, err
    assert (tmp_path / "dog_face_grid.png").is_file()
    assert len(nonempty_lines(stdout)) == 3


# --- more user errors (in-process: the same main(), no interpreter start) -------------------------------


def test_unknown_sampler(tiny_model, tmp_path, capsys):
    code, _, err = call(capsys, "generate", "red apple", "--model", str(tiny_model), "--sampler", "nope",
                        "--out", str(tmp_path))
    assert_one_line_error(code, err, "nope", "dpmpp_2m")
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("args, fragment", [
    (["--steps", "0"], "steps"),
    (["--steps", "-5"], "steps"),
    (["--steps", "10000"], "steps"),
    (["--batch-size", "-4"], "batch_size"),
    (["--guidance", "-1"], "guidance"),
    (["-n", "0"], "num_images"),
])
def test_bad_generate_values(tiny_model, tmp_path, capsys, args, fragment):
    code, _, err = call(capsys, "generate", "red apple", "--model", str(tiny_model), "--out", str(tmp_path), *args)
    assert_one_line_error(code, err, fragment)


def test_whitespace_prompt(tiny_model, tmp_path, capsys):
    code, _, err = call(capsys, "generate", "   ", "--model", str(tiny_model), "--out", str(tmp_path))
    assert_one_line_error(code, err, "prompt")


def test_pickled_unet_weights(tiny_model, tmp_path, capsys):
    import shutil

    import torch

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    torch.save({"w": torch.zeros(2)}, model / "unet" / "model.safetensors")
    code, _, err = call(capsys, "generate", "red apple", "--model", str(model), "--out", str(tmp_path))
    assert_one_line_error(code, err, str(model / "unet" / "model.safetensors"), "not a safetensors file")


def test_info_on_non_png(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = call(capsys, "info", str(tmp_path / "notes.txt"))
    assert_one_line_error(code, err, "not a PNG")
    code, _, err = call(capsys, "info", str(tmp_path / "missing.png"))
    assert_one_line_error(code, err, "not found")


def test_info_on_png_without_parameters(tmp_path, capsys):
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    code, _, err = call(capsys, "info", str(tmp_path / "plain.png"))
    assert_one_line_error(code, err, "no generation parameters")


# --- train ---------------------------------------------------------------------------------------------


def test_train_dry_run_prints_the_resolved_toml(capsys):
    code, out, err = call(capsys, "train", "--config", "tiny", "--dry-run")
    assert code == 0, err
    cfg = tomllib.loads(out)
    assert cfg["unet"]["model"]["channels"] == [32, 64]
    assert cfg["unet"]["train"]["steps"] == 4 and cfg["sample"]["steps"] == 4
    assert cfg["autoencoder"]["model"]["channels"] == [16, 16, 32]
    assert cfg["data"]["limit"] == 48 and cfg["text"]["max_length"] == 16


def test_train_flags_and_set_map_to_config_fields(capsys, tmp_path):
    code, out, err = call(capsys, "train", "--config", "tiny", "--dry-run", "--steps", "7", "--moe", "none",
                          "--objective", "flow", "--lr", "0.002", "--data", str(tmp_path), "--deterministic",
                          "--set", "unet.model.top_k=2", "--set", 'sample.sampler="euler"')
    assert code == 0, err
    cfg = tomllib.loads(out)
    assert cfg["unet"]["train"]["steps"] == 7 and cfg["unet"]["train"]["lr"] == 0.002
    assert cfg["unet"]["model"]["moe"] == "none" and cfg["unet"]["model"]["top_k"] == 2
    assert cfg["unet"]["objective"] == "flow" and cfg["data"]["source"] == str(tmp_path)
    assert cfg["unet"]["train"]["deterministic"] is True and cfg["autoencoder"]["train"]["deterministic"] is True
    assert cfg["sample"]["sampler"] == "euler"


def test_dry_run_output_loads_back_as_a_config(capsys, tmp_path):
    code, out, _ = call(capsys, "train", "--config", "tiny", "--dry-run")
    (tmp_path / "mine.toml").write_text(out)
    code2, out2, err2 = call(capsys, "train", "--config", str(tmp_path / "mine.toml"), "--dry-run")
    assert code == code2 == 0, err2
    assert out2 == out


def test_train_unknown_key(capsys):
    code, _, err = call(capsys, "train", "--config", "tiny", "--set", "unet.model.nope=1", "--dry-run")
    assert_one_line_error(code, err, "unknown key", "nope")


@pytest.mark.parametrize("args, fragment", [
    (["--config", "no-such-preset"], "no-such-preset"),
    (["--set", "unet.model.channels"], "section.key=value"),
    (["--set", "unet.model.moe=\"dense\""], "moe"),
    (["--set", "unet=3"], "[unet] must be a table"),
    (["--config", "tiny", "--batch-size", "-4"], "unet.train.batch_size"),
    (["--config", "tiny", "--steps", "-5"], "unet.train.steps"),
    (["--config", "tiny", "--grad-accum", "0"], "unet.train.grad_accum"),
])
def test_train_bad_config(capsys, args, fragment):
    code, _, err = call(capsys, "train", "--dry-run", *args)
    assert_one_line_error(code, err, fragment)


def test_train_refuses_a_non_empty_run_dir(capsys, tmp_path):
    (tmp_path / "something").write_text("x")
    code, _, err = call(capsys, "train", "--config", "tiny", "--out", str(tmp_path))
    assert_one_line_error(code, err, "not empty", "--resume")


# --- help / argparse -------------------------------------------------------------------------------------


def _subcommands() -> list[list[str]]:
    """Every (nested) subcommand of the parser, e.g. [], ["train"], ["data", "emoji"]."""
    import argparse

    from minicream.cli import build_parser

    found = []

    def walk(parser, prefix):
        found.append(prefix)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, prefix + [name])

    walk(build_parser(), [])
    return found


def test_subcommands_are_known():
    names = {" ".join(s) for s in _subcommands()}
    assert {"", "data", "data emoji", "train", "generate", "info", "samplers"} <= names


@pytest.mark.parametrize("sub", _subcommands(), ids=lambda s: " ".join(s) or "minicream")
def test_help_for_every_subcommand(capsys, sub):
    code, out, err = call(capsys, *sub, "--help")
    assert code == 0
    assert out.startswith("usage: minicream") and "Traceback" not in err


def test_argparse_errors_exit_2(capsys):
    code, _, err = call(capsys, "generate", "x", "--steps", "many")
    assert code == 2 and "invalid int value" in err
    code, _, err = call(capsys)
    assert code == 2 and "usage:" in err


def test_grid_command(tiny_model, tmp_path, capsys):
    out = tmp_path / "g" / "grid.png"
    code, stdout, err = call(capsys, "grid", "red apple", "pizza", "--model", str(tiny_model), "--per-prompt", "1",
                             "--steps", "1", "--out", str(out))
    assert code == 0, err
    assert nonempty_lines(stdout) == [str(out)]
    with Image.open(out) as im:
        assert im.width >= 2 * 64 and im.height >= 2 * 64  # 2 prompts x 2 styles, 64 px each


def test_samplers_lists_both_families(capsys):
    code, out, _ = call(capsys, "samplers")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("ddim, ddpm, dpmpp_2m, euler, euler_a, heun, plms")
    assert lines[1].endswith("euler, heun")


def test_generate_from_a_png_without_dtype_reruns_it_in_fp32(generated, tiny_model, tmp_path, capsys):
    """PNGs from before bf16 sampling carry no dtype: they were drawn with fp32 weights under autocast."""
    out, _ = generated
    src = out / "red_apple_100.png"
    params = read_png_params(src)
    assert params["dtype"] == ("bf16" if fast_bf16() else "fp32")  # --dtype auto: bf16 only where it is fast
    code, _, err = call(capsys, "generate", "red apple", "--model", str(tiny_model), "-n", "1", "--seed", "100",
                        "--steps", str(params["steps"]), "--dtype", "fp32", "--out", str(tmp_path / "fp32"))
    assert code == 0, err
    old = tmp_path / "old.png"
    with Image.open(tmp_path / "fp32" / "red_apple_100.png") as im:
        legacy = {k: v for k, v in read_png_params(tmp_path / "fp32" / "red_apple_100.png").items() if k != "dtype"}
        save_png(im.copy(), old, legacy)
    code, _, err = call(capsys, "generate", "--from", str(old), "--model", str(tiny_model), "-n", "1", "--out", str(tmp_path / "again"))
    assert code == 0, err
    again = tmp_path / "again" / "red_apple_100.png"
    assert read_png_params(again)["dtype"] == "fp32"
    with Image.open(old) as a, Image.open(again) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


# --- issue 29: inputs that must be one-line errors (exit 2), not "unexpected" crashes ---------------------------


def forged_png(path, text: str):
    """A PNG whose `minicream` chunk holds `text` as it is (anyone can write one)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("minicream", text)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return str(path)


@pytest.mark.parametrize("command, stored, key", [
    ("generate", {"negative_prompt": 5}, "negative_prompt"),
    ("generate", {"harmonize": "strong", "layout": {"objects": [{"caption": "x", "box": [0, 0, 8, 8]}]}}, "harmonize"),
    ("generate", {"mode": ["img2img"]}, "mode"),
    ("generate", {"filter_explanation": 3}, "filter_explanation"),
    ("edit", {"mode": "img2img", "strength": "x"}, "strength"),
    ("edit", {"mode": "img2img", "seed": 1.5}, "seed"),
])
def test_from_a_png_whose_settings_have_wrong_types(tmp_path, capsys, command, stored, key):
    import json

    png = forged_png(tmp_path / "forged.png", json.dumps({"prompt": "red apple", "steps": 1, "seed": 1, **stored}))
    source = tmp_path / "in.png"
    Image.new("RGB", (64, 64), "white").save(source)
    args = [command, "--from", png] if command == "generate" else [command, str(source), "rocket", "--from", png]
    code, _, err = call(capsys, *args, "--model", "onestep", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, f"the stored {key} is", "not a")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["info", "generate", "edit"])
def test_deeply_nested_json_in_a_png_is_one_line(tmp_path, capsys, command):
    png = forged_png(tmp_path / "deep.png", '{"prompt": "x", "a": ' + "[" * 50_000 + "]" * 50_000 + "}")
    Image.new("RGB", (64, 64)).save(tmp_path / "in.png")
    args = {"info": ["info", png], "generate": ["generate", "--from", png],
            "edit": ["edit", str(tmp_path / "in.png"), "x", "--from", png]}[command]
    code, _, err = call(capsys, *args, *(["--model", "onestep", "--out", str(tmp_path / "o")] if command != "info" else []))
    assert_one_line_error(code, err, "nests JSON deeper than 64 levels")


def test_layout_that_is_not_a_regular_file_is_not_read(tmp_path, capsys):
    code, _, err = call(capsys, "generate", "red apple", "--layout", "/dev/zero", "--model", "onestep",
                        "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "/dev/zero", "not a regular file")


def test_train_seed_out_of_range_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import minicream.training.recipe as recipe

    monkeypatch.setattr(recipe, "run_recipe", lambda *a, **k: pytest.fail("training started"))
    code, _, err = call(capsys, "train", "--config", "tiny", "--seed", "99999999999999999999999", "--out", str(tmp_path / "r"))
    assert code == 2 and "--seed: must be in 0..4294967295" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_train_with_a_mistyped_or_empty_data_folder_leaves_no_run_folder(tmp_path, capsys):
    """A rerun with the right --data must not be refused as 'not empty' (nor need the folder deleted by hand)."""
    run = tmp_path / "run"
    code, _, err = call(capsys, "train", "--config", "tiny", "--data", str(tmp_path / "phots"), "--out", str(run))
    assert_one_line_error(code, err, "--data", "phots", "no such folder")
    (tmp_path / "empty").mkdir()
    code, _, err = call(capsys, "train", "--config", "tiny", "--data", str(tmp_path / "empty"), "--out", str(run))
    assert code == 2 and "no captioned images" in err and "Traceback" not in err
    assert not run.exists()


def test_blend_with_a_mistyped_image_path_is_an_error(tmp_path, capsys):
    code, _, err = call(capsys, "blend", str(tmp_path / "phot.png"), "rocket", "--model", "onestep",
                        "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "phot.png", "looks like an image path", "no such file")
    assert not (tmp_path / "o").exists()
    code, out, err = call(capsys, "blend", "red apple", "rocket", "--frames", "2", "--model", "onestep",
                          "--out", str(tmp_path / "o"))
    assert code == 0 and out.count(".png") == 1, err  # prompts stay prompts
