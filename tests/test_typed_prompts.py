"""bench/typed_prompts.jsonl, the typed-prompt benchmark over the whole vocabulary: the file is what its generator
(bench/make_typed_prompts.py) writes from its seed, and it is a fair test (spread, honest, answerable)."""
from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
FILE = BENCH / "typed_prompts.jsonl"


@pytest.fixture(scope="module")
def gen():
    sys.path.insert(0, str(BENCH))  # the generator imports its word lists from bench/
    try:
        spec = importlib.util.spec_from_file_location("make_typed_prompts", BENCH / "make_typed_prompts.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def rows():
    return [json.loads(line) for line in FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def vocab():
    from minicream.filter import load_vocabulary

    return load_vocabulary(Path(__file__).resolve().parent.parent / "minicream" / "full")


def test_file_is_what_the_seed_gives(gen):
    assert FILE.read_text(encoding="utf-8") == gen.render(gen.build()), \
        "bench/typed_prompts.jsonl is stale: run .venv/bin/python bench/make_typed_prompts.py"


def test_prompts_are_many_unique_and_answerable(gen, rows, vocab):
    assert len(rows) >= 300
    prompts = [r["prompt"] for r in rows]
    assert len(set(prompts)) == len(prompts)
    assert {r["category"] for r in rows} == set(gen.CATEGORIES)
    assert Counter(r["category"] for r in rows) == gen.CATEGORIES
    for r in rows:
        assert set(r) == {"prompt", "concepts", "category", "group", "language"}
        assert r["prompt"].strip() and r["concepts"], r
        assert all(c in vocab.by_name for c in r["concepts"]), r  # every accepted answer is a concept of `full`
    drawn = [r["concepts"][0] for r in rows]
    assert len(set(drawn)) == len(drawn)  # one prompt per concept


def test_concepts_spread_over_the_groups(rows):
    groups = Counter(r["group"] for r in rows)
    assert len(groups) >= 10  # the nine Unicode groups with concepts, and the emoji newer than the group table
    assert max(groups.values()) <= 0.2 * len(rows)  # no group (Flags, People & Body) dominates
    for category in {r["category"] for r in rows}:
        assert len({r["group"] for r in rows if r["category"] == category}) >= 8, category


def test_hand_written_prompts_never_give_the_name_away(gen, rows, vocab):
    from minicream.filter.normalize import key

    names = {key(c) for c in vocab.by_name}
    for r in rows:
        if r["category"] in ("synonym", "description"):
            assert key(r["concepts"][0]) not in key(r["prompt"]), r
        if r["category"] in ("synonym", "description", "alias"):
            assert key(r["prompt"]) not in names, r  # another concept's name would ask for that concept
    from typed_prompt_words import DESCRIPTIONS, SYNONYMS  # every hand-written entry is used: no leftovers

    used = {(r["category"], r["concepts"][0]) for r in rows}
    assert {("synonym", c) for c in SYNONYMS} | {("description", c) for c in DESCRIPTIONS} <= used


def test_newer_emoji_characters_reach_the_filter(vocab):
    """Emoji 15+ characters (moose, goose, shovel, ...) are unassigned in Python 3.11's Unicode tables; the filter's
    clean-up once removed them as invisible control characters, so "🪏" had "nothing to draw"."""
    from minicream.filter import rewrite
    from minicream.filter.normalize import clean

    for c in vocab.concepts:
        assert clean(c.emoji)[1] == 0, c.name
    for chars, name in (("\U0001FA8F", "shovel"), ("\U0001FACE", "moose"), ("\U0001FABF", "goose")):
        assert rewrite(chars, "offline", vocab).concepts == [name]
    assert clean("red\x07 apple\u200b") == ("red apple", 2)  # real control characters still go
