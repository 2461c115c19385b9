"""Safetensors checks/atomic saves and PNG parameter metadata. All tiny files: runs in well under a second."""
import json
import os
import pickle
import struct

import pytest
import torch
from PIL import Image, PngImagePlugin

from minicream.errors import MinicreamError
from minicream.io.pngmeta import format_a1111, parse_a1111, read_png_params, save_png
from minicream.io.weights import (
    check_safetensors,
    load_state_dict,
    read_metadata,
    save_state_dict,
    sha256_file,
    short_hash,
)


@pytest.fixture
def state():
    return {"w": torch.randn(4, 3), "b": torch.arange(5, dtype=torch.int64), "m": torch.tensor([True, False])}


def test_safetensors_round_trip(tmp_path, state):
    path = tmp_path / "m.safetensors"
    save_state_dict(state, path, metadata={"step": "7"})
    loaded = load_state_dict(path)
    assert loaded.keys() == state.keys()
    for k in state:
        assert torch.equal(loaded[k], state[k])
    assert read_metadata(path) == {"step": "7"}
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind


def test_save_handles_shared_and_noncontiguous_tensors(tmp_path):
    base = torch.randn(3, 4)
    save_state_dict({"a": base, "tied": base, "t": base.t()}, tmp_path / "s.safetensors")
    loaded = load_state_dict(tmp_path / "s.safetensors")
    assert torch.equal(loaded["tied"], base) and torch.equal(loaded["t"], base.t())


def test_save_is_atomic_on_failure(tmp_path, state, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_state_dict(state, path)
    before = path.read_bytes()

    def crash_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        save_state_dict(state, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_renamed_safetensors_is_refused(tmp_path, state, writer):
    path = tmp_path / "evil.safetensors"
    if writer == "torch.save":
        torch.save(state, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(state, f, protocol=4)
    with pytest.raises(MinicreamError, match=r"evil\.safetensors: is not a safetensors file \(looks like .*pickle.*refusing"):
        load_state_dict(path)


def test_truncated_file_is_refused(tmp_path, state):
    path = tmp_path / "cut.safetensors"
    save_state_dict(state, path)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(MinicreamError, match=r"cut\.safetensors: truncated file"):
        load_state_dict(path)
    path.write_bytes(data[:40])  # cut inside the header
    with pytest.raises(MinicreamError, match="truncated file"):
        check_safetensors(path)
    path.write_bytes(data[:3])
    with pytest.raises(MinicreamError, match="is not a safetensors file"):
        check_safetensors(path)


def _with_header(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + body


@pytest.mark.parametrize(
    "content, message",
    [
        (_with_header(b"not json at all"), "header is not valid JSON"),
        (struct.pack("<Q", 10**12) + b"{}", "header length field"),
        (_with_header(b"[1, 2]"), "not a JSON object"),
        (_with_header(json.dumps({"x": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}).encode(), b"\0" * 4), "unknown dtype"),
        (_with_header(json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}).encode(), b"\0" * 4), "needs 8"),
        (_with_header(json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}).encode(), b"\0" * 4), "invalid data_offsets"),
        (_with_header(json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode(), b"\0" * 8), "unexpected bytes"),
        (_with_header(json.dumps({"__metadata__": {"a": 1}}).encode()), "__metadata__"),
    ],
)
def test_garbage_header_is_refused(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(MinicreamError, match=message) as info:
        load_state_dict(path)
    assert "bad.safetensors" in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(MinicreamError, match="nope.safetensors: file not found"):
        load_state_dict(tmp_path / "nope.safetensors")
    with pytest.raises(MinicreamError, match="file not found"):
        sha256_file(tmp_path / "nope.bin")


def test_hashes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_file(path, chunk_size=2) == digest
    assert short_hash(path) == digest[:10]


PARAMS = {
    "prompt": "a smiling cat, flat emoji style 😺",
    "negative_prompt": "blurry",
    "steps": 20,
    "sampler": "dpmpp_2m",
    "cfg_scale": 5.0,
    "seed": 1,
    "width": 64,
    "height": 64,
    "model_hash": "abcd012345",
    "model": "tiny-moe",
    "scheduler": "karras",
}


def test_png_round_trip(tmp_path):
    path = tmp_path / "out.png"
    save_png(Image.new("RGB", (8, 8), (255, 0, 0)), path, PARAMS)
    assert read_png_params(path) == PARAMS
    with Image.open(path) as im:
        assert im.getpixel((0, 0)) == (255, 0, 0)
        assert im.text["parameters"] == (
            "a smiling cat, flat emoji style 😺\nNegative prompt: blurry\n"
            "Steps: 20, Sampler: dpmpp_2m, CFG scale: 5.0, Seed: 1, Size: 64x64, Model hash: abcd012345,"
            " Model: tiny-moe, Scheduler: karras"
        )
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_png_a1111_only_is_parsed(tmp_path):
    path = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", format_a1111(PARAMS))
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    assert read_png_params(path) == PARAMS


def test_a1111_quoting_and_multiline_prompt():
    params = {"prompt": "line one\nline: two", "steps": 5, "model": "a, b: c"}
    assert parse_a1111(format_a1111(params)) == params
    assert parse_a1111("just a prompt: with a colon") == {"prompt": "just a prompt: with a colon"}


def test_png_refusals(tmp_path):
    not_png = tmp_path / "fake.png"
    Image.new("RGB", (4, 4)).save(not_png, format="JPEG")
    with pytest.raises(MinicreamError, match="fake.png: is not a PNG file"):
        read_png_params(not_png)
    bare = tmp_path / "bare.png"
    Image.new("RGB", (4, 4)).save(bare)
    with pytest.raises(MinicreamError, match="bare.png: PNG has no generation parameters"):
        read_png_params(bare)
    with pytest.raises(MinicreamError, match="file not found"):
        read_png_params(tmp_path / "missing.png")
    assert sorted(os.listdir(tmp_path)) == ["bare.png", "fake.png"]
