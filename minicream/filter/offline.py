"""The offline language filter: rewrite what a person typed into the captions the model was trained on.

Rules, in the order a phrase meets them (the first that finds a concept wins):
  1. exact name, alias or Russian name of a concept (keys ignore case, punctuation, spacing, й/и, ё/е)
  2. the same after English plural -> singular, or Russian endings stripped ("ракету" -> "ракета")
  3. a curated everyday synonym ("puppy" -> "dog face"), when the model knows the target
  4. typo correction of the whole phrase, then of each unknown word (rapidfuzz edit similarity)
  5. a known name inside a longer phrase ("a birthday cake with candles" -> "birthday cake")
  6. the nearest concept by MiniLM sentence embedding, if its cosine similarity reaches the threshold;
     otherwise the prompt is passed through as typed and a warning says so.
Around that: emoji characters become their concept, style words are kept (or added), and scene grammar
("A to the left of B", "three As", "a big A and a small B") is kept while each object is resolved.
"""
from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass, field

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from ..errors import MinicreamError
from .lexicon import NUMBER_WORDS, NUMBERS, RELATIONS, SIZES, STOPWORDS, STYLE_FILLERS, SYNONYMS
from .normalize import check_prompt, clean, is_cyrillic, key, ru_stem, ru_stem_key, singular
from .result import FilterResult
from .vocabulary import Vocabulary

DEFAULT_THRESHOLD = 0.5  # MiniLM cosine; nonsense and off-topic phrases score below ~0.47 (see README)
# edit similarity (optimal string alignment: a swap of two letters is one edit). Whole phrases need 0.8
# ("sad face" is not "cat face"); single words of 5+ letters may lose one letter in four.
PHRASE_CUTOFF, WORD_CUTOFF, SHORT_WORD_CUTOFF = 0.79, 0.74, 0.79  # just under 0.8 and 0.75: rapidfuzz rounds
_PRIORITY = {"name": 0, "alias": 1, "Russian name": 1, "synonym": 2}


@dataclass
class Match:
    concept: str
    how: str                      # which rule found it, for the explanation
    dropped: list[str] = field(default_factory=list)


@dataclass
class ObjectSpec:
    words: str                    # the words the person typed for this object
    match: Match | None
    count: int = 1
    size: str | None = None


@dataclass
class _Call:
    threshold: float
    nearest: tuple | None = None  # (phrase, concept, similarity) of the last nearest-concept lookup


_CALL: contextvars.ContextVar[_Call] = contextvars.ContextVar("offline_filter_call")


class OfflineFilter:
    def __init__(self, vocab: Vocabulary, encoder=None, threshold: float = DEFAULT_THRESHOLD,
                 synonyms: dict[str, str] | None = None, scene_concepts=None):
        """`encoder`: a TextEncoder, or a zero-argument callable returning one (loaded only when needed)."""
        from ..data.scene_layout import DEFAULT_CONCEPTS

        self.vocab, self.threshold, self._encoder = vocab, threshold, encoder  # threshold: the default of rewrite()
        self._lock = threading.Lock()
        self.scene = set(DEFAULT_CONCEPTS if scene_concepts is None else scene_concepts)
        self.exact: dict[str, list[tuple[int, str, str]]] = {}
        self.ru_stems: dict[str, list[tuple[int, str, str]]] = {}
        self.ru_heads: dict[str, set[str]] = {}
        self.emoji: dict[str, str] = {}
        for c in vocab.concepts:
            self._add(c.name, c.name, "name")
            for a in c.aliases:
                self._add(a, c.name, "alias")
            if c.ru:
                self._add(c.ru, c.name, "Russian name")
                for w in key(c.ru).split():
                    if len(w) > 2:
                        self.ru_heads.setdefault(ru_stem(w), set()).add(c.name)
            if c.emoji:
                self.emoji[_bare_emoji(c.emoji)] = c.name
        for word, target in (SYNONYMS if synonyms is None else synonyms).items():
            if target in vocab.by_name:
                self._add(word, target, "synonym")
        self.keys = list(self.exact)
        self.words = sorted({w for k in self.keys for w in k.split()})
        # No name is longer than this many words, so no longer n-gram can match: keeps _inside linear in the
        # prompt's length (all n-grams of a 2,000-word prompt took minutes).
        self.max_words = max((len(k.split()) for k in [*self.keys, *self.ru_stems]), default=1)
        self.style_keys = {s.lower(): s for s in vocab.styles}

    def _add(self, text: str, concept: str, how: str) -> None:
        k = key(text)
        if not k:
            return
        entry = (_PRIORITY[how], concept, how)
        self.exact.setdefault(k, []).append(entry)
        if is_cyrillic(k):
            self.ru_stems.setdefault(ru_stem_key(text), []).append(entry)

    @property
    def encoder(self):
        with self._lock:  # a lazy encoder is loaded once, even when two calls need it at the same moment
            if callable(self._encoder) and not hasattr(self._encoder, "encode"):
                self._encoder = self._encoder()
            return self._encoder

    # -- the whole prompt -------------------------------------------------------------------------
    def rewrite(self, prompt: str, style: str | None = None, threshold: float | None = None) -> FilterResult:
        """One call's state (its threshold, the nearest concept it tried) lives in a context variable, never on
        this shared object: concurrent calls (serve --concurrency 2+) cannot see each other's."""
        token = _CALL.set(_Call(self.threshold if threshold is None else float(threshold)))
        try:
            return self._rewrite(prompt, style)
        finally:
            _CALL.reset(token)

    def _rewrite(self, prompt: str, style: str | None) -> FilterResult:
        check_prompt(prompt)
        if style is not None and style.lower() not in self.style_keys:
            raise MinicreamError(f"unknown style {style!r}; this model knows: {', '.join(self.vocab.styles) or 'none'}")
        changes, warnings = [], []
        text, removed = clean(prompt)
        if removed:
            changes.append(f"removed {removed} invisible control character{'s' if removed > 1 else ''}")
        text = self._replace_emoji(text, changes)
        k = key(text)
        if not any(ch.isalnum() for ch in k):
            raise MinicreamError(f"prompt {prompt[:40]!r} has nothing to draw: no words, digits or known emoji")
        tokens, found_style = self._take_style(k.split())
        if found_style:
            changes.append(f"kept style '{found_style}'")
        if style is not None:
            style = self.style_keys[style.lower()]
            if found_style and found_style != style:
                changes.append(f"style '{found_style}' replaced by '{style}' (style option)")
            elif not found_style:
                changes.append(f"added style '{style}' (style option)")
            found_style = style
        objects = self._parse(tokens)
        if objects is None:
            warnings.append(self._unresolved_message(" ".join(tokens)))
            return FilterResult(prompt, text, changes, [], "offline", warnings)
        relation, specs = objects
        rewritten = self._compose(relation, specs)
        for spec in specs:
            changes.extend(_explain(spec))
        if relation is not None and relation != "and":
            changes.append(f"kept relation '{relation}'")
        elif relation == "and":
            changes.append("kept both objects ('and')")
        for spec in specs:
            if spec.count > 1:
                changes.append(f"kept count '{NUMBER_WORDS.get(spec.count, spec.count)}'")
            if spec.size and len(specs) > 1:
                changes.append(f"kept size '{spec.size}'")
            elif spec.size:
                changes.append(f"dropped size '{spec.size}' (sizes are relative: they need a second object)")
        concepts = list(dict.fromkeys(s.match.concept for s in specs))
        if not any("->" in c for c in changes):
            typed_style = found_style if found_style and not any("style option" in c for c in changes) else None
            plain = f"{rewritten}, {typed_style}" if typed_style else rewritten
            if plain != text:
                note = "case, punctuation, spacing" if key(plain) == key(text) else "words the model does not need dropped"
                changes.insert(0, f"'{text}' -> '{plain}' ({note})")
        if found_style:
            missing = [c for c in concepts if self.vocab.by_name[c].styles and found_style not in self.vocab.by_name[c].styles]
            for c in missing:
                warnings.append(f"'{c}' was not trained in style '{found_style}'")
            rewritten = f"{rewritten}, {found_style}"
        scene = None
        if len(specs) > 1 or any(spec.count > 1 for spec in specs):
            scene = {"relation": relation, "style": found_style,
                     "objects": [{"concept": s.match.concept, "count": s.count, "size": s.size} for s in specs]}
        return FilterResult(prompt, rewritten, changes, concepts, "offline", warnings, scene=scene)

    def _replace_emoji(self, text: str, changes: list[str]) -> str:
        import emoji as emoji_pkg

        found = emoji_pkg.emoji_list(text)
        for item in reversed(found):
            chars = item["emoji"]
            name = self.emoji.get(_bare_emoji(chars))
            how = "emoji character"
            if name is None:
                from ..data.emoji_names import english_name, lookup

                k = lookup(chars) or lookup(_bare_emoji(chars))
                name = english_name(k) if k else ""
                how = "emoji character, not drawn by this model" if name else "unknown emoji, removed"
            changes.append(f"'{chars}' -> '{name}' ({how})")
            text = f"{text[:item['match_start']]} {name} {text[item['match_end']:]}"
        return " ".join(text.split())

    def _take_style(self, tokens: list[str]) -> tuple[list[str], str | None]:
        style, keep = None, [True] * len(tokens)
        for i, t in enumerate(tokens):
            s = self.style_keys.get(t)
            if s is None and len(t) >= 6:
                best = process.extractOne(t, list(self.style_keys), scorer=fuzz.ratio, score_cutoff=80)
                s = self.style_keys[best[0]] if best else None
            if s is None:
                continue
            style, keep[i] = s, False
            # fillers right next to the style word go with it ("in openmoji style", "в стиле openmoji")
            for step in (-1, 1):
                j = i + step
                while 0 <= j < len(tokens) and tokens[j] in STYLE_FILLERS:
                    keep[j], j = False, j + step
        out = [t for t, k in zip(tokens, keep) if k]
        return out, style

    # -- structure ----------------------------------------------------------------------------------
    def _parse(self, tokens: list[str]):
        """(relation or None, [ObjectSpec]) or None when nothing resolves."""
        whole = self.resolve(tokens)
        if whole is not None and whole.how in ("name", "alias", "Russian name", "synonym") and not whole.dropped:
            return None, [ObjectSpec(" ".join(t for t in tokens if t not in STOPWORDS) or " ".join(tokens), whole)]
        for i, n, relation in self._relations(tokens):
            left, right = self._spec(tokens[:i], True), self._spec(tokens[i + n:], True)
            if left and right and left.match and right.match:
                return relation, [left, right]
        spec = self._spec(tokens, False)
        if spec is not None and spec.match is not None:
            return None, [spec]
        return None

    def _relations(self, tokens: list[str]):
        phrases = sorted(RELATIONS, key=lambda p: -len(p.split()))
        for i in range(1, len(tokens) - 1):
            for p in phrases:
                words = p.split()
                if tokens[i:i + len(words)] == words:
                    yield i, len(words), RELATIONS[p]
                    break

    def _spec(self, tokens: list[str], in_scene: bool) -> ObjectSpec | None:
        tokens = [t for t in tokens if t not in ("a", "an", "the", "one")]
        count, size = 1, None
        rest = []
        i = 0
        while i < len(tokens):
            two = " ".join(tokens[i:i + 2])
            if two in NUMBERS:
                count, i = NUMBERS[two], i + 2
                continue
            t = tokens[i]
            if t in NUMBERS or (t.isdigit() and 2 <= int(t) <= 10):
                count = NUMBERS.get(t) or int(t)
            elif t in SIZES:
                size = SIZES[t]
            else:
                rest.append(t)
            i += 1
        if not rest:
            return None
        if count > 1:  # counting captions were trained only on the scene concepts: prefer those
            rest, in_scene = rest[:-1] + [singular(rest[-1])], True
        return ObjectSpec(" ".join(rest), self.resolve(rest, prefer_scene=in_scene), count, size)

    def _compose(self, relation: str | None, specs: list[ObjectSpec]) -> str:
        from ..data.scene_layout import plural, with_article

        def obj(spec: ObjectSpec, article: bool) -> str:
            if spec.count > 1:
                return f"{NUMBER_WORDS.get(spec.count, str(spec.count))} {plural(spec.match.concept)}"
            noun = f"{spec.size} {spec.match.concept}" if spec.size and relation else spec.match.concept
            return with_article(noun) if article else noun

        if relation is None:
            return obj(specs[0], article=False)
        return f"{obj(specs[0], True)} {relation} {obj(specs[1], True)}"

    # -- one object -----------------------------------------------------------------------------------
    def resolve(self, tokens: list[str], prefer_scene: bool = False) -> Match | None:
        content = [t for t in tokens if t not in STOPWORDS] or tokens
        for words in (content, tokens):
            m = self._lookup(words, prefer_scene)
            if m:
                return m
        m = self._fuzzy(content, prefer_scene) or self._inside(content, prefer_scene)
        if m:
            return m
        corrected, fixes = self._correct(content)
        if fixes:
            m = self._lookup(corrected, prefer_scene) or self._inside(corrected, prefer_scene)
            if m:
                m.how = f"typo corrected ({', '.join(fixes)}); {m.how}"
                return m
        return self._nearest(" ".join(content))

    def _pick(self, entries, prefer_scene: bool) -> tuple[str, str]:
        best = min(entries, key=lambda e: (not (prefer_scene and e[1] in self.scene), e[0], e[1].lower()))
        return best[1], best[2]

    def _lookup(self, words: list[str], prefer_scene: bool) -> Match | None:
        if not words:
            return None
        k = " ".join(words)
        if k in self.exact:
            return Match(*self._pick(self.exact[k], prefer_scene))
        s = " ".join(words[:-1] + [singular(words[-1])])
        if s != k and s in self.exact:
            c, how = self._pick(self.exact[s], prefer_scene)
            return Match(c, f"plural of {how}")
        st = " ".join(ru_stem(w) for w in words)
        if is_cyrillic(k) and st in self.ru_stems:
            c, how = self._pick(self.ru_stems[st], prefer_scene)
            return Match(c, f"{how}, inflected")
        return None

    def _fuzzy(self, words: list[str], prefer_scene: bool) -> Match | None:
        k = " ".join(words)
        if len(k) < 4:
            return None
        hit = process.extractOne(k, self.keys, scorer=OSA.normalized_similarity, score_cutoff=PHRASE_CUTOFF)
        if hit is None:
            return None
        c, how = self._pick(self.exact[hit[0]], prefer_scene)
        return Match(c, f"typo corrected '{k}' -> '{hit[0]}' ({how})")

    def _correct(self, words: list[str]) -> tuple[list[str], list[str]]:
        out, fixes = [], []
        known = set(self.words)
        for w in words:
            if w in known or singular(w) in known or len(w) < 4 or w.isdigit():
                out.append(w)
                continue
            cutoff = SHORT_WORD_CUTOFF if len(w) <= 4 else WORD_CUTOFF
            hits = process.extract(w, self.words, scorer=OSA.normalized_similarity, score_cutoff=cutoff, limit=8)
            # among equally close words prefer one that is a whole name or alias ("aple": "apple", not "maple")
            hit = max(hits, key=lambda h: (h[1], h[0] in self.exact), default=None)
            if hit and hit[0] != w:
                fixes.append(f"'{w}' -> '{hit[0]}'")
                out.append(hit[0])
            else:
                out.append(w)
        return out, fixes

    def _inside(self, words: list[str], prefer_scene: bool) -> Match | None:
        """Longest known name inside the phrase (rightmost on ties: English puts the noun last)."""
        skip = STOPWORDS | set(SIZES) | set(NUMBERS)
        for n in range(min(len(words) - 1, self.max_words), 0, -1):
            for i in range(len(words) - n, -1, -1):
                gram = words[i:i + n]
                if all(w in skip for w in gram) or len(" ".join(gram)) < 3:
                    continue
                m = self._lookup(gram, prefer_scene)
                if m:
                    m.dropped = [w for w in words[:i] + words[i + n:] if w not in STOPWORDS]
                    return m
        for w in reversed(words):  # a Russian word inside a longer Russian name: "яблоко" in "красное яблоко"
            heads = self.ru_heads.get(ru_stem(w)) if is_cyrillic(w) and len(w) > 2 else None
            if heads:
                pick = min(heads, key=lambda c: (not (c in self.scene), len(key(self.vocab.by_name[c].ru or "").split()), c))
                return Match(pick, f"word of the Russian name '{self.vocab.by_name[pick].ru}'",
                             [x for x in words if x != w and x not in STOPWORDS])
        return None

    def _nearest(self, phrase: str) -> Match | None:
        enc = self.encoder
        if enc is None or not phrase:
            return None
        from .embed import nearest

        (concept, sim), *_ = nearest(phrase, self.vocab, enc, k=1)
        call = _CALL.get(None) or _Call(self.threshold)  # outside rewrite(): this lookup's own state
        call.nearest = (phrase, concept, sim)
        if sim < call.threshold:
            return None
        return Match(concept, f"nearest concept by meaning, similarity {sim:.2f}")

    def _unresolved_message(self, phrase: str) -> str:
        call = _CALL.get(None) or _Call(self.threshold)
        last = call.nearest
        closest = f" (closest: '{last[1]}', similarity {last[2]:.2f} < {call.threshold})" if last and last[0] else ""
        return f"no concept of this model matches '{phrase}'{closest}; the prompt is used as typed"


def _bare_emoji(chars: str) -> str:
    from ..data.emoji_names import SKIN_TONES

    return "".join(c for c in chars if c not in SKIN_TONES and c != "\ufe0f")


def _explain(spec: ObjectSpec) -> list[str]:
    m = spec.match
    if m.how == "name" and key(spec.words) == key(m.concept) and not m.dropped:
        return []
    out = [f"'{spec.words}' -> '{m.concept}' ({m.how})"]
    if m.dropped:
        out.append(f"dropped '{' '.join(m.dropped)}' (not in the model's vocabulary)")
    return out
