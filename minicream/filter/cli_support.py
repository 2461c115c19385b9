"""What `minicream generate` and `minicream filter` share: options, re-runs from PNG metadata, printing."""
from __future__ import annotations

import sys
from pathlib import Path

from .result import MODES, FilterResult


def add_filter_arguments(parser, default: str | None = "offline") -> None:
    parser.add_argument("--filter", choices=MODES, default=default,
                        help="language filter before encoding (default: offline; 'none' reads the prompt as typed)")
    parser.add_argument("--explain", action="store_true", help="print each change the language filter made")
    parser.add_argument("--style", help="design to ask for (e.g. twemoji, openmoji, noto, fluent), added to the prompt; "
                                        "'vary': a prompt naming no design draws one per image, by its seed; "
                                        "'model': the model chooses (default: the model's sample.style)")
    parser.add_argument("--llm-url", help="OpenAI-compatible API base URL for --filter llm "
                                          "(default $MINICREAM_LLM_URL or http://localhost:11434/v1)")
    parser.add_argument("--llm-model", help="model name for --filter llm (default $MINICREAM_LLM_MODEL or llama3.2)")
    parser.add_argument("--llm-timeout", type=float, help="seconds to wait for the LLM (default 20)")


def llm_config(args):
    from .llm import LLMConfig

    return LLMConfig.from_env(args.llm_url, args.llm_model, args.llm_timeout)


def stored_result(params: dict) -> FilterResult | None:
    """The filter result recorded in a generated PNG, so `generate --from` reads exactly the same text."""
    rewritten = params.get("rewritten_prompt")
    prompt = params.get("prompt")
    if not isinstance(rewritten, str) or not isinstance(prompt, str) or not rewritten:
        return None
    explanation = params.get("filter_explanation") or []
    if isinstance(explanation, str):
        explanation = [explanation]
    mode = params.get("filter") if params.get("filter") in MODES else "none"
    return FilterResult(prompt, rewritten, [str(e) for e in explanation], [], mode, [], mode_requested=mode)


def print_explanation(result: FilterResult, explain: bool, out=None) -> None:
    """Warnings always (stderr); with `explain`, the rewrite and each change."""
    out = out or sys.stderr
    if explain:
        if result.rewritten == result.prompt and not result.changes:
            print(f"filter ({result.mode_used}): prompt unchanged: {result.prompt!r}", file=out)
        else:
            print(f"filter ({result.mode_used}): {result.prompt!r} -> {result.rewritten!r}", file=out)
        for line in result.changes:
            print(f"  - {line}", file=out)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)


def encoder_loader(model_dir: Path):
    """A zero-argument function loading the model's text encoder (only if the embedding rule needs it)."""
    def load():
        from ..text.encoder import TextEncoder

        from ..io.atomic import read_json

        te = read_json(model_dir / "model_index.json")["text_encoder"]
        return TextEncoder.load(None if te["name"] == "minilm" else te["name"], max_length=te["max_length"])

    return load
