"""Issue 17, the remaining cases: broken model folders (NaN weights, a wrong image size), escape codes in PNG
metadata, one error boundary in the CLI (expected: one line; unexpected: one line + a traceback log), best-of-N seeds
that every API takes, CORS only when asked for, no server paths in API errors."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin
from safetensors.torch import load_file, save_file

from minicream.cli import main
from minicream.errors import MinicreamError
from minicream.evaluator.rerank import candidate_seeds
from minicream.io.pngmeta import read_png_params, save_png
from minicream.pipelines import Pipeline
from minicream.serve import ServeSettings, create_app
from minicream.serve.errors import hide_paths
from serve_fakes import FakePipe


def one_line(err: str) -> str:
    lines = [line.split("\r")[-1].strip() for line in err.splitlines()]
    lines = [line for line in lines if line and not line.startswith("warning:") and "%|" not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_nan_weights_are_an_error_not_a_black_png(tiny_model, tmp_path, capsys):
    broken = tmp_path / "nan"
    shutil.copytree(tiny_model, broken)
    weights = broken / "unet" / "model.safetensors"
    state = load_file(weights)
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, weights)
    code = main(["generate", "red apple", "--model", str(broken), "-n", "1", "--steps", "2", "--out", str(tmp_path / "o")])
    assert code == 2 and "NaN" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.png"))


def test_image_size_must_match_the_networks(tiny_model, tmp_path):
    bad = tmp_path / "m"
    shutil.copytree(tiny_model, bad)
    index = json.loads((bad / "model_index.json").read_text())
    (bad / "model_index.json").write_text(json.dumps({**index, "image_size": 128}))
    with pytest.raises(MinicreamError, match="image_size 128.*draw 64 px"):
        Pipeline.from_pretrained(bad)


def test_metadata_control_characters_never_reach_the_terminal_or_the_png(tmp_path, capsys):
    path = tmp_path / "a.png"
    save_png(Image.new("RGB", (8, 8)), path, {"prompt": "apple\x1b[31m red\x00", "seed": 1})
    assert "\x1b" not in read_png_params(path)["prompt"] and "\x00" not in read_png_params(path)["prompt"]
    forged = tmp_path / "forged.png"  # written by someone else: raw escape codes in the chunk
    info = PngImagePlugin.PngInfo()
    info.add_text("minicream", json.dumps({"prompt": "x\x1b]0;pwned\x07\x1b[2J", "seed": 2}))
    Image.new("RGB", (8, 8)).save(forged, pnginfo=info)
    assert main(["info", str(forged)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "seed: 2" in out


def test_cli_unexpected_error_is_one_line_with_a_traceback_log(monkeypatch, tmp_path, capsys):
    import minicream.cli.info as cli

    monkeypatch.setenv("MINICREAM_CACHE", str(tmp_path))

    def boom(args):
        raise RuntimeError("something internal\nsecond line")

    monkeypatch.setattr(cli, "cmd_samplers", boom)
    assert main(["samplers"]) == 1
    line = one_line(capsys.readouterr().err)
    assert "unexpected RuntimeError: something internal" in line and "traceback in" in line
    [log] = list((tmp_path / "crash").glob("*.log"))
    assert "Traceback" in log.read_text() and "second line" in log.read_text()


def test_cli_os_errors_are_one_line(tiny_model, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["generate", "red apple", "--model", str(tiny_model), "-n", "1", "--steps", "1", "--out", str(blocker / "sub")])
    assert code == 1 and str(blocker) in one_line(capsys.readouterr().err)


def test_best_of_n_seeds_are_valid_http_seeds():
    seeds = candidate_seeds([2**31 - 1, 0, 12345], 8)
    assert all(0 <= s < 2**31 for s in seeds)
    assert candidate_seeds([7], 4)[0] == 7 and len(set(seeds)) == len(seeds)


def test_cors_only_when_configured(tmp_path):
    def preflight(settings):
        client = TestClient(create_app(FakePipe(), settings), base_url="http://127.0.0.1")
        return client.options("/api/generate", headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"})

    r = preflight(ServeSettings(output_dir=tmp_path, token=None))
    assert "access-control-allow-origin" not in r.headers
    r = preflight(ServeSettings(output_dir=tmp_path, token=None, cors_origins=("http://localhost:3000",)))
    assert r.headers.get("access-control-allow-origin") == "http://localhost:3000"


def test_api_errors_hide_server_paths():
    msg = "/srv/models/mine has no image evaluator (/srv/models/mine/evaluator is missing); use 1/2 or a/b"
    assert hide_paths(msg) == "mine has no image evaluator (evaluator is missing); use 1/2 or a/b"


# -- files that are truncated, forged, too large, or cannot be written ---------------------------------------------
def test_truncated_checkpoint_state_and_stage_files_are_one_line_errors(tmp_path):
    from minicream.training.checkpoint import load_checkpoint
    from minicream.training.recipe import _stage_done

    ckpt = tmp_path / "checkpoints" / "step_00000010"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text('{"step": 10, "optim')
    with pytest.raises(MinicreamError, match="truncated or not valid JSON.*delete that step"):
        load_checkpoint(ckpt)
    (ckpt / "state.json").write_text("[1, 2]")
    with pytest.raises(MinicreamError, match="not a checkpoint state"):
        load_checkpoint(ckpt)
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "unet.json").write_bytes(b'{"steps": 1')
    with pytest.raises(MinicreamError, match="redo stage 'unet'"):
        _stage_done(tmp_path, "unet")


def test_forged_png_settings_for_generate_from(tiny_model, tmp_path, capsys):
    for forged_values, word in (({"seed": 2**70}, "seed"), ({"steps": "abc"}, "steps")):
        forged = tmp_path / "forged.png"
        save_png(Image.new("RGB", (8, 8)), forged, {"prompt": "red apple", "steps": 1, "seed": 1, **forged_values})
        code = main(["generate", "--from", str(forged), "--model", str(tiny_model), "--out", str(tmp_path / "o")])
        assert code != 0 and word in one_line(capsys.readouterr().err)


def test_info_reads_metadata_without_decoding_pixels(tmp_path, monkeypatch, capsys):
    """`info` walks the PNG's chunks and never decodes the image: one beyond Pillow's pixel limit (a decompression
    bomb to Image.open) still shows its parameters, instantly; text after the image data is found too."""
    big = tmp_path / "big.png"
    save_png(Image.new("RGB", (64, 64)), big, {"prompt": "x"})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4,096 pixels > 2x the limit: Image.open would refuse
    assert main(["info", str(big)]) == 0
    assert "prompt: x" in capsys.readouterr().out


def _png_with_chunks(path: Path, *chunks: tuple[bytes, bytes]) -> None:
    """A 1x1 PNG with extra chunks after the image data (where `info` must still look)."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    raw = buf.getvalue()
    end = raw.rindex(b"IEND") - 4
    extra = b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks)
    path.write_bytes(raw[:end] + extra + raw[end:])


def test_png_text_chunks_bombs_and_corruption(tmp_path, capsys):
    import zlib

    from minicream.io.pngmeta import MAX_TEXT_CHUNK, read_png_text

    params = b'{"prompt": "\\u00e9t\\u00e9", "seed": 3}'
    ok = tmp_path / "ok.png"
    _png_with_chunks(ok, (b"zTXt", b"minicream\0\0" + zlib.compress(params)),
                     (b"iTXt", b"note\0\0\0en\0\0" + "été".encode()), (b"tEXt", b"note\0last"))
    assert read_png_text(ok) == {"minicream": params.decode(), "note": "last"}
    assert main(["info", str(ok)]) == 0 and "prompt: été" in capsys.readouterr().out
    bomb = tmp_path / "bomb.png"  # 64 MB of text in a 64 KB chunk: refused, not inflated
    _png_with_chunks(bomb, (b"zTXt", b"minicream\0\0" + zlib.compress(b"a" * (64 << 20))))
    cases = {bomb: f"larger than {MAX_TEXT_CHUNK} bytes"}
    bad_crc = tmp_path / "crc.png"
    _png_with_chunks(bad_crc, (b"tEXt", b"minicream\0{}"))
    data = bytearray(bad_crc.read_bytes())
    data[data.index(b"minicream\0{}") + 10] ^= 1
    bad_crc.write_bytes(bytes(data))
    cases[bad_crc] = "fails its CRC"
    cut = tmp_path / "cut.png"
    cut.write_bytes(ok.read_bytes()[:-20])
    cases[cut] = "corrupt PNG (truncated"
    for path, words in cases.items():
        assert main(["info", str(path)]) != 0
        assert words in one_line(capsys.readouterr().err)


def test_model_config_files_with_wrong_types_are_refused(tiny_model, tmp_path):
    from minicream.models.autoencoder import load_autoencoder
    from minicream.models.build import load_unet

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    cfg = json.loads((model / "unet" / "config.json").read_text())
    (model / "unet" / "config.json").write_text(json.dumps({**cfg, "head_dim": "64"}))
    with pytest.raises(MinicreamError, match="config.json"):
        load_unet(model / "unet")
    (model / "vae" / "config.json").write_text('{"block_out_channels": 7')
    with pytest.raises(MinicreamError, match="not valid JSON"):
        load_autoencoder(model / "vae")
    (model / "vae" / "config.json").write_text('{"block_out_channels": "abc", "latent_channels": 4}')
    with pytest.raises(MinicreamError, match="config.json"):
        load_autoencoder(model / "vae")


def test_eval_without_a_dataset_names_the_command(tiny_evaluated_model, tmp_path, capsys):
    code = main(["eval", "--model", str(tiny_evaluated_model), "--benchmark", "concepts", "--data", str(tmp_path / "none"),
                 "--out", str(tmp_path / "report")])
    assert code != 0 and "minicream data emoji" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "report").exists()


def test_full_disk_while_generating_is_one_line_and_keeps_nothing_half_written(tiny_model, tmp_path, monkeypatch, capsys):
    import errno

    import minicream.io.pngmeta as pngmeta

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pngmeta, "save_png", full)
    code = main(["generate", "red apple", "--model", str(tiny_model), "-n", "1", "--steps", "1", "--out", str(tmp_path)])
    assert code == 1 and "No space left" in one_line(capsys.readouterr().err)


def test_full_disk_while_training_is_one_line(emoji_root, tmp_path, monkeypatch, capsys):
    import errno

    import minicream.training.checkpoint as checkpoint

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_state_dict", full)
    code = main(["train", "--config", "tiny", "--out", str(tmp_path / "run"), "--set", f"data.root={str(emoji_root)!r}",
                 "--set", "autoencoder.train.steps=1", "--set", "autoencoder.train.checkpoint_every=1"])
    assert code == 1 and "No space left" in one_line(capsys.readouterr().err)


def test_generate_out_is_an_existing_file(tiny_model, tmp_path, capsys):
    target = tmp_path / "file.png"
    target.write_bytes(b"x")
    code = main(["generate", "red apple", "--model", str(tiny_model), "-n", "1", "--steps", "1", "--out", str(target)])
    assert code == 1 and str(target) in one_line(capsys.readouterr().err)
    assert target.read_bytes() == b"x"


def test_exported_files_follow_the_umask(tiny_model):
    import os

    mask = os.umask(0)
    os.umask(mask)
    for f in ("unet/model.safetensors", "vae/model.safetensors", "model_index.json"):
        assert (tiny_model / f).stat().st_mode & 0o777 == 0o666 & ~mask, f


def test_api_error_messages_carry_no_server_paths_end_to_end(tmp_path):
    class BrokenPipe(FakePipe):
        def __call__(self, *args, **kwargs):
            raise MinicreamError(f"{tmp_path}/models/mine: the model produced NaN or infinite values")

    with TestClient(create_app(BrokenPipe(), ServeSettings(output_dir=tmp_path / "o", token=None)),
                    base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        r = c.post("/api/generate", json={"prompt": "red apple"})
    assert 400 <= r.status_code < 600 and str(tmp_path) not in r.text and "mine" in r.text


@pytest.mark.parametrize("name", ["unet/config.json", "concepts.json", "vocabulary.json"])
def test_a_model_folders_json_is_read_bounded(tiny_model, tmp_path, name):
    """Every JSON file of a model folder goes through io.atomic.read_json: nested past its depth limit (or past its
    size limit) it is a one-line error naming the file, never a RecursionError or a whole file read into memory."""
    from minicream.filter.vocabulary import load_vocabulary
    from minicream.models.unet import MoEUNet

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    if name == "vocabulary.json":  # read only where there is no concepts.json
        (model / "concepts.json").unlink(missing_ok=True)
    (model / name).write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(MinicreamError, match="nested deeper") as e:
        MoEUNet.from_pretrained(model / "unet") if name.startswith("unet") else load_vocabulary(model)
    assert name.split("/")[-1] in str(e.value) and "\n" not in str(e.value)
