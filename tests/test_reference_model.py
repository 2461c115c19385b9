"""The shipped reference model (minicream/reference) loads from the package and draws."""
import json

import numpy as np

from minicream.pipelines import Pipeline, default_model_dir


def test_reference_model_is_shipped_and_draws():
    model_dir = default_model_dir()
    index = json.loads((model_dir / "model_index.json").read_text())
    # The core issue's budget: the generator's weights (autoencoder + UNet) at most 40 MB; the image
    # evaluator (issue 3, minicream/reference/evaluator/) is a separate, small model.
    sizes = [f.stat().st_size for sub in ("unet", "vae") for f in (model_dir / sub).glob("*.safetensors")]
    assert len(sizes) == 2 and sum(sizes) <= 40 * 1000 * 1000
    evaluator = sum(f.stat().st_size for f in (model_dir / "evaluator").rglob("*.safetensors"))
    assert evaluator <= 6 * 1000 * 1000
    pipe = Pipeline.from_pretrained()
    assert pipe.text_encoder.id == index["text_encoder"]["id"]
    (image,) = pipe("red apple", num_images=1, steps=2, seed=0)
    assert image.size == (64, 64)
    assert np.asarray(image).std() > 0  # not a blank image


def test_shipped_models_load_by_name(tmp_path, monkeypatch):
    from minicream.pipelines import SHIPPED, resolve_model, shipped_model_dir

    for name in SHIPPED:
        assert (shipped_model_dir(name) / "model_index.json").is_file()
        assert resolve_model(name) == shipped_model_dir(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reference").mkdir()  # a folder of that name here wins: paths are never shadowed by names
    assert resolve_model("reference") == tmp_path.joinpath("reference").relative_to(tmp_path)
    assert resolve_model(None) == default_model_dir()
