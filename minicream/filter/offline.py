"""The offline language filter: rewrite what a person typed into the captions the model was trained on.

Rules, in the order a phrase meets them (request words such as "draw me a" are trimmed from its ends first;
the words inside it are kept, since names have them too: "glass of milk", "woman with headscarf"):
  1. exact name, alias or Russian name of a concept (keys ignore case, punctuation, spacing, й/и, ё/е)
  2. the same after English plural -> singular, or Russian endings stripped ("ракету" -> "ракета")
  3. a curated everyday synonym ("puppy" -> "dog face"), when the model knows the target; else the emoji search
     keyword of one concept only ("shades": smiling face with sunglasses; keywords.py)
  4. typo correction of the whole phrase, then of each unknown word (typo.py: slips of a neighbouring key count half)
  5. a known name inside a longer phrase ("a birthday cake with candles" -> "birthday cake"), longest first
  6. the nearest concept by MiniLM sentence embedding (of its name, and of the name with each search keyword:
     embed.py), if its cosine similarity reaches the threshold. When rule 5
     found a name that leaves words out, the two compete (meaning.py): "spectacles you wear on your nose" is
     glasses, not nose. A guess by meaning on words the filter cannot read (another language: readable.py) must
     be clearly close, and is flagged; otherwise the prompt is passed through as typed and a warning says so.
Around that: emoji characters become their concept, style words are kept (or added), and scene grammar
("A to the left of B", "three As", "a big A and a small B": grammar.py) is kept while each object is resolved.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rapidfuzz import fuzz, process

from ..errors import MinicreamError
from . import meaning, typo
from .grammar import compose, parse, trim
from .keywords import KeywordIndex
from .lexicon import NUMBER_WORDS, NUMBERS, SIZES, STOPWORDS, STYLE_FILLERS, SYNONYMS
from .match import Match, ObjectSpec
from .normalize import check_prompt, clean, is_cyrillic, key, ru_stem, ru_stem_key, singular
from .readable import Lexicon
from .result import FilterResult
from .vocabulary import Vocabulary

DEFAULT_THRESHOLD = 0.5  # MiniLM cosine; nonsense and off-topic phrases score below ~0.47 (see README)
# typo similarity (typo.py: an edit, or half of one for a neighbouring key or two swapped letters). Whole phrases
# need 0.8 ("sad face" is not "cat face"); single words of 5+ letters may lose one letter in four.
PHRASE_CUTOFF, WORD_CUTOFF, SHORT_WORD_CUTOFF = 0.79, 0.74, 0.79
SPELLED_PHRASE_CUTOFF = 0.9  # a phrase of correctly spelled words is a typo only with one slip in ten letters
_PRIORITY = {"name": 0, "alias": 1, "Russian name": 1, "synonym": 2}


@dataclass
class _Call:
    """One rewrite()'s own state, passed down explicitly (the filter itself is shared by every call)."""
    filt: "OfflineFilter" = field(repr=False)
    threshold: float
    encoder: object = None  # this call's text encoder (or a zero-argument loader), else the filter's own
    nearest: tuple | None = None  # (phrase, concept, similarity) of the last nearest-concept lookup
    unreadable: list[str] = field(default_factory=list)  # words of the last guess by meaning the filter cannot read

    def resolve(self, tokens: list[str], prefer_scene: bool = False) -> Match | None:
        """One object's words -> its match, in this call (what the scene grammar calls)."""
        return self.filt.resolve(tokens, prefer_scene, self)


class OfflineFilter:
    def __init__(self, vocab: Vocabulary, encoder=None, threshold: float = DEFAULT_THRESHOLD,
                 synonyms: dict[str, str] | None = None, scene_concepts=None):
        """`encoder`: the default one of rewrite() (a TextEncoder, or a zero-argument callable returning one, loaded
        only when needed); the filter every caller shares (Vocabulary.offline_filter) has none."""
        from ..data.scene_layout import DEFAULT_CONCEPTS

        self.vocab, self.threshold, self._encoder = vocab, threshold, encoder  # threshold: the default of rewrite()
        self._lock = threading.Lock()
        self._lexicon = None  # (encoder, Lexicon), built when the encoder is first needed
        self.scene = set(DEFAULT_CONCEPTS if scene_concepts is None else scene_concepts)
        self.exact: dict[str, list[tuple[int, str, str]]] = {}
        self.ru_stems: dict[str, list[tuple[int, str, str]]] = {}
        self.ru_heads: dict[str, set[str]] = {}
        self.emoji: dict[str, str] = {}
        self.index = {c.name: i for i, c in enumerate(vocab.concepts)}  # name -> row of the concept matrix
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
        self.keywords = KeywordIndex(vocab, self.exact, self.ru_stems)
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

    def call_encoder(self, call: _Call | None = None):
        """The text encoder of `call` (rewrite's `encoder`, loaded once per call if it is a loader), else the
        filter's own; None if neither has one."""
        if call is None or call.encoder is None:
            return self.encoder
        if callable(call.encoder) and not hasattr(call.encoder, "encode"):
            call.encoder = call.encoder()
        return call.encoder

    def lexicon(self, call: _Call | None = None) -> Lexicon | None:
        """The words this filter can read (readable.py) with `call`'s encoder; None without an encoder (then no
        guess by meaning to judge)."""
        enc = self.call_encoder(call)
        if enc is None:
            return None
        with self._lock:
            if self._lexicon is None or self._lexicon[0] is not enc:
                self._lexicon = (enc, Lexicon.from_encoder([*self.words, *self.keywords.words], enc))
            return self._lexicon[1]

    # -- the whole prompt -------------------------------------------------------------------------
    def rewrite(self, prompt: str, style: str | None = None, threshold: float | None = None, encoder=None) -> FilterResult:
        """encoder: the nearest-concept rule's text encoder (or its loader), else the filter's own. A call's state
        (threshold, encoder, the concept it found nearest) is a _Call passed down, never kept on this shared object."""
        call = _Call(self, self.threshold if threshold is None else float(threshold), encoder=encoder)
        return self._rewrite(prompt, style, call)

    def _rewrite(self, prompt: str, style: str | None, call: _Call) -> FilterResult:
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
        objects = parse(call, tokens)
        if objects is None:
            warnings.append(self._unresolved_message(" ".join(tokens), call))
            return FilterResult(prompt, text, changes, [], "offline", warnings)
        relation, specs = objects
        rewritten = compose(relation, specs)
        for spec in specs:
            changes.extend(_explain(spec))
            if spec.match.note:
                warnings.append(spec.match.note)
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

    # -- one object -----------------------------------------------------------------------------------
    def resolve(self, tokens: list[str], prefer_scene: bool = False, call: _Call | None = None) -> Match | None:
        call = call or _Call(self, self.threshold)
        core = trim(tokens)  # request words off the ends; inner words stay ("glass of milk")
        content = [t for t in tokens if t not in STOPWORDS] or tokens
        for words in _distinct(core, content, tokens):
            m = self._lookup(words, prefer_scene)
            if m:
                return m
        for words in _distinct(core, content):
            m = self._keyword(words)
            if m:
                return m
        for words in _distinct(core, content):
            m = self._fuzzy(words, prefer_scene, call)
            if m:
                return m
        m, fixes, typed = self._inside(core, prefer_scene) or self._inside(content, prefer_scene), [], core
        if m is None:
            corrected, fixes = self._correct(core, call)
            m = (self._lookup(corrected, prefer_scene) or self._inside(corrected, prefer_scene)) if fixes else None
            core, fixes = (corrected, fixes) if m else (core, [])  # a correction is kept only if it named something
        if m is None or m.dropped:
            m = meaning.weigh(self, core, m, call, typed)
        if m is not None and fixes:
            m.how = f"typo corrected ({', '.join(fixes)}); {m.how}"
            m.kind = "typo" if m.kind == "name" else m.kind
        return m

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

    def _keyword(self, words: list[str]) -> Match | None:
        """The whole phrase is the search keyword of one concept only ("shades": smiling face with sunglasses)."""
        concept = self.keywords.lookup(words)
        return Match(concept, "emoji search keyword") if concept else None

    def _fuzzy(self, words: list[str], prefer_scene: bool, call: _Call) -> Match | None:
        k = " ".join(words)
        if len(k) < 4:
            return None
        lexicon = self.lexicon(call)
        # every word spelled right: a typo only when very close ("crescent mon"; "shining star" is no "shooting star")
        spelled = lexicon is not None and not lexicon.unreadable(words, compounds=False)
        hits = typo.closest(k, self.keys, SPELLED_PHRASE_CUTOFF if spelled else PHRASE_CUTOFF)
        if not hits:
            return None
        c, how = self._pick(self.exact[hits[0][0]], prefer_scene)
        return Match(c, f"typo corrected '{k}' -> '{hits[0][0]}' ({how})", kind="typo")

    def _correct(self, words: list[str], call: _Call) -> tuple[list[str], list[str]]:
        """Each word that is no word of a name, nor an English word the encoder knows, is replaced by the closest
        word of a name within the typo cutoff ("automobil" -> "automobile"; "howls" stays)."""
        out, fixes = [], []
        known = set(self.words)
        lexicon = self.lexicon(call)  # None without an encoder: then every unknown word may be a typo
        for w in words:
            if (w in known or singular(w) in known or len(w) < 4 or w.isdigit() or w in STOPWORDS or w in NUMBERS
                    or w in SIZES or (lexicon is not None and lexicon.readable(w, compounds=False))):
                out.append(w)
                continue
            hits = typo.closest(w, self.words, SHORT_WORD_CUTOFF if len(w) <= 4 else WORD_CUTOFF)
            # among equally close words prefer one that is a whole name or alias ("aple": "apple", not "maple")
            hit = max(hits, key=lambda h: (h[1], h[0] in self.exact), default=None)
            if hit and hit[0] != w:
                fixes.append(f"'{w}' -> '{hit[0]}'")
                out.append(hit[0])
            else:
                out.append(w)
        return out, fixes

    def _inside(self, words: list[str], prefer_scene: bool) -> Match | None:
        """Longest known name inside the phrase (rightmost on ties: English puts the noun last). Its score is the
        share of the phrase's words it covers, filler words left out."""
        skip = STOPWORDS | set(SIZES) | set(NUMBERS)
        content = [w for w in words if w not in STOPWORDS] or words
        for n in range(min(len(words) - 1, self.max_words), 0, -1):
            for i in range(len(words) - n, -1, -1):
                gram = words[i:i + n]
                if all(w in skip for w in gram) or len(" ".join(gram)) < 3:
                    continue
                m = self._lookup(gram, prefer_scene)
                if m:
                    m.dropped = [w for w in words[:i] + words[i + n:] if w not in STOPWORDS]
                    m.kind, m.score, m.typed = "inside", 1 - len(m.dropped) / len(content), " ".join(gram)
                    return m
        for w in reversed(words):  # a Russian word inside a longer Russian name: "яблоко" in "красное яблоко"
            heads = self.ru_heads.get(ru_stem(w)) if is_cyrillic(w) and len(w) > 2 else None
            if heads:
                pick = min(heads, key=lambda c: (not (c in self.scene), len(key(self.vocab.by_name[c].ru or "").split()), c))
                dropped = [x for x in words if x != w and x not in STOPWORDS]
                return Match(pick, f"word of the Russian name '{self.vocab.by_name[pick].ru}'", dropped,
                             "inside", 1 - len(dropped) / len(content))
        return None

    def _unresolved_message(self, phrase: str, call: _Call) -> str:
        last = call.nearest
        if call.unreadable:
            words = ", ".join(f"'{w}'" for w in call.unreadable)
            what = "is not a word" if len(call.unreadable) == 1 else "are not words"
            closest = f"; closest by meaning: '{last[1]}', similarity {last[2]:.2f}" if last and last[0] else ""
            return (f"no concept of this model matches '{phrase}': {words} {what} this filter can read (it reads "
                    f"English, and Russian names; another language?){closest}; the prompt is used as typed")
        closest = f" (closest: '{last[1]}', similarity {last[2]:.2f} < {call.threshold})" if last and last[0] else ""
        return f"no concept of this model matches '{phrase}'{closest}; the prompt is used as typed"


def _distinct(*phrases: list[str]) -> list[list[str]]:
    out = []
    for p in phrases:
        if p not in out:
            out.append(p)
    return out


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
