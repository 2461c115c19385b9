"""`minicream info` (the settings stored in a PNG) and `minicream samplers`."""
from __future__ import annotations


def cmd_info(args) -> None:
    from ..io.pngmeta import printable, read_png_params

    for key, value in read_png_params(args.image).items():  # metadata is anyone's text: no escape codes reach the terminal
        print(printable(f"{key}: {value}"))


def cmd_samplers(args) -> None:
    from ..diffusion.samplers import DDPM_SAMPLERS, FLOW_SAMPLERS

    print("epsilon / v models:", ", ".join(sorted(DDPM_SAMPLERS)))
    print("flow models:       ", ", ".join(sorted(FLOW_SAMPLERS)))


def add_info_parser(sub) -> None:
    i = sub.add_parser("info", help="print the generation settings stored in a PNG")
    i.add_argument("image")
    i.set_defaults(func=cmd_info)


def add_samplers_parser(sub) -> None:
    s = sub.add_parser("samplers", help="list the samplers")
    s.set_defaults(func=cmd_samplers)
