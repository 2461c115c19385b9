"""Which optional text-to-image options a served pipeline takes, read from its declared modes (`pipe.modes`,
pipelines/modes.py) and nothing else: the page shows only those, and the native API refuses the others. A pipeline
that is not minicream's (a test double, a wrapper) declares its modes the same way."""
from __future__ import annotations

FLAGS = ("num_candidates", "keep_top", "filter", "style", "guidance_max_noise", "cads", "layout", "harmonize", "canvas")


def declared_modes(pipe) -> dict:
    return dict(getattr(pipe, "modes", None) or {})


class Features:
    """Which optional text2img options exist (see the module's docstring)."""

    def __init__(self, pipe):
        mode = declared_modes(pipe).get("text2img")
        options = {o.name: o for o in mode.options if o.on_http} if mode is not None else {}
        for name in FLAGS:
            setattr(self, name, name in options)
        choice = options.get("filter")
        self.filter_modes = [str(m) for m in choice.choices] if choice is not None else []
        self.filter_default = choice.default if choice is not None and isinstance(choice.default, str) else None

    def as_dict(self) -> dict:
        return {"num_candidates": self.num_candidates, "keep_top": self.keep_top, "filter": self.filter, "filter_modes": self.filter_modes,
                "filter_default": self.filter_default, "style": self.style, "layout": self.layout,
                "guidance_max_noise": self.guidance_max_noise, "cads": self.cads}
