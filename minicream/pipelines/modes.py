"""What a pipeline mode is: a name, the options it takes (declared, with types, defaults and help), and a function.

Each mode file in `minicream/pipelines/` defines one `MODE`; `discover()` finds them, so adding a mode means adding
a file. Every surface is generated from these declarations, never from a Python signature: the CLI's flags
(cli/modes.py), the server's request models and routes (serve/requests.py, serve/native_api.py), `/api/models`
and the page's editor (serve/static/modes.js). The shared sampling options (`SAMPLING`) are not passed to a mode's function one by one: `Pipeline.run`
builds them into one SamplingSettings (settings.py), and the function is run(pipe, settings, **its own options).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import MinicreamError
from ..filter.normalize import MAX_PROMPT_CHARS
from ..filter.result import MODES as FILTER_MODES
from .settings import MAX_BATCH, MAX_GUIDANCE, MAX_IMAGES, MAX_STEPS

NOT_MODES = ("base", "guidance", "layout", "metadata", "modes", "settings")  # the package's files that are no mode
# "seed": an int or a list of ints (an int over HTTP); "image": a PIL image or a path (base64 over HTTP, a path on the
# command line); "json": a structured value (a dict; a JSON file on the command line) or one of its `choices`;
# "object": a Python value (callbacks, configs): API only, never a flag or an HTTP field; "floats": a list of numbers;
# "parts": a list of images and texts (fusion: PIL images, paths or texts; over HTTP {"image": base64} / {"text": ...};
# on the command line, positional: an existing image file is an image, anything else a text).
KINDS = ("str", "int", "float", "bool", "seed", "image", "json", "object", "floats", "parts")
LIMITS = ("ge", "gt", "le", "lt", "min_length", "max_length")  # pydantic's names for a value's bounds


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # one of KINDS
    default: Any = None
    help: str = ""
    choices: tuple = ()  # the values allowed (for "json": the allowed values besides an object)
    cli: bool = True  # offered as a CLI flag (an input such as the image or the prompt is a positional argument)
    model_key: str = ""  # the default is the model's (model_index.json "sample"[model_key]) when it names one
    required: bool = False  # a call must give it (the prompt of text2img, the image of img2img)
    http: bool = True  # offered over HTTP (as the field `field`)
    field: str = ""  # its JSON name over HTTP when that differs from `name` (blend's `a` is the uploaded "image")
    limits: Any = ()  # its valid range, as {"ge": 1, "le": 500} (LIMITS); the server may cap it lower

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind must be one of {KINDS}")
        limits = dict(self.limits)
        if set(limits) - set(LIMITS):
            raise ValueError(f"option {self.name}: limits are {', '.join(LIMITS)}")
        object.__setattr__(self, "limits", tuple(sorted(limits.items())))  # hashable: Option stays a value
        object.__setattr__(self, "choices", tuple(self.choices))

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def on_cli(self) -> bool:
        return self.cli and self.kind != "object"

    @property
    def on_http(self) -> bool:
        return self.http and self.kind != "object"

    @property
    def http_name(self) -> str:
        return self.field or self.name

    def default_for(self, model_defaults: dict | None = None):
        """The declared default, or the model's (model_index.json "sample"[model_key]) when it names one."""
        return (model_defaults or {}).get(self.model_key, self.default) if self.model_key else self.default

    def describe(self, model_defaults: dict | None = None) -> dict:
        """This option as /api/models lists it (plain JSON)."""
        return {"name": self.name, "field": self.http_name, "kind": self.kind, "default": self.default_for(model_defaults),
                "help": self.help, "choices": list(self.choices), "required": self.required, "limits": dict(self.limits)}


# Options every sampling mode takes, in one place so that each mode declares the same names, defaults and help.
class Text(str):
    """A string that is text, never a file name: what a client sends over HTTP (no client may name a server file)."""


PROMPT = {"min_length": 1, "max_length": MAX_PROMPT_CHARS}  # a prompt's bounds (filter/normalize.py)

# Options every sampling mode takes, in one place so that each mode declares the same names, defaults and help.
SAMPLING = (
    Option("negative_prompt", "str", "", "what the image should not show (replaces the unconditional branch of guidance)",
           limits={"max_length": MAX_PROMPT_CHARS}),
    Option("num_images", "int", 1, "number of images", limits={"ge": 1, "le": MAX_IMAGES}),
    Option("steps", "int", None, "sampling steps (default: the model's)", limits={"ge": 1, "le": MAX_STEPS}),
    Option("guidance", "float", None, "classifier-free guidance scale (default: the model's)",
           limits={"ge": 0.0, "le": MAX_GUIDANCE}),
    Option("guidance_max_noise", "float", None, "guidance only at noise levels t/T up to this (0-1]; above it the "
           "conditional prediction alone, which keeps the seeds' variety (default: the model's, else 1 = every step)",
           limits={"gt": 0.0, "le": 1.0}),
    Option("cads", "float", None, "condition annealing (CADS): noise of this scale on the prompt's embedding at high "
           "noise levels, annealed away by t/T 0.6, for variety between seeds (default: the model's, else 0 = off)",
           limits={"ge": 0.0, "le": 10.0}),
    Option("sampler", "str", None, "sampler name (see `minicream samplers`; default: the model's)", limits={"max_length": 32}),
    Option("seed", "seed", None, "seed of the first image (the others use seed+1, ...), or one seed per image",
           limits={"ge": 0, "le": 2**63 - 1}),
    Option("batch_size", "int", 8, "images denoised together (results do not depend on it)", http=False,
           limits={"ge": 1, "le": MAX_BATCH}),
    Option("progress", "bool", False, "show a progress bar", cli=False, http=False),
    Option("callback", "object", None, "callback(step, total) after every sampling step"),
    Option("step_callback", "object", None, "step_callback(step, t, x) -> x or None after every sampling step: the "
           "latents x of a chunk of images at timestep t; a tensor it returns replaces them"),
)
SAMPLING_NAMES = tuple(o.name for o in SAMPLING)  # what SamplingSettings.build takes (seed, num_images: the seeds)
FILTER = (
    # the CLI's --filter, --explain and --llm-* come with the filter (filter/cli_support.py)
    Option("filter", "str", "offline", "language filter: offline, llm or none (or a FilterResult to reuse)",
           choices=FILTER_MODES, cli=False),
    Option("style", "str", None, "a design word (twemoji, openmoji, noto, fluent) the filter adds; \"vary\": a prompt "
                                 "naming no design draws one per image, by its seed; \"model\": the model chooses "
                                 "(default: the model's, model_index.json sample.style)", limits={"max_length": 200}),
    Option("llm", "object", None, "LLM settings for filter='llm'"),
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
        missing = [o.name for o in self.required if options.get(o.name) is None]
        if missing:
            raise MinicreamError(f"{self.name}: {', '.join(missing)} must be given ({self.option(missing[0]).help})")
        values = {o.name: o.default_for(model_defaults) if options.get(o.name) is None else options[o.name]
                  for o in self.options}
        for o in self.options:  # (a Python object given for a choice, as a FilterResult for `filter`, is no choice)
            if o.choices and isinstance(values[o.name], (str, int, float)) and values[o.name] not in o.choices:
                raise MinicreamError(f"{self.name}: {o.name} must be one of {', '.join(map(str, o.choices))}, got {values[o.name]!r}")
        sampling = {name: values.pop(name) for name in SAMPLING_NAMES if name in values}
        return sampling, values

    @property
    def required(self) -> list[Option]:
        return [o for o in self.options if o.required]

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
