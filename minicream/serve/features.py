"""Which optional options a served pipeline takes: minicream's pipeline declares them (Pipeline.modes["text2img"]);
any other callable pipeline (a test double, a wrapper) is asked by its signature. The native API refuses an
option the pipeline lacks, and the page hides it."""
from __future__ import annotations

import inspect
import typing


def _filter_modes(pipe, parameter: inspect.Parameter | None) -> list[str]:
    modes = getattr(pipe, "filter_modes", None)
    if modes:
        return [str(m) for m in modes]
    if parameter is not None and typing.get_origin(parameter.annotation) is typing.Literal:
        return [str(m) for m in typing.get_args(parameter.annotation)]
    try:  # minicream's own pipeline: the language filter's modes
        from ..filter import MODES
    except ImportError:
        return []
    return [str(m) for m in MODES]


class Features:
    """Which optional pipeline arguments exist (see the module's docstring)."""

    def __init__(self, pipe):
        mode = (getattr(pipe, "modes", None) or {}).get("text2img")
        if mode is not None:
            names = set(mode.names)
            filter_param, default = None, mode.option("filter").default if "filter" in names else None
        else:
            try:
                params = inspect.signature(pipe.__call__, eval_str=True).parameters
            except (NameError, TypeError):  # an annotation that cannot be evaluated: names are enough
                params = inspect.signature(pipe.__call__).parameters
            names, filter_param = set(params), params.get("filter")
            default = filter_param.default if filter_param is not None else None
        self.num_candidates = "num_candidates" in names
        self.keep_top = self.num_candidates and "keep_top" in names
        self.filter = "filter" in names
        self.style = "style" in names
        self.guidance_max_noise = "guidance_max_noise" in names
        self.cads = "cads" in names
        self.layout = "layout" in names
        self.harmonize = "harmonize" in names
        self.canvas = "canvas" in names
        self.filter_modes = _filter_modes(pipe, filter_param) if self.filter else []
        self.filter_default = default if isinstance(default, str) else None

    def as_dict(self) -> dict:
        return {"num_candidates": self.num_candidates, "keep_top": self.keep_top, "filter": self.filter, "filter_modes": self.filter_modes,
                "filter_default": self.filter_default, "style": self.style, "layout": self.layout,
                "guidance_max_noise": self.guidance_max_noise, "cads": self.cads}

