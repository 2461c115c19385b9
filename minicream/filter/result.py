"""The language filter's answer: what was typed, what the model will read, and why."""
from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("offline", "llm", "none")


@dataclass
class FilterResult:
    prompt: str                       # as typed
    rewritten: str                    # what the text encoder reads
    changes: list[str] = field(default_factory=list)   # one line per rewrite, for --explain
    concepts: list[str] = field(default_factory=list)  # the model's concepts the prompt resolved to
    mode_used: str = "none"           # "offline", "llm" or "none" (llm falls back to offline)
    warnings: list[str] = field(default_factory=list)
    mode_requested: str | None = None  # the mode asked for (mode_used differs when the LLM fell back)
    # A scene of several objects (or a count), for the layout step: {"relation": "to the left of" | "to the right of"
    # | "above" | "below" | "and" | None, "objects": [{"concept", "count", "size"}, ...], "style": str | None}
    scene: dict | None = None
    # The LLM's boxes for the scene's objects (filter/llm_plan.py: fractions of the canvas, None where invalid),
    # merged with the rules' layout by pipelines/layout_plan.py; None from the offline filter.
    plan: dict | None = None

    @property
    def explanation(self) -> list[str]:
        """Changes, then warnings (prefixed), as stored in image metadata."""
        return list(self.changes) + [f"warning: {w}" for w in self.warnings]
