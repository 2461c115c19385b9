"""The mode commands' flags, generated from the modes' declared options (minicream/pipelines/<mode>.py, modes.py).

Every option a mode offers on the command line (`Option.on_cli`) becomes a flag named after it (`--num-images`),
with its type, choices and help; its default stays None on the command line, so the mode's own (or the model's)
default applies and `--from IMAGE.png` can fill what the command line leaves out. A required option that is no flag
(the image, the prompt) is a positional argument of a mode's generic command. `generate`, `edit`, `vary`,
`outpaint` and `blend` build their flags here; every other mode gets the generic command `minicream MODE`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MinicreamError
from .finetune import add_adapter_argument, load_adapters
from .output import save_images

KIND_TYPES = {"str": str, "int": int, "float": float, "seed": int, "image": str, "json": str, "floats": float, "parts": str}
LISTS = ("floats", "parts")  # kinds given as several values (nargs="+")
ALIASES = {"num_images": ("-n",), "negative_prompt": ("--negative",), "num_candidates": ("--candidates",)}
METAVARS = {"image": "IMAGE", "json": "FILE.json", "parts": "IMAGE_OR_TEXT"}
MAX_JSON_BYTES = 64 * 1024  # a JSON option on the command line (a layout of six boxes is a few hundred bytes)


def modes_of(names):
    from ..pipelines import Pipeline

    missing = [n for n in names if n not in Pipeline.modes]
    if missing:
        raise KeyError(f"no mode {missing[0]!r}")
    return [Pipeline.modes[n] for n in names]


def cli_options(mode_names) -> list:
    """The flag options of these modes, each name once (the first mode's declaration)."""
    seen = {}
    for mode in modes_of(mode_names):
        for o in mode.options:
            if o.on_cli and o.name not in seen:
                seen[o.name] = o
    return list(seen.values())


def add_mode_arguments(parser: argparse.ArgumentParser, mode_names, defaults: dict | None = None, rerun: bool = True,
                       skip: tuple = ()) -> None:
    """A flag for every CLI option the modes declare, with its type, choices, help and default (`defaults`: this
    command's own, e.g. generate's -n 4), then the common --model, --dtype, --out and (with `rerun`) --from."""
    defaults = defaults or {}
    for o in cli_options(mode_names):
        if o.name in skip:
            continue
        shown = defaults.get(o.name, o.default)
        choices = [c for c in o.choices if o.kind != "json"] or None
        if o.kind == "bool":  # --prior / --no-prior; not given: the mode's default
            parser.add_argument(o.flag, dest=o.name, action=argparse.BooleanOptionalAction, default=defaults.get(o.name),
                                help=o.help + (f" (default {'on' if shown else 'off'})" if "default" not in o.help else ""))
            continue
        parser.add_argument(*ALIASES.get(o.name, ()), o.flag, dest=o.name, type=KIND_TYPES.get(o.kind, str),
                            choices=choices, default=defaults.get(o.name), metavar=METAVARS.get(o.kind, None),
                            **({"nargs": "+"} if o.kind in LISTS else {}),
                            help=o.help + (f" (default {shown})" if shown not in (None, "") and
                                                   "default" not in o.help else ""))
    parser.add_argument("--model", help="model directory or a shipped model's name (default: the shipped model)")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], help="UNet weights: auto (default: bf16 where the "
                        "CPU/GPU computes it fast, else fp32), bf16, or fp32")
    parser.add_argument("--out", default="outputs", help="output folder")
    add_adapter_argument(parser)
    if rerun:
        parser.add_argument("--from", dest="from_image", metavar="IMAGE.png",
                            help="re-run the settings stored in a PNG this command made (give the same input image and mask)")


def read_json_option(o, value):
    """A json option's command-line value: one of its choices as given, else the JSON object in that file."""
    from ..io.atomic import read_json_object

    if o.kind != "json" or value is None or value in o.choices or not isinstance(value, (str, Path)):
        return value
    return read_json_object(value, f"{o.name} {value}", MAX_JSON_BYTES)


def given_options(args, mode_name: str) -> dict:
    """The mode's options the command line gives (None: not given), JSON files read."""
    [mode] = modes_of([mode_name])
    return {o.name: read_json_option(o, getattr(args, o.name, None)) for o in mode.options
            if o.on_cli and getattr(args, o.name, None) is not None}


def run_mode(args, mode: str, stored: dict | None = None, **inputs):
    """Run `mode` with the command line's options; `stored` (from `--from`) fills what the command line leaves out."""
    from ..pipelines import Pipeline
    from .rerun import check_inputs

    options = {**(stored or {}), **given_options(args, mode)}
    pipe = Pipeline.from_pretrained(args.model, dtype=args.dtype or "auto")
    load_adapters(pipe, args.adapter, (stored or {}).get("adapters"), getattr(args, "from_image", None))
    if stored:
        check_inputs(pipe, stored, inputs.get("image"), inputs.get("mask"))
    names = set(pipe.modes[mode].names)
    options = {k: v for k, v in options.items() if k in names and k not in inputs and v is not None}
    return pipe.run(mode, **options, **inputs, progress=True)


# -- the generic command of a mode no other command draws ---------------------------------------------------
def positionals(mode) -> list:
    """The mode's inputs on the command line: its required options that are no flag, in declared order."""
    return [o for o in mode.options if o.required and not o.on_cli and o.kind != "object"]


def add_mode_command(sub, mode_name: str) -> None:
    [mode] = modes_of([mode_name])
    p = sub.add_parser(mode.name, help=mode.help, description=f"{mode.help} (the {mode.name} mode; its options are "
                                                               f"declared in minicream/pipelines)")
    for o in positionals(mode):
        p.add_argument(o.name, metavar=METAVARS.get(o.kind, o.name.upper()), type=KIND_TYPES.get(o.kind, str),
                       choices=[c for c in o.choices if o.kind != "json"] or None, **({"nargs": "+"} if o.kind in LISTS else {}),
                       help=o.help + (" (an image file)" if o.kind == "image" else ""))
    add_mode_arguments(p, [mode.name], rerun=False)
    p.set_defaults(func=cmd_mode, mode_command=mode.name)


def cmd_mode(args) -> None:
    [mode] = modes_of([args.mode_command])
    inputs = {o.name: read_json_option(o, getattr(args, o.name)) for o in positionals(mode)}
    images = run_mode(args, mode.name, **inputs)
    # PNGs named after the first input: a text as typed, an image (or a list's first part that is one) by its file's name
    first = [_input_name(o, v) for o, v in zip(positionals(mode), inputs.values())][:1]
    save_images(images, Path(args.out), first[0] if first else mode.name, prefix=f"{mode.name}_")


def _input_name(option, value) -> str:
    from ..pipelines.blend import is_image

    value = value[0] if isinstance(value, list) and value else value
    # a fusion's part is an image or a text (the mode has checked which); other texts are named as typed
    named_file = option.kind == "image" or (option.kind == "parts" and is_image(value, option.name))
    return Path(value).stem if named_file else str(value)
