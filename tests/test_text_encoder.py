"""TextEncoder on the packaged all-MiniLM-L6-v2. One encoder per module (first load ~3-5 s, mostly imports);
every test encodes only a handful of prompts."""
import warnings

import pytest
import torch

from minicream.errors import MinicreamError
from minicream.text import encoder as encoder_mod
from minicream.text.encoder import TextEmbeddings, TextEncoder, default_model_dir

MAX_LEN = 16


@pytest.fixture(scope="module")
def enc():
    return TextEncoder.load(max_length=MAX_LEN)


def test_shapes_mask_and_pooled(enc):
    texts = ["a red cat", "a smiling face with sunglasses and a hat", ""]
    out = enc.encode(texts)
    assert isinstance(out, TextEmbeddings) and len(out) == 3
    assert enc.dim == 384 and enc.max_length == MAX_LEN
    assert out.hidden.shape == (3, MAX_LEN, 384) and out.hidden.dtype == torch.float32
    assert out.mask.shape == (3, MAX_LEN) and out.mask.dtype == torch.bool
    assert out.pooled.shape == (3, 384)
    lengths = out.mask.sum(1).tolist()
    assert lengths[2] == 2 and lengths[0] < lengths[1] < MAX_LEN  # [CLS] [SEP] only for ""
    assert torch.equal(out.mask[:, 0], torch.ones(3, dtype=torch.bool))
    assert torch.all(out.hidden[~out.mask] == 0)
    assert torch.allclose(out.pooled.norm(dim=-1), torch.ones(3), atol=1e-5)
    expected = torch.nn.functional.normalize((out.hidden * out.mask[..., None]).sum(1) / out.mask.sum(1, keepdim=True), dim=-1)
    assert torch.allclose(out.pooled, expected, atol=1e-6)
    assert not out.truncated.any()


def test_frozen(enc):
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not enc.model.training


def test_deterministic_and_batch_independent(enc):
    a = enc.encode(["a blue fish", "pizza"])
    b = enc.encode(["pizza", "a blue fish", "a very long caption about a yellow star with five points"])
    assert torch.allclose(a.hidden[0], b.hidden[1], atol=1e-5)
    assert torch.allclose(a.pooled[1], b.pooled[0], atol=1e-5)
    assert torch.equal(a.mask[0], b.mask[1])


def test_different_texts_differ(enc):
    out = enc.encode(["a red heart", "a rocket launching into space"])
    assert (out.pooled[0] @ out.pooled[1]).item() < 0.9
    assert not torch.allclose(out.hidden[0], out.hidden[1])


def test_truncation_warns_once(enc):
    long_prompt = " ".join(["cat"] * 500)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = enc.encode([long_prompt, "dog", long_prompt])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "2 of 3 prompts" in messages[0] and "truncated" in messages[0]
    assert out.truncated.tolist() == [True, False, True]
    assert out.mask[0].all()


def test_sha256_mismatch_raises(monkeypatch):
    monkeypatch.setattr(encoder_mod, "DEFAULT_WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(MinicreamError, match="sha256 mismatch"):
        TextEncoder.load()


def test_load_from_local_folder_matches_default(enc):
    other = TextEncoder.load(default_model_dir(), max_length=MAX_LEN)
    assert other.weights_sha256 == enc.weights_sha256 and other.id.endswith(enc.id.split("@")[1])
    assert torch.allclose(other.encode(["a star"]).pooled, enc.encode(["a star"]).pooled)


def test_load_errors(tmp_path):
    with pytest.raises(MinicreamError, match="text encoder folder not found"):
        TextEncoder.load(tmp_path / "nowhere")
    with pytest.raises(MinicreamError, match="no config.json"):
        TextEncoder.load(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(MinicreamError, match="only pickle"):
        TextEncoder.load(tmp_path)


def test_cache_round_trip(enc, tmp_path, monkeypatch):
    texts = ["a green tree", "a moon", "a golden crown"]
    path = tmp_path / "emb.safetensors"
    first = enc.encode_cached(texts, path)
    assert path.is_file() and first.hidden.dtype == torch.bfloat16
    direct = enc.encode(texts)
    assert torch.allclose(first.hidden.float(), direct.hidden, atol=2e-2)
    assert torch.allclose(first.pooled, direct.pooled, atol=1e-6)

    monkeypatch.setattr(TextEncoder, "encode", lambda *a, **k: pytest.fail("cache hit must not re-encode"))
    again = enc.encode_cached(texts, path)
    for name in ("hidden", "mask", "pooled", "truncated"):
        assert torch.equal(getattr(again, name), getattr(first, name))

    monkeypatch.undo()
    changed = enc.encode_cached(texts[:2], path)  # other texts: stale cache is recomputed and replaced
    assert len(changed) == 2 and torch.allclose(changed.hidden.float(), first.hidden[:2].float(), atol=2e-2)
    assert enc.cache_key(texts) != enc.cache_key(texts[:2])
