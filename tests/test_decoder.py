"""The decoder fine-tune (training/decoder.py): `minicream train-decoder` on an exported model, recipe stage 3b."""
import json

import pytest
import torch

from conftest import tiny_config
from minicream.errors import MinicreamError


def _parts(vae):
    state = vae.state_dict()
    enc = {k: v.clone() for k, v in state.items() if k.startswith(("encoder.", "quant_conv."))}
    dec = {k: v.clone() for k, v in state.items() if k.startswith(("decoder.", "post_quant_conv."))}
    return enc, dec


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_laplacian_variance_known_answers():
    from minicream.training.decoder import laplacian_variance

    flat = torch.full((2, 3, 8, 8), 120.0)
    assert laplacian_variance(flat) == 0.0
    # a checkerboard of 0 / 255: the Laplacian is -4*255 on bright pixels and +4*255 on dark ones, over the 6x6
    # interior positions: mean 0, unbiased variance (4*255)^2 * 36/35
    board = ((torch.arange(8).view(-1, 1) + torch.arange(8).view(1, -1)) % 2).float() * 255
    images = board.expand(1, 3, 8, 8)
    assert laplacian_variance(images) == pytest.approx((4 * 255) ** 2 * 36 / 35, rel=1e-5)


def test_chroma_ignores_brightness():
    from minicream.training.decoder import chroma

    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(chroma(x + 0.3), chroma(x), atol=1e-6)
    grey = torch.rand(2, 1, 4, 4).expand(2, 3, 4, 4)
    assert chroma(grey).abs().max() < 1e-6


def test_finetune_trains_the_decoder_only_and_lowers_the_error(tiny_model, emoji_root, tmp_path):
    from minicream.data.folder import images_to_tensor, load_caption_folder
    from minicream.models.autoencoder import load_autoencoder, psnr, decode, encode
    from minicream.training.decoder import finetune_decoder

    cfg = tiny_config(emoji_root, "decoder.train.steps=30", "decoder.train.lr=2e-3", "decoder.train.warmup_steps=1",
                      "decoder.train.batch_size=8", "decoder.train.log_every=10")
    images = images_to_tensor(load_caption_folder(emoji_root, size=64, split="train")[:16])
    vae = load_autoencoder(tiny_model / "vae")
    enc0, dec0 = _parts(vae)
    before = psnr(images, decode(vae, encode(vae, images)))
    lines = []
    tuned = finetune_decoder(vae, images, cfg.decoder, tmp_path / "run", lines.append, cpu=True)
    enc1, dec1 = _parts(tuned)
    assert _same(enc0, enc1), "the encoder (so the latent space) must not change"
    assert not _same(dec0, dec1)
    assert tuned.config.scaling_factor == vae.config.scaling_factor
    after = psnr(images, decode(tuned, encode(tuned, images)))
    assert after > before + 0.5, (before, after)
    assert any("decoder step 30/30" in line and "chroma" in line for line in lines)


def test_perceptual_and_critic_terms_train(tiny_evaluated_model, emoji_root, tmp_path):
    from minicream.data.folder import images_to_tensor, load_caption_folder
    from minicream.models.autoencoder import load_autoencoder
    from minicream.training.decoder import finetune_decoder

    cfg = tiny_config(emoji_root, "decoder.train.steps=4", "decoder.train.batch_size=4", "decoder.train.warmup_steps=1",
                      "decoder.train.log_every=1", "decoder.perceptual_weight=0.1",
                      f"decoder.perceptual_encoder={str(tiny_evaluated_model)!r}", "decoder.gan_weight=0.1",
                      "decoder.gan_start=2")
    images = images_to_tensor(load_caption_folder(emoji_root, size=64, split="train")[:8])
    lines = []
    finetune_decoder(load_autoencoder(tiny_evaluated_model / "vae"), images, cfg.decoder, tmp_path / "run",
                     lines.append, cpu=True)
    steps = [line for line in lines if line.startswith("decoder step")]
    assert len(steps) == 4 and all("perceptual" in line for line in steps)
    assert ["gan_d" in line for line in steps] == [False, False, True, True]  # gan_start = 2
    # the critic's weights live in the checkpoint beside the autoencoder's
    from minicream.training.checkpoint import latest_checkpoint, load_checkpoint

    state = load_checkpoint(latest_checkpoint(tmp_path / "run" / "decoder"))["model"]
    assert any(k.startswith("critic.") for k in state) and any(k.startswith("vae.decoder.") for k in state)


def test_bad_decoder_settings_are_refused(emoji_root):
    for override, field in (("decoder.perceptual_weight=0.1", "decoder.perceptual_encoder"),
                            ("decoder.gan_weight=-1", "decoder.gan_weight"), ("decoder.gan_weight='abc'", "decoder.gan_weight"),
                            ("decoder.train.steps=-5", "decoder.train.steps")):
        with pytest.raises(MinicreamError, match=field):
            tiny_config(emoji_root, override)
    assert tiny_config(emoji_root, "decoder.train.steps=0").decoder.train.steps == 0  # 0: no stage 3b


def test_train_decoder_cli_writes_a_model_with_the_new_decoder(tiny_model, emoji_root, tmp_path, capsys):
    from minicream.cli import main
    from minicream.models.autoencoder import load_autoencoder
    from minicream.pipelines import Pipeline

    out = tmp_path / "dec"
    assert main(["train-decoder", "--model", str(tiny_model), "--out", str(out), "--steps", "3",
                 "--set", "decoder.train.batch_size=8", "--set", "decoder.train.warmup_steps=1"]) == 0
    assert "fine-tuned decoder written to" in capsys.readouterr().out
    model = out / "model"
    enc0, dec0 = _parts(load_autoencoder(tiny_model / "vae"))
    enc1, dec1 = _parts(load_autoencoder(model / "vae"))
    assert _same(enc0, enc1) and not _same(dec0, dec1)
    assert (model / "unet" / "model.safetensors").read_bytes() == (tiny_model / "unet" / "model.safetensors").read_bytes()
    index = json.loads((model / "model_index.json").read_text())
    report = index["decoder_finetune"]
    assert set(report) == {"from", "data", "before", "after"}
    assert {"psnr_db", "green_kept", "sharpness", "by_design"} <= set(report["after"])
    test = [json.loads(line) for line in (emoji_root / "test" / "metadata.jsonl").read_text().splitlines()]
    assert set(report["after"]["by_design"]) == {row["style"] for row in test}
    assert report["after"]["n"] == len(test)
    assert index["recipe"]["decoder"]["train"]["steps"] == 3
    pipe = Pipeline.from_pretrained(model)
    image = pipe("red apple", seed=0, steps=2)[0]
    assert image.size == (64, 64)
    # a finished run is refused without --resume, and --resume of a finished run changes nothing
    assert main(["train-decoder", "--model", str(tiny_model), "--out", str(out), "--steps", "3"]) == 2
    assert "--resume" in capsys.readouterr().err
    before = (model / "vae" / "model.safetensors").read_bytes()
    assert main(["train-decoder", "--model", str(tiny_model), "--out", str(out), "--steps", "3", "--resume"]) == 0
    assert (model / "vae" / "model.safetensors").read_bytes() == before


def test_train_decoder_cli_refuses_bad_input_in_one_line(tiny_model, tmp_path, capsys):
    from minicream.cli import main

    for argv, says in (([], "--steps or --minutes"), (["--steps", "2", "--set", "decoder.gan_weight=abc"], "gan_weight"),
                       (["--steps", "-5"], "decoder.train.steps")):
        assert main(["train-decoder", "--model", str(tiny_model), "--out", str(tmp_path / "d"), *argv]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "d").exists()
    assert main(["train-decoder", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "d"), "--steps", "2"]) == 2
    assert "neither a shipped model" in capsys.readouterr().err



def test_recipe_stage_3b_fine_tunes_the_run_decoder(tiny_model, emoji_root, tmp_path):
    from minicream.models.autoencoder import load_autoencoder
    from minicream.training.recipe import run_recipe

    cfg = tiny_config(emoji_root, f"init_from={str(tiny_model)!r}", "unet.train.steps=1", "decoder.train.steps=3",
                      "decoder.train.batch_size=8", "decoder.train.warmup_steps=1")
    run = tmp_path / "run"
    model = run_recipe(cfg, run, cpu=True)
    stage = json.loads((run / "stages" / "decoder.json").read_text())
    assert {"before", "after"} <= set(stage)
    enc0, dec0 = _parts(load_autoencoder(tiny_model / "vae"))
    enc1, dec1 = _parts(load_autoencoder(model / "vae"))
    assert _same(enc0, {k: v.to(torch.bfloat16).float() for k, v in enc1.items()}) and not _same(dec0, dec1)
    assert "3b. decoder: held-out PSNR" in (run / "train_log.txt").read_text()


def test_train_decoder_takes_data_overrides(tiny_model, tmp_path):
    from minicream.cli import main

    out = tmp_path / "dec"
    assert main(["train-decoder", "--model", str(tiny_model), "--out", str(out), "--steps", "1",
                 "--set", "data.limit=5", "--set", "data.scene_ratio=0.0"]) == 0
    assert "decoder: 5 images encoded once" in (out / "train_log.txt").read_text()
    index = json.loads((out / "model" / "model_index.json").read_text())
    assert index["decoder_finetune"]["data"]["limit"] == 5  # the images the decoder saw...
    assert index["recipe"]["data"] == json.loads((tiny_model / "model_index.json").read_text())["recipe"]["data"]  # ...not the UNet's
