"""`minicream finetune` (teach a model a subject or style: adapters/train.py) and the `--adapter DIR[:SCALE]` flag of
the drawing commands, with the `--from` check that a PNG is re-run with the very adapters it was drawn with."""
from __future__ import annotations

from pathlib import Path

from ..errors import MinicreamError


def cmd_finetune(args) -> None:
    from ..adapters import finetune

    options = {k: getattr(args, k) for k in ("steps", "lr", "batch_size", "rank", "alpha", "vectors", "init_word",
                                             "class_word", "prior_weight", "class_images", "preserve_weight", "seed") if getattr(args, k) is not None}
    if args.targets:
        options["targets"] = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    finetune(args.images, args.token, args.method, args.out, model=args.model, resume=args.resume,
             style=args.style, text_encoder=args.text_encoder, learn_token=args.learn_token, flip=args.flip, **options)


def add_finetune_parser(sub) -> None:
    f = sub.add_parser("finetune", help="teach a model a new subject or style from a few images: an adapter folder")
    f.add_argument("--images", nargs="+", required=True, metavar="DIR_OR_FILES", help="a folder of images, or image files")
    f.add_argument("--token", required=True, help='the new word prompts will use, e.g. "<my-cat>"')
    f.add_argument("--method", choices=["lora", "dreambooth", "textual-inversion"], default="lora",
                   help="lora (default), dreambooth (LoRA with prior preservation) or textual-inversion (a new word only)")
    f.add_argument("--out", required=True, metavar="ADAPTER_DIR", help="the adapter folder to write (must not exist)")
    f.add_argument("--model", help="the model to adapt (default: the default model, full)")
    f.add_argument("--style", action="store_true", help="teach a style shared by the images (captions \"<concept>, TOKEN\", "
                                                        "the concept read from each file name) instead of a subject")
    f.add_argument("--steps", type=int, help="training steps (default 500)")
    f.add_argument("--lr", type=float, help="learning rate (default: lora/dreambooth 2e-3, textual-inversion 5e-3)")
    f.add_argument("--batch-size", type=int, help="images per step (default: lora/dreambooth 8, textual-inversion 4)")
    f.add_argument("--rank", type=int, help="LoRA rank (default 8)")
    f.add_argument("--alpha", type=float, help="LoRA alpha (default 8: scale alpha/rank = 1)")
    f.add_argument("--targets", help="LoRA targets, comma-separated from attn, ff, conv, proj (default attn,ff,conv)")
    f.add_argument("--learn-token", action="store_true", help="lora/dreambooth: learn the token as a new word too "
                   "(pivotal tuning: textual inversion and LoRA together), starting from --init-word")
    f.add_argument("--text-encoder", action="store_true", help="LoRA on the text encoder's attention too")
    f.add_argument("--vectors", type=int, help="textual inversion: embedding vectors of the token (default 1)")
    f.add_argument("--init-word", help="textual inversion and --learn-token: start from this word's embedding (default: --class-word, else \"object\")")
    f.add_argument("--class-word", help="what the subject is (\"cat\"): dreambooth's prior-preservation prompt")
    f.add_argument("--prior-weight", type=float, help="dreambooth: weight of the prior-preservation loss (default 1)")
    f.add_argument("--preserve-weight", type=float, help="lora/dreambooth: weight of keeping the base model's "
                   "predictions for other prompts (self-distillation on the model's own concepts; 0 = off)")
    f.add_argument("--class-images", type=int, help="dreambooth: class images drawn by the base model (default 8)")
    f.add_argument("--flip", action="store_true", help="augmentation may mirror the images")
    f.add_argument("--seed", type=int, help="seed (default 0)")
    f.add_argument("--resume", action="store_true", help="continue an interrupted run (its work is in OUT.partial/)")
    f.set_defaults(func=cmd_finetune)


def add_adapter_argument(parser) -> None:
    parser.add_argument("--adapter", action="append", default=[], metavar="DIR[:SCALE]",
                        help="load an adapter made by `minicream finetune` (scale 0-2, default 1); repeatable, they stack")


def _records(stored, source) -> list[dict]:
    if stored is None:
        return []
    ok = isinstance(stored, list) and all(
        isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("hash"), str)
        and isinstance(r.get("scale"), (int, float)) and isinstance(r.get("path", ""), str) for r in stored)
    if not ok:
        raise MinicreamError(f"{source}: the stored adapters are not a list of {{name, hash, scale}}; the PNG's settings "
                             "were edited or damaged")
    return stored


def load_adapters(pipe, specs: list[str], stored=None, source: str | None = None) -> None:
    """Load the `--adapter` folders; with `stored` (a PNG's "adapters", for `--from`), also every adapter the PNG was
    drawn with, at its recorded scale unless the command line gives one, refusing one that is missing or changed."""
    from ..adapters import parse_adapter_arg

    given = {}
    for spec in specs:
        folder, scale = parse_adapter_arg(spec)
        given[Path(folder).resolve().name] = (Path(folder), scale, ":" in spec and Path(folder) != Path(spec))
    for r in _records(stored, source):
        if r["name"] in given:
            folder, scale, explicit = given.pop(r["name"])
            scale = scale if explicit else r["scale"]
        else:
            folder, scale = Path(r.get("path") or r["name"]), r["scale"]
            if not folder.is_dir():
                raise MinicreamError(f"{source} was drawn with adapter {r['name']!r} (hash {r['hash']}), which is not at "
                                     f"{folder}; give it with --adapter DIR")
        name = pipe.load_adapter(folder, scale=scale, name=r["name"])
        if pipe.adapters[name].hash != r["hash"]:
            raise MinicreamError(f"adapter {r['name']!r} in {folder} has changed since {source} was drawn (hash "
                                 f"{pipe.adapters[name].hash}, the PNG records {r['hash']}); the re-run would not match")
    for folder, scale, _ in given.values():
        pipe.load_adapter(folder, scale=scale)
