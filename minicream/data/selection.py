"""Training on a selection of the dataset: the images of named concepts and of Unicode emoji groups.

Used by the generator's recipe (`data.concepts` / `data.groups`) and by the evaluator, which concentrates
on the generator's concepts so that it can tell apart exactly what the generator draws.
"""
from __future__ import annotations

from ..errors import MinicreamError
from .folder import Example


def select_examples(examples: list[Example], concepts, groups, what: str = "data") -> list[Example]:
    """The images whose concept is in `concepts` or whose emoji group is in `groups` (see DataConfig).

    `what` names the config section in the error messages ("data", "evaluator").
    """
    from .emoji_names import emoji_group, emoji_groups

    unknown = sorted(set(groups) - set(emoji_groups()))
    if unknown:
        raise MinicreamError(f"{what}.groups: unknown emoji group(s) {', '.join(map(repr, unknown))}; known: {', '.join(emoji_groups())}")
    concepts, groups = set(concepts), set(groups)

    def group(e: Example) -> str | None:
        return e.meta.get("group") or emoji_group(e.meta.get("emoji") or "")

    kept = [e for e in examples if e.meta.get("concept") in concepts or e.meta.get("base_concept") in concepts or group(e) in groups]
    missing = sorted(concepts - {e.meta.get(k) for e in kept for k in ("concept", "base_concept")})
    if missing:
        raise MinicreamError(f"{what}.concepts: no training image of {', '.join(map(repr, missing[:10]))}"
                             + (f" and {len(missing) - 10} more" if len(missing) > 10 else "") + "; check the names against the dataset's metadata.jsonl")
    return kept
