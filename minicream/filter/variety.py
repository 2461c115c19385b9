"""Style variety: a prompt that names no design draws one design per image, chosen by the image's seed.

A model trained on several designs of every concept (twemoji, openmoji, noto, fluent) left to choose by itself
draws the same one for most seeds of a bare name (issue 13: 63% of seed pairs drew the same design, openmoji 9% of
samples, and samples of different designs still looked alike: pairwise SSIM 0.58). With `style="vary"` each image of
such a prompt is drawn with a design word added, seed s taking design s mod n of the n designs every concept of the
prompt was trained in: consecutive seeds (one batch) cycle through the designs, and an image still depends on its
seed alone. The `style` option of every text-to-image call:

    a design   ("noto", ...) added to the prompt (replacing a typed one), as before
    "vary"     as above, when neither the prompt nor the option names a design
    "model"    no design added: the model chooses
    None       the model's default (model_index.json "sample" -> "style"), else "model"
"""
from __future__ import annotations

from .result import FilterResult
from .vocabulary import Vocabulary

VARY, MODEL = "vary", "model"
CHOICES = (VARY, MODEL)


def filter_style(style: str | None) -> str | None:
    """What the language filter gets as its style option: a design name, or None for "vary" and "model"."""
    return None if style in CHOICES else style


def named_style(filtered: FilterResult, vocab: Vocabulary) -> str | None:
    """The design the rewritten prompt already ends with ("red apple, noto"), if any."""
    last = filtered.rewritten.rsplit(",", 1)[-1].strip().lower()
    return next((s for s in vocab.styles if s.lower() == last), None)


def common_styles(concepts, vocab: Vocabulary) -> list[str]:
    """The designs every one of `concepts` was trained in, in the vocabulary's order ([] when none is known)."""
    known = [vocab.by_name[c] for c in concepts if c in vocab.by_name]
    if not known or len(known) < len(concepts):
        return []
    return [s for s in vocab.styles if all(s in c.styles for c in known)]


def varied_styles(filtered: FilterResult, vocab: Vocabulary, seeds) -> list[str] | None:
    """One design per seed (seed s -> design s mod n), or None when the prompt names a design, names no concept the
    model knows, or its concepts share fewer than two designs."""
    if not filtered.concepts or filtered.scene or named_style(filtered, vocab):
        return None
    styles = common_styles(filtered.concepts, vocab)
    if len(styles) < 2:
        return None
    return [styles[int(s) % len(styles)] for s in seeds]


def styled_caption(filtered: FilterResult, style: str) -> str:
    """The caption an image of a varied prompt is drawn with (as the offline filter adds a typed design)."""
    return f"{filtered.rewritten}, {style}"


def varied_cond(pipe, filtered: FilterResult, style: str | None, seeds) -> tuple:
    """(cond, designs): the prompt's embedding per seed, each seed's design added under style "vary" (designs None
    when nothing varies: another style, a named design, a scene, a concept the model does not know)."""
    designs = varied_styles(filtered, pipe.vocabulary, seeds) \
        if filtered.concepts and pipe.resolve_style(style) == VARY else None
    if designs is None:
        return pipe.encode_prompt(filtered.rewritten), None
    order = list(dict.fromkeys(designs))
    return pipe.encode_prompt([styled_caption(filtered, d) for d in order])[[order.index(d) for d in designs]], designs


def record_designs(images, filtered: FilterResult, designs, key: str = "minicream") -> None:
    """Each image's PNG parameters name the caption it was drawn with (its seed chose the design)."""
    for im, d in zip(images, designs or []):
        im.info[key].update(rewritten_prompt=styled_caption(filtered, d),
                            filter_explanation=filtered.explanation + [f"style '{d}' chosen by the seed (style vary)"])
