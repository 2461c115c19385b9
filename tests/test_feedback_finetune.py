"""People's ratings, used (issue 35 item 3): simulated ratings from the nearest judge, the preference loss, and the
evaluator fine-tuned on ratings. Nothing here needs the trained tiny model or the MiniLM encoder."""
from __future__ import annotations

import hashlib
import io
import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from minicream.errors import MinicreamError
from minicream.feedback import FeedbackStore
from minicream.feedback.export import read_feedback_dataset
from test_feedback import FREE, candidates, png


# -- simulated ratings and fine-tuning -----------------------------------------------------------------------
def _square(color, seed: int) -> Image.Image:
    return Image.open(io.BytesIO(png(color, size=64, box=seed))).convert("RGB")


def test_simulated_ratings_pick_the_judges_winner(tmp_path):
    from minicream.eval.nearest import NearestJudge
    from minicream.feedback.simulate import SIMULATION_LIMITS, simulate_ratings
    from minicream.evaluator.scorer import to_uint8

    judge = NearestJudge(to_uint8([_square("red", 0), _square("blue", 0)]), ["red square", "blue square"])

    def pipe(prompt, num_images, seed):  # candidate j is red when its seed is even, else blue
        return [_square("red" if s % 2 == 0 else "blue", s) for s in seed]

    store = FeedbackStore(tmp_path / "fb.sqlite", limits=SIMULATION_LIMITS)
    ratings = simulate_ratings(pipe, ["red square", "blue square"], 6, judge, candidates=4, store=store, progress=False)
    assert len(ratings) == 6 and store.count().choices == 6
    for r in ratings:
        colour = "red" if r.seeds[r.winner] % 2 == 0 else "blue"
        if {s % 2 for s in r.seeds} == {0, 1}:  # both colours drawn: the judge picks the prompt's
            assert r.prompt.startswith(colour)
        assert r.scores[r.winner] == max(r.scores)
    assert simulate_ratings(pipe, ["red square"], 2, judge, candidates=4, progress=False) == \
        simulate_ratings(pipe, ["red square"], 2, judge, candidates=4, progress=False)  # deterministic
    with pytest.raises(MinicreamError, match="no real image of 'unicorn'"):
        simulate_ratings(pipe, ["unicorn"], 1, judge)


def test_preference_loss_known_answers():
    from minicream.evaluator.losses import preference_loss

    w, l, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    assert float(preference_loss(w, w, t, torch.tensor(10.0))) == pytest.approx(float(torch.log(torch.tensor(2.0))))  # a tie: log 2
    assert float(preference_loss(w, l, t, torch.tensor(100.0))) < 1e-30  # the winner far ahead: ~0
    assert float(preference_loss(l, w, t, torch.tensor(100.0))) == pytest.approx(100.0)  # far behind: the margin itself


class FakeEncoder:
    """MiniLM's stand-in: a fixed random 384-d vector per text (the evaluator's text MLP learns the rest)."""

    def encode(self, texts):
        rows = [torch.randn(384, generator=torch.Generator().manual_seed(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)))
                for t in texts]
        return SimpleNamespace(pooled=torch.stack(rows))


def test_finetune_on_feedback_moves_the_margin_towards_the_ratings(tmp_path):
    from minicream.evaluator.model import EvaluatorConfig, MiniCLIP
    from minicream.evaluator.preference import PreferenceConfig, finetune_on_feedback, pair_tensors, preference_margins
    from minicream.evaluator.scorer import Evaluator

    torch.manual_seed(0)
    MiniCLIP(EvaluatorConfig(channels=(8, 16), embed_dim=16, text_hidden=32)).save_pretrained(tmp_path / "ev", dtype=torch.bfloat16)
    (tmp_path / "ev" / "judge").mkdir()
    (tmp_path / "ev" / "judge" / "config.json").write_text("{}")
    store = FeedbackStore(tmp_path / "fb.sqlite", limits=FREE)
    for i in range(6):  # people prefer red squares to blue ones for "red apple", and blue to red for "blue sky"
        hashes, pngs = candidates("red", "blue", "navy", box=i)
        store.record_candidates("red apple", {}, hashes, pngs)
        store.record_choice(hashes[0])
        hashes, pngs = candidates("blue", "red", "darkred", box=i + 1)
        store.record_candidates("blue sky", {}, hashes, pngs)
        store.record_choice(hashes[0])
    enc = FakeEncoder()
    data = read_feedback_dataset(tmp_path / "fb.sqlite")
    pairs = pair_tensors(data, 64)
    before = preference_margins(Evaluator(MiniCLIP.from_pretrained(tmp_path / "ev"), enc), pairs)
    rec = finetune_on_feedback(tmp_path / "ev", tmp_path / "fb.sqlite", tmp_path / "ft", PreferenceConfig(steps=25, lr=3e-3, batch_size=8),
                               encoder=enc, progress=False, log=lambda s: None)
    after = preference_margins(Evaluator(MiniCLIP.from_pretrained(tmp_path / "ft"), enc), pairs)
    assert rec["pairs"] == 24 and float(after.mean()) > float(before.mean()) + 0.05
    assert float((after > 0).float().mean()) >= max(0.9, float((before > 0).float().mean()))
    assert rec["train_pairs_after"]["margin"] > rec["train_pairs_before"]["margin"]
    assert json.loads((tmp_path / "ft" / "feedback.json").read_text())["pairs"] == 24
    assert (tmp_path / "ft" / "judge" / "config.json").is_file() and not (tmp_path / "ft" / "results.json").exists()
    finetune_on_feedback(tmp_path / "ev", tmp_path / "fb.sqlite", tmp_path / "ft_img", PreferenceConfig(steps=2, train_text=False),
                         encoder=enc, progress=False, log=lambda s: None)
    src, img_only = MiniCLIP.from_pretrained(tmp_path / "ev"), MiniCLIP.from_pretrained(tmp_path / "ft_img")
    assert all(torch.equal(a, b) for a, b in zip(src.text_proj.parameters(), img_only.text_proj.parameters()))
    assert not torch.equal(src.image_tower.proj.weight, img_only.image_tower.proj.weight)
    with pytest.raises(MinicreamError, match="is the evaluator being fine-tuned"):
        finetune_on_feedback(tmp_path / "ev", tmp_path / "fb.sqlite", tmp_path / "ev", encoder=enc, progress=False)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    with pytest.raises(MinicreamError, match="not an earlier fine-tuned evaluator"):
        finetune_on_feedback(tmp_path / "ev", tmp_path / "fb.sqlite", tmp_path / "taken", encoder=enc, progress=False)
    empty = FeedbackStore(tmp_path / "empty.sqlite")
    with pytest.raises(MinicreamError, match="no preference pairs"):
        finetune_on_feedback(tmp_path / "ev", empty.path, tmp_path / "ft2", encoder=enc, progress=False)
