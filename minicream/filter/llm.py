"""LLM language filter: any OpenAI-compatible chat-completions endpoint (Ollama, llama.cpp server, vLLM, ...).

The model gets a system prompt with a summary of what the image model knows (styles, caption format,
concept names, and the concepts the offline rules found nearest to this prompt) and answers with JSON:
    {"prompt": "a dog face to the left of a red apple",
     "objects": [{"concept": "dog face", "count": 1, "boxes": [[0.05, 0.2, 0.45, 0.8]]}, ...], "relations": [...]}
("objects" and "relations" are the optional scene plan, boxes as fractions of the canvas: llm_plan.py). The answer
must be short and grounded: the offline filter must resolve it entirely to concepts of the model, and every concept
of the plan must exist. A timeout, a connection error, an HTTP error or an answer that fails these checks falls
back to the offline filter with a warning: generation never fails because the LLM did. A usable caption with an
unusable plan keeps the caption; the rules place what the plan does not (one warning line).
"""
from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass

from ..errors import MinicreamError
from .llm_plan import read_plan
from .result import FilterResult
from .vocabulary import Vocabulary

MAX_ANSWER_CHARS = 300
_POSITIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "top": "above",
              "below": "below", "bottom": "below"}


@dataclass
class LLMConfig:
    url: str = "http://localhost:11434/v1"  # base URL of the API (Ollama's default); /chat/completions is added
    model: str = "llama3.2"
    api_key_env: str = "MINICREAM_LLM_API_KEY"  # name of the environment variable holding the key (optional)
    timeout: float = 20.0                    # seconds for the whole request

    @classmethod
    def from_env(cls, url: str | None = None, model: str | None = None, timeout: float | None = None) -> "LLMConfig":
        """Arguments first, then MINICREAM_LLM_URL / MINICREAM_LLM_MODEL / MINICREAM_LLM_TIMEOUT, then defaults."""
        c = cls()
        c.url = url or os.environ.get("MINICREAM_LLM_URL") or c.url
        c.model = model or os.environ.get("MINICREAM_LLM_MODEL") or c.model
        t = timeout if timeout is not None else os.environ.get("MINICREAM_LLM_TIMEOUT")
        if t is not None:
            try:
                c.timeout = float(t)
            except ValueError:
                raise MinicreamError(f"LLM timeout must be a number of seconds, got {t!r}") from None
        return c


SYSTEM_PROMPT = """You rewrite prompts for a small text-to-image model. It only knows these things:
{summary}
Concepts closest to the user's words: {candidates}.
It can also draw scenes of two objects: "A to the left of B", "A to the right of B", "A above B", "A below B",
"A and B", counts ("three red apples") and sizes ("a big A and a small B"), where A and B are concept names.
Rewrite the user's prompt (any language, typos, paraphrases) into one such caption that uses ONLY exact concept
names from the list{style_hint}. Plan where each object goes: a box per object as fractions of the canvas
[x0, y0, x1, y1] (0 = left/top, 1 = right/bottom). Answer with JSON only, no prose:
{{"prompt": "<the caption>", "objects": [{{"concept": "<name>", "count": 1, "boxes": [[x0, y0, x1, y1]]}}],
"relations": [{{"subject": "<name>", "relation": "left of|right of|above|below|and", "object": "<name>"}}]}}"""


def _candidates(prompt: str, offline, encoder=None) -> list[str]:
    """Concepts the offline rules relate to the prompt (its own answer, and fuzzy neighbours)."""
    from rapidfuzz import fuzz, process

    from .normalize import key

    out = []
    try:
        out += offline.rewrite(prompt, encoder=encoder).concepts
    except MinicreamError:
        pass
    for hit in process.extract(key(prompt), offline.keys, scorer=fuzz.WRatio, limit=8):
        out += [c for _, c, _ in offline.exact[hit[0]]]
    return list(dict.fromkeys(out))[:12]


MAX_RESPONSE_BYTES = 256 * 1024
MAX_JSON_DEPTH = 8  # a plan is 4 deep ({"objects": [{"boxes": [[...]]}]}); Python's json recurses, so bound it first


@functools.cache
def _tls_context():
    """One TLS context per process: httpx builds one per Client by parsing the CA bundle (tens of ms, seconds on a
    loaded CPU), and _ask makes a Client per call; that time came before the call's deadline started."""
    import httpx

    return httpx.create_ssl_context()


def _ask(prompt: str, system: str, cfg: LLMConfig) -> str:
    """The endpoint's answer, within one overall deadline: `cfg.timeout` seconds for the whole exchange (httpx's
    timeouts are per read: an endpoint trickling a byte every few seconds would hold the caller for minutes), and
    never past the current job's deadline (serve --timeout). The request runs in a helper thread; past the deadline
    its connection is closed and httpx.TimeoutException is raised here."""
    import threading

    import httpx

    from ..deadline import remaining

    budget = cfg.timeout
    left = remaining()
    if left is not None:
        budget = min(budget, left)
    if budget <= 0:
        raise httpx.TimeoutException("no time left for the LLM call")
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(cfg.api_key_env)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = {"model": cfg.model, "temperature": 0, "max_tokens": 400,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}]}
    client = httpx.Client(timeout=budget, verify=_tls_context())
    result: dict = {}

    def call():
        try:
            with client.stream("POST", cfg.url.rstrip("/") + "/chat/completions", json=body, headers=headers) as r:
                r.raise_for_status()
                data = b""
                for chunk in r.iter_bytes():
                    data += chunk
                    if len(data) > MAX_RESPONSE_BYTES:
                        raise ValueError(f"the reply is longer than {MAX_RESPONSE_BYTES} bytes")
            result["answer"] = json.loads(data)["choices"][0]["message"]["content"]
        except BaseException as e:  # handed to the caller's thread
            result["error"] = e

    worker = threading.Thread(target=call, name="minicream-llm", daemon=True)
    worker.start()
    worker.join(budget)
    if worker.is_alive():
        client.close()  # unblocks the helper's socket read; the caller moves on now
        raise httpx.TimeoutException(f"no complete answer within {budget:.3g} s")
    client.close()
    if isinstance(result.get("error"), httpx.TimeoutException):  # httpx's own per-read timeout fired first
        raise httpx.TimeoutException(f"no complete answer within {budget:.3g} s")
    if "error" in result:
        raise result["error"]
    return result["answer"]


def _depth(text: str) -> int:
    """How deeply the JSON text nests its arrays and objects (strings skipped), counting only up to past the limit."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
        elif ch in "]}":
            depth -= 1
    return deepest


def read_reply(text: str) -> dict:
    """The JSON object in a model's reply: inside ```json fences or after a sentence of chatter, from the first
    "{" to the last "}". ValueError (one line) when there is none, it nests too deep or it is not JSON."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty answer")
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object in the answer")
    body = text[start:end + 1]
    if _depth(body) > MAX_JSON_DEPTH:
        raise ValueError(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(body)
    except ValueError as e:  # JSONDecodeError, and ints past Python's digit limit
        raise ValueError(f"not valid JSON ({str(e)[:80]})") from None
    if not isinstance(data, dict):
        raise ValueError("answer is not a JSON object")
    return data


def parse_answer(text: str | dict, vocab: Vocabulary) -> tuple[str, list[str]]:
    """(caption, plan concepts) from the LLM's reply (its text, or the JSON object `read_reply` took from it);
    ValueError when it is not a usable answer."""
    data = text if isinstance(text, dict) else read_reply(text)
    objects = data.get("objects") or []
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise ValueError("'objects' is not a list of objects")
    concepts = [str(o.get("concept", "")) for o in objects]
    unknown = [c for c in concepts if c not in vocab.by_name]
    if unknown:  # cut: the name is the model's text, a hostile one may be long
        raise ValueError(f"unknown concept {unknown[0][:40]!r} in the scene plan")
    caption = data.get("prompt")
    if not caption and len(concepts) == 1:
        caption = concepts[0]
    elif not caption and len(concepts) == 2:  # a plan without a caption: say it in the training grammar
        from ..data.scene_layout import with_article

        relation = _POSITIONS.get(str(objects[0].get("position", "")).lower(), "and")
        caption = f"{with_article(concepts[0])} {relation} {with_article(concepts[1])}"
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError("no 'prompt' in the answer")
    if len(caption) > MAX_ANSWER_CHARS:
        raise ValueError(f"answer is {len(caption)} characters long (at most {MAX_ANSWER_CHARS})")
    return caption.strip(), concepts


def llm_rewrite(prompt: str, vocab: Vocabulary, offline, cfg: LLMConfig, style: str | None = None,
                encoder=None) -> FilterResult:
    """encoder: the text encoder of the offline rules this falls back on and checks the answer with."""
    import httpx

    def fallback(reason: str) -> FilterResult:
        res = offline.rewrite(prompt, style, encoder=encoder)
        res.warnings.insert(0, f"LLM filter unavailable ({reason}); used the offline filter")
        return res

    summary = vocab.summary()
    hint = f" and ends with \", {style}\"" if style else ""
    system = SYSTEM_PROMPT.format(summary=summary, candidates=", ".join(_candidates(prompt, offline, encoder)) or "(none)",
                                  style_hint=hint)
    try:
        answer = _ask(prompt, system, cfg)
    except httpx.TimeoutException as e:
        return fallback(f"no answer from the LLM endpoint in time ({e})")
    except httpx.HTTPStatusError as e:
        return fallback(f"the LLM endpoint answered HTTP {e.response.status_code}")
    except (httpx.HTTPError, OSError) as e:
        return fallback(f"cannot reach the LLM endpoint: {type(e).__name__}")
    except (KeyError, IndexError, TypeError, ValueError):
        return fallback("the reply is not a chat-completions response")
    try:
        data = read_reply(answer)
        caption, plan = parse_answer(data, vocab)
    except ValueError as e:
        return fallback(f"bad answer: {e}")
    # Grounding: the offline rules must read the LLM's caption as known concepts, the plan's among them.
    try:
        checked = offline.rewrite(caption, style, encoder=encoder)
    except MinicreamError as e:
        return fallback(f"bad answer: {e}")
    if not checked.concepts or any("used as typed" in w for w in checked.warnings) or any(c not in checked.concepts for c in plan):
        return fallback(f"answer {caption[:60]!r} is not grounded in the model's vocabulary")
    changes = [f"LLM ({cfg.model}): '{prompt}' -> '{caption}'"]
    if checked.rewritten != caption:
        changes.append(f"normalised to the training captions: '{checked.rewritten}'")
    # The plan places the caption's objects; what it misses or gets wrong the rules place (one warning).
    scene_plan, plan_warning = read_plan(data, checked.scene)
    if scene_plan is not None:
        changes.append(f"LLM scene plan: boxes for {', '.join(o['concept'] for o in scene_plan['objects'])}")
    return FilterResult(prompt, checked.rewritten, changes, checked.concepts, "llm", [plan_warning] if plan_warning else [],
                        scene=checked.scene, plan=scene_plan)
