"""What the model knows: its concepts with English name, aliases, Russian name and emoji character.

A model directory ships `vocabulary.json` (the training captions, e.g. "red apple, twemoji") and, since the
language filter, `concepts.json`, built here from the dataset rows that carry `concept`, `aliases`,
`name_ru` and `emoji` fields (the emoji dataset does). Models exported before that have only captions;
`load_vocabulary` then recovers names and styles from the captions and the rest from the `emoji` package.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import MinicreamError
from ..io.atomic import atomic_path, read_json
from .normalize import key

CONCEPTS_FILE = "concepts.json"
VOCABULARY_FILE = "vocabulary.json"
FORMAT = "minicream-concepts"
KNOWN_STYLES = ("twemoji", "openmoji", "noto", "fluent")  # the emoji designs of data/emoji_sources.py


@dataclass
class Concept:
    name: str                                          # canonical English name, as in the captions
    aliases: list[str] = field(default_factory=list)   # English aliases (GitHub shortcodes, CLDR keywords)
    ru: str | None = None                              # Russian CLDR name
    emoji: str | None = None                           # the emoji character(s)
    styles: list[str] = field(default_factory=list)    # art styles it was trained in
    keywords: list[str] = field(default_factory=list)  # English emoji search keywords (data/emoji_keywords.py)
    keywords_ru: list[str] = field(default_factory=list)  # Russian ones (CLDR tags)


@dataclass
class Vocabulary:
    concepts: list[Concept]
    styles: list[str]
    caption_format: str = "{concept}, {style}"
    source: str = ""  # where it was read from, for messages

    def __post_init__(self):
        self.by_name = {c.name: c for c in self.concepts}

    @cached_property
    def offline_filter(self):
        """The offline filter's indices over these concepts (filter/offline.py), built on first use (~0.1 s for
        1,900 concepts) and kept with the vocabulary they index. It holds no text encoder: calls pass theirs."""
        from .offline import OfflineFilter

        return OfflineFilter(self)

    def caption(self, concept: str, style: str | None) -> str:
        return self.caption_format.format(concept=concept, style=style) if style else concept

    def summary(self, limit: int = 400) -> str:
        """Short description for an LLM system prompt: styles, caption format, the first `limit` names."""
        names = [c.name for c in self.concepts[:limit]]
        more = len(self.concepts) - len(names)
        return (f"{len(self.concepts)} concepts in styles {', '.join(self.styles) or '(none)'}; captions look like "
                f"\"{self.caption('red apple', self.styles[0] if self.styles else None)}\". Concepts: "
                + "; ".join(names) + (f"; ... and {more} more" if more > 0 else ""))

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": 1, "caption_format": self.caption_format, "styles": self.styles,
                "concepts": [asdict(c) for c in self.concepts]}


def build_concepts(rows: Iterable, captions: Sequence[str] | None = None) -> Vocabulary:
    """Concepts from dataset rows (dicts, or `Example`s whose `meta` holds the row).

    Rows carry `concept` (or `name_en`), `aliases`, `name_ru`, `emoji`, `style` as the emoji dataset writes
    them; rows with only a caption become one concept each. With `captions`, only rows whose caption is
    among them count (the model's vocabulary: e.g. the base concepts when skin tones were left out).
    """
    wanted = set(captions) if captions is not None else None
    concepts: dict[str, Concept] = {}
    styles: list[str] = []
    for row in rows:
        meta = getattr(row, "meta", row)
        text = getattr(row, "text", None) or meta.get("text") or meta.get("caption")
        if wanted is not None and text not in wanted:
            continue
        if meta.get("skin_tone"):
            continue
        name = meta.get("concept") or meta.get("name_en") or text
        if not name:
            continue
        c = concepts.setdefault(name, Concept(name))
        for alias in meta.get("aliases") or []:
            if alias != name and alias not in c.aliases:
                c.aliases.append(alias)
        for field_name in ("keywords", "keywords_ru"):
            words = getattr(c, field_name)
            words += [w for w in dict.fromkeys(meta.get(field_name) or []) if w not in words]
        c.ru = c.ru or meta.get("name_ru")
        c.emoji = c.emoji or meta.get("emoji")
        style = meta.get("style")
        if style:
            if style not in c.styles:
                c.styles.append(style)
            if style not in styles:
                styles.append(style)
    return Vocabulary(sorted(concepts.values(), key=lambda c: c.name.lower()), sorted(styles))


def add_keywords(vocab: Vocabulary) -> Vocabulary:
    """Fill each concept's empty `keywords` with its emoji's search keywords (data/emoji_keywords.py), less its own
    name and aliases; concepts stay as they are when the keyword packages are not fetched (no npm)."""
    from ..data.emoji_keywords import keywords_for

    for c in vocab.concepts:
        if not c.keywords:
            c.keywords = keywords_for(c.emoji, leave_out=[c.name, *c.aliases])
        if not c.keywords_ru:
            c.keywords_ru = keywords_for(c.emoji, "ru", leave_out=[c.ru or ""])
    return vocab


def concepts_from_dataset(root: str | Path, captions: Sequence[str] | None = None) -> Vocabulary:
    """Concepts of an imagefolder dataset (`root/train/metadata.jsonl` or `root/metadata.jsonl`)."""
    root = Path(root)
    meta = next((p for p in (root / "train" / "metadata.jsonl", root / "metadata.jsonl") if p.is_file()), None)
    if meta is None:
        raise MinicreamError(f"{root}: no metadata.jsonl to build concepts from")
    rows = []
    with open(meta, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return build_concepts(rows, captions)


def save_concepts(vocab: Vocabulary, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(vocab.to_json(), ensure_ascii=False, indent=0), encoding="utf-8")


def write_model_concepts(model_dir: str | Path, captions: Sequence[str], data_root: str | Path | None) -> Path:
    """Write `concepts.json` into an exported model directory (called by the recipe's export stage).

    Uses the dataset's bilingual metadata when `data_root` has it; else the captions (+ `emoji` names). Search
    keywords come from the fetched keyword packages (`minicream data fetch keywords`), else are left empty.
    """
    try:
        vocab = concepts_from_dataset(data_root, captions) if data_root is not None else None
    except (MinicreamError, OSError, json.JSONDecodeError):
        vocab = None
    if vocab is None or not vocab.concepts:
        vocab = vocabulary_from_captions(captions)
    path = Path(model_dir) / CONCEPTS_FILE
    save_concepts(add_keywords(vocab), path)
    return path


def vocabulary_from_captions(captions: Sequence[str]) -> Vocabulary:
    """Concepts recovered from captions alone: 'red apple, twemoji' -> concept 'red apple', style 'twemoji'.

    A trailing ', word' counts as a style when it is a known emoji style or ends a fifth of the captions;
    aliases, Russian names and characters come from the `emoji` package when it knows the name.
    """
    tails: dict[str, int] = {}
    for cap in captions:
        head, sep, tail = cap.rpartition(", ")
        if sep and head:
            tails[tail] = tails.get(tail, 0) + 1
    styles = {t for t, n in tails.items() if t in KNOWN_STYLES or n >= max(2, len(captions) / 5)}
    rows = []
    for cap in captions:
        head, sep, tail = cap.rpartition(", ")
        name, style = (head, tail) if sep and tail in styles else (cap, None)
        rows.append({"concept": name, "style": style, **_emoji_names(name)})
    vocab = build_concepts(rows)
    vocab.caption_format = "{concept}, {style}" if styles else "{concept}"
    return vocab


def _emoji_names(name: str) -> dict:
    from ..data.emoji_names import names_for_stem

    index = _emoji_name_index()
    chars = index.get(key(name))
    if chars is None:
        return {}
    names = names_for_stem("-".join(f"{ord(c):x}" for c in chars))
    if names is None:
        return {}
    return {"aliases": names.aliases, "name_ru": names.name_ru, "emoji": names.emoji}


_NAME_INDEX: dict[str, str] | None = None


def _emoji_name_index() -> dict[str, str]:
    global _NAME_INDEX
    if _NAME_INDEX is None:
        import emoji

        from ..data.emoji_names import english_name

        _NAME_INDEX = {}
        for chars in emoji.EMOJI_DATA:
            _NAME_INDEX.setdefault(key(english_name(chars)), chars)
    return _NAME_INDEX


def load_vocabulary(model_dir: str | Path) -> Vocabulary:
    """The model's concepts: `concepts.json`, else recovered from `vocabulary.json`."""
    model_dir = Path(model_dir)
    path = model_dir / CONCEPTS_FILE
    if path.is_file():
        try:
            data = read_json(path)
            concepts = [Concept(**c) for c in data["concepts"]]
        except (KeyError, TypeError) as e:
            raise MinicreamError(f"{path}: not a valid concepts file ({e})") from None
        return Vocabulary(concepts, list(data.get("styles", [])), data.get("caption_format", "{concept}, {style}"),
                          source=str(path))
    path = model_dir / VOCABULARY_FILE
    if not path.is_file():
        raise MinicreamError(f"{model_dir}: no {CONCEPTS_FILE} or {VOCABULARY_FILE}; the language filter needs the "
                             "model's vocabulary (use filter='none' for this model)")
    captions = read_json(path)
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise MinicreamError(f"{path}: expected a JSON list of captions")
    vocab = vocabulary_from_captions(captions)
    vocab.source = str(path)
    return vocab
