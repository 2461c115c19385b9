"""What a pipeline mode is: a name, the options it takes (declared, with types, defaults and help), and a function.

Each mode file in `minicream/pipelines/` defines one `MODE`; `discover()` finds them, so adding a mode means adding
a file. The CLI builds its flags and the server its accepted fields from these declarations, never from a Python
signature. The shared sampling options (`SAMPLING`) are not passed to a mode's function one by one: `Pipeline.run`
builds them into one SamplingSettings (settings.py), and the function is run(pipe, settings, **its own options).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import MinicreamError

NOT_MODES = ("base", "guidance", "layout", "metadata", "modes", "settings")  # the package's files that are no mode
KINDS = ("str", "int", "float", "bool", "seed", "image", "choice", "object")


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # one of KINDS; "seed": an int or a list of ints; "image": a PIL image or a path; "object": API only
    default: Any = None
    help: str = ""
    choices: tuple = ()
    cli: bool = True  # offered as a CLI flag (callbacks, LLM configs and the like are API-only)
    model_key: str = ""  # the default is the model's (model_index.json "sample"[model_key]) when it names one

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind must be one of {KINDS}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# Options every sampling mode takes, in one place so that each mode declares the same names, defaults and help.
SAMPLING = (
    Option("negative_prompt", "str", "", "what the image should not show (replaces the unconditional branch of guidance)"),
    Option("num_images", "int", 1, "number of images"),
    Option("steps", "int", None, "sampling steps (default: the model's)"),
    Option("guidance", "float", None, "classifier-free guidance scale (default: the model's)"),
    Option("guidance_max_noise", "float", None, "guidance only at noise levels t/T up to this (0-1]; above it the "
           "conditional prediction alone, which keeps the seeds' variety (default: the model's, else 1 = every step)"),
    Option("cads", "float", None, "condition annealing (CADS): noise of this scale on the prompt's embedding at high "
           "noise levels, annealed away by t/T 0.6, for variety between seeds (default: the model's, else 0 = off)"),
    Option("sampler", "str", None, "sampler name (see `minicream samplers`; default: the model's)"),
    Option("seed", "seed", None, "seed of the first image (the others use seed+1, ...), or one seed per image"),
    Option("batch_size", "int", 8, "images denoised together (results do not depend on it)"),
    Option("progress", "bool", False, "show a progress bar", cli=False),
    Option("callback", "object", None, "callback(step, total) after every sampling step", cli=False),
    Option("step_callback", "object", None, "step_callback(step, t, x) -> x or None after every sampling step: the "
           "latents x of a chunk of images at timestep t; a tensor it returns replaces them", cli=False),
)
SAMPLING_NAMES = tuple(o.name for o in SAMPLING)  # what SamplingSettings.build takes (seed, num_images: the seeds)
FILTER = (
    Option("filter", "str", "offline", "language filter: offline, llm or none (or a FilterResult to reuse)", cli=False),
    Option("style", "str", None, "a design word (twemoji, openmoji, noto, fluent) the filter adds; \"vary\": a prompt "
                                 "naming no design draws one per image, by its seed; \"model\": the model chooses "
                                 "(default: the model's, model_index.json sample.style)"),
    Option("llm", "object", None, "LLM settings for filter='llm'", cli=False),
)


@dataclass(frozen=True)
class Mode:
    name: str
    help: str
    options: tuple[Option, ...]
    run: Callable[..., list] = field(repr=False)  # run(pipe, settings, **own options) -> list of PIL images
    defaults: Callable[..., dict] | None = field(default=None, repr=False)  # defaults(pipe, own) -> sampling defaults

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.options]

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(name)

    def split(self, options: dict, model_defaults: dict | None = None) -> tuple[dict, dict]:
        """The call's options -> (the sampling options, for SamplingSettings; the mode's own), None meaning "the
        declared default" (as the CLI and the server pass an option that was not given; for an option with a
        `model_key`, the model's value in `model_defaults` when it names one); unknown options and values
        outside an option's choices are refused."""
        unknown = sorted(set(options) - set(self.names))
        if unknown:
            raise MinicreamError(f"{self.name}: unknown option(s) {', '.join(unknown)}; it takes {', '.join(self.names)}")
        model_defaults = model_defaults or {}
        values = {o.name: (model_defaults.get(o.model_key, o.default) if o.model_key else o.default)
                  if options.get(o.name) is None else options[o.name] for o in self.options}
        for o in self.options:
            if o.choices and values[o.name] not in o.choices:
                raise MinicreamError(f"{self.name}: {o.name} must be one of {', '.join(map(str, o.choices))}, got {values[o.name]!r}")
        sampling = {name: values.pop(name) for name in SAMPLING_NAMES if name in values}
        return sampling, values

    def sampling_defaults(self, pipe, own: dict) -> dict:
        """This mode's own defaults for sampling options left at None (blend's image ends: a deterministic sampler
        without guidance), given the mode's own options; {} for most modes."""
        return {} if self.defaults is None else self.defaults(pipe, own)


def discover() -> dict[str, Mode]:
    """Every mode in this package, by name."""
    from . import __path__ as here

    modes: dict[str, Mode] = {}
    for info in sorted(pkgutil.iter_modules(here), key=lambda m: m.name):
        if info.name in NOT_MODES:
            continue
        mode = getattr(importlib.import_module(f"{__package__}.{info.name}"), "MODE", None)
        if isinstance(mode, Mode):
            modes[mode.name] = mode
    return modes
