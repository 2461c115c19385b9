"""Scene grammar of the offline filter: one object, or two objects and a relation, each with a count and a size.

The captions the model was trained on ("a dog face to the left of a red apple", "three red apples", "a big rocket
and a small pizza") are kept as such while each object is resolved by the filter. The grammar words also occur
inside names ("hammer and pick", "face with hand over mouth") and descriptions ("a casino machine with three reels
and a lever"), so a prompt is split into a scene only when each part is a confident match on its own, and a
number is a count only in front of its object ("three apples"), never in the middle of a description.
"""
from __future__ import annotations

from .lexicon import CLAUSE_WORDS, NUMBER_WORDS, NUMBERS, RELATIONS, SIZES, STOPWORDS
from .match import ObjectSpec
from .normalize import singular

ARTICLES = frozenset(("a", "an", "the", "one"))


def parse(filt, tokens: list[str]):
    """(relation or None, [ObjectSpec]) or None when nothing resolves. `filt` resolves each object: anything with
    resolve(tokens, prefer_scene=False) (the OfflineFilter, or one call of it)."""
    whole = filt.resolve(tokens)
    if whole is not None and whole.kind == "name" and not whole.dropped:
        return None, [ObjectSpec(" ".join(trim(tokens)), whole)]
    # a typo of one whole name ("hammer and pcik") is split only into parts named exactly: "two pears" is two pears,
    # not a typo of "two hearts"
    strict = whole is not None and whole.kind == "typo"

    def sure(m) -> bool:
        return m is not None and m.confident and (m.kind == "name" or not strict)

    for i, n, relation in relations(tokens):
        if any(t in CLAUSE_WORDS for t in tokens[1:i]):  # "an insect that bites and sucks blood": one object
            break
        left, right = object_spec(filt, tokens[:i], True), object_spec(filt, tokens[i + n:], True)
        if left and right and sure(left.match) and sure(right.match):
            return relation, [left, right]
    spec = object_spec(filt, tokens, False)
    if spec is not None and spec.match is not None and (spec.count == 1 or sure(spec.match)):
        return None, [spec]
    if whole is not None:  # not a count of something the filter is sure of: the whole phrase is one object
        return None, [ObjectSpec(" ".join(tokens), whole)]
    return None


def relations(tokens: list[str]):
    """(position, length, caption wording) of each relation phrase between two words, left to right."""
    phrases = sorted(RELATIONS, key=lambda p: -len(p.split()))
    for i in range(1, len(tokens) - 1):
        for p in phrases:
            words = p.split()
            if tokens[i:i + len(words)] == words:
                yield i, len(words), RELATIONS[p]
                break


def object_spec(filt, tokens: list[str], in_scene: bool) -> ObjectSpec | None:
    """The count and size in front of an object ("two big apples"), and the object resolved."""
    tokens = [t for t in tokens if t not in ARTICLES]
    count, size, i = 1, None, 0
    while i < len(tokens):  # only the words in front of the object: "with three reels" is part of a description
        two = " ".join(tokens[i:i + 2])
        t = tokens[i]
        if two in NUMBERS:
            count, i = NUMBERS[two], i + 2
            continue
        if t in NUMBERS or (t.isdigit() and 2 <= int(t) <= 10):
            count = NUMBERS.get(t) or int(t)
        elif t in SIZES:
            size = SIZES[t]
        elif t not in STOPWORDS:
            break
        i += 1
    rest = tokens[i:]
    if not rest:
        return None
    if count > 1:  # counting captions were trained only on the scene concepts: prefer those
        rest, in_scene = rest[:-1] + [singular(rest[-1])], True
    return ObjectSpec(" ".join(rest), filt.resolve(rest, prefer_scene=in_scene), count, size)


def compose(relation: str | None, specs: list[ObjectSpec]) -> str:
    from ..data.scene_layout import plural, with_article

    def obj(spec: ObjectSpec, article: bool) -> str:
        if spec.count > 1:
            return f"{NUMBER_WORDS.get(spec.count, str(spec.count))} {plural(spec.match.concept)}"
        noun = f"{spec.size} {spec.match.concept}" if spec.size and relation else spec.match.concept
        return with_article(noun) if article else noun

    if relation is None:
        return obj(specs[0], article=False)
    return f"{obj(specs[0], True)} {relation} {obj(specs[1], True)}"


def trim(tokens: list[str]) -> list[str]:
    """The phrase without filler words at its ends ("draw me a woman with headscarf" -> "woman with headscarf")."""
    i, j = 0, len(tokens)
    while i < j and tokens[i] in STOPWORDS:
        i += 1
    while j > i and tokens[j - 1] in STOPWORDS:
        j -= 1
    return tokens[i:j] or tokens
