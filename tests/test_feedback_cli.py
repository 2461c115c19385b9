"""`minicream feedback export | stats` and `minicream train-evaluator --feedback` (issue 35 item 3): known counts,
and every bad input (missing, empty, corrupt database; wrong flags) one line with exit status 2, the file untouched."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from minicream.cli import main
from minicream.feedback import FeedbackStore
from test_feedback import FREE, candidates


def filled_db(path, sets: int = 3):
    """`sets` candidate sets of 3 for 'red apple'; the first picked in each, and the last marked wrong in the first."""
    store = FeedbackStore(path, limits=FREE)
    for i in range(sets):
        hashes, pngs = candidates("red", "blue", "navy", box=i)
        s = store.record_candidates("red apple", {"steps": 2}, hashes, pngs, client="1.2.3.4")
        store.record_choice(hashes[0], set_id=s, client="1.2.3.4")
    store.mark_wrong(candidates("red", "blue", "navy", box=0)[0][2], set_id=1, client="5.6.7.8")
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, argv, *words) -> str:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def test_stats_and_export_known_counts(tmp_path, capsys):
    db = filled_db(tmp_path / "fb.sqlite")
    code, out, _ = run_cli(capsys, "feedback", "stats", "--db", str(db))
    assert code == 0 and "3 candidate sets (9 images); 3 choices and 1 marked wrong from 2 client(s) -> 8 preference pairs" in out
    assert "'red apple' 4" in out
    code, out, _ = run_cli(capsys, "feedback", "stats", "--db", str(db), "--json")
    s = json.loads(out)
    assert (s["candidate_sets"], s["choices"], s["marked_wrong"], s["preference_pairs"]) == (3, 3, 1, 8)
    code, out, _ = run_cli(capsys, "feedback", "export", "--db", str(db), "--out", str(tmp_path / "ex"))
    assert code == 0 and "4 ratings of 3 candidate sets -> 8 preference pairs, 9 images" in out
    info = json.loads((tmp_path / "ex" / "info.json").read_text())
    assert info["pairs"] == 8 and len(list((tmp_path / "ex" / "images").iterdir())) == 9
    first = (tmp_path / "ex" / "preferences.jsonl").read_bytes()
    assert_refused(capsys, ["feedback", "export", "--db", str(db), "--out", str(tmp_path / "ex")], "not empty", "--overwrite")
    code, _, _ = run_cli(capsys, "feedback", "export", "--db", str(db), "--out", str(tmp_path / "ex"), "--overwrite")
    assert code == 0 and (tmp_path / "ex" / "preferences.jsonl").read_bytes() == first  # the same bytes again
    empty = FeedbackStore(tmp_path / "empty.sqlite").path
    code, out, _ = run_cli(capsys, "feedback", "stats", "--db", str(empty))
    assert code == 0 and "0 candidate sets" in out and "no ratings yet" in out


@pytest.mark.parametrize("command", ["stats", "export", "train"])
def test_missing_and_corrupt_databases_are_one_line_and_left_as_they_are(tmp_path, capsys, command):
    def argv(db):
        if command == "train":
            return ["train-evaluator", "--feedback", str(db), "--model", str(tmp_path), "--out", str(tmp_path / "ft")]
        return ["feedback", command, "--db", str(db)] + (["--out", str(tmp_path / "ex")] if command == "export" else [])

    assert_refused(capsys, argv(tmp_path / "missing.sqlite"), "missing.sqlite", "no such feedback database")
    assert not (tmp_path / "missing.sqlite").exists()  # a reader never creates one
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(os.urandom(4096))
    before = bad.read_bytes()
    assert_refused(capsys, argv(bad), "bad.sqlite", "not a SQLite database", "left as it is")
    assert bad.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["bad.sqlite"]


def test_corrupt_database_from_a_real_process_is_one_line(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(5000))
    r = subprocess.run([sys.executable, "-m", "minicream.cli", "feedback", "stats", "--db", str(bad)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "bad.sqlite" in r.stderr and "left as it is" in r.stderr


def tiny_evaluator_model(root):
    """A folder holding evaluator/ (a tiny mini-CLIP and its judge folder): what --model needs for --feedback."""
    from minicream.evaluator.model import EvaluatorConfig, MiniCLIP

    torch.manual_seed(0)
    ev = root / "model" / "evaluator"
    MiniCLIP(EvaluatorConfig(channels=(8, 16), embed_dim=16, text_hidden=32)).save_pretrained(ev, dtype=torch.bfloat16)
    (ev / "judge").mkdir()
    (ev / "judge" / "config.json").write_text("{}")
    return root / "model"


def test_train_evaluator_on_feedback(tmp_path, capsys, monkeypatch):
    from test_feedback_finetune import FakeEncoder

    from minicream.text.encoder import TextEncoder

    monkeypatch.setattr(TextEncoder, "load", classmethod(lambda cls, *a, **k: FakeEncoder()))  # MiniLM's stand-in
    model, db = tiny_evaluator_model(tmp_path), filled_db(tmp_path / "fb.sqlite")
    before = db.read_bytes()
    code, out, err = run_cli(capsys, "train-evaluator", "--feedback", str(db), "--model", str(model), "--out", str(tmp_path / "ft"),
                             "--steps", "3", "--set", "lr=0.001", "--set", "batch_size=4")
    assert code == 0, err
    assert "on 8 preference pairs" in out and "(3 steps)" in out and "fine-tuned evaluator written to" in out
    record = json.loads((tmp_path / "ft" / "feedback.json").read_text())
    assert record["pairs"] == 8 and record["config"]["steps"] == 3 and record["config"]["lr"] == 0.001
    assert record["feedback"] == str(db) and (tmp_path / "ft" / "model.safetensors").is_file()
    assert db.read_bytes() == before  # read, never written
    # an exported folder works as well, and replaces the earlier fine-tuned evaluator
    assert run_cli(capsys, "feedback", "export", "--db", str(db), "--out", str(tmp_path / "ex"))[0] == 0
    code, out, err = run_cli(capsys, "train-evaluator", "--feedback", str(tmp_path / "ex"), "--model", str(model), "--out",
                             str(tmp_path / "ft"), "--steps", "2")
    assert code == 0 and "on 8 preference pairs" in out, err
    # bad input: one line each, nothing written
    empty = FeedbackStore(tmp_path / "empty.sqlite").path
    base = ["train-evaluator", "--model", str(model), "--out", str(tmp_path / "ft2")]
    assert_refused(capsys, base + ["--feedback", str(empty)], "no preference pairs", "minicream serve")
    assert_refused(capsys, base + ["--feedback", str(db), "--data", "data/emoji"], "--data", "not with --feedback")
    assert_refused(capsys, base + ["--feedback", str(db), "--set", "nope=1"], "--set", "anchor_weight")
    assert_refused(capsys, base + ["--feedback", str(db), "--set", "steps=many"], "steps", "expected an integer")
    assert_refused(capsys, base + ["--feedback", str(db), "--steps", "0"], "steps")
    assert_refused(capsys, ["train-evaluator", "--model", str(model), "--out", str(tmp_path / "x")], "--model", "only with --feedback")
    assert_refused(capsys, ["train-evaluator", "--feedback", str(db), "--model", str(tmp_path / "nomodel"), "--out",
                            str(tmp_path / "ft2")], "nomodel")
    assert not (tmp_path / "ft2").exists()
