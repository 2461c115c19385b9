"""Command line: `minicream data | train | generate | info | samplers`. A thin layer over the library.

Errors caused by the user (MinicreamError) print one line and exit with status 2; no tracebacks.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import warnings
from pathlib import Path

from .errors import MinicreamError
from .filter.cli_support import add_filter_arguments


def _one_line_warnings() -> None:
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {str(message).splitlines()[0]}\n"


# -- data -----------------------------------------------------------------------------------------------
def cmd_data(args) -> None:
    from .data.emoji import build_emoji_dataset

    styles = tuple(s.strip() for s in args.styles.split(",") if s.strip()) if args.styles else None
    stats = build_emoji_dataset(args.out, size=args.size, styles=styles, skin_tones=not args.no_skin_tones,
                                heldout_fraction=args.heldout, seed=args.seed, overwrite=args.overwrite,
                                limit=args.limit or None)
    print(f"wrote {stats['train']} train + {stats['test']} test images ({stats['concepts']} concepts, "
          f"styles {', '.join(stats['styles'])}) to {args.out}")


def cmd_data_fetch(args) -> None:
    from .data.npm_sources import NPM_SOURCES, fetch

    for style in args.styles or list(NPM_SOURCES):
        path = fetch(style)
        src = NPM_SOURCES[style]
        print(f"{style}: {src.package}@{src.version} ({src.licence}) sha256 ok -> {path}")


# -- train ----------------------------------------------------------------------------------------------
TRAIN_FLAGS = {  # flag -> config field (every flag is a config field; anything else goes through --set)
    "data": "data.source", "steps": "unet.train.steps", "batch_size": "unet.train.batch_size", "lr": "unet.train.lr",
    "moe": "unet.model.moe", "objective": "unet.objective", "seed": "unet.train.seed", "max_minutes": "unet.train.max_minutes",
    "grad_accum": "unet.train.grad_accum", "init_from": "init_from",
}


def flag_overrides(args, table: dict[str, str]) -> list[str]:
    """`--set` overrides, then each given flag as its config field's override (flags win)."""
    overrides = list(args.set or [])
    for flag, key in table.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    return overrides


MAX_TRAIN_SEED = 2**32 - 1  # training derives its generators' seeds from it (seed * 100003 + epoch < 2**64)
SKELETON = {"config.toml", "train_log.txt", "cache"}  # what a run folder holds before its first stage does any work


def train_seed(text: str) -> int:
    """argparse type of `train --seed`: refused at once, not after minutes of training."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text[:40]!r}") from None
    if not 0 <= value <= MAX_TRAIN_SEED:
        raise argparse.ArgumentTypeError(f"must be in 0..{MAX_TRAIN_SEED}, got {text[:40]}")
    return value


def _only_skeleton(run: Path) -> bool:
    """The run folder holds nothing but what run_recipe writes before any work (a failed start leaves just that)."""
    entries = list(run.iterdir()) if run.is_dir() else []
    return all(e.name in SKELETON for e in entries) and not any((run / "cache").glob("*"))


def cmd_train(args) -> None:
    from .config import load_config, to_toml

    overrides = flag_overrides(args, TRAIN_FLAGS)
    if args.deterministic:
        overrides += ["unet.train.deterministic=true", "autoencoder.train.deterministic=true"]
    cfg = load_config(args.config, overrides)
    if args.dry_run:
        print(to_toml(cfg))
        return
    source = cfg.data.source
    if source != "emoji" and not Path(source).is_dir():  # before a run folder exists: a typo costs nothing
        raise MinicreamError(f"--data {source}: no such folder; give 'emoji' or a folder with metadata.jsonl or .txt captions")
    from .training.recipe import run_recipe

    out = Path(args.out or f"runs/{Path(str(args.config)).stem}")
    fresh = not out.exists() or not any(out.iterdir())
    try:
        model_dir = run_recipe(cfg, out, resume=args.resume)
    except BaseException:
        # A run that failed before any work (its data unreadable, say) leaves no folder that a rerun must be told
        # to delete: one that did some work is kept for --resume.
        if fresh and out.is_dir() and _only_skeleton(out):
            shutil.rmtree(out, ignore_errors=True)
        raise
    print(f"model written to {model_dir}")


DISTILL_FLAGS = {"teacher": "teacher", "pairs": "pairs", "reflow_minutes": "reflow.max_minutes",
                 "distill_minutes": "distill.max_minutes"}


def cmd_distill(args) -> None:
    from .config import to_toml
    from .training.distill import load_distill_config

    cfg = load_distill_config(args.config, flag_overrides(args, DISTILL_FLAGS))
    if args.dry_run:
        print(to_toml(cfg))
        return
    from .training.distill import run_distill

    out = args.out or "runs/onestep"
    print(f"one-step model written to {run_distill(cfg, out, resume=args.resume)}")


# -- generate -------------------------------------------------------------------------------------------
LATENT_FACTOR = 8  # the shipped autoencoders' downsampling (the pipeline reads its own from the weights)
EDIT_COMMANDS = {"img2img": "edit", "inpaint": "edit", "outpaint": "outpaint", "variation": "vary", "blend": "blend"}

def cmd_generate(args) -> None:
    from .io.pngmeta import check_stored_types, read_png_params
    from .pipelines import PARAMS_KEY, Pipeline

    from .filter.cli_support import llm_config, print_explanation, stored_result

    settings, stored = {}, None
    if args.from_image:
        p = check_stored_types(read_png_params(args.from_image), args.from_image)
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
        from .pipelines.layout import Layout

        settings["layout"] = "none" if args.layout == "none" else Layout.read_json(args.layout)
    if not settings.get("prompt"):
        raise MinicreamError("no prompt given; usage: minicream generate \"red apple\" (or --from IMAGE.png)")
    pipe = Pipeline.from_pretrained(args.model, dtype=settings.get("dtype") or "auto")
    filtered = stored or pipe.filter_prompt(settings["prompt"], args.filter or settings.get("filter") or "offline",
                                            style=args.style, llm=llm_config(args) if args.filter == "llm" else None)
    print_explanation(filtered, args.explain)
    layout = settings.get("layout")
    if isinstance(layout, dict) and "width" not in layout:
        layout = {**layout, "width": pipe.image_size, "height": pipe.image_size}
    if args.explain and layout != "none" and (isinstance(layout, dict) or filtered.scene):
        from .pipelines.layout import describe
        from .pipelines.scene import layout_for

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
    out = _save_images(images, Path(args.out), settings["prompt"])
    if args.grid and len(images) > 1:
        from .io.grid import image_grid

        grid = image_grid(images, cols=min(8, len(images)), labels=[str(im.info[PARAMS_KEY]["seed"]) for im in images])
        path = out / f"{_stem(settings['prompt'])}_grid.png"
        grid.save(path)
        print(path)


def _stem(prompt: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in prompt)[:40].strip("_") or "image"


def _save_images(images, out: Path, prompt: str, prefix: str = "") -> Path:
    """Each image as PROMPT_SEED.png in `out`, with its parameters in the PNG; prints the paths."""
    from .io.pngmeta import save_png
    from .pipelines import PARAMS_KEY

    out.mkdir(parents=True, exist_ok=True)
    stem = prefix + _stem(prompt)
    for im in images:
        path = out / f"{stem}_{im.info[PARAMS_KEY]['seed']}.png"
        save_png(im, path, im.info[PARAMS_KEY])
        print(path)
    return out


KIND_TYPES = {"str": str, "int": int, "float": float, "seed": int}
SHORT = {"num_images": ("-n",), "negative_prompt": ("--negative",)}


def add_mode_arguments(parser: argparse.ArgumentParser, mode_name: str, rerun: bool = True) -> None:
    """A flag for every CLI option the mode declares (minicream/pipelines/<mode>.py), with its help and default."""
    from .pipelines import Pipeline

    for o in Pipeline.modes[mode_name].options:
        if not o.cli or o.kind not in KIND_TYPES:
            continue
        default = f" (default {o.default})" if o.default not in (None, "") else ""
        parser.add_argument(*SHORT.get(o.name, ()), o.flag, dest=o.name, type=KIND_TYPES[o.kind], help=o.help + default)
    parser.add_argument("--model", help="model directory (default: the shipped model)")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], help="UNet weights (default auto)")
    parser.add_argument("--out", default="outputs", help="output folder")
    if rerun:
        parser.add_argument("--from", dest="from_image", metavar="IMAGE.png",
                            help="re-run the settings stored in a PNG this command made (give the same input image and mask)")


STORED = {"prompt": "prompt", "negative_prompt": "negative_prompt", "steps": "steps", "guidance": "cfg_scale",
          "sampler": "sampler", "seed": "seed", "strength": "strength", "style": "style"}  # option -> key in the PNG's parameters


def _from_png(path, allowed: tuple[str, ...]) -> dict:
    """The options a PNG made by one of the `allowed` modes stores (for `--from`), plus its input hashes."""
    from .io.pngmeta import check_stored_types, read_png_params

    p = check_stored_types(read_png_params(path), path)
    if p.get("mode") not in allowed:
        raise MinicreamError(f"{path} was made by {p.get('mode') or 'text2img'}, not by {' or '.join(allowed)}; "
                             f"re-run it with the command that made it")
    out = {k: p[v] for k, v in STORED.items() if v in p}
    out["guidance_max_noise"] = p.get("guidance_max_noise", 1.0)  # not stored = guidance at every step
    out["cads"] = p.get("cads", 0.0)  # not stored = no condition annealing
    if isinstance(p.get("extend"), dict):
        out.update({k: v for k, v in p["extend"].items() if k in ("left", "right", "top", "bottom")})
    if p["mode"] == "variation" and "style" not in p:
        out["style"] = "model"  # variations from before style "vary" were drawn in one design
    out["hashes"] = {k: p[k] for k in ("init_image_sha256", "mask_sha256") if k in p}
    out["mode"] = p["mode"]
    return out


def _check_inputs(pipe, stored: dict, image, mask) -> None:
    """The image (and mask) given to a `--from` re-run must be the ones the PNG was made from."""
    from .editing import load_image, load_mask
    from .pipelines import sha

    for key, value, load in (("init_image_sha256", image, load_image), ("mask_sha256", mask, load_mask)):
        want = stored["hashes"].get(key)
        if want and value is not None and sha(load(value, pipe.image_size)) != want:
            what = "image" if key.startswith("init") else "mask"
            raise MinicreamError(f"the {what} given is not the one the --from PNG was made from (sha256 {want} expected)")


def _run_mode(args, mode: str, stored: dict | None = None, **inputs):
    """Run `mode` with the CLI's options; `stored` (from `--from`) fills what the command line leaves out."""
    from .pipelines import Pipeline

    pipe = Pipeline.from_pretrained(args.model, dtype=args.dtype or "auto")
    stored = stored or {}
    if stored:
        _check_inputs(pipe, stored, inputs.get("image"), inputs.get("mask"))
    options = {}
    for o in pipe.modes[mode].options:
        value = getattr(args, o.name, None) if o.cli else None
        options[o.name] = value if value is not None else stored.get(o.name)
    options = {k: v for k, v in options.items() if v is not None and k not in inputs}
    return pipe.run(mode, **options, **inputs, progress=True)


def _prompt_of(args, stored: dict) -> str:
    prompt = args.prompt or stored.get("prompt")
    if not prompt:
        raise MinicreamError("no prompt given: say what the result should show (or re-run a PNG with --from)")
    return prompt


def cmd_edit(args) -> None:
    stored = _from_png(args.from_image, ("img2img", "inpaint")) if args.from_image else {}
    if stored.get("mode") == "inpaint" and not args.mask:
        raise MinicreamError(f"{args.from_image} was inpainted: give the same --mask")
    mode = "inpaint" if args.mask else "img2img"
    prompt = _prompt_of(args, stored)
    images = _run_mode(args, mode, stored, image=args.image, prompt=prompt, **({"mask": args.mask} if args.mask else {}))
    _save_images(images, Path(args.out), prompt, prefix=f"{mode}_")


def cmd_vary(args) -> None:
    from .pipelines import PARAMS_KEY

    stored = _from_png(args.from_image, ("variation",)) if args.from_image else {}
    images = _run_mode(args, "variation", stored, image=args.image)
    _save_images(images, Path(args.out), images[0].info[PARAMS_KEY]["prompt"], prefix="variation_")


def cmd_outpaint(args) -> None:
    stored = _from_png(args.from_image, ("outpaint",)) if args.from_image else {}
    prompt = _prompt_of(args, stored)
    images = _run_mode(args, "outpaint", stored, image=args.image, prompt=prompt)
    _save_images(images, Path(args.out), prompt, prefix="outpaint_")


def cmd_blend(args) -> None:
    from .io.grid import image_grid
    from .io.atomic import atomic_path

    frames = _run_mode(args, "blend", a=args.a, b=args.b)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "blend_" + _stem(f"{Path(args.a).stem if Path(args.a).is_file() else args.a}_{Path(args.b).stem if Path(args.b).is_file() else args.b}")
    strip, gif = out / f"{stem}.png", out / f"{stem}.gif"
    with atomic_path(strip) as tmp:
        image_grid(frames, cols=len(frames)).save(tmp, format="PNG")
    with atomic_path(gif) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:] + frames[-2:0:-1], duration=180, loop=0)
    print(strip)
    print(gif)


GRID_PROMPTS = ["red apple", "tangerine", "dog face", "red heart", "rocket", "pizza"]
GRID_STYLES = ["twemoji", "openmoji"]  # for a model whose vocabulary names no styles


def cmd_grid(args) -> None:
    from .io.grid import image_grid
    from .pipelines import Pipeline

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


def cmd_filter(args) -> None:
    from .filter import load_vocabulary, rewrite
    from .filter.cli_support import encoder_loader, llm_config, print_explanation
    from .filter.variety import filter_style
    from .pipelines import resolve_model

    model_dir = resolve_model(args.model)
    vocab = None if args.filter == "none" else load_vocabulary(model_dir)
    result = rewrite(args.prompt, args.filter, vocab, style=filter_style(args.style), encoder=encoder_loader(model_dir),
                     llm=llm_config(args) if args.filter == "llm" else None)
    print(result.rewritten)
    print_explanation(result, args.explain, out=sys.stdout)
    if args.explain and result.scene:
        from .io.model_dir import ModelDir
        from .pipelines.layout import describe, native_layout

        size = ModelDir.open(model_dir).image_size
        print("layout (seed 0; each image's seed jitters it):")
        for line in describe(native_layout(result.scene, size, LATENT_FACTOR, seed=0)):
            print(f"  - {line}")


def cmd_info(args) -> None:
    from .io.pngmeta import printable, read_png_params

    for key, value in read_png_params(args.image).items():  # metadata is anyone's text: no escape codes reach the terminal
        print(printable(f"{key}: {value}"))


def cmd_samplers(args) -> None:
    from .diffusion.samplers import DDPM_SAMPLERS, FLOW_SAMPLERS

    print("epsilon / v models:", ", ".join(sorted(DDPM_SAMPLERS)))
    print("flow models:       ", ", ".join(sorted(FLOW_SAMPLERS)))


# -- serve ----------------------------------------------------------------------------------------------
def cmd_serve(args) -> None:
    from .serve import ServeSettings, create_app
    from .serve.server import LOOPBACK, check_settings, run

    settings = ServeSettings(host=args.host, port=args.port, queue_size=args.queue_size, concurrency=args.concurrency,
                             timeout=args.timeout, output_dir=Path(args.output_dir),
                             allowed_hosts=tuple(args.allowed_host or ()), max_saved=args.max_saved,
                             compile=args.compile, cors_origins=tuple(args.cors_origin or ()),
                             body_timeout=args.body_timeout)
    if args.token:
        settings.token = args.token
    check_settings(settings)
    if args.host not in LOOPBACK and settings.token is None:
        print(f"warning: serving on {args.host} without a token: anyone who can reach it can generate", file=sys.stderr)
    if args.compile:
        print("compiling the UNet once (torch.compile; about a minute or two per model)...", file=sys.stderr)
    app = create_app(args.model or None, settings)
    print(f"minicream: serving {', '.join(str(p.model_dir) for p in app.state.pipelines.values())} on http://{args.host}:{args.port}/"
          + (" (bearer token required)" if settings.token else ""))
    run(app, settings)


# -- evaluator and evaluation ---------------------------------------------------------------------------
def cmd_train_evaluator(args) -> None:
    from .evaluator.train import load_recipe, train_evaluator

    overrides = list(args.set or [])
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    recipe = load_recipe(args.config, overrides)
    if args.for_model:
        from .evaluator.train import focus_of_model

        recipe = dataclasses.replace(recipe, **focus_of_model(args.for_model))
    res = train_evaluator(recipe, args.data, args.out, run_dir=args.run_dir, resume=args.resume)
    for name in ("evaluator", "judge"):
        held = res.get(name, {}).get("heldout", {})
        if held:
            print(f"{name}: held-out retrieval top-1 {held['captions']['top1']:.3f} / top-5 {held['captions']['top5']:.3f} "
                  f"among {held['captions']['candidates']} captions")
    print(f"evaluator written to {args.out}")


def cmd_eval(args) -> None:
    from .eval.runner import run_benchmark

    out = args.out or f"outputs/eval/{args.benchmark}" + (f"_best{args.candidates}" if args.candidates > 1 else "")
    run_benchmark(args.model, args.benchmark, out, samples=args.samples, candidates=args.candidates, seed=args.seed,
                  data_root=args.data, steps=args.steps, limit=args.limit, guidance=args.guidance, sampler=args.sampler,
                  guidance_max_noise=args.guidance_max_noise, cads=args.cads, style=args.style)
    print(Path(out) / "report.md")


# -- parser ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="minicream", description="Train a small text-to-image diffusion model from scratch on a CPU, and generate with it.")
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="build a dataset")
    dsub = d.add_subparsers(dest="dataset", required=True)
    e = dsub.add_parser("emoji", help="the embedded default: Twemoji, OpenMoji, Noto, Fluent with English/Russian captions")
    e.add_argument("out", help="output folder (Hugging Face imagefolder layout)")
    e.add_argument("--size", type=int, default=64, help="image size in pixels")
    e.add_argument("--no-skin-tones", action="store_true", help="leave out skin-tone variants")
    e.add_argument("--heldout", type=float, default=0.05, help="fraction of images in the test split")
    e.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    e.add_argument("--limit", type=int, default=0, help="at most this many images per style (0 = all)")
    e.add_argument("--overwrite", action="store_true", help="replace an earlier build in OUT")
    e.add_argument("--styles", help="comma-separated designs (default: every one available of twemoji, openmoji, noto, fluent)")
    e.set_defaults(func=cmd_data)
    fe = dsub.add_parser("fetch", help="fetch the npm emoji designs (noto, fluent) once: pinned version and sha256, cached")
    fe.add_argument("styles", nargs="*", help="designs to fetch (default: all)")
    fe.set_defaults(func=cmd_data_fetch)

    t = sub.add_parser("train", help="train autoencoder + MoE UNet from scratch (the recipe's stages)")
    t.add_argument("--config", default="reference", help="preset name (reference, tiny) or a TOML file")
    t.add_argument("--out", help="run directory (default runs/<config>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field, e.g. unet.model.top_k=2")
    t.add_argument("--data", help="training data: 'emoji' or a folder with metadata.jsonl / .txt captions")
    t.add_argument("--steps", type=int, help="UNet optimizer steps")
    t.add_argument("--init-from", metavar="MODEL_DIR", help="warm start from an exported model (its autoencoder and UNet weights, fresh optimizer)")
    t.add_argument("--batch-size", type=int, help="UNet global batch size")
    t.add_argument("--lr", type=float, help="UNet learning rate")
    t.add_argument("--moe", choices=["token", "timestep", "none"], help="mid-block router (none = dense twin)")
    t.add_argument("--objective", choices=["epsilon", "v", "flow"], help="training objective")
    t.add_argument("--seed", type=train_seed, help=f"training seed (0..{MAX_TRAIN_SEED})")
    t.add_argument("--max-minutes", type=float, help="stop UNet training after this many minutes")
    t.add_argument("--grad-accum", type=int, help="gradient accumulation steps")
    t.add_argument("--deterministic", action="store_true", help="deterministic algorithms for reproducible runs")
    t.set_defaults(func=cmd_train)

    di = sub.add_parser("distill", help="one-step model from a teacher: reflow (2-rectified flow), then distillation")
    di.add_argument("--teacher", metavar="MODEL", help="a shipped model's name or a model folder (default: the default model)")
    di.add_argument("--out", help="run directory (default runs/onestep); the student is written to OUT/model")
    di.add_argument("--config", default="onestep", help="preset name or TOML file (default: onestep)")
    di.add_argument("--pairs", type=int, help="(noise, image, prompt) triples drawn from the teacher")
    di.add_argument("--reflow-minutes", type=float, help="time cap of the reflow stage")
    di.add_argument("--distill-minutes", type=float, help="time cap of the distillation stage")
    di.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    di.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    di.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field, e.g. reflow.lr=2e-4")
    di.set_defaults(func=cmd_distill)

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
    g.set_defaults(func=cmd_generate)

    fl = sub.add_parser("filter", help="only rewrite a prompt with the language filter (no drawing)")
    fl.add_argument("prompt", help="what you would draw")
    fl.add_argument("--model", help="model directory whose vocabulary to use (default: the shipped reference model)")
    add_filter_arguments(fl)
    fl.set_defaults(func=cmd_filter)

    ed = sub.add_parser("edit", help="img2img, or inpainting with --mask (white = repaint), of an image")
    ed.add_argument("image", help="input image (PNG/JPEG; squared and resized to the model's size)")
    ed.add_argument("prompt", nargs="?", help="what the edited image should show (default with --from: the stored prompt)")
    ed.add_argument("--mask", help="mask image: white (or transparent) = repaint, black = keep (then --strength defaults to 1.0)")
    add_mode_arguments(ed, "img2img")  # inpainting takes the same options
    ed.set_defaults(func=cmd_edit)

    va = sub.add_parser("vary", help="variations of an image: the same concept, redrawn with new seeds")
    va.add_argument("image", help="input image")
    add_mode_arguments(va, "variation")
    va.set_defaults(func=cmd_vary)

    op = sub.add_parser("outpaint", help="extend an image past its border, e.g. --right 64 makes 64 px -> 128 px wide")
    op.add_argument("image", help="input image")
    op.add_argument("prompt", nargs="?", help="what the whole picture should show (default with --from: the stored prompt)")
    add_mode_arguments(op, "outpaint")
    op.set_defaults(func=cmd_outpaint)

    bl = sub.add_parser("blend", help="frames between two prompts, two images, or an image and a prompt (a PNG strip + a GIF)")
    bl.add_argument("a", help="first end: a prompt or an image file")
    bl.add_argument("b", help="last end: a prompt or an image file")
    add_mode_arguments(bl, "blend", rerun=False)
    bl.set_defaults(func=cmd_blend)

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

    i = sub.add_parser("info", help="print the generation settings stored in a PNG")
    i.add_argument("image")
    i.set_defaults(func=cmd_info)

    sv = sub.add_parser("serve", help="web page + OpenAI-compatible image API (FastAPI)")
    sv.add_argument("--model", action="append", metavar="MODEL",
                    help="a model directory or shipped name (default: the default model); repeat to serve several, "
                         "e.g. --model reference --model onestep: the page and the APIs switch between them")
    sv.add_argument("--compile", action="store_true", help="torch.compile each UNet once at start-up (faster calls)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    sv.add_argument("--allowed-host", action="append", metavar="NAME",
                    help="a Host header name to answer besides the bound address (repeatable; DNS-rebinding guard)")
    sv.add_argument("--port", type=int, default=7860, help="TCP port")
    sv.add_argument("--token", help="bearer token required on API routes (default: env MINICREAM_TOKEN, else none)")
    sv.add_argument("--queue-size", type=int, default=8, help="requests that may wait; more get HTTP 429")
    sv.add_argument("--concurrency", type=int, default=1, help="generations running at once")
    sv.add_argument("--timeout", type=float, default=120.0, help="seconds per request before HTTP 504")
    sv.add_argument("--output-dir", default="outputs/serve", help="where images returned as URLs are saved")
    sv.add_argument("--max-saved", type=int, default=1000, help="saved images kept; the oldest beyond are deleted")
    sv.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                    help="a browser origin (e.g. http://localhost:3000) whose pages may call the API (repeatable); "
                         "without a token, POSTs from other sites are refused")
    sv.add_argument("--body-timeout", type=float, default=30.0, help="seconds a request body may take to arrive (HTTP 408)")
    sv.set_defaults(func=cmd_serve)

    te = sub.add_parser("train-evaluator", help="train the image evaluator (mini-CLIP) and the judge on a captioned image folder")
    te.add_argument("--data", default="data/emoji", help="dataset folder (train/ and test/ splits)")
    te.add_argument("--out", required=True, help="output folder, e.g. MODEL/evaluator")
    te.add_argument("--config", default="evaluator", help="preset name or TOML file")
    te.add_argument("--steps", type=int, help="evaluator optimizer steps")
    te.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. judge_train.steps=100")
    te.add_argument("--for-model", metavar="DIR", help="focus on the concepts that model was trained on (its data.concepts / data.groups)")
    te.add_argument("--run-dir", help="checkpoints and caches (default OUT_run beside OUT)")
    te.add_argument("--resume", action="store_true", help="continue from the checkpoints in --run-dir")
    te.set_defaults(func=cmd_train_evaluator)

    ev = sub.add_parser("eval", help="run a benchmark against a model and write report.json, report.md and grid.png")
    ev.add_argument("--model", help="model directory (default: the shipped reference model)")
    ev.add_argument("--benchmark", default="minicream-table", help="minicream-table, objects, concepts, coverage or scenes")
    ev.add_argument("--out", help="report folder (default outputs/eval/BENCHMARK)")
    ev.add_argument("--samples", type=int, help="samples per prompt (default: the benchmark's)")
    ev.add_argument("--candidates", type=int, default=1, metavar="N", help="best-of-N with the evaluator")
    ev.add_argument("--limit", type=int, help="only the first N prompts of the benchmark (a quicker subset)")
    ev.add_argument("--seed", type=int, default=0, help="base of the per-sample seeds")
    ev.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ev.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's)")
    ev.add_argument("--guidance-max-noise", type=float, metavar="F", help="guidance only at noise levels t/T up to F (default: the model's)")
    ev.add_argument("--style", help="style option of every prompt: vary (a prompt naming no design draws one per "
                                    "image, by its seed) or model (the model chooses); default: the model's")
    ev.add_argument("--cads", type=float, metavar="S", help="condition-annealing noise scale (default: the model's)")
    ev.add_argument("--sampler", help="sampler (default: the model's; `minicream samplers` lists them)")
    ev.add_argument("--data", default="data/emoji", help="dataset with the real reference images")
    ev.set_defaults(func=cmd_eval)

    s = sub.add_parser("samplers", help="list the samplers")
    s.set_defaults(func=cmd_samplers)
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


if __name__ == "__main__":
    sys.exit(main())
