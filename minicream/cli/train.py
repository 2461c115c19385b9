"""`minicream train`, `minicream train-decoder` and `minicream distill`: the training recipe, the decoder fine-tune of
an exported model, and the one-step distillation."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..errors import MinicreamError


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
    from ..config import load_config, to_toml

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
    from ..training.recipe import run_recipe

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
    from ..config import to_toml
    from ..training.distill import load_distill_config

    cfg = load_distill_config(args.config, flag_overrides(args, DISTILL_FLAGS))
    if args.dry_run:
        print(to_toml(cfg))
        return
    from ..training.distill import run_distill

    out = args.out or "runs/onestep"
    print(f"one-step model written to {run_distill(cfg, out, resume=args.resume)}")


def add_train_parser(sub) -> None:
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


def cmd_train_decoder(args) -> None:
    from ..training.decoder import finetune_model_decoder

    overrides = list(args.set or [])
    if args.minutes is not None:
        overrides.append(f"decoder.train.max_minutes={args.minutes}")
        if args.steps is None:  # the clock stops it
            overrides.append("decoder.train.steps=1000000")
    if args.steps is not None:
        overrides.append(f"decoder.train.steps={args.steps}")
    model_dir = finetune_model_decoder(args.model, args.out, overrides, resume=args.resume)
    print(f"model with the fine-tuned decoder written to {model_dir}")


def add_train_decoder_parser(sub) -> None:
    d = sub.add_parser("train-decoder", help="fine-tune a model's autoencoder decoder on its frozen latent space "
                                             "(sharper, truer colours; the UNet is unchanged)")
    d.add_argument("--model", default=None, help="a shipped model's name or a model folder (default: the default model)")
    d.add_argument("--out", required=True, help="run directory; the model with the new decoder is written to OUT/model")
    d.add_argument("--steps", type=int, help="optimizer steps")
    d.add_argument("--minutes", type=float, help="stop after this many minutes (with --steps: whichever comes first)")
    d.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    d.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a decoder setting, e.g. decoder.perceptual_weight=0.1, or a data one (the model's recipe's "
                        "otherwise), e.g. data.concepts=[] to train on every concept's images")
    d.set_defaults(func=cmd_train_decoder)


def add_distill_parser(sub) -> None:
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


def recipe_flags(p, config: str, data_help: str) -> None:
    """The flags every stand-alone recipe command shares (train-upscaler, train-control, train-image-prompt)."""
    p.add_argument("--config", default=config, help=f"preset name or TOML file (default: {config})")
    p.add_argument("--data", help=data_help)
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--minutes", type=float, help="stop training after this many minutes")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field, e.g. train.lr=1e-4")


def run_recipe_command(args, load, flags: dict, run, what: str, default_out) -> None:
    """Load the recipe (preset, --set, then the flags), print it for --dry-run, else run it into --out."""
    from ..config import to_toml

    cfg = load(args.config, flag_overrides(args, flags))
    if args.dry_run:
        print(to_toml(cfg))
        return
    print(f"{what} written to {run(cfg, args.out or default_out(cfg), resume=args.resume)}")


UPSCALER_FLAGS = {"data": "data", "steps": "train.steps", "minutes": "train.max_minutes"}


def cmd_train_upscaler(args) -> None:
    from ..training.upscaler import load_upscaler_recipe, run_upscaler

    run_recipe_command(args, load_upscaler_recipe, UPSCALER_FLAGS, run_upscaler, "upscaler", lambda cfg: "runs/upscaler")


def add_train_upscaler_parser(sub) -> None:
    u = sub.add_parser("train-upscaler", help="the 64 -> 256 px diffusion upscaler, on the dataset rendered at 256 px")
    u.add_argument("--out", default="runs/upscaler", help="run directory; the upscaler is written to OUT/upscaler")
    recipe_flags(u, "upscaler", "the 256-px dataset (default data/emoji256: minicream data emoji --size 256 "
                                "--no-skin-tones data/emoji256)")
    u.set_defaults(func=cmd_train_upscaler)


CONTROL_FLAGS = {"kind": "kind", "model": "model", "data": "data", "steps": "train.steps", "minutes": "train.max_minutes"}


def cmd_train_control(args) -> None:
    from ..control.train import load_control_recipe, run_control

    run_recipe_command(args, load_control_recipe, CONTROL_FLAGS, run_control, "ControlNet",
                       lambda cfg: f"runs/control-{cfg.kind}")


def add_train_control_parser(sub) -> None:
    from ..models.controlnet import KINDS

    c = sub.add_parser("train-control", help="a ControlNet (structure from edge maps or scribbles) for a model's UNet")
    c.add_argument("--kind", choices=KINDS, help="edges (Canny edge maps) or scribble (hand-like drawings); default edges")
    c.add_argument("--model", help="a shipped model's name or a model folder (default: full)")
    c.add_argument("--out", help="run directory (default runs/control-KIND); the ControlNet is written to OUT/control/KIND")
    recipe_flags(c, "control", "image-caption folder (default: the model's recipe's data)")
    c.set_defaults(func=cmd_train_control)


ON_MODEL_FLAGS = {"model": "model", "data": "data", "steps": "train.steps", "minutes": "train.max_minutes"}


def add_on_model_parser(sub, name: str, help: str, recipe: tuple[str, str, str], preset: str, what: str,
                        written_to: str) -> None:
    """A stand-alone recipe that trains a part on top of a model: `recipe` = (module under minicream, its load
    function, its run function); the part is written to OUT/`written_to`."""
    def command(args) -> None:
        from importlib import import_module

        module = import_module(f"minicream.{recipe[0]}")
        run_recipe_command(args, getattr(module, recipe[1]), ON_MODEL_FLAGS, getattr(module, recipe[2]), what,
                           lambda cfg: f"runs/{name.removeprefix('train-')}")

    c = sub.add_parser(name, help=help)
    c.add_argument("--model", help="a shipped model's name or a model folder (default: full)")
    c.add_argument("--out", help=f"run directory (default runs/{name.removeprefix('train-')}); the {what} is written to "
                                 f"OUT/{written_to}")
    recipe_flags(c, preset, "image-caption folder (default: the model's recipe's data)")
    c.set_defaults(func=command)


def add_train_image_prompt_parser(sub) -> None:
    add_on_model_parser(sub, "train-image-prompt", "an image-prompt adapter (images as prompts, IP-Adapter) for a "
                        "model's UNet", ("image_prompt.train", "load_image_prompt_recipe", "run_image_prompt"),
                        "image_prompt", "image-prompt adapter", "image_prompt")


def add_train_prior_parser(sub) -> None:
    add_on_model_parser(sub, "train-prior", "the prior: text -> image embedding, for --prior and fusion with texts",
                        ("image_prompt.train_prior", "load_prior_recipe", "run_prior"), "prior", "prior", "prior")
