"""The meaning rule of the offline filter: the nearest concept by sentence embedding, weighed against a name found
inside the phrase, and held back on words the filter cannot read.

A name inside a phrase is good evidence when it is most of the phrase ("a red balloon": balloon) and poor when it
is one word of a description ("spectacles you wear on your nose": not a nose; "the plug on the end of a power
cord": not the END arrow). Both are scored by their similarity to the whole phrase (the name's, or that of the
words that named it: "a cup of coffee" is about coffee, whose concept is "hot beverage"); the nearest concept wins
when it is clearly closer, and "clearly" grows with the share of the phrase the contained name covers. A name that
is a small part of a phrase the phrase is not about (by meaning either) is no answer at all.

When most of what the person typed cannot be read (readable.py: another language, or words no name or English
dictionary of the encoder has), a guess by meaning must be clearly close, and whatever is found says it is a guess.
"""
from __future__ import annotations

from .lexicon import MODIFIER_WORDS, STOPWORDS
from .match import Match
from .normalize import key, singular
from .readable import accented

# The nearest concept replaces a contained name when its similarity is higher by more than MARGIN x the name's share
# of the phrase's words: a name that is half the phrase needs a 0.05 lead, a quarter of it 0.025.
MARGIN = 0.1
# A name inside a phrase that covers less than this share of its words must also be close to it by meaning.
MINOR_SHARE = 0.5
# A guess by meaning on a phrase the filter mostly cannot read ("fuoco" -> flamingo, 0.51) is kept only from this
# similarity up, and flagged; below it the prompt is passed through with a warning.
GUESS_SIMILARITY = 0.6
# A head of only these says nothing of the thing ("something to eat for breakfast: a croissant"): the words after it
# name it, so nothing is set aside.
VAGUE_HEADS = frozenset("something anything thing things stuff object objects item items".split())


def weigh(filt, words: list[str], inside: Match | None, call, typed: list[str] | None = None) -> Match | None:
    """The match for `words`: `inside` (a name found in them, leaving words out, or None) or the nearest concept by
    meaning. `typed`: the words as typed, when `words` are their typo corrections ("calendario" -> "calendar"): if
    the person's words were mostly unreadable, whatever is found is a guess, and says so. `filt`: the OfflineFilter;
    `call`: the call's state (threshold; what was tried, for the warning)."""
    enc = filt.call_encoder(call)
    if enc is None or not words:
        return inside
    from .embed import similarities

    phrase, lexicon = " ".join(words), filt.lexicon(call)
    unreadable = lexicon.unreadable(words) if lexicon is not None else []
    typed_unreadable = lexicon.unreadable(typed) if lexicon is not None and typed else unreadable
    foreign = _mostly(unreadable, words)  # the encoder cannot read the phrase it would embed
    # nor could the filter read what the person typed (most of it, or a word with accents no name has)
    guess = _mostly(typed_unreadable, typed or words) or any(accented(w) for w in typed_unreadable)
    if inside is not None and foreign:  # a name the person typed beats a reading of words the encoder does not know
        if inside.dropped:
            inside.note = (f"{_listed(unreadable)}: not readable (another language?); "
                           f"only '{inside.concept}' was understood")
        return inside
    sims = similarities(phrase, filt.vocab, enc)
    modifier, aside = modifier_concepts(filt, words)
    if aside:  # the things the phrase names only in a modifier are not what it describes
        sims = sims.clone()
        sims[[filt.index[c] for c in aside]] = -1.0
    described = None  # a name inside the phrase that only describes what it is about
    if inside is not None and (inside.concept in aside or set(key(inside.typed or inside.concept).split()) <= modifier):
        described, inside = inside.concept, None  # "a canopy for jumping out of a plane" is no airplane
    best = int(sims.argmax())
    concept, sim = filt.vocab.concepts[best].name, float(sims[best])
    call.nearest = (phrase, concept, sim)
    near = None
    if inside is not None:  # how close the phrase is to the name inside it
        near = float(sims[filt.index[inside.concept]])
        if inside.typed and key(inside.typed) != key(inside.concept):  # the typed words are evidence too: "a cup
            near = max(near, similarity(enc, phrase, inside.typed))     # of coffee" is about coffee (hot beverage)
    if sim < call.threshold or (guess and sim < GUESS_SIMILARITY):
        call.unreadable = typed_unreadable if guess else []
        if inside is None or (inside.score < MINOR_SHARE and near < call.threshold):
            return None  # nor is the phrase about the one name in it: "a letter from the bank about the end of my loan"
        m = inside
    elif inside is not None and (concept == inside.concept or sim - near <= MARGIN * inside.score):
        m = inside
    else:
        m = Match(concept, f"nearest concept by meaning, similarity {sim:.2f}", kind="meaning", score=sim)
        if inside is not None:
            m.how += f"; closer than '{inside.concept}' named inside the phrase ({near:.2f})"
        elif described is not None:
            m.how += f"; '{described}' is named only in what describes it"
    if guess:
        m.note = (f"{_listed(typed_unreadable)}: not readable (another language, or a rare word?); "
                  f"'{m.concept}' is a guess")
    return m


def head_and_modifier(words: list[str]) -> tuple[list[str], list[str]]:
    """The words before the first modifier word (after the first word) and the rest: 'farm vehicle with big back
    wheels' -> (farm vehicle, with big back wheels); no modifier: (words, []). The sentence encoder puts such a
    phrase nearest the thing its modifier names (the wheel), which is why it is set aside."""
    for i, w in enumerate(words):
        if i > 0 and w in MODIFIER_WORDS:
            return words[:i], words[i:]
    return words, []


def modifier_concepts(filt, words: list[str]) -> tuple[set[str], set[str]]:
    """The content words of the phrase's modifier (and their singulars), and the concepts whose name is made only of
    them and not only of the head's words ("wheel" in "farm vehicle with big back wheels"; not "man beard" in "man
    with a beard", which the head shares)."""
    head, modifier = head_and_modifier(words)
    if not modifier or all(w in STOPWORDS or w in VAGUE_HEADS for w in head):
        return set(), set()
    mod = {w for w in modifier if w not in STOPWORDS}
    mod |= {singular(w) for w in mod}
    heads = {singular(w) for w in head} | set(head)
    return mod, {name for name, ws in _name_words(filt) if ws <= mod and not ws <= heads}


def _name_words(filt) -> list[tuple[str, frozenset]]:
    """(name, its content words) of every concept, computed once per filter."""
    cached = getattr(filt, "_name_words_cache", None)
    if cached is None:
        cached = [(c.name, ws) for c in filt.vocab.concepts
                  if (ws := frozenset(w for w in key(c.name).split() if w not in STOPWORDS))]
        filt._name_words_cache = cached
    return cached


def _mostly(unreadable: list[str], words: list[str]) -> bool:
    return 2 * len(unreadable) > len([w for w in words if w not in STOPWORDS] or words)


def similarity(encoder, a: str, b: str) -> float:
    pooled = encoder.encode([a, b]).pooled.float()
    return float(pooled[0] @ pooled[1])


def _listed(words: list[str]) -> str:
    return ", ".join(f"'{w}'" for w in words)
