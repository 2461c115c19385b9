"""`minicream generate` (text to image, scenes, `--from` re-runs) and `minicream grid`."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import MinicreamError
from ..filter.cli_support import add_filter_arguments
from .finetune import load_adapters
from .modes import add_mode_arguments, given_options
from .output import save_images, stem_of
from .rerun import EDIT_COMMANDS, check_control, check_image_prompt, control_options, image_prompt_options, stored_options


def cmd_generate(args) -> None:
    from ..io.pngmeta import check_stored_types, read_png_params
    from ..filter.cli_support import llm_config, print_explanation, stored_result
    from ..pipelines import PARAMS_KEY, Pipeline

    options, stored, dtype, stored_adapters = {}, None, None, None
    if args.from_image:
        p = check_stored_types(read_png_params(args.from_image), args.from_image)
        stored_adapters = p.get("adapters")  # re-run with the same adapters, or refuse
        if p.get("mode") in EDIT_COMMANDS:
            raise MinicreamError(f"{args.from_image} was made by {p['mode']}: re-run it with `minicream "
                                 f"{EDIT_COMMANDS[p['mode']]} --from {args.from_image} IMAGE` (its input image is not stored)")
        options = {k: v for k, v in stored_options(p).items() if k not in ("strength", "style")}
        dtype = p.get("dtype", "fp32")  # images from before bf16 sampling were drawn under autocast
        # A re-run reads exactly the stored rewrite, unless the prompt or the filter is changed on the command line;
        # images without one (older, or from A1111) were encoded as typed.
        if args.prompt is None and args.filter is None and args.style is None:
            stored = stored_result(p)
            options["filter"] = "none" if stored is None else stored.mode_requested
        options.update(control_options(p))  # a controlled image re-runs with the same control, checked below
        options.update(image_prompt_options(p))  # the same with an image prompt
        if isinstance(p.get("layout"), dict):  # a scene re-runs on its recorded layout
            options["layout"], options["harmonize"] = p["layout"], p.get("harmonize", 0.0)
    options.update(given_options(args, "text2img"))  # the command line's flags, a --layout file read
    if args.prompt is not None:
        options["prompt"] = args.prompt
    image_only = not options.get("prompt") and (options.get("image_prompt") is not None or options.get("image_prompt_sha256"))
    if not options.get("prompt") and not image_only:
        raise MinicreamError("no prompt given; usage: minicream generate \"red apple\" (or --from IMAGE.png, or "
                             "--image-prompt IMAGE)")
    pipe = Pipeline.from_pretrained(args.model, dtype=args.dtype or dtype or "auto")
    load_adapters(pipe, args.adapter, stored_adapters, args.from_image)
    check_control(pipe, options.pop("control_sha256", None), options.get("control"), options.get("control_preprocess"))
    check_image_prompt(pipe, options.pop("image_prompt_sha256", None), options.get("image_prompt"))
    if image_only:
        images = pipe.run("text2img", **options, progress=True)
        save_images(images, Path(args.out), "image prompt")
        return
    filtered = stored or pipe.filter_prompt(options["prompt"], args.filter or options.get("filter") or "offline",
                                            style=args.style, llm=llm_config(args) if args.filter == "llm" else None)
    print_explanation(filtered, args.explain)
    layout = options.get("layout")
    if isinstance(layout, dict) and "width" not in layout:
        layout = options["layout"] = {**layout, "width": pipe.image_size, "height": pipe.image_size}
    if args.explain and layout != "none" and (isinstance(layout, dict) or filtered.scene):
        from ..pipelines.layout import describe
        from ..pipelines.scene import layout_for

        first = options.get("seed")
        shown = layout_for(pipe, filtered, layout if isinstance(layout, dict) else None,
                           first if first is not None else 0, args.canvas or "scene")
        seed_note = "" if isinstance(layout, dict) else f"seed {first if first is not None else 0}, "
        print(f"layout ({seed_note}boxes: {shown.source}):", file=sys.stderr)
        for line in describe(shown):
            print(f"  - {line}", file=sys.stderr)
    options.update(filter=filtered, style=args.style or ("model" if stored is not None else None))
    images = pipe.run("text2img", **options, progress=True)
    out = save_images(images, Path(args.out), options["prompt"])
    if args.grid and len(images) > 1:
        from ..io.grid import image_grid

        grid = image_grid(images, cols=min(8, len(images)), labels=[str(im.info[PARAMS_KEY]["seed"]) for im in images])
        path = out / f"{stem_of(options['prompt'])}_grid.png"
        grid.save(path)
        print(path)


GRID_PROMPTS = ["red apple", "grapes", "dog face", "crown", "light bulb", "rocket", "pizza", "umbrella"]  # everyday
GRID_STYLES = ["twemoji", "openmoji"]  # for a model whose vocabulary names no styles


def cmd_grid(args) -> None:
    from ..io.grid import image_grid
    from ..pipelines import Pipeline

    pipe = Pipeline.from_pretrained(args.model, dtype=args.dtype)
    prompts = args.prompts or GRID_PROMPTS
    styles = pipe.vocabulary.styles or GRID_STYLES  # every design the model was trained in
    images, labels = [], []
    for prompt in prompts:
        for style in styles:
            text = f"{prompt}, {style}"
            images += pipe(text, num_images=args.per_prompt, seed=args.seed, steps=args.steps, guidance=args.guidance, sampler=args.sampler)
            labels += [text] + [""] * (args.per_prompt - 1)
    grid = image_grid(images, cols=len(styles) * args.per_prompt, labels=labels)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    print(out)


def add_generate_parser(sub) -> None:
    g = sub.add_parser("generate", help="generate images from a prompt")
    g.add_argument("prompt", nargs="?", help="what to draw")
    # every flag of text2img (and scenes: --layout, --canvas, --harmonize) from its declared options; --style comes
    # with the filter's flags
    add_mode_arguments(g, ["text2img"], defaults={"num_images": 4}, rerun=False, skip=("style",))
    g.add_argument("--grid", action="store_true", help="also write a grid of all images")
    g.add_argument("--from", dest="from_image", metavar="IMAGE.png", help="re-run the settings stored in a generated PNG")
    add_filter_arguments(g, default=None)
    g.set_defaults(func=cmd_generate)


def add_grid_parser(sub) -> None:
    gr = sub.add_parser("grid", help="a labelled sample grid: each prompt in every design the model knows")
    gr.add_argument("prompts", nargs="*", help=f"prompts (default: {', '.join(GRID_PROMPTS)})")
    gr.add_argument("--model", help="a shipped model's name or a model folder (default: the default model)")
    gr.add_argument("--per-prompt", type=int, default=2, help="images per prompt and style")
    gr.add_argument("--seed", type=int, default=0, help="seed of the first image of each prompt")
    gr.add_argument("--steps", type=int, help="sampling steps")
    gr.add_argument("--guidance", type=float, help="guidance scale")
    gr.add_argument("--sampler", help="sampler name")
    gr.add_argument("--out", default="outputs/grid.png", help="output PNG")
    gr.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="UNet weights: auto (bf16 where fast, else fp32), bf16, or fp32")
    gr.set_defaults(func=cmd_grid)
