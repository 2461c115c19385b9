"""Command line: `minicream data | train | distill | generate | filter | edit | vary | outpaint | blend | grid | info |
serve | train-evaluator | train-decoder | train-upscaler | upscale | eval | feedback | samplers | finetune`. A thin layer over the library, one module per group of commands:

    data.py            data emoji, data fetch
    train.py           train, train-decoder, distill, train-upscaler
    generate.py        generate, grid
    edit.py            edit, vary, outpaint, blend
    modes.py           every mode command's flags, from the modes' declared options; `minicream MODE` for any
                       other mode (a new mode file is a new command)
    rerun.py           --from IMAGE.png: what a PNG stores, and the checks of a re-run's inputs
    output.py          PROMPT_SEED.png files
    prompt_filter.py   filter
    info.py            info, samplers
    serving.py         serve
    evaluate.py        train-evaluator, eval
    finetune.py        finetune (adapters), and the --adapter flag of generate, edit, vary, outpaint, blend
    feedback.py        feedback export, feedback stats, train-evaluator --feedback
    upscale.py         upscale

Errors caused by the user (MinicreamError) print one line and exit with status 2; no tracebacks.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from ..errors import MinicreamError
from . import data, edit, evaluate, feedback, finetune, generate, info, modes, prompt_filter, serving, train, upscale
from .rerun import EDIT_COMMANDS

DRAWN_BY = {**EDIT_COMMANDS, "text2img": "generate", "scene": "generate"}  # mode -> the command that draws it


def _one_line_warnings() -> None:
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {str(message).splitlines()[0]}\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="minicream", description="Train a small text-to-image diffusion model from scratch on a CPU, and generate with it.")
    sub = ap.add_subparsers(dest="command", required=True)
    for add in (data.add_parsers, train.add_train_parser, train.add_train_decoder_parser, train.add_distill_parser,
                train.add_train_upscaler_parser, train.add_train_control_parser, train.add_train_image_prompt_parser,
                train.add_train_prior_parser,
                generate.add_generate_parser,
                prompt_filter.add_parsers, edit.add_edit_parser, edit.add_vary_parser, edit.add_outpaint_parser,
                edit.add_blend_parser, generate.add_grid_parser, info.add_info_parser, serving.add_parsers,
                evaluate.add_train_evaluator_parser, evaluate.add_eval_parser, feedback.add_parsers,
                info.add_samplers_parser, finetune.add_finetune_parser, upscale.add_upscale_parser):
        add(sub)
    from ..pipelines import Pipeline

    for name in Pipeline.modes:  # a mode no command above draws: `minicream MODE`, its flags from its declaration
        if name not in DRAWN_BY and name not in sub.choices:
            modes.add_mode_command(sub, name)
    return ap


def main(argv: list[str] | None = None) -> int:
    _one_line_warnings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MinicreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (a training run continues with --resume)", file=sys.stderr)
        return 130
    except OSError as e:  # a full disk, a folder where a file should be, no permission: the system's one line
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: one line here, the traceback in a log file for the report
        log = _crash_log()
        print(f"error: unexpected {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''} "
              f"(traceback in {log}; please report it)", file=sys.stderr)
        return 1
    return 0


def _crash_log() -> str:
    """Write the current exception's traceback to a log file; its path (or a note that it could not be written)."""
    import tempfile
    import time
    import traceback

    folder = Path(os.environ.get("MINICREAM_CACHE") or Path.home() / ".cache" / "minicream") / "crash"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir())
    path = folder / f"minicream-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path.write_text(f"minicream {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    except OSError:
        return "nowhere: the log could not be written"
    return str(path)

