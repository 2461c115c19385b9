"""Text clean-up shared by every rule of the language filter.

Two forms of a prompt are used: the *clean* text (Unicode NFKC, control characters removed, whitespace
collapsed: what a person meant to type) and the matching *key* (lower case, punctuation to spaces,
Russian й/ё folded to и/е). The `emoji` package spells some Russian names with "и" where a person
types "й" (and nobody types "ё" consistently), so keys fold both.
"""
from __future__ import annotations

import re
import unicodedata

from ..errors import MinicreamError

MAX_PROMPT_CHARS = 1000  # the text encoder reads ~32 tokens; a longer prompt is a mistake, not a description

_KEEP_FORMAT = {"\u200d", "\ufe0f", "\ufe0e"}  # zero-width joiner and variation selectors belong to emoji
_FOLD = str.maketrans({"й": "и", "ё": "е", "’": "'", "‘": "'", "`": "'"})
_NON_WORD = re.compile(r"[^\w']+|_")
_SPACE = re.compile(r"\s+")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_LATIN = re.compile(r"[a-zA-Z]")

# Russian inflection endings, longest first: a crude stemmer so that "ракету", "ракеты" and "ракета" meet.
_RU_ENDINGS = sorted("""ами ями ого его ому ему ыми ими ой ей ую юю ая яя ое ее ые ие ых их ым им ом ем ам ям ах ях
                     ов ев а я о е у ю ы и ь""".split(), key=len, reverse=True)


def check_prompt(prompt) -> None:
    """Raise a one-line MinicreamError for prompts no filter can work with."""
    if not isinstance(prompt, str):
        raise MinicreamError(f"prompt must be text, got {type(prompt).__name__}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise MinicreamError(f"prompt is {len(prompt)} characters long; at most {MAX_PROMPT_CHARS} are accepted "
                             "(the text encoder reads only the first ~32 tokens)")
    if not prompt.strip():
        raise MinicreamError("prompt is empty; describe what to draw, e.g. \"red apple\"")


def clean(text: str) -> tuple[str, int]:
    """NFKC, control/format characters removed (tabs and newlines become spaces), whitespace collapsed.

    Returns the text and how many invisible characters were removed.
    """
    text = unicodedata.normalize("NFKC", text)
    in_emoji = _emoji_positions(text)
    out, removed = [], 0
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if ch in "\t\n\r\v\f":
            out.append(" ")
        elif i not in in_emoji and (cat in ("Cc", "Cs", "Co", "Cn") or (cat == "Cf" and ch not in _KEEP_FORMAT)):
            removed += 1
        else:
            out.append(ch)
    return _SPACE.sub(" ", "".join(out)).strip(), removed


def _emoji_positions(text: str) -> set[int]:
    """Positions of the characters of the emoji in `text` (the `emoji` package's): they stay. Python's Unicode tables
    can be older than the package's (3.11: Unicode 14), so newer emoji (Emoji 15+: moose, goose, shovel, ...) read as
    unassigned ("Cn"); subdivision flags (England, Scotland, Wales) are tag sequences of format ("Cf") characters."""
    import emoji

    return {i for m in emoji.emoji_list(text) for i in range(m["match_start"], m["match_end"])}


def key(text: str) -> str:
    """Matching key: 'Red-Apple!' -> 'red apple'; 'Зелёное яблоко' -> 'зеленое яблоко'."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_FOLD)
    text = _NON_WORD.sub(" ", text).replace("'", " ")
    return _SPACE.sub(" ", text).strip()


def is_cyrillic(word: str) -> bool:
    return bool(_CYRILLIC.search(word))


def scripts(text: str) -> set[str]:
    """Which of the scripts we handle occur in `text` ('latin', 'cyrillic')."""
    found = set()
    if _LATIN.search(text):
        found.add("latin")
    if _CYRILLIC.search(text):
        found.add("cyrillic")
    return found


def ru_stem(word: str) -> str:
    """'ракету' -> 'ракет'; words of 3 letters or fewer are kept whole."""
    if len(word) <= 3 or not is_cyrillic(word):
        return word
    for ending in _RU_ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            return word[: -len(ending)]
    return word


def ru_stem_key(text: str) -> str:
    return " ".join(ru_stem(w) for w in key(text).split())


def singular(word: str) -> str:
    """English singular of a plural noun, for matching only: 'cherries' -> 'cherry', 'boxes' -> 'box'."""
    irregular = {"mice": "mouse", "geese": "goose", "children": "child", "people": "person", "teeth": "tooth",
                 "feet": "foot", "men": "man", "women": "woman", "knives": "knife", "leaves": "leaf", "wolves": "wolf"}
    if word in irregular:
        return irregular[word]
    if len(word) <= 3 or is_cyrillic(word) or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "zes", "sses", "oes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word
