"""Adapters (minicream/adapters) on the tiny model: known answers. A fresh LoRA is the identity; scale 0 is the base
model; unloading restores outputs bit for bit; textual inversion changes only its own row; a resumed run ends where an
uninterrupted one does; `--from` re-runs with the same adapters and refuses changed or missing ones."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from minicream.adapters import finetune, lora
from minicream.adapters.format import INFO_NAME
from minicream.errors import MinicreamError

STEPS = 2  # sampling steps: enough to compare images
TOK = "<tok>"


def same(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def subject(tmp_path_factory, emoji_root):
    folder = tmp_path_factory.mktemp("subject")
    for p in sorted((emoji_root / "train").glob("*.png"))[:3]:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model, subject):
    """A LoRA and a textual inversion of the subject, 3 steps each (the training itself is not what is tested)."""
    out = tmp_path_factory.mktemp("adapters")
    fast = dict(model=tiny_model, steps=3, progress=False, log=lambda s: None, variants=2, batch_size=2)
    lo = finetune(subject, TOK, "lora", out / "lo", lr=0.05, **fast)
    ti = finetune(subject, "<ti>", "textual-inversion", out / "ti", **fast)
    return lo, ti


def draw(pipe, prompt=f"a {TOK}"):
    return pipe(prompt, num_images=2, seed=3, steps=STEPS)


def test_fresh_lora_is_the_identity(tiny_pipe):
    base = draw(tiny_pipe, "red apple")
    lora.inject(tiny_pipe.unet, lora.lora_config(4, 4, lora.target_regex(tuple(lora.TARGETS))), "fresh")  # convs too
    try:
        assert lora.lora_layers(tiny_pipe.unet) and same(base, draw(tiny_pipe, "red apple"))
    finally:
        lora.remove(tiny_pipe.unet)
    assert not lora.lora_layers(tiny_pipe.unet)


def test_load_scale_stack_unload(tiny_pipe, adapters, tmp_path):
    lo, ti = adapters
    base = draw(tiny_pipe)
    tiny_pipe.load_adapter(lo)
    try:
        loaded = draw(tiny_pipe)
        assert not same(base, loaded)
        assert loaded[0].info["minicream"]["adapters"][0]["name"] == "lo"
        tiny_pipe.set_adapters(["lo"], weights=[0.0])
        assert same(base, draw(tiny_pipe))  # scale 0 == the base model
        tiny_pipe.set_adapters("lo")
        copy = tmp_path / "lo2"
        shutil.copytree(lo, copy)
        with pytest.raises(MinicreamError, match="both use the token"):
            tiny_pipe.load_adapter(copy)
        info = json.loads((copy / INFO_NAME).read_text())
        (copy / INFO_NAME).write_text(json.dumps({**info, "token": "<other>"}))
        tiny_pipe.load_adapter(copy, scale=0.5)  # two adapters stack
        assert not same(loaded, draw(tiny_pipe))
        with pytest.raises(MinicreamError, match="scale must be"):
            tiny_pipe.set_adapters(["lo"], weights=[3.0])
        (copy / INFO_NAME).write_text(json.dumps({**info, "base_model_hash": "0123456789"}))
        with pytest.raises(MinicreamError, match="made for another model"):
            tiny_pipe.load_adapter(copy, name="wrong")
    finally:
        tiny_pipe.unload_adapter()
    assert same(base, draw(tiny_pipe))  # unloading restores the model bit for bit
    assert not lora.lora_layers(tiny_pipe.unet)


def test_disabled_lora_is_the_base_model(tiny_pipe):
    """lora.disabled (the preservation loss's teacher) gives the base model's outputs with a trained-looking adapter."""
    base = draw(tiny_pipe, "red apple")
    lora.inject(tiny_pipe.unet, lora.lora_config(4, 4, lora.target_regex(("attn", "conv"))), "busy")
    try:
        with torch.no_grad():
            for layer in lora.lora_layers(tiny_pipe.unet):
                layer.lora_B["busy"].weight.fill_(0.05)
        assert not same(base, draw(tiny_pipe, "red apple"))
        with lora.disabled(tiny_pipe.unet):
            assert same(base, draw(tiny_pipe, "red apple"))
        assert not same(base, draw(tiny_pipe, "red apple"))  # enabled again after the block
    finally:
        lora.remove(tiny_pipe.unet)


def test_preservation_keeps_other_prompts_closer_to_the_base_model(tiny_model, tiny_pipe, subject, tmp_path):
    """The same LoRA run with and without preserve_weight: with it, a prompt without the token moves less."""
    def pixels(images):
        return np.stack([np.asarray(im, dtype=np.float32) for im in images])

    base = pixels(draw(tiny_pipe, "red apple"))
    kw = dict(model=tiny_model, steps=6, lr=0.05, progress=False, log=lambda s: None, variants=1, batch_size=2,
              preserve_prompts=8)
    moved = {}
    for weight in (0.0, 10.0):
        out = finetune(subject, TOK, "lora", tmp_path / f"p{weight:g}", preserve_weight=weight, **kw)
        tiny_pipe.load_adapter(out)
        try:
            moved[weight] = float(np.abs(pixels(draw(tiny_pipe, "red apple")) - base).mean())
        finally:
            tiny_pipe.unload_adapter()
    assert 0 < moved[10.0] < moved[0.0]


def test_textual_inversion_changes_only_its_row(tiny_pipe, adapters):
    from minicream.io.weights import load_state_dict

    te = tiny_pipe.text_encoder
    table = te.model.get_input_embeddings().weight.detach().clone()
    n_tokens, base = len(te.tokenizer), draw(tiny_pipe, "red apple")
    tiny_pipe.load_adapter(adapters[1])
    try:
        grown = te.model.get_input_embeddings().weight
        assert grown.shape[0] == table.shape[0] + 1 and torch.equal(grown[:table.shape[0]], table)
        assert torch.equal(grown[-1], load_state_dict(adapters[1] / "learned_embeds.safetensors")["<ti>"][0])
        assert same(base, draw(tiny_pipe, "red apple"))  # a prompt without the token is untouched
        assert te.tokenize(["a <ti>"])[0]["input_ids"][0, 2] == table.shape[0]
    finally:
        tiny_pipe.unload_adapter()
    assert len(te.tokenizer) == n_tokens and torch.equal(te.model.get_input_embeddings().weight, table)


def test_lora_with_a_learnt_token_adds_and_removes_its_word(tiny_model, tiny_pipe, subject, tmp_path):
    """--learn-token (pivotal tuning): the folder holds the LoRA and the word; loading adds both, unloading restores
    the tokenizer, the table and the images exactly."""
    te = tiny_pipe.text_encoder
    table, n_tokens = te.model.get_input_embeddings().weight.detach().clone(), len(te.tokenizer)
    out = finetune(subject, "<piv>", "lora", tmp_path / "piv", model=tiny_model, steps=3, lr=0.05, learn_token=True,
                   init_word="apple", progress=False, log=lambda s: None, variants=1, batch_size=2)
    info = json.loads((out / INFO_NAME).read_text())
    assert info["vectors"] == 1 and (out / "learned_embeds.safetensors").is_file()
    base = draw(tiny_pipe, "a <piv>")
    tiny_pipe.load_adapter(out)
    try:
        assert len(te.tokenizer) == n_tokens + 1 and lora.lora_layers(tiny_pipe.unet)
        assert not same(base, draw(tiny_pipe, "a <piv>"))
    finally:
        tiny_pipe.unload_adapter()
    assert len(te.tokenizer) == n_tokens and torch.equal(te.model.get_input_embeddings().weight, table)
    assert same(base, draw(tiny_pipe, "a <piv>")) and not lora.lora_layers(tiny_pipe.unet)


def test_filter_passes_adapter_tokens_through(tiny_pipe, adapters):
    tiny_pipe.load_adapter(adapters[0])
    try:
        r = tiny_pipe.filter_prompt("a <tok>")
        assert r.rewritten == "a <tok>" and "adapter 'lo'" in r.changes[0]
        assert tiny_pipe.filter_prompt("<tok> red apple").rewritten.startswith("<tok>, ")
    finally:
        tiny_pipe.unload_adapter()


def test_resume_ends_where_an_uninterrupted_run_does(tiny_model, subject, tmp_path, monkeypatch):
    from minicream.adapters import checkpoint
    from minicream.io.weights import load_state_dict

    kw = dict(model=tiny_model, steps=4, checkpoint_every=2, progress=False, log=lambda s: None, variants=1, batch_size=2)
    finetune(subject, TOK, "lora", tmp_path / "whole", **kw)
    save = checkpoint.save

    def save_then_stop(*a, **k):
        save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        finetune(subject, TOK, "lora", tmp_path / "cut", **kw)
    assert not (tmp_path / "cut").exists()  # nothing written half
    monkeypatch.setattr(checkpoint, "save", save)
    with pytest.raises(MinicreamError, match="--resume"):
        finetune(subject, TOK, "lora", tmp_path / "cut", **kw)
    finetune(subject, TOK, "lora", tmp_path / "cut", resume=True, **kw)
    a, b = (load_state_dict(tmp_path / d / "adapter_model.safetensors") for d in ("whole", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_input_is_one_line(tiny_model, subject, tmp_path, capsys):
    from minicream.cli import main

    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "empty").mkdir()
    base = ["finetune", "--model", str(tiny_model), "--steps", "1"]
    cases = [(["--images", str(tmp_path / "empty"), "--token", TOK], "no images"),
             (["--images", str(tmp_path / "anim.gif"), "--token", TOK], "animated"),
             (["--images", str(subject), "--token", "dog"], "already a word"),
             (["--images", str(subject), "--token", TOK, "--style"], "several images"),
             (["--images", str(subject), "--token", TOK, "--method", "dreambooth"], "--class-word")]
    for extra, words in cases:
        assert main(base + extra + ["--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1 and err.startswith("error: ")
        assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_generate_from_reruns_with_adapters_or_refuses(tiny_model, adapters, tmp_path, capsys):
    from minicream.cli import main

    lo = tmp_path / "lo"
    shutil.copytree(adapters[0], lo)
    args = ["generate", "a <tok>", "--model", str(tiny_model), "-n", "1", "--steps", str(STEPS), "--seed", "5"]
    assert main(args + ["--adapter", f"{lo}:0.7", "--out", str(tmp_path / "a"), "--explain"]) == 0
    out = capsys.readouterr()
    [png] = out.out.split()
    assert "kept '<tok>' as typed" in out.err
    assert main(["generate", "--from", png, "-n", "1", "--model", str(tiny_model), "--out", str(tmp_path / "b")]) == 0
    [again] = capsys.readouterr().out.split()
    assert same([Image.open(png)], [Image.open(again)])
    info = json.loads((lo / INFO_NAME).read_text())
    (lo / INFO_NAME).write_text(json.dumps({**info, "steps": 99}))
    assert main(["generate", "--from", png, "--model", str(tiny_model), "--out", str(tmp_path / "c")]) == 2
    assert "has changed" in capsys.readouterr().err
    shutil.rmtree(lo)
    assert main(["generate", "--from", png, "--model", str(tiny_model), "--out", str(tmp_path / "c")]) == 2
    assert "--adapter DIR" in capsys.readouterr().err
