"""`minicream upscale IMAGE...`: any picture at 4x its size by a model's diffusion upscaler."""
from __future__ import annotations

import argparse
from pathlib import Path


def cmd_upscale(args) -> None:
    from ..io.model_dir import ModelDir, resolve_model
    from ..io.pngmeta import save_png
    from ..pipelines import PARAMS_KEY
    from ..pipelines.upscale import open_upscaler, upscale_any

    upscaler = open_upscaler(ModelDir.open(resolve_model(args.model)).path)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = upscale_any(upscaler, path, seed=args.seed, upscale_steps=args.steps, upscale_noise=args.noise,
                            upscale_sampler=args.sampler, upscale_consistent=args.consistent)
        target = out / f"{Path(path).stem}_x{upscaler.scale}.png"
        save_png(image, target, image.info[PARAMS_KEY])
        print(target)


def add_upscale_parser(sub) -> None:
    u = sub.add_parser("upscale", help="any picture at 4x its size (up to 256 px in) by a model's diffusion upscaler")
    u.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    u.add_argument("--model", help="a shipped model's name or a model folder with an upscaler (default: the default model)")
    u.add_argument("--steps", type=int, help="sampling steps (default: the upscaler's own)")
    u.add_argument("--noise", type=float, help="noise added to the input first (more invents more detail; default: the "
                                               "upscaler's own)")
    u.add_argument("--sampler", help="euler (the flow's ODE) or euler_a (ancestral: fresh noise every step, "
                                      "crisper); default: the upscaler's own")
    u.add_argument("--consistent", action=argparse.BooleanOptionalAction, default=None,
                   help="back-project every step onto the input, so the result downsampled is the input (default: the "
                        "upscaler's own)")
    u.add_argument("--seed", type=int, default=0, help="seed of the upscaler's noise")
    u.add_argument("--out", default="outputs", help="output folder (IMAGE_x4.png)")
    u.set_defaults(func=cmd_upscale)
