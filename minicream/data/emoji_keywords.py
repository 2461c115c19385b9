"""The words people search emoji with ("sakura" for cherry blossom, "tyrannosaurus" for T-Rex), per emoji character.

Two MIT-licensed npm packages, fetched once like the npm designs (npm_sources.py: pinned version and sha256,
cached, `minicream data fetch keywords`):
  * emojilib: keywords made for emoji search (English), e.g. 🎇 "fireworks, hanabi, sparkle";
  * emojibase-data: the Unicode CLDR annotation keywords ("tags", Unicode License v3), English and Russian.
The language filter reads them from a model's concepts.json (vocabulary.Concept.keywords), written when the
concepts are built; without the tarballs (no npm, as in CI) the builder leaves the keywords empty.
"""
from __future__ import annotations

import json
import tarfile
from functools import lru_cache

from minicream.errors import MinicreamError

from .npm_sources import NpmSource, fetch_source, source_path

KEYWORD_SOURCES = {
    "emojilib": NpmSource("emojilib", "4.0.3", "7f9a6b43cff31d18985b7d65d11faba5bd971cbcc60020cf6d09322fbaaaf303",
                          "MIT", "emojilib (Mu-An Chiou)", "https://github.com/muan/emojilib"),
    "emojibase": NpmSource("emojibase-data", "17.0.0",
                           "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a",
                           "MIT (data from Unicode CLDR, Unicode License v3)", "Emojibase (Miles Johnson)",
                           "https://github.com/milesj/emojibase"),
}
_MEMBERS = {"emojilib": {"en": "package/dist/emoji-en-US.json"},
            "emojibase": {"en": "package/en/data.json", "ru": "package/ru/data.json"}}


def bare(chars: str) -> str:
    """An emoji without variation selectors: the packages disagree about where they keep U+FE0F."""
    return chars.replace("\ufe0f", "")


def is_fetched() -> bool:
    return all(source_path(src).is_file() for src in KEYWORD_SOURCES.values())


def fetch() -> list[tuple[NpmSource, str]]:
    """Fetch both packages (needs npm once); (source, cached path) each."""
    return [(src, str(fetch_source(src))) for src in KEYWORD_SOURCES.values()]


def _read(name: str, lang: str):
    path = source_path(KEYWORD_SOURCES[name])
    member = _MEMBERS[name].get(lang)
    if member is None or not path.is_file():
        return None
    try:
        with tarfile.open(path, "r:gz") as tar:
            return json.load(tar.extractfile(member))
    except (KeyError, tarfile.TarError, EOFError, OSError, ValueError, AttributeError) as e:
        raise MinicreamError(f"{path}: not a readable {name} package ({type(e).__name__}); delete it and run "
                             "`minicream data fetch keywords` again") from None


@lru_cache(maxsize=2)
def keywords_by_emoji(lang: str = "en") -> dict[str, list[str]]:
    """Bare emoji -> its search keywords in `lang` ("en" or "ru"), emojilib's first, then CLDR's; empty when the
    packages are not fetched. Shortcode spellings ("cherry_blossom") become words ("cherry blossom")."""
    out: dict[str, list[str]] = {}

    def add(chars: str, words) -> None:
        kept = out.setdefault(bare(chars), [])
        for w in words or []:
            w = " ".join(str(w).replace("_", " ").split()).lower()
            if w and w not in kept:
                kept.append(w)

    lib = _read("emojilib", lang)
    if isinstance(lib, dict):
        for chars, words in lib.items():
            add(chars, words)
    base = _read("emojibase", lang)
    if isinstance(base, list):
        for row in base:
            if isinstance(row, dict) and row.get("emoji"):
                add(row["emoji"], row.get("tags"))
    return {k: v for k, v in out.items() if v}


def keywords_for(chars: str | None, lang: str = "en", leave_out=()) -> list[str]:
    """The search keywords of one emoji, without any of `leave_out` (its own name and aliases)."""
    if not chars:
        return []
    skip = {w.lower() for w in leave_out}
    return [w for w in keywords_by_emoji(lang).get(bare(chars), []) if w not in skip]
