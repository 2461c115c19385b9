"""Rule 3 of the offline filter, second half: a phrase that is the emoji search keyword of one concept only.

Keywords (concepts.json `keywords`, English, and `keywords_ru`, Russian CLDR tags; data/emoji_keywords.py) are
what people search emoji with: "terrapin" finds the turtle, "лиса" the fox (whose Russian name is "морда лисицы").
Only a keyword of a single concept is an answer: "celebration" or "животное" belongs to dozens. A keyword that is
also a name, alias or synonym is left to those rules; Russian keywords also match inflected ("лису").
"""
from __future__ import annotations

from .normalize import is_cyrillic, key, ru_stem_key, singular
from .vocabulary import Vocabulary


class KeywordIndex:
    def __init__(self, vocab: Vocabulary, names, ru_names=()):
        """`names`, `ru_names`: the keys (and Russian stem keys) the earlier rules already answer."""
        self.exact = _unique(vocab, key, set(names))
        self.ru_stems = _unique(vocab, ru_stem_key, set(ru_names), cyrillic=True)
        # the English words of every keyword, for the words the filter can read (readable.py): "sakura" is one
        self.words = sorted({w for c in vocab.concepts for k in c.keywords for w in key(k).split()
                             if w.isascii() and w.isalpha()})

    def __contains__(self, k: str) -> bool:
        return k in self.exact

    def lookup(self, words: list[str]) -> str | None:
        """The concept whose keyword `words` (key()ed) are, if it is the only one with it; else None."""
        if not words:
            return None
        k = " ".join(words)
        found = self.exact.get(k) or self.exact.get(" ".join(words[:-1] + [singular(words[-1])]))
        if found is None and is_cyrillic(k):
            found = self.ru_stems.get(ru_stem_key(k))
        return found


def _unique(vocab: Vocabulary, fold, taken: set[str], cyrillic: bool = False) -> dict[str, str]:
    owners: dict[str, set[str]] = {}
    for c in vocab.concepts:
        for w in [*c.keywords, *c.keywords_ru]:
            # 4+ letters: shorter ones ("t", "rex", "lol") are mostly abbreviations that name something else too
            if len(key(w)) > 3 and (not cyrillic or is_cyrillic(w)):
                owners.setdefault(fold(w), set()).add(c.name)
    return {k: next(iter(names)) for k, names in owners.items() if len(names) == 1 and k not in taken}
