"""The mini-CLIP evaluator: training, save/load, loss, and best-of-N reranking in the pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minicream.errors import MinicreamError
from minicream.evaluator.model import EvaluatorConfig, MiniCLIP
from minicream.evaluator.rerank import best_indices, candidate_seeds, check_candidates
from minicream.evaluator.scorer import Evaluator
from minicream.evaluator.train import JUDGE_DIR, contrastive_loss, load_recipe


def test_contrastive_loss_known_answers():
    e = torch.eye(4)
    ids = torch.arange(4)
    assert contrastive_loss(e, e, ids, torch.tensor(100.0)) < 1e-6  # aligned pairs, confident: ~0
    assert contrastive_loss(e, e, ids, torch.tensor(1e-6)) == pytest.approx(np.log(4), abs=1e-4)  # no signal: log B
    # rows 0 and 1 share a text: both are targets of each other (p = 1/2 each), so identical features reach the
    # floor, the targets' entropy: (2 log 2) / 3 per direction
    f = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0]])
    assert contrastive_loss(f, f, torch.tensor([7, 7, 3]), torch.tensor(100.0)) == pytest.approx(2 * np.log(2) / 3, abs=1e-4)


def test_save_load_roundtrip_bf16(tmp_path):
    model = MiniCLIP(EvaluatorConfig(channels=(8, 16), embed_dim=16, text_hidden=32))
    model.save_pretrained(tmp_path, dtype=torch.bfloat16)
    loaded = MiniCLIP.from_pretrained(tmp_path)
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        a = model.to(torch.bfloat16).float().encode_image(model.preprocess(x))
        b = loaded.encode_image(loaded.preprocess(x))
    assert torch.allclose(a, b, atol=1e-5)
    assert json.loads((tmp_path / "config.json").read_text())["arch"] == "resnet"
    with pytest.raises(ValueError):
        EvaluatorConfig(arch="transformer")


def test_unknown_recipe_key_is_an_error():
    with pytest.raises(MinicreamError, match="unknown key"):
        load_recipe("evaluator", ["model.depth=3"])


def test_trained_evaluator_files_and_results(tiny_evaluated_model):
    ev = tiny_evaluated_model / "evaluator"
    results = json.loads((ev / "results.json").read_text())
    for name in ("evaluator", "judge"):
        held = results[name]["heldout"]
        assert held["n_images"] > 0 and 0 <= held["captions"]["top1"] <= held["captions"]["top5"] <= 1
        seen = results[name]["seen"]  # every concept, on clean training images, overall and per design
        assert seen["candidates"] == 6 and set(seen) == {"candidates", "all", "twemoji", "openmoji"}
        assert seen["all"]["n_images"] == seen["twemoji"]["n_images"] + seen["openmoji"]["n_images"]
        by_style = held["concepts_by_style"]
        assert sum(v["n_images"] for v in by_style.values()) == held["n_images"]
    assert (ev / JUDGE_DIR / "model.safetensors").is_file()
    assert json.loads((ev / JUDGE_DIR / "config.json").read_text())["arch"] == "plain"
    assert not (ev / "checkpoints").exists()  # checkpoints live in the run dir, not in what ships


def test_candidate_seeds_and_best_indices():
    assert candidate_seeds([5, 6], 1) == [5, 6]
    seeds = candidate_seeds([5, 6], 3)
    assert seeds[0] == 5 and seeds[3] == 6 and len(set(seeds)) == 6
    assert candidate_seeds([5], 3) == seeds[:3]  # independent of the other images
    scores = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.2, 0.7])
    assert best_indices(scores, 3) == [1, 3]  # a tie goes to the lower candidate
    assert best_indices(scores, 3, keep=2) == [1, 2, 3, 5]
    with pytest.raises(MinicreamError):
        check_candidates(0, 1)
    with pytest.raises(MinicreamError):
        check_candidates(2, 3)


def _same_picture(a, b) -> bool:
    """Equal, or within a few levels: fp32 kernels on a CPU without fast bf16 may block another batch size
    differently (see test_pipeline.py::test_image_depends_only_on_its_seed_not_on_the_batch)."""
    d = np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int))
    return d.max() <= 4 and d.mean() < 0.5


def test_best_of_n_returns_the_highest_scoring_candidate(tiny_evaluated_model):
    from minicream.pipelines import PARAMS_KEY, Pipeline

    pipe = Pipeline.from_pretrained(tiny_evaluated_model)
    n = 3
    best = pipe("red apple", num_images=2, seed=11, num_candidates=n, steps=2)
    all_candidates = pipe("red apple", num_images=2 * n, seed=candidate_seeds([11, 12], n), steps=2)
    scores = pipe.evaluator.score(all_candidates, "red apple")
    for i, im in enumerate(best):
        group = scores[i * n:(i + 1) * n]
        j = int(group.argmax())
        assert _same_picture(im, all_candidates[i * n + j])
        info = im.info[PARAMS_KEY]
        assert info["num_candidates"] == n and info["score"] == pytest.approx(float(group.max()), abs=1e-4)
        assert info["seed"] == candidate_seeds([11 + i], n)[j]  # re-running this seed alone gives this image
    # batch size does not change the result; keep_top returns sorted scores
    again = pipe("red apple", num_images=2, seed=11, num_candidates=n, steps=2, batch_size=1)
    assert all(_same_picture(a, b) for a, b in zip(best, again))
    top = pipe("red apple", num_images=1, seed=11, num_candidates=n, keep_top=2, steps=2)
    assert len(top) == 2 and top[0].info[PARAMS_KEY]["score"] >= top[1].info[PARAMS_KEY]["score"]


def test_best_of_n_keeps_each_images_design_under_style_vary(tiny_evaluated_model):
    """Every candidate of an image is drawn in the design its own seed picks: reranking chooses a drawing, not a design."""
    from minicream.evaluator.rerank import DESIGN_PERIOD, candidate_seed
    from minicream.pipelines import PARAMS_KEY, Pipeline

    for seed in (0, 5, 2**31 - 1, 123456789):
        derived = [candidate_seed(seed, j) for j in range(64)]
        assert len(set(derived)) == 64 and all(d % DESIGN_PERIOD == seed % DESIGN_PERIOD for d in derived)
    pipe = Pipeline.from_pretrained(tiny_evaluated_model)
    plain = pipe("dog face", num_images=4, seed=20, style="vary", steps=2)
    best = pipe("dog face", num_images=4, seed=20, style="vary", num_candidates=3, steps=2)
    designs = [im.info[PARAMS_KEY]["rewritten_prompt"] for im in plain]
    assert len(set(designs)) == 2  # the tiny model's two designs, alternating by seed
    assert [im.info[PARAMS_KEY]["rewritten_prompt"] for im in best] == designs


def test_best_of_n_without_evaluator_is_a_clear_error(tiny_pipe):
    with pytest.raises(MinicreamError, match="no image evaluator"):
        tiny_pipe("red apple", num_candidates=2, steps=2)
    assert len(tiny_pipe("red apple", num_candidates=1, steps=2)) == 1


def test_evaluator_scores_and_probs(tiny_evaluated_model):
    from PIL import Image

    ev = Evaluator.from_pretrained(tiny_evaluated_model / "evaluator")
    ims = [Image.new("RGB", (64, 64), "white"), Image.new("RGB", (64, 64), "red")]
    s = ev.score(ims, ["red apple", "dog face"])
    assert s.shape == (2,) and bool((s.abs() <= 1 + 1e-5).all())
    p = ev.class_probs(ims, ["red apple", "dog face", "rocket"])
    assert torch.allclose(p.sum(dim=1), torch.ones(2), atol=1e-5)
    with pytest.raises(MinicreamError, match="different sizes"):
        ev.score([ims[0], Image.new("RGB", (32, 32))], "x")
    with pytest.raises(MinicreamError, match="no evaluator weights"):
        Evaluator.from_pretrained(tiny_evaluated_model / "no_such_folder")


def test_cli_train_evaluator_and_generate_candidates(tmp_path, tiny_model, emoji_root, capsys):
    from minicream.cli import main
    from conftest import TINY_EVALUATOR

    assert main(["generate", "red apple", "--model", str(tiny_model), "--candidates", "2", "--steps", "2", "--out", str(tmp_path)]) == 2
    assert "no image evaluator" in capsys.readouterr().err
    args = ["train-evaluator", "--data", str(emoji_root), "--out", str(tmp_path / "ev")]
    for o in TINY_EVALUATOR:
        args += ["--set", o]
    assert main(args) == 0
    assert "held-out retrieval" in capsys.readouterr().out
    assert (tmp_path / "ev" / "model.safetensors").is_file()


def test_focus_order_known_answers():
    from minicream.evaluator.train import focus_order

    assert focus_order(5, [], 0.5).tolist() == [0, 1, 2, 3, 4]
    assert focus_order(5, [1, 3], 0.0).tolist() == [0, 1, 2, 3, 4]
    assert focus_order(5, [1, 3], 1.0).tolist() == [1, 3]
    order = focus_order(10, [2, 3], 0.5)  # the 2 focus images repeated 5 times after one pass over all 10
    assert order.tolist() == list(range(10)) + [2, 3] * 5
    assert np.isin(order.numpy(), [2, 3]).mean() == pytest.approx(0.6)  # 12 of 20: about the asked half


def test_evaluator_focus_on_a_selection(tmp_path, emoji_root):
    import dataclasses

    from conftest import TINY_EVALUATOR
    from minicream.evaluator.train import train_evaluator

    recipe = dataclasses.replace(load_recipe("evaluator", TINY_EVALUATOR), concepts=("red apple", "rocket"))
    logs: list[str] = []
    res = train_evaluator(recipe, emoji_root, tmp_path / "ev", log=logs.append)
    assert res["focus"]["concepts"] == 2 and res["focus"]["images"] >= 2
    for name in ("evaluator", "judge"):
        focus = res[name]["focus"]
        assert focus["candidates"] == 2 and focus["seen"]["n_images"] == res["focus"]["images"]
        assert 0 <= focus["seen"]["top1"] <= focus["seen"]["top5"] == 1.0  # top-5 of 2 candidates always hits
    assert any("focus: " in line and "of 2 concepts" in line for line in logs)
    with pytest.raises(MinicreamError, match="evaluator.concepts: no training image of 'unicorn'"):
        train_evaluator(dataclasses.replace(recipe, concepts=("unicorn",)), emoji_root, tmp_path / "ev2", log=logs.append)


def test_focus_of_model(tmp_path, tiny_model):
    from minicream.evaluator.train import focus_of_model

    with pytest.raises(MinicreamError, match="whole dataset"):
        focus_of_model(tiny_model)
    with pytest.raises(MinicreamError, match="not a minicream model folder"):
        focus_of_model(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"recipe": {"data": {"concepts": ["red apple"], "groups": []}}}))
    assert focus_of_model(tmp_path) == {"concepts": ("red apple",), "groups": ()}


def test_train_evaluator_init_from_warm_starts_the_same_network(tmp_path, tiny_evaluated_model, emoji_root, capsys):
    """--init-from loads the trained evaluator: at learning rate 0 the warm-started one comes out weight for weight
    the one it started from; another network is refused in one line, and the results record the earlier steps."""
    from safetensors.torch import load_file

    from conftest import TINY_EVALUATOR
    from minicream.cli import main

    src = tiny_evaluated_model / "evaluator"
    args = ["train-evaluator", "--data", str(emoji_root), "--out", str(tmp_path / "ev"), "--init-from", str(src)]
    for o in TINY_EVALUATOR + ["train.lr=0", "train_judge=false"]:
        args += ["--set", o]
    assert main(args) == 0
    a, b = load_file(src / "model.safetensors"), load_file(tmp_path / "ev" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    before = json.loads((src / "results.json").read_text())["evaluator"]["steps"]
    assert results["evaluator"]["init_from"] == {"path": str(src), "steps_before": before}
    capsys.readouterr()
    assert main(args[:-2 * (len(TINY_EVALUATOR) + 2)] + ["--set", "model.embed_dim=24"]) == 2
    assert "another network than the recipe's [model]" in capsys.readouterr().err
    assert main(args[:5] + ["--init-from", str(tmp_path / "nothing")] + args[7:]) == 2
    assert "no readable evaluator" in capsys.readouterr().err
