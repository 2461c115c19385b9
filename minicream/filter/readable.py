"""Which typed words the filter can read: the guard against mapping another language onto an unrelated concept.

The meaning rule embeds a phrase with an English sentence encoder. Given an Italian "fuoco" it still returns a
nearest concept ("flamingo", by the letters), with a similarity not far below a real match. So before a guess
by meaning is trusted, the filter asks whether it could read the words at all. A word is readable when it is
a word of the model's own names and aliases, or a whole word of the encoder's tokenizer vocabulary (the ~22,000
English words it has one token for), after stripping a few English endings, or two such words run together
("ladybug"). Not readable: Cyrillic words (the
encoder reads English only; Russian is matched by name, never by meaning), Latin words with accents that no name
has ("téléphones": the uncased tokenizer drops accents, so its vocabulary cannot tell), and everything else.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from .lexicon import STOPWORDS
from .normalize import is_cyrillic, singular

_ENDINGS = ("s", "es", "ed", "d", "ing", "ly", "er", "est")


class Lexicon:
    def __init__(self, names: Iterable[str], english: Iterable[str] = ()):
        """`names`: the model's names and aliases, as keys; `english`: the encoder's whole-word tokens."""
        self.names = {w for n in names for w in n.split()}
        self.english = {w for w in english if w.isalpha() and w.isascii()}

    @classmethod
    def from_encoder(cls, names: Iterable[str], encoder) -> Lexicon | None:
        """None when the encoder has no tokenizer vocabulary to read (then no word is judged)."""
        tok = getattr(encoder, "tokenizer", None)
        vocab = tok.get_vocab() if tok is not None and hasattr(tok, "get_vocab") else None
        return cls(names, vocab) if vocab else None

    def readable(self, word: str, compounds: bool = True) -> bool:
        """compounds: two known words run together count ("ladybug"): the encoder reads them, but they are no proof of
        correct spelling ("persoon" = "per" + "soon"), so the typo rules ask without."""
        if word in self.names or word.isdigit() or word in STOPWORDS:
            return True
        if is_cyrillic(word) or accented(word):
            return False
        return self._known(word) or compounds and any(self._known(word[:i]) and self._known(word[i:])
                                                      for i in range(3, len(word) - 2))

    def _known(self, word: str) -> bool:
        stems = {word[: -len(e)] for e in _ENDINGS if word.endswith(e) and len(word) > len(e) + 2}
        forms = {word, singular(word)} | stems | {s + "e" for s in stems}  # "howls" -> "howl", "skated" -> "skate"
        return any(f in self.english or f in self.names for f in forms)

    def unreadable(self, words: Iterable[str], compounds: bool = True) -> list[str]:
        """The words of `words` (filler words left out) that this filter cannot read."""
        return [w for w in words if w not in STOPWORDS and not self.readable(w, compounds)]


def accented(word: str) -> bool:
    """A Latin letter with an accent: rare in English ("café"), the mark of a word in another language."""
    return any(unicodedata.combining(ch) for ch in unicodedata.normalize("NFD", word))
