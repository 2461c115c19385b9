"""`minicream edit | vary | outpaint | blend`: the image modes, their flags built from the modes' declared options."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MinicreamError
from .finetune import add_adapter_argument, load_adapters
from .output import save_images, stem_of
from .rerun import check_inputs, from_png

KIND_TYPES = {"str": str, "int": int, "float": float, "seed": int}
SHORT = {"num_images": ("-n",), "negative_prompt": ("--negative",)}


def add_mode_arguments(parser: argparse.ArgumentParser, mode_name: str, rerun: bool = True) -> None:
    """A flag for every CLI option the mode declares (minicream/pipelines/<mode>.py), with its help and default."""
    from ..pipelines import Pipeline

    for o in Pipeline.modes[mode_name].options:
        if not o.cli or o.kind not in KIND_TYPES:
            continue
        default = f" (default {o.default})" if o.default not in (None, "") else ""
        parser.add_argument(*SHORT.get(o.name, ()), o.flag, dest=o.name, type=KIND_TYPES[o.kind], help=o.help + default)
    parser.add_argument("--model", help="model directory (default: the shipped model)")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], help="UNet weights (default auto)")
    parser.add_argument("--out", default="outputs", help="output folder")
    add_adapter_argument(parser)
    if rerun:
        parser.add_argument("--from", dest="from_image", metavar="IMAGE.png",
                            help="re-run the settings stored in a PNG this command made (give the same input image and mask)")


def _run_mode(args, mode: str, stored: dict | None = None, **inputs):
    """Run `mode` with the CLI's options; `stored` (from `--from`) fills what the command line leaves out."""
    from ..pipelines import Pipeline

    pipe = Pipeline.from_pretrained(args.model, dtype=args.dtype or "auto")
    stored = stored or {}
    load_adapters(pipe, args.adapter, stored.get("adapters"), getattr(args, "from_image", None))
    if stored:
        check_inputs(pipe, stored, inputs.get("image"), inputs.get("mask"))
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
    stored = from_png(args.from_image, ("img2img", "inpaint")) if args.from_image else {}
    if stored.get("mode") == "inpaint" and not args.mask:
        raise MinicreamError(f"{args.from_image} was inpainted: give the same --mask")
    mode = "inpaint" if args.mask else "img2img"
    prompt = _prompt_of(args, stored)
    images = _run_mode(args, mode, stored, image=args.image, prompt=prompt, **({"mask": args.mask} if args.mask else {}))
    save_images(images, Path(args.out), prompt, prefix=f"{mode}_")


def cmd_vary(args) -> None:
    from ..pipelines import PARAMS_KEY

    stored = from_png(args.from_image, ("variation",)) if args.from_image else {}
    images = _run_mode(args, "variation", stored, image=args.image)
    save_images(images, Path(args.out), images[0].info[PARAMS_KEY]["prompt"], prefix="variation_")


def cmd_outpaint(args) -> None:
    stored = from_png(args.from_image, ("outpaint",)) if args.from_image else {}
    prompt = _prompt_of(args, stored)
    images = _run_mode(args, "outpaint", stored, image=args.image, prompt=prompt)
    save_images(images, Path(args.out), prompt, prefix="outpaint_")


def cmd_blend(args) -> None:
    from ..io.grid import image_grid
    from ..io.atomic import atomic_path

    frames = _run_mode(args, "blend", a=args.a, b=args.b)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "blend_" + stem_of(f"{Path(args.a).stem if Path(args.a).is_file() else args.a}_{Path(args.b).stem if Path(args.b).is_file() else args.b}")
    strip, gif = out / f"{stem}.png", out / f"{stem}.gif"
    with atomic_path(strip) as tmp:
        image_grid(frames, cols=len(frames)).save(tmp, format="PNG")
    with atomic_path(gif) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:] + frames[-2:0:-1], duration=180, loop=0)
    print(strip)
    print(gif)


def add_edit_parser(sub) -> None:
    ed = sub.add_parser("edit", help="img2img, or inpainting with --mask (white = repaint), of an image")
    ed.add_argument("image", help="input image (PNG/JPEG; squared and resized to the model's size)")
    ed.add_argument("prompt", nargs="?", help="what the edited image should show (default with --from: the stored prompt)")
    ed.add_argument("--mask", help="mask image: white (or transparent) = repaint, black = keep (then --strength defaults to 1.0)")
    add_mode_arguments(ed, "img2img")  # inpainting takes the same options
    ed.set_defaults(func=cmd_edit)


def add_vary_parser(sub) -> None:
    va = sub.add_parser("vary", help="variations of an image: the same concept, redrawn with new seeds")
    va.add_argument("image", help="input image")
    add_mode_arguments(va, "variation")
    va.set_defaults(func=cmd_vary)


def add_outpaint_parser(sub) -> None:
    op = sub.add_parser("outpaint", help="extend an image past its border, e.g. --right 64 makes 64 px -> 128 px wide")
    op.add_argument("image", help="input image")
    op.add_argument("prompt", nargs="?", help="what the whole picture should show (default with --from: the stored prompt)")
    add_mode_arguments(op, "outpaint")
    op.set_defaults(func=cmd_outpaint)


def add_blend_parser(sub) -> None:
    bl = sub.add_parser("blend", help="frames between two prompts, two images, or an image and a prompt (a PNG strip + a GIF)")
    bl.add_argument("a", help="first end: a prompt or an image file")
    bl.add_argument("b", help="last end: a prompt or an image file")
    add_mode_arguments(bl, "blend", rerun=False)
    bl.set_defaults(func=cmd_blend)
