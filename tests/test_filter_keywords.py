"""Emoji search keywords in the language filter: read from the pinned npm packages (fakes here), written into
concepts.json, and used by the offline filter (a whole-phrase keyword of one concept; the meaning rule's texts)."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from minicream.data import emoji_keywords
from minicream.filter import Concept, Vocabulary, build_concepts, load_vocabulary, rewrite, write_model_concepts
from minicream.filter.offline import OfflineFilter
from minicream.pipelines import shipped_model_dir

# Keywords as emojilib 4.0.3 / emojibase-data 17.0.0 give them (a few left out), written out so that the known
# answers below do not depend on the packages being fetched.
REPTILES = {
    "lizard": ["animal", "nature", "reptile", "gecko"],
    "sauropod": ["animal", "nature", "dinosaur", "brachiosaurus", "brontosaurus", "diplodocus", "extinct"],
    "T-Rex": ["animal", "nature", "dinosaur", "tyrannosaurus", "extinct", "trex"],
    "crocodile": ["animal", "nature", "reptile", "lizard", "alligator", "croc", "zoo"],
    "turtle": ["animal", "slow", "nature", "tortoise", "terrapin"],
    "snake": ["animal", "evil", "nature", "hiss", "bearer", "serpent", "zodiac"],
}


def reptiles(keywords: bool = True) -> Vocabulary:
    return Vocabulary([Concept(n, styles=["twemoji"], keywords=list(k) if keywords else []) for n, k in
                       REPTILES.items()], ["twemoji"])


# -- the filter ----------------------------------------------------------------------------------------------
def test_a_keyword_of_one_concept_is_an_answer_without_an_encoder():
    v = reptiles()
    r = rewrite("a terrapin", "offline", v)
    assert r.concepts == ["turtle"] and "emoji search keyword" in r.changes[0]
    assert rewrite("Tortoises", "offline", v).concepts == ["turtle"]  # plural, any case
    # a keyword of several concepts ("dinosaur", "reptile") says too little: no answer without the meaning rule
    assert rewrite("dinosaur", "offline", v).concepts == [] and rewrite("a reptile", "offline", v).concepts == []
    assert rewrite("a terrapin", "offline", reptiles(keywords=False)).concepts == []


def test_russian_keywords_match_inflected():
    v = Vocabulary([Concept("fox", ru="морда лисицы", keywords_ru=["животное", "лиса", "лисица"]),
                    Concept("dog face", ru="морда собаки", keywords_ru=["животное", "собака", "пёс"])], [])
    assert rewrite("лиса", "offline", v).concepts == ["fox"]
    assert rewrite("Лису", "offline", v).concepts == ["fox"]  # an ending stripped
    assert rewrite("собака", "offline", v).concepts == ["dog face"]
    assert rewrite("животное", "offline", v).concepts == []  # the keyword of both


def test_names_and_aliases_win_over_keywords():
    v = reptiles()
    assert rewrite("lizard", "offline", v).concepts == ["lizard"]  # a name, though also crocodile's keyword
    assert "lizard" not in v.offline_filter.keywords


@pytest.mark.parametrize("prompt, concept", [
    ("a tortoise in the garden", "turtle"), ("a diplodocus skeleton", "sauropod"),
])
def test_a_concept_reachable_only_through_its_keywords(minilm, prompt, concept):
    """The meaning rule reads "name, keyword" texts: far from every bare name, these phrases are close to one."""
    assert OfflineFilter(reptiles(keywords=False), minilm).rewrite(prompt).concepts == []
    r = OfflineFilter(reptiles(), minilm).rewrite(prompt)
    assert r.concepts == [concept] and "by meaning" in r.changes[-1]


def test_keyword_similarity_is_the_best_text_less_the_discount(minilm):
    from minicream.filter.embed import KEYWORD_DISCOUNT, concept_texts, similarities

    v = reptiles()
    texts, rows = concept_texts(v)
    assert texts[:len(v.concepts)] == list(REPTILES) and "turtle, tortoise" in texts
    assert len(texts) == len(rows) == len(v.concepts) + sum(map(len, REPTILES.values()))
    sims = similarities("tortoise", v, minilm)
    plain = similarities("tortoise", reptiles(keywords=False), minilm)
    pooled = minilm.encode(["tortoise", "turtle, tortoise"]).pooled.float()
    assert float(sims[4]) == pytest.approx(float(pooled[0] @ pooled[1]) - KEYWORD_DISCOUNT, abs=1e-5)
    assert bool((sims >= plain - 1e-6).all())  # keywords only ever add evidence


# -- concepts.json ----------------------------------------------------------------------------------------
def test_an_old_concepts_file_without_keywords_still_loads(tmp_path):
    old = {"format": "minicream-concepts", "version": 1, "caption_format": "{concept}, {style}", "styles": ["twemoji"],
           "concepts": [{"name": "turtle", "aliases": [], "ru": "черепаха", "emoji": "🐢", "styles": ["twemoji"]}]}
    (tmp_path / "concepts.json").write_text(json.dumps(old), encoding="utf-8")
    v = load_vocabulary(tmp_path)
    assert v.by_name["turtle"].keywords == v.by_name["turtle"].keywords_ru == []
    assert rewrite("черепаха", "offline", v).concepts == ["turtle"]


def test_shipped_models_carry_keywords():
    for model in ("reference", "full"):
        v = load_vocabulary(shipped_model_dir(model))
        assert sum(bool(c.keywords) for c in v.concepts) >= 0.99 * len(v.concepts)
        assert all(not set(c.keywords) & {c.name, *c.aliases} for c in v.concepts)
    blossom = load_vocabulary(shipped_model_dir("full")).by_name["cherry blossom"]
    assert "sakura" in blossom.keywords and "сакура" in blossom.keywords_ru


def _tarball(path, files: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            raw = json.dumps(data, ensure_ascii=False).encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """The two keyword packages as tarballs in a temporary MINICREAM_CACHE (only their layout is real)."""
    from minicream.data.npm_sources import source_path

    monkeypatch.setenv("MINICREAM_CACHE", str(tmp_path / "cache"))
    emoji_keywords.keywords_by_emoji.cache_clear()
    _tarball(source_path(emoji_keywords.KEYWORD_SOURCES["emojilib"]),
             {"package/dist/emoji-en-US.json": {"🐢": ["turtle", "animal", "tortoise"], "☁️": ["cloud", "sky"]}})
    _tarball(source_path(emoji_keywords.KEYWORD_SOURCES["emojibase"]), {
        "package/en/data.json": [{"emoji": "🐢", "label": "turtle", "tags": ["reptile", "tortoise", "Terrapin"]},
                                 {"emoji": "☁", "label": "cloud", "tags": ["weather"]}],
        "package/ru/data.json": [{"emoji": "🐢", "label": "черепаха", "tags": ["рептилия"]}]})
    yield
    emoji_keywords.keywords_by_emoji.cache_clear()


def test_keywords_are_read_from_both_packages(fake_packages):
    assert emoji_keywords.is_fetched()
    assert emoji_keywords.keywords_for("🐢", leave_out=["Turtle"]) == ["animal", "tortoise", "reptile", "terrapin"]
    assert emoji_keywords.keywords_for("☁") == emoji_keywords.keywords_for("☁️") == ["cloud", "sky", "weather"]
    assert emoji_keywords.keywords_for("🐢", "ru") == ["рептилия"]
    assert emoji_keywords.keywords_for("🐢", "ru", leave_out=["Рептилия"]) == []
    assert emoji_keywords.keywords_for("🍎") == [] and emoji_keywords.keywords_for(None) == []


def test_export_writes_keywords_when_fetched_and_leaves_them_empty_without(fake_packages, tmp_path, monkeypatch):
    rows = [{"text": "turtle, twemoji", "concept": "turtle", "aliases": [], "emoji": "🐢", "style": "twemoji"}]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    for name in ("with", "without"):
        (tmp_path / name).mkdir()
    write_model_concepts(tmp_path / "with", ["turtle, twemoji"], tmp_path / "data")
    turtle = load_vocabulary(tmp_path / "with").by_name["turtle"]
    assert turtle.keywords == ["animal", "tortoise", "reptile", "terrapin"] and turtle.keywords_ru == ["рептилия"]
    monkeypatch.setenv("MINICREAM_CACHE", str(tmp_path / "empty"))  # no npm data (CI): the builder goes on without
    emoji_keywords.keywords_by_emoji.cache_clear()
    assert not emoji_keywords.is_fetched()
    write_model_concepts(tmp_path / "without", ["turtle, twemoji"], tmp_path / "data")
    turtle = load_vocabulary(tmp_path / "without").by_name["turtle"]
    assert turtle.keywords == [] and turtle.keywords_ru == []


def test_rows_may_carry_keywords():
    v = build_concepts([{"concept": "turtle", "keywords": ["tortoise"], "style": "twemoji"},
                        {"concept": "turtle", "keywords": ["tortoise", "terrapin"], "keywords_ru": ["рептилия"],
                         "style": "openmoji"}])
    assert v.by_name["turtle"].keywords == ["tortoise", "terrapin"] and v.by_name["turtle"].keywords_ru == ["рептилия"]


def test_keyword_words_are_words_the_filter_can_read(minilm):
    """A keyword the encoder has no token for is still no foreign word: a phrase with it is read, not guessed."""
    assert not OfflineFilter(reptiles(keywords=False), minilm).lexicon().readable("brachiosaurus")
    assert OfflineFilter(reptiles(), minilm).lexicon().readable("brachiosaurus")
