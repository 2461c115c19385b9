"""`minicream generate` (text to image, scenes, `--from` re-runs) and `minicream grid`."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import MinicreamError
from ..filter.cli_support import add_filter_arguments
from .finetune import add_adapter_argument, load_adapters
from .output import save_images, stem_of
from .rerun import EDIT_COMMANDS


def cmd_generate(args) -> None:
    from ..io.pngmeta import check_stored_types, read_png_params
    from ..filter.cli_support import llm_config, print_explanation, stored_result
    from ..pipelines import PARAMS_KEY, Pipeline

    settings, stored, stored_adapters = {}, None, None
    if args.from_image:
        p = check_stored_types(read_png_params(args.from_image), args.from_image)
        stored_adapters = p.get("adapters")  # re-run with the same adapters, or refuse
        if p.get("mode") in EDIT_COMMANDS:
            raise MinicreamError(f"{args.from_image} was made by {p['mode']}: re-run it with `minicream "
                                 f"{EDIT_COMMANDS[p['mode']]} --from {args.from_image} IMAGE` (its input image is not stored)")
        settings = {"prompt": p.get("prompt"), "negative": p.get("negative_prompt", ""), "steps": p.get("steps"),
                    "guidance": p.get("cfg_scale"), "sampler": p.get("sampler"), "seed": p.get("seed"),
                    "dtype": p.get("dtype", "fp32"),  # images from before bf16 sampling were drawn under autocast
                    "guidance_max_noise": p.get("guidance_max_noise", 1.0),  # not stored = guidance at every step
                    "cads": p.get("cads", 0.0)}  # not stored = no condition annealing
        # A re-run reads exactly the stored rewrite, unless the prompt or the filter is changed on the command line;
        # images without one (older, or from A1111) were encoded as typed.
        if args.prompt is None and args.filter is None and args.style is None:
            stored = stored_result(p)
            settings["filter"] = "none" if stored is None else stored.mode_requested
        if isinstance(p.get("layout"), dict):  # a scene re-runs on its recorded layout
            settings["layout"], settings["harmonize"] = p["layout"], p.get("harmonize", 0.0)
    for key in ("prompt", "negative", "steps", "guidance", "guidance_max_noise", "cads", "sampler", "seed", "dtype", "harmonize"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.layout is not None:
        from ..pipelines.layout import Layout

        settings["layout"] = "none" if args.layout == "none" else Layout.read_json(args.layout)
    if not settings.get("prompt"):
        raise MinicreamError("no prompt given; usage: minicream generate \"red apple\" (or --from IMAGE.png)")
    pipe = Pipeline.from_pretrained(args.model, dtype=settings.get("dtype") or "auto")
    load_adapters(pipe, args.adapter, stored_adapters, args.from_image)
    filtered = stored or pipe.filter_prompt(settings["prompt"], args.filter or settings.get("filter") or "offline",
                                            style=args.style, llm=llm_config(args) if args.filter == "llm" else None)
    print_explanation(filtered, args.explain)
    layout = settings.get("layout")
    if isinstance(layout, dict) and "width" not in layout:
        layout = {**layout, "width": pipe.image_size, "height": pipe.image_size}
    if args.explain and layout != "none" and (isinstance(layout, dict) or filtered.scene):
        from ..pipelines.layout import describe
        from ..pipelines.scene import layout_for

        first = settings.get("seed")
        shown = layout_for(pipe, filtered, layout if isinstance(layout, dict) else None,
                           first if first is not None else 0, args.canvas or "scene")
        print("layout" + ("" if isinstance(layout, dict) else f" (seed {first if first is not None else 0})") + ":", file=sys.stderr)
        for line in describe(shown):
            print(f"  - {line}", file=sys.stderr)
    images = pipe(settings["prompt"], filter=filtered, layout=layout, canvas=args.canvas or "scene", harmonize=settings.get("harmonize"), negative_prompt=settings.get("negative") or "", num_images=args.num_images,
                  steps=settings.get("steps"), guidance=settings.get("guidance"), sampler=settings.get("sampler"),
                  guidance_max_noise=settings.get("guidance_max_noise"), cads=settings.get("cads"),
                  seed=settings.get("seed"), batch_size=args.batch_size, size=args.size, progress=True,
                  num_candidates=args.candidates, style=args.style or ("model" if stored is not None else None))
    out = save_images(images, Path(args.out), settings["prompt"])
    if args.grid and len(images) > 1:
        from ..io.grid import image_grid

        grid = image_grid(images, cols=min(8, len(images)), labels=[str(im.info[PARAMS_KEY]["seed"]) for im in images])
        path = out / f"{stem_of(settings['prompt'])}_grid.png"
        grid.save(path)
        print(path)


GRID_PROMPTS = ["red apple", "tangerine", "dog face", "red heart", "rocket", "pizza"]
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
    g.add_argument("--model", help="model directory (default: the shipped reference model)")
    g.add_argument("-n", "--num-images", type=int, default=4, help="number of images")
    g.add_argument("--negative", help="negative prompt")
    g.add_argument("--steps", type=int, help="sampling steps (default from the model)")
    g.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    g.add_argument("--guidance-max-noise", type=float, metavar="F", help="guidance only at noise levels t/T up to F "
                   "(0-1]; above it the conditional prediction alone: more variety between seeds (default: the model's)")
    g.add_argument("--cads", type=float, metavar="S", help="condition annealing (CADS, Sadat et al. 2024): noise of "
                   "scale S on the prompt's embedding at high noise levels, for variety between seeds (default: the model's)")
    g.add_argument("--sampler", help="ddim, ddpm, dpmpp_2m, euler, euler_a, heun, plms (see `minicream samplers`)")
    g.add_argument("--seed", type=int, help="seed of the first image (the others use seed+1, seed+2, ...)")
    g.add_argument("--batch-size", type=int, default=8, help="images denoised together")
    g.add_argument("--size", type=int, help="image size in pixels (must be the model's native size)")
    g.add_argument("--out", default="outputs", help="output folder")
    g.add_argument("--grid", action="store_true", help="also write a grid of all images")
    g.add_argument("--from", dest="from_image", metavar="IMAGE.png", help="re-run the settings stored in a generated PNG")
    g.add_argument("--candidates", type=int, default=1, metavar="N", help="best-of-N: draw N candidates per image, keep the one the evaluator scores highest")
    g.add_argument("--dtype", choices=["auto", "bf16", "fp32"], help="UNet weights: auto (default: bf16 where the CPU/GPU computes it fast, else fp32), bf16, or fp32")
    g.add_argument("--layout", metavar="LAYOUT.json", help='a scene layout: {"objects": [{"caption": "red apple", "box": [x0, y0, x1, y1]}]} '
                   '(pixels of the model\'s canvas); "none" draws a several-object prompt as one caption. Default: the layout '
                   'the filter finds in the prompt')
    g.add_argument("--harmonize", type=float, help="with a layout: img2img strength of the final joint redraw (default 0)")
    g.add_argument("--canvas", choices=["scene", "model"], help="a scene laid out from the prompt: \"scene\" (default) "
                   "sizes the canvas so each object is drawn at the model's size (136x64 for two side by side), "
                   "\"model\" draws it on the model's own square canvas")
    add_filter_arguments(g, default=None)
    add_adapter_argument(g)
    g.set_defaults(func=cmd_generate)


def add_grid_parser(sub) -> None:
    gr = sub.add_parser("grid", help="a labelled sample grid: each prompt in both emoji styles")
    gr.add_argument("prompts", nargs="*", help=f"prompts (default: {', '.join(GRID_PROMPTS)})")
    gr.add_argument("--model", help="model directory (default: the shipped reference model)")
    gr.add_argument("--per-prompt", type=int, default=2, help="images per prompt and style")
    gr.add_argument("--seed", type=int, default=0, help="seed of the first image of each prompt")
    gr.add_argument("--steps", type=int, help="sampling steps")
    gr.add_argument("--guidance", type=float, help="guidance scale")
    gr.add_argument("--sampler", help="sampler name")
    gr.add_argument("--out", default="outputs/grid.png", help="output PNG")
    gr.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="UNet weights: auto (bf16 where fast, else fp32), bf16, or fp32")
    gr.set_defaults(func=cmd_grid)
