"""What a pipeline mode is: a name, the options it takes (declared, with types, defaults and help), and a function.

Each file in `minicream/pipelines/` other than base.py and this one defines one `MODE`; `discover()` finds them,
so adding a mode means adding a file. The CLI builds its flags and the server its accepted fields from these
declarations, never from a Python signature.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import MinicreamError

KINDS = ("str", "int", "float", "bool", "seed", "image", "choice", "object")


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # one of KINDS; "seed": an int or a list of ints; "image": a PIL image or a path; "object": API only
    default: Any = None
    help: str = ""
    choices: tuple = ()
    cli: bool = True  # offered as a CLI flag (callbacks, LLM configs and the like are API-only)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind must be one of {KINDS}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# Options that Mode.__call__ applies to the pipeline for the whole call (Pipeline.guidance_limit and
# Pipeline.condition_annealing) instead of passing them to the mode's function.
PIPELINE_OPTIONS = ("guidance_max_noise", "cads")

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
    run: Callable[..., list] = field(repr=False)  # run(pipe, **options) -> list of PIL images

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.options]

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(name)

    def __call__(self, pipe, **kwargs) -> list:
        unknown = sorted(set(kwargs) - set(self.names))
        if unknown:
            raise MinicreamError(f"{self.name}: unknown option(s) {', '.join(unknown)}; it takes {', '.join(self.names)}")
        # None means "the default", as the CLI and the server pass an option that was not given
        values = {o.name: o.default if kwargs.get(o.name) is None else kwargs[o.name] for o in self.options}
        for o in self.options:
            if o.choices and values[o.name] not in o.choices:
                raise MinicreamError(f"{self.name}: {o.name} must be one of {', '.join(map(str, o.choices))}, got {values[o.name]!r}")
        # The guidance interval and condition annealing are the pipeline's: they reach every denoise of this call,
        # nested modes included, without each mode passing them along.
        with pipe.guidance_limit(values.pop("guidance_max_noise", None)), pipe.condition_annealing(values.pop("cads", None)):
            return self.run(pipe, **values)


def discover() -> dict[str, Mode]:
    """Every mode in this package, by name."""
    from . import __path__ as here

    modes: dict[str, Mode] = {}
    for info in sorted(pkgutil.iter_modules(here), key=lambda m: m.name):
        if info.name in ("base", "modes"):
            continue
        mode = getattr(importlib.import_module(f"{__package__}.{info.name}"), "MODE", None)
        if isinstance(mode, Mode):
            modes[mode.name] = mode
    return modes
