"""`minicream data emoji | fetch | keywords`: build the emoji dataset, fetch the npm designs and keyword packages,
write emoji search keywords into a model's concepts.json."""
from __future__ import annotations


def cmd_data(args) -> None:
    from ..data.emoji import build_emoji_dataset

    styles = tuple(s.strip() for s in args.styles.split(",") if s.strip()) if args.styles else None
    stats = build_emoji_dataset(args.out, size=args.size, styles=styles, skin_tones=not args.no_skin_tones,
                                heldout_fraction=args.heldout, seed=args.seed, overwrite=args.overwrite,
                                limit=args.limit or None)
    print(f"wrote {stats['train']} train + {stats['test']} test images ({stats['concepts']} concepts, "
          f"styles {', '.join(stats['styles'])}) to {args.out}")


def cmd_data_fetch(args) -> None:
    from ..data import emoji_keywords
    from ..data.npm_sources import NPM_SOURCES, TRAINING_DESIGNS, fetch
    from ..errors import MinicreamError

    for style in args.styles or [*TRAINING_DESIGNS, "keywords"]:
        if style != "keywords" and style not in NPM_SOURCES:
            raise MinicreamError(f"unknown package {style!r}; choose from {', '.join([*NPM_SOURCES, 'keywords'])}")
        fetched = emoji_keywords.fetch() if style == "keywords" else [(NPM_SOURCES[style], fetch(style))]
        for src, path in fetched:
            print(f"{style}: {src.package}@{src.version} ({src.licence}) sha256 ok -> {path}")


def cmd_data_keywords(args) -> None:
    from ..data.emoji_keywords import is_fetched
    from ..errors import MinicreamError
    from ..filter.vocabulary import CONCEPTS_FILE, add_keywords, load_vocabulary, save_concepts

    if not is_fetched():
        raise MinicreamError("the keyword packages are not fetched; run `minicream data fetch keywords` (needs npm)")
    for model_dir in args.model_dirs:
        vocab = load_vocabulary(model_dir)
        for c in vocab.concepts:
            c.keywords, c.keywords_ru = [], []  # rewritten from the pinned packages, not added to
        save_concepts(add_keywords(vocab), f"{model_dir}/{CONCEPTS_FILE}")
        print(f"{model_dir}: search keywords for {sum(bool(c.keywords) for c in vocab.concepts)} of "
              f"{len(vocab.concepts)} concepts")


def add_parsers(sub) -> None:
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
    e.add_argument("--styles", help="comma-separated designs (default: every one available of twemoji, openmoji, noto, fluent; "
                   "also fxemoji, emojione-v1, emojione, noto-v1: designs no model trained on, after `minicream data fetch`)")
    e.set_defaults(func=cmd_data)
    fe = dsub.add_parser("fetch", help="fetch the npm emoji designs (noto, fluent) and the emoji search keywords "
                         "(keywords: emojilib, emojibase-data) once: pinned version and sha256, cached")
    fe.add_argument("styles", nargs="*", help="what to fetch: noto, fluent, keywords (default: these three), or a "
                    "design no model trained on, for measuring adapters: fxemoji, emojione-v1, emojione, noto-v1")
    fe.set_defaults(func=cmd_data_fetch)
    kw = dsub.add_parser("keywords", help="write the fetched emoji search keywords into models' concepts.json")
    kw.add_argument("model_dirs", nargs="+", help="model directories (their concepts.json is rewritten)")
    kw.set_defaults(func=cmd_data_keywords)
