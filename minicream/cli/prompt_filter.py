"""`minicream filter`: only rewrite a prompt with the language filter (no drawing), and show its layout."""
from __future__ import annotations

import sys

from ..filter.cli_support import add_filter_arguments

LATENT_FACTOR = 8  # the shipped autoencoders' downsampling (the pipeline reads its own from the weights)


def cmd_filter(args) -> None:
    from ..filter import load_vocabulary, rewrite
    from ..filter.cli_support import encoder_loader, llm_config, print_explanation
    from ..filter.variety import filter_style
    from ..pipelines import resolve_model

    model_dir = resolve_model(args.model)
    vocab = None if args.filter == "none" else load_vocabulary(model_dir)
    result = rewrite(args.prompt, args.filter, vocab, style=filter_style(args.style), encoder=encoder_loader(model_dir),
                     llm=llm_config(args) if args.filter == "llm" else None)
    print(result.rewritten)
    print_explanation(result, args.explain, out=sys.stdout)
    if args.explain and result.scene:
        from ..io.model_dir import ModelDir
        from ..pipelines.layout import describe
        from ..pipelines.layout_plan import scene_layout

        size = ModelDir.open(model_dir).image_size
        shown = scene_layout(result.scene, result.plan, size, LATENT_FACTOR, seed=0)
        print(f"layout (seed 0; each image's seed jitters the rules' boxes; boxes: {shown.source}):")
        for line in describe(shown):
            print(f"  - {line}")


def add_parsers(sub) -> None:
    fl = sub.add_parser("filter", help="only rewrite a prompt with the language filter (no drawing)")
    fl.add_argument("prompt", help="what you would draw")
    fl.add_argument("--model", help="model directory whose vocabulary to use (default: the default model, full)")
    add_filter_arguments(fl)
    fl.set_defaults(func=cmd_filter)
