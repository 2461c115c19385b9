"""The language filter: each offline rewrite rule, the LLM path against a local HTTP stand-in (good, bad,
slow answers, fallback), bad inputs, and the wiring into the pipeline, PNG metadata and the CLI."""
from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from minicream.cli import main
from minicream.errors import MinicreamError
from minicream.filter import Concept, FilterResult, Vocabulary, build_concepts, load_vocabulary, rewrite
from minicream.filter.llm import LLMConfig, parse_answer
from minicream.filter.normalize import clean, key
from minicream.filter.offline import OfflineFilter
from minicream.io.pngmeta import read_png_params
from minicream.pipelines import PARAMS_KEY
from minicream.pipelines import shipped_model_dir


@pytest.fixture(scope="module")
def ref_vocab() -> Vocabulary:
    """The shipped model's concepts (the reference recipe's 61 emoji concepts, with English aliases and Russian names)."""
    return load_vocabulary(shipped_model_dir("reference"))


def small_vocab() -> Vocabulary:
    rows = [
        {"concept": "red apple", "aliases": ["apple"], "name_ru": "красное яблоко", "emoji": "🍎", "style": "twemoji"},
        {"concept": "red apple", "style": "openmoji"},
        {"concept": "dog face", "aliases": ["dog"], "name_ru": "морда собаки", "emoji": "🐶", "style": "twemoji"},
        {"concept": "teapot", "name_ru": "заварочныи чаиник", "emoji": "🫖", "style": "twemoji"},
        {"concept": "guitar", "name_ru": "гитара", "emoji": "🎸", "style": "twemoji"},
        {"concept": "automobile", "aliases": ["car"], "name_ru": "автомобиль", "emoji": "🚗", "style": "twemoji"},
        {"concept": "rocket", "name_ru": "ракета", "emoji": "🚀", "style": "twemoji"},
        {"concept": "rocket", "style": "openmoji", "skin_tone": None},
        {"concept": "thumbs up", "emoji": "👍", "style": "twemoji", "skin_tone": "medium", "text": "x"},
    ]
    return build_concepts(rows)


def off(prompt, vocab=None, **kw) -> FilterResult:
    return rewrite(prompt, "offline", vocab or small_vocab(), **kw)


# -- vocabulary -------------------------------------------------------------------------------------------
def test_build_concepts_merges_styles_and_skips_skin_tones():
    v = small_vocab()
    assert [c.name for c in v.concepts] == ["automobile", "dog face", "guitar", "red apple", "rocket", "teapot"]
    assert v.by_name["red apple"].styles == ["twemoji", "openmoji"] and v.styles == ["openmoji", "twemoji"]
    assert v.by_name["red apple"].ru == "красное яблоко" and v.by_name["red apple"].emoji == "🍎"


def test_shipped_model_has_concepts_for_every_caption(ref_vocab):
    captions = json.loads((shipped_model_dir("reference") / "vocabulary.json").read_text())
    names = {c.split(", ")[0] for c in captions}
    assert {c.name for c in ref_vocab.concepts} == names and ref_vocab.styles == ["openmoji", "twemoji"]
    assert ref_vocab.by_name["red apple"].ru == "красное яблоко"


def test_fallback_to_vocabulary_json_and_emoji_package(tmp_path):
    (tmp_path / "vocabulary.json").write_text(json.dumps(["red apple, twemoji", "red apple, openmoji", "rocket, twemoji"]))
    v = load_vocabulary(tmp_path)
    assert v.styles == ["openmoji", "twemoji"] and v.by_name["red apple"].ru == "красное яблоко"
    assert rewrite("красное яблоко", "offline", v).rewritten == "red apple"
    with pytest.raises(MinicreamError, match="no concepts.json or vocabulary.json"):
        load_vocabulary(tmp_path / "missing")


# -- normalisation ----------------------------------------------------------------------------------------
def test_clean_and_key():
    assert clean("ｐｉｚｚａ\x00\u200b  pie\t") == ("pizza pie", 2)
    assert key("Red-Apple!!") == "red apple"
    assert key("Зелёный чайник") == "зеленыи чаиник"


# -- offline rules, one by one ---------------------------------------------------------------------------
@pytest.mark.parametrize("prompt, expected, how", [
    ("red apple", "red apple", None),                            # exact: untouched, no changes
    ("  RED   Apple!! ", "red apple", "case, punctuation"),       # normalisation
    ("apple", "red apple", "alias"),                             # dataset alias
    ("красное яблоко", "red apple", "Russian name"),              # Russian name
    ("Заварочный чайник", "teapot", "Russian name"),              # й/и folding (the emoji package writes "и")
    ("нарисуй ракету", "rocket", "inflected"),                     # Russian ending
    ("puppy", "dog face", "synonym"),                            # curated synonym on top of the aliases
    ("apples", "red apple", "plural"),                           # plural
    ("red aple", "red apple", "typo"),                           # typo, whole phrase
    ("a shiny automobil on the road", "automobile", "typo"),     # typo of one word inside a phrase
    ("a fast car with racing stripes", "automobile", "dropped"),  # known name inside a longer phrase
    ("🍎", "red apple", "emoji character"),                       # emoji character
])
def test_offline_rules(prompt, expected, how):
    r = off(prompt)
    assert r.rewritten == expected and r.concepts == [expected] and r.mode_used == "offline" and not r.warnings
    if how is None:
        assert r.changes == []
    else:
        assert any(how in c for c in r.changes), r.changes


def test_emoji_variation_selector_and_skin_tone(ref_vocab):
    assert rewrite("❤️", "offline", ref_vocab).rewritten == "red heart"
    thumbs = build_concepts([{"concept": "thumbs up", "emoji": "👍", "style": "twemoji"}])
    assert rewrite("👍🏽", "offline", thumbs).rewritten == "thumbs up"  # base concept of a skin-tone variant


def test_style_kept_added_and_checked():
    assert off("rocket in openmoji style").rewritten == "rocket, openmoji"
    assert off("rocket, twemojii").rewritten == "rocket, twemoji"  # a typo in the style word too
    r = off("red apple", style="openmoji")
    assert r.rewritten == "red apple, openmoji" and any("added style" in c for c in r.changes)
    assert any("not trained in style" in w for w in off("dog face", style="openmoji").warnings)
    with pytest.raises(MinicreamError, match="unknown style"):
        off("red apple", style="watercolor")


@pytest.mark.parametrize("prompt, expected", [
    ("a dog left of an apple", "a dog face to the left of a red apple"),
    ("a puppy to the right of a car", "a dog face to the right of an automobile"),
    ("three apples", "three red apples"),
    ("2 rockets", "two rockets"),
    ("big apple above small dog", "a big red apple above a small dog face"),
    ("ракета и яблоко", "a rocket and a red apple"),
])
def test_compositions_keep_relations_counts_sizes(prompt, expected):
    r = off(prompt)
    assert r.rewritten == expected and not r.warnings


def test_training_scene_captions_are_kept(ref_vocab):
    for caption in ("a dog face to the left of a red apple", "three red apples", "a big rocket and a small pizza"):
        assert rewrite(caption, "offline", ref_vocab).rewritten == caption


def test_nearest_concept_by_embedding_and_threshold(tiny_pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("MINICREAM_CACHE_DIR", str(tmp_path))
    f = OfflineFilter(small_vocab(), tiny_pipe.text_encoder)
    r = f.rewrite("a musical instrument")
    assert r.rewritten == "guitar" and any("by meaning" in c for c in r.changes)
    assert list((tmp_path / "filter").glob("concepts-*.safetensors"))  # the concept matrix is cached
    r = f.rewrite("tax returns")  # below the threshold: passed through, and the user is told
    assert r.rewritten == "tax returns" and r.concepts == [] and "used as typed" in r.warnings[0]


def test_concurrent_calls_keep_their_own_settings(tiny_pipe, tmp_path, monkeypatch):
    """One shared filter, many threads, different prompts and thresholds: each result is the one that call asked for
    (the threshold, the encoder and the closest concept live in the call, not on the filter)."""
    from concurrent.futures import ThreadPoolExecutor

    from minicream.filter import get_offline_filter

    monkeypatch.setenv("MINICREAM_CACHE_DIR", str(tmp_path))
    vocab = small_vocab()
    shared = get_offline_filter(vocab)
    assert shared is vocab.offline_filter and shared.encoder is None  # shared: the encoder comes with each call
    cases = [("a musical instrument", 0.0, "guitar"), ("a musical instrument", 0.999, "a musical instrument"),
             ("red apple", 0.999, "red apple"), ("dog, twemoji", 0.5, "dog face, twemoji")] * 6
    expect = {}
    for prompt, threshold, _ in cases:  # alone, one at a time
        expect[prompt, threshold] = rewrite(prompt, "offline", vocab, encoder=tiny_pipe.text_encoder, threshold=threshold)

    def one(case):
        prompt, threshold, want = case
        r = rewrite(prompt, "offline", vocab, encoder=tiny_pipe.text_encoder, threshold=threshold)
        return r.rewritten == want and r.warnings == expect[prompt, threshold].warnings

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, cases))
    assert shared is get_offline_filter(vocab) and shared.threshold == OfflineFilter(vocab).threshold  # never changed
    assert shared.encoder is None  # never patched in by a call
    assert "closest: 'guitar'" in expect["a musical instrument", 0.999].warnings[0]
    # Without an encoder, the same shared filter skips the nearest-concept rule: the prompt is kept as typed.
    assert rewrite("a musical instrument", "offline", vocab, threshold=0.0).rewritten == "a musical instrument"


def test_a_lazy_encoder_is_loaded_once_per_call_and_only_when_needed(tiny_pipe, tmp_path, monkeypatch):
    """The CLI passes a loader (the encoder is only loaded if the embedding rule needs it)."""
    monkeypatch.setenv("MINICREAM_CACHE_DIR", str(tmp_path))
    vocab, loads = small_vocab(), []

    def loader():
        loads.append(1)
        return tiny_pipe.text_encoder

    assert rewrite("red apple", "offline", vocab, encoder=loader).rewritten == "red apple" and loads == []
    assert rewrite("a musical instrument", "offline", vocab, encoder=loader, threshold=0.0).rewritten == "guitar"
    assert loads == [1] and vocab.offline_filter.encoder is None


# -- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt, match", [
    ("", "empty"), ("   \t\n", "empty"), ("x" * 10_000, "10000 characters"), ("!!! ???", "nothing to draw"),
    (None, "must be text"), ("\x00\x01", "nothing to draw"),
])
def test_bad_prompts_are_clear_errors(prompt, match):
    for mode in ("offline", "none"):
        if mode == "none" and match == "nothing to draw":
            continue
        with pytest.raises(MinicreamError, match=match):
            rewrite(prompt, mode, small_vocab())


def test_control_chars_emoji_and_mixed_scripts():
    r = off("red\x07 apple\u200b")
    assert r.rewritten == "red apple" and "removed 2 invisible control characters" in r.changes
    assert off("🚀 ракета rocket").rewritten == "rocket"
    assert off("red яблоко").rewritten == "red apple"
    r = off("🦄")  # an emoji the model never saw: named, and the name resolved or passed on
    assert "unicorn" in r.changes[0]
    with pytest.raises(MinicreamError, match="unknown filter"):
        rewrite("red apple", "magic", small_vocab())


# -- LLM filter against a local HTTP stand-in ---------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    answers: dict = {}
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        _Handler.seen.append((self.path, self.headers.get("Authorization"), body))
        kind, content = _Handler.answers.get(user, ("ok", "{}"))
        if kind == "slow":
            time.sleep(1.5)
        if kind == "trickle":  # headers at once, then one byte every 0.2 s: each read is quick, the whole is not
            self.send_response(200)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if kind == "http500":
            self.send_response(500)
            self.end_headers()
            return
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # the client gave up (the slow case): that is the point
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def llm_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _llm(prompt, url, answer=None, timeout=5.0, **kw):
    if answer is not None:
        _Handler.answers[prompt] = answer
    return rewrite(prompt, "llm", small_vocab(), llm=LLMConfig(url=url, model="stand-in", timeout=timeout), **kw)


def test_llm_good_answer_is_used(llm_server, monkeypatch):
    monkeypatch.setenv("MINICREAM_LLM_API_KEY", "secret")
    r = _llm("something crunchy and red", llm_server,
             ("ok", '```json\n{"prompt": "red apple", "objects": [{"concept": "red apple", "position": "center"}]}\n```'))
    assert r.rewritten == "red apple" and r.mode_used == "llm" and not r.warnings and "LLM" in r.changes[0]
    path, auth, body = _Handler.seen[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer secret" and body["model"] == "stand-in"
    assert "red apple" in body["messages"][0]["content"]  # the vocabulary summary is in the system prompt


def test_llm_scene_plan_without_caption(llm_server):
    plan = {"objects": [{"concept": "dog face", "position": "left"}, {"concept": "rocket", "position": "right"}]}
    r = _llm("a pup on the left, a spaceship on the right", llm_server, ("ok", json.dumps(plan)))
    assert r.rewritten == "a dog face to the left of a rocket" and r.mode_used == "llm"


@pytest.mark.parametrize("prompt, answer, reason", [
    ("bad one apple", ("ok", "Sure! I think you want an apple."), "bad answer"),
    ("ungrounded apple", ("ok", '{"prompt": "a unicorn made of quantum foam"}'), "not grounded"),
    ("unknown plan apple", ("ok", '{"prompt": "red apple", "objects": [{"concept": "pear"}]}'), "unknown concept"),
    ("long apple", ("ok", json.dumps({"prompt": "red apple " * 50})), "characters long"),
    ("server error apple", ("http500", ""), "HTTP 500"),
    ("slow apple", ("slow", '{"prompt": "red apple"}'), "within 0.5 s"),
])
def test_llm_failures_fall_back_to_offline(llm_server, prompt, answer, reason):
    t0 = time.time()
    r = _llm(prompt, llm_server, answer, timeout=0.5)
    assert time.time() - t0 < 5
    assert r.mode_used == "offline" and r.rewritten == "red apple" and r.mode_requested == "llm"
    assert reason in r.warnings[0] and "used the offline filter" in r.warnings[0]


def test_llm_call_has_one_overall_deadline(llm_server):
    """A trickling endpoint cannot hold the caller past the filter's timeout, nor past the server job's deadline."""
    from minicream.deadline import job_deadline

    t0 = time.monotonic()
    r = _llm("trickle apple", llm_server, ("trickle", ""), timeout=1.0)
    assert time.monotonic() - t0 < 2.5 and r.mode_used == "offline" and "in time" in r.warnings[0]
    t0 = time.monotonic()
    with job_deadline(time.monotonic() + 0.5):  # the request's deadline is nearer than the filter's 20 s
        r = _llm("slow deadline apple", llm_server, ("slow", '{"prompt": "red apple"}'), timeout=20.0)
    assert time.monotonic() - t0 < 1.4 and r.mode_used == "offline"
    assert llm_server not in " ".join(r.warnings)  # the endpoint's URL stays out of the answer


def test_llm_unreachable_falls_back():
    r = rewrite("яблоко", "llm", small_vocab(), llm=LLMConfig(url="http://127.0.0.1:9/v1", timeout=1))
    assert r.mode_used == "offline" and r.rewritten == "red apple" and "cannot reach" in r.warnings[0]


def test_parse_answer_validates():
    v = small_vocab()
    assert parse_answer('{"prompt": "rocket"}', v) == ("rocket", [])
    for bad in ("", "no json", "[1, 2]", '{"objects": "x"}'):
        with pytest.raises(ValueError):
            parse_answer(bad, v)


def test_llm_config_from_env(monkeypatch):
    monkeypatch.setenv("MINICREAM_LLM_URL", "http://h:1/v1")
    monkeypatch.setenv("MINICREAM_LLM_MODEL", "m")
    c = LLMConfig.from_env(timeout=3)
    assert (c.url, c.model, c.timeout) == ("http://h:1/v1", "m", 3.0)
    assert LLMConfig.from_env(url="http://x/v1").url == "http://x/v1"


# -- pipeline, PNG metadata, CLI (tiny model) ----------------------------------------------------------------
def test_export_writes_concepts(tiny_model):
    v = load_vocabulary(tiny_model)
    assert (tiny_model / "concepts.json").is_file() and v.by_name["red apple"].ru == "красное яблоко"


def test_pipeline_runs_the_filter_before_encoding(tiny_pipe):
    kw = dict(steps=2, seed=3)
    [a] = tiny_pipe("красное яблоко", **kw)
    [b] = tiny_pipe("red apple", filter="none", **kw)
    assert np.array_equal(np.asarray(a), np.asarray(b))  # the model read exactly "red apple"
    p = a.info["minicream"]
    assert p["prompt"] == "красное яблоко" and p["rewritten_prompt"] == "red apple" and p["filter"] == "offline"
    assert any("Russian name" in line for line in p["filter_explanation"])
    q = b.info["minicream"]
    assert q["rewritten_prompt"] == "red apple" and q["filter"] == "none" and q["filter_explanation"] == []
    with pytest.raises(MinicreamError, match="filter must be one of offline, llm, none"):
        tiny_pipe("red apple", filter="bogus", **kw)


def test_cli_filter_subcommand(tiny_model, capsys):
    assert main(["filter", "красное яблоко", "--explain", "--model", str(tiny_model)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "red apple" and "'красное яблоко' -> 'red apple'" in out[1] and "Russian name" in out[2]
    assert main(["filter", "   "]) == 2
    assert "error: prompt is empty" in capsys.readouterr().err


def test_cli_generate_explain_info_and_exact_rerun(tiny_model, tmp_path, capsys):
    args = ["--model", str(tiny_model), "-n", "1", "--steps", "2", "--seed", "5"]
    assert main(["generate", "собака и яблоко", "--explain", "--out", str(tmp_path / "a"), *args]) == 0
    out, err = capsys.readouterr()
    assert "'собака и яблоко' -> 'a dog face and a red apple'" in err
    [png] = list((tmp_path / "a").glob("*.png"))
    params = read_png_params(png)
    assert params["rewritten_prompt"] == "a dog face and a red apple" and params["filter"] == "offline"
    assert main(["info", str(png)]) == 0
    info = capsys.readouterr().out
    assert "rewritten_prompt: a dog face and a red apple" in info and "filter: offline" in info
    # Re-run from the PNG: same typed prompt, same rewrite, same pixels.
    assert main(["generate", "--from", str(png), "--model", str(tiny_model), "-n", "1", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    [png2] = list((tmp_path / "b").glob("*.png"))
    again = read_png_params(png2)
    assert {k: again[k] for k in ("prompt", "rewritten_prompt", "filter", "filter_explanation")} == \
        {k: params[k] for k in ("prompt", "rewritten_prompt", "filter", "filter_explanation")}
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(png2)))
    # --filter none: the prompt is read as typed.
    assert main(["generate", "red apple", "--filter", "none", "--out", str(tmp_path / "c"), *args]) == 0
    [png3] = list((tmp_path / "c").glob("*.png"))
    assert read_png_params(png3)["filter"] == "none"


def test_filter_work_is_linear_in_prompt_length(monkeypatch):
    """1,000 emoji (2,000 words once resolved) passed validation and then took minutes in the n-gram search;
    n-grams longer than the longest known name are no longer tried, so lookups grow linearly."""
    vocab = load_vocabulary(shipped_model_dir("reference"))
    calls = {"n": 0}
    real = OfflineFilter._lookup

    def counting(self, words, prefer_scene):
        calls["n"] += 1
        return real(self, words, prefer_scene)

    monkeypatch.setattr(OfflineFilter, "_lookup", counting)
    counts = []
    for n in (100, 1000):
        calls["n"] = 0
        rewrite("🍎" * n, "offline", vocab)
        counts.append(calls["n"])
    assert counts[1] <= 12 * counts[0]  # 10x the prompt, ~10x the lookups (all n-grams: ~1,000x)
    max_words = OfflineFilter(vocab).max_words
    assert counts[1] <= 4 * (max_words + 2) * 2000


# -- style variety (filter/variety.py) ------------------------------------------------------------------------
def test_varied_styles_known_answers():
    from minicream.filter.variety import common_styles, filter_style, varied_styles

    v = small_vocab()  # red apple and rocket: openmoji + twemoji; dog face: twemoji only
    assert v.styles == ["openmoji", "twemoji"]
    assert varied_styles(off("apple", v), v, [0, 1, 2, 7]) == ["openmoji", "twemoji", "openmoji", "twemoji"]
    assert varied_styles(off("apple, twemoji", v), v, [0, 1]) is None  # the prompt names a design
    assert varied_styles(off("dog", v), v, [0, 1]) is None  # one design only: nothing to vary
    assert varied_styles(off("red apple", v, style="twemoji"), v, [0]) is None
    assert varied_styles(rewrite("red apple", "none", None), v, [0]) is None  # no filter: no known concept
    assert common_styles(["red apple", "rocket"], v) == ["openmoji", "twemoji"]
    assert common_styles(["red apple", "dog face"], v) == ["twemoji"] and common_styles(["red apple", "unknown"], v) == []
    assert [filter_style(s) for s in ("vary", "model", "noto", None)] == [None, None, "noto", None]


def test_style_vary_draws_one_design_per_seed(tiny_pipe):
    """Under style "vary" a bare name is drawn as "name, design" with design = seed mod n: bit-identical to asking
    for that design; a typed design, "model" and filter "none" are left alone; the model's default applies."""
    v = tiny_pipe.vocabulary
    styles = [s for s in v.styles if s in v.by_name["dog face"].styles]
    assert len(styles) == 2
    kw = dict(steps=2, num_images=2, seed=4)
    varied = tiny_pipe("dog face", style="vary", **kw)
    want = [f"dog face, {styles[s % 2]}" for s in (4, 5)]
    assert [im.info[PARAMS_KEY]["rewritten_prompt"] for im in varied] == want
    assert "chosen by the seed" in varied[1].info[PARAMS_KEY]["filter_explanation"][-1]
    [direct] = tiny_pipe(want[1], style="model", steps=2, seed=5)
    assert np.array_equal(np.asarray(varied[1]), np.asarray(direct))
    plain = tiny_pipe("dog face", style="model", **kw)
    assert [im.info[PARAMS_KEY]["rewritten_prompt"] for im in plain] == ["dog face"] * 2
    assert tiny_pipe("dog face, twemoji", style="vary", **kw)[1].info[PARAMS_KEY]["rewritten_prompt"] == "dog face, twemoji"
    assert tiny_pipe("dog face", style="vary", filter="none", **kw)[1].info[PARAMS_KEY]["rewritten_prompt"] == "dog face"
    tiny_pipe.defaults["style"] = "vary"  # the model's default (model_index.json sample.style)
    try:
        assert tiny_pipe("dog face", **kw)[0].info[PARAMS_KEY]["rewritten_prompt"] == want[0]
        assert tiny_pipe("dog face", style="model", **kw)[0].info[PARAMS_KEY]["rewritten_prompt"] == "dog face"
        [edited] = tiny_pipe.edit(varied[0], "dog face", steps=2, seed=1, strength=0.5)  # other modes: no design added
        assert edited.info[PARAMS_KEY]["rewritten_prompt"] == "dog face"
    finally:
        del tiny_pipe.defaults["style"]
    for bad in (5, "  "):
        with pytest.raises(MinicreamError, match="style must be"):
            tiny_pipe("dog face", style=bad, steps=1)


def test_cli_style_vary_reruns_exactly(tiny_model, tmp_path, capsys):
    args = ["--model", str(tiny_model), "-n", "2", "--steps", "2", "--seed", "6", "--style", "vary"]
    assert main(["generate", "dog face", "--out", str(tmp_path / "a"), *args]) == 0
    capsys.readouterr()
    pngs = sorted((tmp_path / "a").glob("*.png"))
    captions = [read_png_params(p)["rewritten_prompt"] for p in pngs]
    assert len(set(captions)) == 2 and all(c.startswith("dog face, ") for c in captions)
    assert main(["generate", "--from", str(pngs[1]), "--model", str(tiny_model), "-n", "1", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    [again] = list((tmp_path / "b").glob("*.png"))
    assert read_png_params(again)["rewritten_prompt"] == captions[1]
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(pngs[1])), np.asarray(Image.open(again)))
    assert main(["filter", "dog face", "--style", "vary", "--model", str(tiny_model)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "dog face"


# -- typed prompts over a large vocabulary: names with filler words, descriptions, scenes, typos, other languages --
def _names_vocab(*names, aliases=None) -> Vocabulary:
    aliases = aliases or {}
    return build_concepts([{"concept": n, "aliases": aliases.get(n, []), "style": "twemoji"} for n in names])


def test_typo_similarity_counts_keyboard_slips_half():
    from minicream.filter.typo import closest, similarity

    assert similarity("winb", "wing") == 0.875  # b is next to g on the keyboard: half an edit in four letters
    assert similarity("winb", "wind") == 0.75  # d is not: a whole edit
    assert similarity("pcik", "pick") == 0.875  # two neighbouring letters swapped
    assert similarity("aple", "apple") == 0.8 and similarity("same", "same") == 1.0
    assert closest("winb", ["wind", "wine", "wing", "wink", "win"], 0.79) == [("wing", 0.875)]


def test_names_with_filler_words_survive_a_request():
    v = _names_vocab("glass of milk", "woman with headscarf", "woman", "milk")
    assert off("draw glass of milk", v).concepts == ["glass of milk"]
    r = off("draw me a woman with headscarf", v)
    assert r.rewritten == "woman with headscarf" and not r.warnings


def test_last_letter_slip_and_swap_inside_a_name():
    v = _names_vocab("wing", "wind", "wink", "hammer", "hammer and pick", "prince")
    assert off("winb", v).concepts == ["wing"]
    r = off("hammer and pcik", v)  # one name with a typo, not a scene of a hammer and something else
    assert r.rewritten == "hammer and pick" and r.scene is None
    assert off("two pears", _names_vocab("pear", "two hearts")).rewritten == "two pears"  # a count, not a typo


def test_a_count_stands_in_front_of_its_object():
    from minicream.filter.grammar import object_spec

    f = OfflineFilter(_names_vocab("red apple", "slot machine"))
    assert object_spec(f, "three apples".split(), False).count == 3
    assert object_spec(f, "draw 4 apples".split(), False).count == 4
    assert object_spec(f, "casino machine with three reels".split(), False).count == 1


def test_descriptions_weigh_meaning_against_a_word_they_contain(minilm):
    v = _names_vocab("glasses", "nose", "hot beverage", "cup with straw", "birthday cake", "candle", "rocket",
                     "slot machine", "wrench")
    f = OfflineFilter(v, minilm, synonyms={"coffee": "hot beverage"})
    r = f.rewrite("spectacles you wear on your nose")  # "nose" is only in the clause that describes it: meaning wins
    assert r.concepts == ["glasses"] and any("'nose' is named only in what describes it" in c for c in r.changes)
    r = f.rewrite("reading spectacles nose bridge")  # no modifier: the name inside competes by meaning
    assert r.concepts == ["glasses"] and any("closer than 'nose'" in c for c in r.changes), r.changes
    assert f.rewrite("a cup of coffee").concepts == ["hot beverage"]  # the phrase is about the coffee it names
    assert f.rewrite("a birthday cake with candles").concepts == ["birthday cake"]
    r = f.rewrite("casino machine with three reels and a lever")  # one described object: no scene, no count
    assert r.scene is None and "wrench" not in r.concepts
    f = OfflineFilter(_names_vocab("END arrow", "red apple", aliases={"END arrow": ["end"], "red apple": ["apple"]}),
                      minilm)
    assert f.rewrite("an apple in a basket").concepts == ["red apple"]  # the name is what the phrase is about
    r = f.rewrite("a letter from the bank about the end of my loan")  # one word of it, unrelated to the rest
    assert r.concepts == [] and "used as typed" in r.warnings[0]


def test_a_thing_named_only_in_a_modifier_is_not_what_a_description_is_about(minilm):
    """'X with/for/that ... Y': the phrase describes X; Y (and any concept named only by the modifier's words) is set
    aside, unless the head shares its words or says nothing ('something to eat for breakfast: a croissant')."""
    from minicream.filter.meaning import head_and_modifier, modifier_concepts

    assert head_and_modifier("farm vehicle with big back wheels".split()) == (["farm", "vehicle"], ["with", "big", "back", "wheels"])
    assert head_and_modifier("red apple".split()) == (["red", "apple"], [])
    f = OfflineFilter(_names_vocab("tractor", "wheel", "man beard", "croissant", "bowl with spoon", "snake"), minilm)
    assert modifier_concepts(f, "farm vehicle with big back wheels".split())[1] == {"wheel"}
    assert modifier_concepts(f, "man with a beard".split())[1] == set()  # the head shares "man beard"'s words
    assert modifier_concepts(f, "something to eat for breakfast a croissant".split())[1] == set()
    r = f.rewrite("farm vehicle with big back wheels")
    assert r.concepts == ["tractor"] and any("'wheel' is named only in what describes it" in c for c in r.changes)
    assert f.rewrite("something to eat for breakfast: a croissant").concepts == ["croissant"]
    assert f.rewrite("a snake with a beard").concepts == ["snake"]  # the head's name is kept


def test_a_relation_word_inside_a_relative_clause_makes_no_scene(minilm):
    f = OfflineFilter(_names_vocab("mosquito", "beetle", "drop of blood", "red apple", "rocket"), minilm)
    r = f.rewrite("tiny insect that bites and sucks blood")
    assert r.scene is None and len(r.concepts) == 1
    r = f.rewrite("a red apple and a rocket")  # no clause: still a scene
    assert r.scene is not None and r.concepts == ["red apple", "rocket"]


def test_words_the_filter_cannot_read_are_flagged_not_mapped(minilm):
    from minicream.filter.readable import Lexicon

    lex = Lexicon(["red apple"], ["lady", "bug", "howl", "per", "soon", "the"])
    assert lex.readable("ladybug") and lex.readable("howls") and lex.readable("red")
    assert not lex.readable("fuoco") and not lex.readable("téléphones") and not lex.readable("яблоко")
    assert lex.readable("persoon") and not lex.readable("persoon", compounds=False)  # no proof of spelling
    f = OfflineFilter(_names_vocab("flamingo", "fire", "red apple", "telephone"), minilm)
    r = f.rewrite("fuoco")
    assert r.concepts == [] and "not a word this filter can read" in r.warnings[0]
    assert f.rewrite("a flamingo").concepts == ["flamingo"] and f.rewrite("fire").concepts == ["fire"]
    r = f.rewrite("téléphones portables")  # what is found in words the filter cannot read says it is a guess
    assert r.concepts == ["telephone"] and "'téléphones': not readable" in r.warnings[0] and "guess" in r.warnings[0]
