"""Evaluation suite: each metric on a case with a known answer, adherence checks, and `minicream eval` end to end."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from minicream.errors import MinicreamError
from minicream.eval import metrics
from minicream.eval.adherence import check_prompt, find_objects, square_view
from minicream.eval.benchmarks import GENEVAL_TASKS, get_benchmark, scene_specs


class PooledPixels(nn.Module):
    """A fixed feature extractor: 4x4 average-pooled pixels (48 features)."""

    num_features = 48

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1)


def _noise_images(n, seed, low=0, high=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_frechet_and_kid_identical_sets_are_zero_and_disjoint_sets_are_far():
    a = _noise_images(64, 0)
    assert metrics.frechet_distance(a, a, PooledPixels()) == pytest.approx(0.0, abs=1e-3)
    kid_mean, _ = metrics.kernel_distance(a, a, PooledPixels(), subsets=10, subset_size=32)
    assert abs(kid_mean) < 0.02
    dark, bright = _noise_images(64, 1, 0, 100), _noise_images(64, 2, 156, 256)
    far = metrics.frechet_distance(dark, bright, PooledPixels())
    near = metrics.frechet_distance(_noise_images(64, 3), _noise_images(64, 4), PooledPixels())
    assert far > 1.0 > near * 10
    assert metrics.kernel_distance(dark, bright, PooledPixels(), subsets=10, subset_size=32)[0] > 0.1


class OneHotByBrightness(nn.Module):
    """A perfect, confident classifier over k classes: class = mean brightness bucket."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        cls = (x.float().mean(dim=(1, 2, 3)) / 256 * self.k).long()
        return torch.nn.functional.one_hot(cls, self.k).float() * 50


def test_inception_score_known_answers():
    k = 4
    images = torch.cat([torch.full((8, 3, 8, 8), int((c + 0.5) * 256 / k), dtype=torch.uint8) for c in range(k)])
    mean, _ = metrics.inception_score(images, OneHotByBrightness(k), splits=1)
    assert mean == pytest.approx(k, rel=1e-3)  # confident and uniform over k classes: IS = k
    same = torch.full((16, 3, 8, 8), 10, dtype=torch.uint8)
    assert metrics.inception_score(same, OneHotByBrightness(k), splits=1)[0] == pytest.approx(1.0, rel=1e-3)  # collapse: 1


def test_ssim_known_answers():
    a = _noise_images(4, 5)
    same = a[:1].repeat(3, 1, 1, 1)
    assert metrics.pairwise_ssim(same) == pytest.approx(1.0, abs=1e-4)
    assert metrics.pairwise_ssim(a) < 0.2
    near = metrics.nearest_real_ssim(a[:2], a)
    assert torch.allclose(near, torch.ones(2), atol=1e-4)
    with pytest.raises(MinicreamError, match="sizes differ"):
        metrics.nearest_real_ssim(a, torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(MinicreamError, match="at least 2"):
        metrics.pairwise_ssim(a[:1])


def test_accuracy_known_answers():
    probs = torch.eye(5)
    assert metrics.topk_accuracy(probs, torch.arange(5)) == 1.0
    assert metrics.topk_accuracy(probs, (torch.arange(5) + 1) % 5) == 0.0
    assert metrics.topk_accuracy(probs, [[0, 1]] * 5, k=1) == pytest.approx(2 / 5)
    with pytest.raises(MinicreamError):
        metrics.topk_accuracy(torch.zeros(0, 3), [])


def test_bad_image_inputs_are_clear_errors():
    with pytest.raises(MinicreamError, match="zero images"):
        metrics.frechet_distance(torch.zeros(0, 3, 8, 8, dtype=torch.uint8), _noise_images(4, 0), PooledPixels())
    with pytest.raises(MinicreamError, match="sizes differ"):
        metrics.frechet_distance(_noise_images(4, 0), torch.zeros(4, 3, 8, 8, dtype=torch.uint8), PooledPixels())
    with pytest.raises(MinicreamError, match="uint8"):
        metrics.kernel_distance(torch.zeros(4, 3, 8, 8), _noise_images(4, 0), PooledPixels())


def test_inception_fid_is_skipped_without_local_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    result = metrics.inception_fid(_noise_images(4, 0), _noise_images(4, 1))
    assert "skipped" in result and "not downloaded" in result["skipped"]


# -- adherence -----------------------------------------------------------------------------------------
COLORS = {"red apple": (255, 0, 0), "frog": (0, 200, 0), "rocket": (0, 0, 255)}


class ColourJudge:
    """A perfect judge for synthetic scenes: an object's concept is its colour."""

    def class_probs(self, images, labels):
        out = []
        for im in images:
            fg = im.reshape(3, -1)[:, (im.reshape(3, -1) < 200).any(dim=0)].float().mean(dim=1)
            d = torch.tensor([float(((fg - torch.tensor(COLORS.get(l, (128, 128, 128)))) ** 2).sum()) for l in labels])
            out.append((-d).softmax(dim=0))
        return torch.stack(out)


def _scene(*objects, width=64, height=64):
    im = torch.full((3, height, width), 255, dtype=torch.uint8)
    for concept, (x0, y0, side) in objects:
        im[:, y0:y0 + side, x0:x0 + side] = torch.tensor(COLORS[concept], dtype=torch.uint8)[:, None, None]
    return im


def test_find_objects_and_scene_checks_with_a_perfect_judge():
    pool = list(COLORS)
    two = _scene(("red apple", (4, 20, 20)), ("frog", (40, 24, 14)))
    assert len(find_objects(two)) == 2
    judge = ColourJudge()
    assert check_prompt(judge, two, {"kind": "two_objects", "objects": ["red apple", "frog"]}, pool)
    assert not check_prompt(judge, two, {"kind": "two_objects", "objects": ["red apple", "rocket"]}, pool)
    assert check_prompt(judge, two, {"kind": "position", "objects": ["red apple", "frog"], "relation": "left"}, pool)
    assert not check_prompt(judge, two, {"kind": "position", "objects": ["red apple", "frog"], "relation": "right"}, pool)
    assert check_prompt(judge, two, {"kind": "size", "objects": ["red apple", "frog"]}, pool)
    three = _scene(("rocket", (2, 2, 12)), ("rocket", (30, 30, 12)), ("rocket", (48, 4, 12)))
    assert check_prompt(judge, three, {"kind": "counting", "objects": ["rocket"], "count": 3}, pool)
    assert not check_prompt(judge, three, {"kind": "counting", "objects": ["rocket"], "count": 2}, pool)
    one = _scene(("frog", (16, 16, 30)))
    assert check_prompt(judge, one, {"kind": "single_object", "objects": ["frog"]}, pool)


class SizeRecordingJudge(ColourJudge):
    def __init__(self):
        self.sizes = []

    def class_probs(self, images, labels):
        self.sizes += [tuple(im.shape[-2:]) for im in images]
        return super().class_probs(images, labels)


def test_wide_and_tall_scenes_are_graded_per_object_at_native_size():
    """Issue 28, 5: a scene on a canvas sized from its layout (128x64, 64x128): each object is cropped around its own
    box and judged at the model's size, the relation read from the boxes; a single object on a wide canvas is seen
    whole, padded to a square."""
    pool = list(COLORS)
    wide = _scene(("red apple", (8, 8, 48)), ("frog", (72, 8, 48)), width=128)
    judge = SizeRecordingJudge()
    assert check_prompt(judge, wide, {"kind": "position", "objects": ["red apple", "frog"], "relation": "left"}, pool, size=64)
    assert judge.sizes == [(64, 64), (64, 64)]
    tall = _scene(("rocket", (8, 8, 48)), ("frog", (8, 72, 48)), height=128)
    assert check_prompt(judge, tall, {"kind": "position", "objects": ["rocket", "frog"], "relation": "above"}, pool)
    assert not check_prompt(judge, tall, {"kind": "position", "objects": ["rocket", "frog"], "relation": "below"}, pool)
    row = _scene(("rocket", (8, 8, 48)), ("rocket", (72, 8, 48)), ("rocket", (136, 8, 48)), width=192)
    assert check_prompt(judge, row, {"kind": "counting", "objects": ["rocket"], "count": 3}, pool)
    judge.sizes.clear()
    assert check_prompt(judge, _scene(("frog", (40, 8, 48)), width=128), {"kind": "single_object", "objects": ["frog"]}, pool)
    assert judge.sizes == [(64, 64)]
    assert tuple(square_view(wide, 64).shape) == (3, 64, 64)


def test_benchmarks_and_bad_names():
    specs = scene_specs(3)
    assert {s["spec"]["kind"] for s in specs} >= set(GENEVAL_TASKS)
    assert specs == scene_specs(3)  # deterministic
    with pytest.raises(MinicreamError, match="unknown benchmark"):
        get_benchmark("coco")
    with pytest.raises(MinicreamError, match="at least 1"):
        get_benchmark("scenes", samples=0)
    b = get_benchmark("minicream-table", samples=2, seed=7)
    assert [p["prompt"] for p in b.prompts] == ["orange", "apple", "dog"] and b.sample_seeds(1) == [1007, 1008]
    assert len(get_benchmark("scenes", limit=5).prompts) == 5
    with pytest.raises(MinicreamError, match="limit"):
        get_benchmark("scenes", limit=0)
    c = get_benchmark("concepts", concepts=["rocket", "red apple"])
    assert [p["prompt"] for p in c.prompts] == ["red apple", "rocket"] and c.samples == 4 and c.real == "concepts"
    with pytest.raises(MinicreamError, match="concept list"):
        get_benchmark("concepts")


def test_coverage_benchmark_samples_concepts_and_designs_deterministically():
    from minicream.eval.benchmarks import coverage_concepts

    rows = [{"concept": f"c{i}", "style": s, "skin_tone": None} for i in range(300) for s in ("twemoji", "noto")]
    rows += [{"concept": "c0: light skin tone", "style": "twemoji", "skin_tone": "light"}]
    pairs = coverage_concepts(rows)
    assert pairs == coverage_concepts(list(reversed(rows)))  # a function of the vocabulary, not of row order
    assert len(pairs) == 200 and len({c for c, _ in pairs}) == 200
    assert all(s in ("twemoji", "noto") and "skin" not in c for c, s in pairs)
    assert {s for _, s in pairs} == {"twemoji", "noto"}
    b = get_benchmark("coverage", dataset_rows=rows)
    assert b.samples == 2 and len(b.prompts) == 400 and len(b.pool) == 300
    assert b.prompts[0] == {"prompt": f"{pairs[0][0]}, {pairs[0][1]}", "reference": [pairs[0][0]], "group": "styled",
                            "spec": {"kind": "single_object", "objects": [pairs[0][0]]}}
    assert b.prompts[1]["prompt"] == pairs[0][0] and b.prompts[1]["group"] == "plain"
    assert len(coverage_concepts(rows[:20])) == 10  # a small vocabulary: every concept once
    noto = get_benchmark("coverage", dataset_rows=rows, styles=["noto"])  # only the model's designs are asked for
    assert all(p["prompt"].endswith(", noto") for p in noto.prompts if p["group"] == "styled") and len(noto.pool) == 300
    with pytest.raises(MinicreamError, match="minicream data emoji"):
        get_benchmark("coverage", dataset_rows=[])


# -- end to end ----------------------------------------------------------------------------------------
def test_eval_cli_writes_reports(tiny_evaluated_model, emoji_root, tmp_path, capsys):
    from minicream.cli import main

    out = tmp_path / "table"
    assert main(["eval", "--model", str(tiny_evaluated_model), "--benchmark", "minicream-table", "--samples", "2",
                 "--steps", "2", "--data", str(emoji_root), "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["n_generated"] == 6 and rep["grader"] == "judge"
    for key in ("fd_evaluator", "clip_score", "ssim_pairwise", "ssim_nearest_real"):
        assert math.isfinite(rep[key])
    assert rep["is_evaluator"]["mean"] >= 1.0 - 1e-6
    assert "kandinsky" in (out / "report.md").read_text() and (out / "grid.png").is_file()
    out2 = tmp_path / "scenes"
    assert main(["eval", "--model", str(tiny_evaluated_model), "--benchmark", "scenes", "--samples", "1", "--steps", "1",
                 "--data", str(emoji_root), "--out", str(out2), "--candidates", "2"]) == 0
    rep = json.loads((out2 / "report.json").read_text())
    assert set(GENEVAL_TASKS) <= set(rep["tasks"]) and 0 <= rep["geneval_mean"] <= 1
    assert rep["grader"] == "nearest" and set(rep["by_grader"]) == {"judge"}  # one grader for every model, its judge beside
    assert "| nearest |" in (out2 / "report.md").read_text() and "| judge |" in (out2 / "report.md").read_text()
    out3 = tmp_path / "concepts"
    assert main(["eval", "--model", str(tiny_evaluated_model), "--benchmark", "concepts", "--samples", "1", "--steps", "1",
                 "--data", str(emoji_root), "--out", str(out3), "--guidance", "2.5", "--sampler", "euler"]) == 0
    rep = json.loads((out3 / "report.json").read_text())
    assert (rep["guidance"], rep["sampler"]) == (2.5, "euler") and "guidance 2.5" in (out3 / "report.md").read_text()
    concepts = [c["name"] for c in json.loads((tiny_evaluated_model / "concepts.json").read_text())["concepts"]]
    assert rep["prompts"] == rep["n_generated"] == len(concepts) >= 2
    assert rep["object_accuracy"]["judge"]["n"] == rep["object_accuracy"]["judge"]["classes"] == len(concepts)
    out4 = tmp_path / "coverage"
    assert main(["eval", "--model", str(tiny_evaluated_model), "--benchmark", "coverage", "--samples", "2", "--steps", "1",
                 "--limit", "4", "--data", str(emoji_root), "--out", str(out4)]) == 0
    rep = json.loads((out4 / "report.json").read_text())
    acc = rep["object_accuracy"]
    assert rep["n_generated"] == 8 and acc["judge"]["classes"] == len({r["concept"] for r in _rows(emoji_root)})
    assert acc["judge, plain prompts"]["n"] == acc["judge, styled prompts"]["n"] == 4
    assert 0 <= rep["ssim_pairwise_plain"] <= 1 and "without a style word" in (out4 / "report.md").read_text()
    capsys.readouterr()
    assert main(["eval", "--model", str(tiny_evaluated_model), "--benchmark", "nope", "--data", str(emoji_root)]) == 2
    assert main(["eval", "--model", str(tiny_evaluated_model), "--samples", "0", "--data", str(emoji_root)]) == 2
    assert main(["eval", "--model", str(tmp_path), "--data", str(emoji_root)]) == 2
    assert main(["eval", "--model", str(tiny_evaluated_model), "--benchmark", "concepts", "--guidance", "-1",
                 "--data", str(emoji_root), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark" in err and "at least 1" in err and "not a minicream model" in err and "guidance must be" in err


def _rows(root):
    return [json.loads(line) for split in ("train", "test") for line in (root / split / "metadata.jsonl").read_text().splitlines()
            if json.loads(line).get("skin_tone") is None]
