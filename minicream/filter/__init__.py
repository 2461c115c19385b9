"""Language filter: turn what a person types into a prompt the model can draw.

    from minicream.filter import rewrite, load_vocabulary
    vocab = load_vocabulary("minicream/reference")
    rewrite("красное яблоко", "offline", vocab).rewritten   # 'red apple'

Modes: "offline" (rules grounded in the model's concepts; always available), "llm" (any OpenAI-compatible
chat-completions endpoint, validated against the vocabulary, falling back to offline on any failure),
"none" (the prompt as typed).
"""
from __future__ import annotations

from .normalize import MAX_PROMPT_CHARS, check_prompt
from .result import MODES, FilterResult
from .vocabulary import Concept, Vocabulary, build_concepts, load_vocabulary, write_model_concepts

__all__ = ["MODES", "MAX_PROMPT_CHARS", "Concept", "FilterResult", "Vocabulary", "build_concepts",
           "load_vocabulary", "rewrite", "write_model_concepts", "get_offline_filter"]

def get_offline_filter(vocabulary: Vocabulary):
    """The vocabulary's own OfflineFilter (Vocabulary.offline_filter: built once, kept with the vocabulary). It is
    shared by every call: a call's own settings (threshold, text encoder) go to its rewrite(), never onto the filter."""
    return vocabulary.offline_filter


def rewrite(prompt: str, mode: str, vocabulary: Vocabulary | None, style: str | None = None, encoder=None,
            llm=None, threshold: float | None = None) -> FilterResult:
    """Rewrite `prompt` with filter `mode` ("offline", "llm" or "none").

    encoder: a TextEncoder (or a callable returning one) for the nearest-concept rule; without it that
        rule is skipped. llm: an `LLMConfig` for mode "llm" (default: from the environment).
    Raises MinicreamError for prompts no mode accepts (empty, too long, not text) and unknown modes.
    """
    result = _rewrite(prompt, mode, vocabulary, style, encoder, llm, threshold)
    result.mode_requested = mode
    return result


def _rewrite(prompt, mode, vocabulary, style, encoder, llm, threshold) -> FilterResult:
    from ..errors import MinicreamError

    if mode not in MODES:
        raise MinicreamError(f"unknown filter {mode!r}; choose one of: {', '.join(MODES)}")
    check_prompt(prompt)
    if mode == "none":
        if style:
            return FilterResult(prompt, f"{prompt}, {style}", [f"added style '{style}' (style option)"], [], "none")
        return FilterResult(prompt, prompt, [], [], "none")
    if vocabulary is None:
        raise MinicreamError(f"filter {mode!r} needs the model's vocabulary (concepts.json or vocabulary.json)")
    offline = get_offline_filter(vocabulary)
    if mode == "offline":
        return offline.rewrite(prompt, style, threshold=threshold, encoder=encoder)
    from .llm import LLMConfig, llm_rewrite

    return llm_rewrite(prompt, vocabulary, offline, llm or LLMConfig.from_env(), style, encoder=encoder)
