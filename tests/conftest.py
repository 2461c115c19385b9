"""Shared fixtures: a small emoji dataset and a model trained once with the `tiny` recipe.

Nothing here depends on data/emoji (git-ignored): the dataset is rendered into a temp dir from the
emoji packages, restricted to a few concepts so it builds in seconds.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tiny models: one thread is as fast as two, and far faster when the cores are shared with another job
# (with oversubscribed cores every OpenMP barrier waits for a time slice: ~100x slower forward passes).
# Subprocesses (CLI, torchrun) inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

# The page's tests drive Debian's Chromium with Playwright (never `playwright install`); skipped without either.
CHROMIUM = os.environ.get("MINICREAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright (test extra) not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


# Scene rendering needs >= 2 concepts of scene_layout.DEFAULT_CONCEPTS; these six all are.
TEST_CONCEPTS = frozenset({"red apple", "dog face", "rocket", "pizza", "banana", "cat face"})


@pytest.fixture(scope="session")
def emoji_root(tmp_path_factory) -> Path:
    from minicream.data.emoji import build_emoji_dataset

    root = tmp_path_factory.mktemp("emoji_data") / "emoji"
    build_emoji_dataset(root, size=64, styles=("twemoji", "openmoji"), limit=40, concepts=TEST_CONCEPTS, skin_tones=False,
                        heldout_fraction=0.2, progress=False)
    return root


def tiny_config(emoji_root: Path, *overrides: str):
    from minicream.config import load_config

    return load_config("tiny", [f"data.root={str(emoji_root)!r}", *overrides])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, emoji_root) -> Path:
    """Run directory of one complete tiny-recipe training (data, text, autoencoder, latents, UNet, export)."""
    from minicream.training.recipe import run_recipe

    run = tmp_path_factory.mktemp("tiny_run") / "run"
    run_recipe(tiny_config(emoji_root), run, cpu=True)
    return run


@pytest.fixture(scope="session")
def tiny_model(tiny_run) -> Path:
    """The exported model directory (model_index.json, unet/, vae/, vocabulary.json)."""
    model = tiny_run / "model"
    assert (model / "model_index.json").is_file()
    return model


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model):
    from minicream.pipelines import Pipeline

    return Pipeline.from_pretrained(tiny_model)


TINY_EVALUATOR = ["model.channels=[8, 16]", "model.embed_dim=16", "model.text_hidden=32", "train.steps=3", "train.batch_size=16",
                  "train.warmup_steps=1", "train.log_every=1", "judge.channels=[8, 8]", "judge.embed_dim=16", "judge.text_hidden=32",
                  "judge_train.steps=2", "judge_train.batch_size=16", "judge_train.warmup_steps=1", "judge_train.log_every=1"]


@pytest.fixture(scope="session")
def tiny_evaluated_model(tmp_path_factory, tiny_model, emoji_root) -> Path:
    """A copy of the tiny model with a tiny evaluator (and judge) in `evaluator/`, for best-of-N and eval tests."""
    import shutil

    from minicream.evaluator.train import load_recipe, train_evaluator

    model = tmp_path_factory.mktemp("evaluated") / "model"
    shutil.copytree(tiny_model, model)
    train_evaluator(load_recipe("evaluator", TINY_EVALUATOR), emoji_root, model / "evaluator", log=lambda s: None)
    return model


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The packaged sentence encoder (the filter's meaning rule: test_filter*.py), its concept matrices cached in a
    temporary folder."""
    from minicream.text.encoder import TextEncoder

    old = os.environ.get("MINICREAM_CACHE_DIR")
    os.environ["MINICREAM_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield TextEncoder.load(None)
    if old is None:
        os.environ.pop("MINICREAM_CACHE_DIR")
    else:
        os.environ["MINICREAM_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_upscaled_model(tmp_path_factory, tiny_model) -> Path:
    """A copy of the tiny model with an untrained tiny upscaler in `upscaler/` (the plumbing: sizes, PNGs, re-runs)."""
    import json
    import shutil

    from minicream.models.upscaler import Upscaler, UpscalerConfig

    model = tmp_path_factory.mktemp("upscaled") / "model"
    shutil.copytree(tiny_model, model)
    torch.manual_seed(0)
    Upscaler(UpscalerConfig(channels=(8, 16), layers_per_block=1)).save_pretrained(model / "upscaler", torch.bfloat16)
    (model / "upscaler" / "upscaler.json").write_text(json.dumps({"steps": 2, "noise_level": 0.05}))
    return model
