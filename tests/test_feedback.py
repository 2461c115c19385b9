"""People's ratings (issue 35 items 3-4): the SQLite store, its checks under concurrency and against corrupt files,
the API body, the export (fine-tuning: test_feedback_finetune.py). No model needed."""
from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from minicream.errors import MinicreamError
from minicream.feedback import (FeedbackError, FeedbackFull, FeedbackLimits, FeedbackStore, Preference, RateLimited, UnknownImage,
                                png_sha256)
from minicream.feedback.export import export_feedback, read_feedback_dataset

FREE = FeedbackLimits(max_ratings_per_minute=10**9, max_ratings_per_minute_all=10**9, max_ratings_per_set=10**9)


def png(color, size: int = 16, box: int = 0) -> bytes:
    """A small PNG: a `color` square on white, placed by `box` (so the same colour gives several pictures)."""
    im = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(im).rectangle([2 + box % 3, 2 + box // 3 % 3, size - 3, size - 3], fill=color)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def candidates(*colors, box: int = 0):
    pngs = [png(c, box=box) for c in colors]
    return [png_sha256(p) for p in pngs], pngs


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


# -- known answers ------------------------------------------------------------------------------------------
def test_choice_and_wrong_marks_give_exactly_their_pairs(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    (a, b, c), pngs = candidates("red", "green", "blue")
    s = store.record_candidates("red apple", {"steps": 20, "seed": 7}, [a, b, c], pngs)
    assert store.preferences() == [] and store.count().sets == 1
    store.record_choice(a, client="x")
    assert store.preferences() == [Preference("red apple", a, b, "choice"), Preference("red apple", a, c, "choice")]
    store.record_choice(b, others=[c], client="x")  # x changes its mind: the later choice replaces the earlier one
    assert store.preferences() == [Preference("red apple", b, c, "choice")]
    store.mark_wrong(c, set_id=s, client="y")
    assert store.mark_wrong(c, client="y") == store.mark_wrong(c, client="y")  # marking twice: one mark
    assert store.preferences() == [Preference("red apple", b, c, "choice"), Preference("red apple", a, c, "wrong"),
                                   Preference("red apple", b, c, "wrong")]
    assert store.preferences(include_wrong=False) == [Preference("red apple", b, c, "choice")]
    counts = store.count()
    assert (counts.sets, counts.images, counts.choices, counts.wrong) == (1, 3, 1, 1)
    assert store.candidate_set(s) == {"id": s, "prompt": "red apple", "settings": {"seed": 7, "steps": 20}, "created": pytest.approx(
        store.candidate_set(s)["created"]), "images": [a, b, c]}
    assert store.image_png(a) == pngs[0]
    # the newest set holding the images is rated unless set_id names another
    s2 = store.record_candidates("red apple", {}, [a, b], None)
    store.record_choice(a, prompt="red apple")
    assert store.ratings()[-1].set_id == s2 and store.ratings()[-1].rejected == (b,)


def test_unknown_images_and_bad_references_are_refused(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    (a, b), pngs = candidates("red", "green")
    (c,), _ = candidates("blue")
    store.record_candidates("red apple", {}, [a, b], pngs)
    store.record_candidates("dog face", {}, [c], None)
    for call, kind in ((lambda: store.record_choice("0" * 64), UnknownImage), (lambda: store.mark_wrong("f" * 64), UnknownImage),
                       (lambda: store.record_choice(a, others=[c]), UnknownImage),  # not one set
                       (lambda: store.record_choice(a, prompt="dog face"), UnknownImage),
                       (lambda: store.record_choice(a, set_id=2), UnknownImage),
                       (lambda: store.record_choice("../../etc/passwd"), FeedbackError),
                       (lambda: store.record_choice(a, others=[a]), FeedbackError),
                       (lambda: store.image_png("0" * 64), UnknownImage)):
        with pytest.raises(kind) as e:
            call()
        one_line(e)
    assert store.count().choices == 0 and UnknownImage.status == 404


def test_oversized_and_malformed_input_is_refused(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite", limits=FeedbackLimits(max_candidates=3, max_png_bytes=2000))
    hashes, pngs = candidates("red", "green")
    big = png("red", size=200) + os.urandom(3000)
    cases = [(("x" * 1001, {}, hashes, pngs), "prompt: at most 1000"), (("", {}, hashes, pngs), "prompt"),
             (("p", {"k": "v" * 5000}, hashes, pngs), "settings: at most 4096 bytes"), (("p", [1], hashes, pngs), "settings"),
             (("p", {"x": float("nan")}, hashes, pngs), "settings: not JSON"),
             (("p", {}, candidates("red", "green", "blue", "black")[0], None), "1..3 hashes"), (("p", {}, [], None), "1..3"),
             (("p", {}, [hashes[0], hashes[0]], None), "twice"), (("p", {}, hashes, pngs[:1]), "one PNG per hash"),
             (("p", {}, [png_sha256(big), hashes[1]], [big, pngs[1]]), "at most 2000 bytes"),
             (("p", {}, hashes, [pngs[1], pngs[0]]), "not the hash given"), (("p", {}, [png_sha256(b"GIF89a" * 10)], [b"GIF89a" * 10]), "not a PNG")]
    for args, match in cases:
        with pytest.raises(FeedbackError, match=match) as e:
            store.record_candidates(*args)
        one_line(e)
    deep: dict = {}
    for _ in range(100_000):
        deep = {"a": deep}
    with pytest.raises(FeedbackError, match="settings: not JSON"):
        store.record_candidates("p", deep, hashes, pngs)
    with pytest.raises(FeedbackError, match="client"):
        store.record_candidates("p", {}, hashes, pngs, client="c" * 129)
    assert store.count().sets == 0 and store.count().images == 0  # nothing half-recorded


def test_flooding_is_bounded(tmp_path):
    now = [1000.0]
    store = FeedbackStore(tmp_path / "fb.sqlite", clock=lambda: now[0],
                          limits=FeedbackLimits(max_ratings_per_minute=3, max_ratings_per_minute_all=5, max_ratings_per_set=7))
    sets = [candidates("red", "green", box=i) for i in range(9)]
    for hashes, pngs in sets:
        store.record_candidates("red apple", {}, hashes, pngs)
    for i in range(3):
        store.record_choice(sets[i][0][0], client="flood")
    with pytest.raises(RateLimited, match="a minute from one client") as e:
        store.record_choice(sets[3][0][0], client="flood")
    assert RateLimited.status == 429 and one_line(e)
    store.record_choice(sets[3][0][0], client="other")
    store.record_choice(sets[4][0][0], client="other")
    with pytest.raises(RateLimited, match="in all"):
        store.record_choice(sets[5][0][0], client="third")
    now[0] += 61  # a minute later the window has moved on
    store.record_choice(sets[5][0][0], client="flood")
    for i in range(3):  # one set takes at most 7 ratings in all
        now[0] += 61
        store.record_choice(sets[0][0][1], client=f"c{i}")
    with pytest.raises(RateLimited, match="already has 7 ratings"):
        now[0] += 61
        for i in range(4):  # 1 + 3 choices, then 3 marks fill it
            store.mark_wrong(sets[0][0][1], client=f"d{i}")
    now[0] += 61  # changing one's mind over and over: one choice in force, every change counted
    for i in range(3):
        store.record_choice(sets[8][0][i % 2], client="flip")
    with pytest.raises(RateLimited, match="from one client"):
        store.record_choice(sets[8][0][1], client="flip")
    assert [r.image for r in store.ratings() if r.client == "flip"] == [sets[8][0][0]]
    full = FeedbackStore(tmp_path / "fb.sqlite", limits=FeedbackLimits(max_db_bytes=4096))
    with pytest.raises(FeedbackFull, match="full") as e:
        full.record_candidates("p", {}, *candidates("blue"))
    one_line(e)


def test_api_body_is_checked_and_recorded(tmp_path):
    from minicream.feedback import handle_feedback, record_candidate_pngs

    store = FeedbackStore(tmp_path / "fb.sqlite")
    _, pngs = candidates("red", "green", "blue")
    set_id, (a, b, c) = record_candidate_pngs(store, "red apple", {"steps": 20}, pngs, client="1.2.3.4")
    assert [a, b, c] == [png_sha256(p) for p in pngs] and store.image_png(b) == pngs[1]
    assert handle_feedback(store, {"action": "choose", "image": b, "set_id": set_id}, client="1.2.3.4") == \
        {"rating_id": 1, "set_id": set_id, "action": "choose", "image": b}
    assert handle_feedback(store, {"action": "wrong", "image": c, "prompt": "red apple"})["rating_id"] == 2
    assert store.preferences(include_wrong=False) == [Preference("red apple", b, a, "choice"), Preference("red apple", b, c, "choice")]
    for body, match in (([a], "a JSON object"), ({"action": "choose", "image": a, "extra": 1}, "unknown field"),
                        ({"action": "love", "image": a}, "action: one of"), ({"action": "choose", "image": 5}, "sha256"),
                        ({"action": "choose", "image": a, "set_id": True}, "set_id"), ({"action": "choose", "image": a, "set_id": "1"}, "set_id"),
                        ({"action": "wrong", "image": a, "others": [b]}, "only with action choose"),
                        ({"action": "choose", "image": a, "others": "b"}, "others"), ({"action": "choose", "image": a, "prompt": 3}, "prompt")):
        with pytest.raises(FeedbackError, match=match) as e:
            handle_feedback(store, body)
        assert e.value.status == 422 and one_line(e)
    with pytest.raises(UnknownImage) as e:
        handle_feedback(store, {"action": "wrong", "image": "e" * 64})
    assert e.value.status == 404
    assert store.count().choices == 1 and store.count().wrong == 1


# -- concurrency ----------------------------------------------------------------------------------------------
def test_concurrent_threads_lose_nothing(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite", limits=FREE, busy_s=60)
    errors: list[BaseException] = []

    def writer(t: int):
        try:
            for i in range(25):  # 50 writes: a set, then a choice in it
                hashes = [hashlib.sha256(f"{t}-{i}-{j}".encode()).hexdigest() for j in range(3)]
                store.record_candidates(f"prompt {t}", {"i": i}, hashes)
                store.record_choice(hashes[i % 3], client=f"t{t}")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:1]
    c = store.count()
    assert (c.sets, c.images, c.choices) == (200, 600, 200) and len(store.preferences()) == 400
    assert len({r.id for r in store.ratings()}) == 200


WRITER = """
import hashlib, sys
from minicream.feedback import FeedbackLimits, FeedbackStore
k = sys.argv[2]
store = FeedbackStore(sys.argv[1], limits=FeedbackLimits(max_ratings_per_minute=10**9, max_ratings_per_minute_all=10**9), busy_s=60)
for i in range(40):
    hashes = [hashlib.sha256(f"{k}-{i}-{j}".encode()).hexdigest() for j in range(2)]
    store.record_candidates("prompt " + k, {}, hashes)
    store.record_choice(hashes[0], client="p" + k)
"""


def test_concurrent_processes_lose_nothing(tmp_path):
    """Two processes (and this one) write at once into a database none of them has created yet."""
    db = tmp_path / "new" / "fb.sqlite"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), k], env=env, stderr=subprocess.PIPE, text=True) for k in "ab"]
    store = FeedbackStore(db, limits=FREE, busy_s=60)
    for i in range(40):
        hashes = [hashlib.sha256(f"main-{i}-{j}".encode()).hexdigest() for j in range(2)]
        store.record_candidates("prompt main", {}, hashes)
        store.record_choice(hashes[1], client="main")
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    c = store.count()
    assert (c.sets, c.images, c.choices) == (120, 240, 120)
    assert sorted({r.client for r in store.ratings()}) == ["main", "pa", "pb"]


# -- files that are not ours ----------------------------------------------------------------------------------
def _filled_db(path: Path) -> Path:
    store = FeedbackStore(path, limits=FREE)
    for i in range(30):
        hashes, pngs = candidates("red", "blue", box=i)
        store.record_candidates(f"prompt {i} " + "x" * 200, {"i": i}, hashes, pngs)
        store.record_choice(hashes[0])
    return path


def _corrupt(kind: str, path: Path) -> None:
    if kind == "random bytes":
        path.write_bytes(os.urandom(8192))
    elif kind == "a PNG":
        path.write_bytes(png("red"))
    elif kind == "another application's database":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE users (name TEXT, password TEXT)")
        con.execute("INSERT INTO users VALUES ('ann', 'x')")
        con.commit()
        con.close()
    else:
        data = _filled_db(path).read_bytes()
        assert len(data) > 8 * 4096 and not Path(f"{path}-wal").exists()
        if kind == "truncated":
            path.write_bytes(data[:len(data) // 2])
        elif kind == "truncated mid-page":
            path.write_bytes(data[:len(data) - 1000])
        else:  # damaged pages: every page after the first two overwritten with noise
            path.write_bytes(data[:8192] + os.urandom(len(data) - 8192))


@pytest.mark.parametrize("kind", ["random bytes", "a PNG", "another application's database", "truncated", "truncated mid-page",
                                  "damaged pages"])
def test_corrupt_file_is_refused_and_left_as_it_is(tmp_path, kind):
    path = tmp_path / "fb.sqlite"
    _corrupt(kind, path)
    before = path.read_bytes()
    with pytest.raises(MinicreamError) as e:
        FeedbackStore(path)
    msg = one_line(e)
    assert str(path) in msg and ("left as it is" in msg)
    assert path.read_bytes() == before
    with pytest.raises(MinicreamError):
        export_feedback(path, tmp_path / "export")
    assert path.read_bytes() == before and not (tmp_path / "export").exists()


def test_newer_schema_and_non_files_are_refused(tmp_path):
    path = _filled_db(tmp_path / "fb.sqlite")
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 2")
    con.close()
    before = path.read_bytes()
    with pytest.raises(MinicreamError, match="schema version 2 is newer than this minicream reads") as e:
        FeedbackStore(path)
    one_line(e)
    assert path.read_bytes() == before
    with pytest.raises(MinicreamError, match="not a regular file"):
        FeedbackStore(tmp_path)
    with pytest.raises(MinicreamError, match="no such feedback database"):
        FeedbackStore.open_existing(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()
    (tmp_path / "empty.sqlite").write_bytes(b"")  # an empty file holds nothing to lose: it becomes a database
    assert FeedbackStore(tmp_path / "empty.sqlite").count().sets == 0


# -- export ---------------------------------------------------------------------------------------------------
def test_export_round_trip_is_deterministic(tmp_path):
    db = tmp_path / "fb.sqlite"
    store = FeedbackStore(db)
    (a, b, c), pngs = candidates("red", "green", "blue")
    store.record_candidates("red apple", {"steps": 2}, [a, b, c], pngs, client="10.0.0.1")
    store.record_choice(a, client="10.0.0.1")
    store.mark_wrong(c, client="10.0.0.2")
    (d, e), _ = candidates("black", "gray")
    store.record_candidates("dog face", {}, [d, e], None)  # recorded without PNGs: rated, but not exportable
    store.record_choice(d)
    info = export_feedback(db, tmp_path / "out")
    assert info == {"format": "minicream-feedback", "version": 1, "ratings": 3, "candidate_sets": 2, "pairs": 4,
                    "pairs_without_images": 1, "images": 3}
    back = read_feedback_dataset(tmp_path / "out")
    assert back.pairs == [p for p in store.preferences() if p.prompt == "red apple"]
    assert back.pngs == {a: pngs[0], b: pngs[1], c: pngs[2]}
    assert read_feedback_dataset(db).pairs == back.pairs  # the database reads back the same
    assert "10.0.0" not in (tmp_path / "out" / "ratings.jsonl").read_text()  # client addresses are not exported
    export_feedback(db, tmp_path / "out2")
    files = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert all((tmp_path / "out" / f).read_bytes() == (tmp_path / "out2" / f).read_bytes() for f in files) and len(files) == 6
    with pytest.raises(MinicreamError, match="not empty"):
        export_feedback(db, tmp_path / "out")
    assert export_feedback(db, tmp_path / "out", overwrite=True) == info
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(MinicreamError, match="not empty"):
        export_feedback(db, tmp_path / "other", overwrite=True)
    (tmp_path / "out" / "images" / f"{a}.png").write_bytes(pngs[1])
    with pytest.raises(MinicreamError, match="does not match its name"):
        read_feedback_dataset(tmp_path / "out")
