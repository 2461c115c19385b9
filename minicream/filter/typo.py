"""Typo similarity for the language filter: an edit distance that knows how people mistype.

Plain edit distance counts every slip as one edit, so "winb" is as far from "wing" (b sits next to g) as from
"wind", and the one-letter slips of four-letter words all fall below the cutoff. Here the two most common typing
slips cost half an edit: a key next to the intended one on a QWERTY keyboard, and two neighbouring letters swapped.
Other substitutions, insertions and deletions cost one. rapidfuzz finds the candidates (plain optimal string
alignment, which can only be at most twice this distance), this module scores the few it returns.
"""
from __future__ import annotations

from rapidfuzz import process
from rapidfuzz.distance import OSA

SLIP = 0.5  # cost of a neighbouring key or a swap of two neighbouring letters
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_SHIFT = (0.0, 0.25, 0.75)  # how far each row of a keyboard is shifted to the right


def _neighbours() -> frozenset[tuple[str, str]]:
    pos = {ch: (r, c + _SHIFT[r]) for r, row in enumerate(_ROWS) for c, ch in enumerate(row)}
    return frozenset((a, b) for a, (ra, xa) in pos.items() for b, (rb, xb) in pos.items()
                     if a != b and abs(ra - rb) <= 1 and abs(xa - xb) <= 1)


NEIGHBOURS = _neighbours()


def distance(a: str, b: str) -> float:
    """Edit distance with slips at half cost (optimal string alignment: each letter is edited at most once)."""
    n, m = len(a), len(b)
    prev2, prev = None, [float(j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [float(i)] + [0.0] * m
        for j in range(1, m + 1):
            x, y = a[i - 1], b[j - 1]
            sub = 0.0 if x == y else (SLIP if (x, y) in NEIGHBOURS else 1.0)
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + sub)
            if i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y and x != y:
                cur[j] = min(cur[j], prev2[j - 2] + SLIP)
        prev2, prev = prev, cur
    return prev[m]


def similarity(a: str, b: str) -> float:
    """1 - distance / length of the longer string: 1.0 for equal strings, 0.875 for "winb" and "wing"."""
    longest = max(len(a), len(b))
    return 1.0 - distance(a, b) / longest if longest else 1.0


def closest(text: str, choices, cutoff: float, limit: int = 100) -> list[tuple[str, float]]:
    """The choices whose similarity to `text` reaches `cutoff`, best first (ties keep rapidfuzz's order)."""
    loose = max(0.0, 1.0 - 2 * (1.0 - cutoff))  # a slip costs half an edit: plain similarity can be this low
    hits = process.extract(text, choices, scorer=OSA.normalized_similarity, score_cutoff=loose - 1e-9, limit=limit)
    scored = [(h[0], similarity(text, h[0])) for h in hits]
    return sorted((s for s in scored if s[1] >= cutoff), key=lambda s: -s[1])
