"""Write bench/typed_prompts.jsonl: prompts as people type them, for concepts drawn across the whole vocabulary.

The filter benchmark (bench/filter_prompts.jsonl) leans to the 61 concepts of the `reference` model; a default switch
needs prompts over everything the `full` model knows. From a fixed seed this script

  1. draws N_CONCEPTS concepts of the `full` model's vocabulary (every one has real images in data/emoji, which the
     nearest-real-image judge needs), stratified over the Unicode emoji groups: each group gets a share
     proportional to the square root of its size, so no group (Flags: 269 concepts, People & Body: 385) dominates
     and small ones (Activities, the newest emoji) are not lost;
  2. gives each concept one category, dealt so that every category spreads over every group:
       exact           the concept's name as the model's captions spell it
       case            the name in other capitals, spacing or trailing punctuation
       typo            the name with one or two seeded slips (swapped, dropped, doubled or neighbouring-key letter)
       alias           a GitHub-style shortcode of the `emoji` package (":tada:" or "tada"), never the name itself
       synonym         a hand-written everyday word or phrase (bench/typed_prompt_words.py), never the name
       description     a hand-written short description (same file), never the name
       russian         the Russian CLDR name, mostly lower-cased; flags often in the genitive ("флаг германии"),
                       some as a request ("нарисуй комету", the accusative where a crude rule can form it)
       emoji           the emoji character, alone or in a short English request
       styled          "NAME, DESIGN" and its variants, in a design the concept exists in
       other language  the Spanish, German, French, Italian or Portuguese CLDR name: the filter does not read these
                       languages (English, Russian and emoji characters only), so they are reported apart
  3. writes one JSON line per prompt: prompt, concepts (the accepted answers: the drawn concept, plus any concept
     that shares the typed alias / Russian name / other-language name exactly), category, group, language.

The hand-written words were written for the drawn concepts before any of them was run through the filter, and
were not changed after. Texts depend only on (SEED, concept), so editing one entry changes one line.

    .venv/bin/python bench/make_typed_prompts.py [--check] [--todo]
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

SEED = 28_003  # issue 28, item 3
OUT = HERE / "typed_prompts.jsonl"
VOCAB = ROOT / "minicream" / "full" / "concepts.json"
NEWER = "Newer emoji"  # Emoji 15.1/16 characters the emoji-data table has no group for
# category -> prompts; their sum is the number of concepts drawn
CATEGORIES = {"exact": 30, "case": 30, "typo": 50, "alias": 30, "synonym": 45, "description": 45, "russian": 45,
              "emoji": 30, "styled": 30, "other language": 25}
HAND = ("synonym", "description")  # written by hand: dealt first, to any concept
N_CONCEPTS = sum(CATEGORIES.values())
OTHER_LANGUAGES = ("es", "de", "fr", "it", "pt")


def load_concepts() -> list[dict]:
    """The `full` model's concepts with their Unicode group."""
    from minicream.data.emoji_names import emoji_group

    concepts = json.loads(VOCAB.read_text(encoding="utf-8"))["concepts"]
    for c in concepts:
        c["group"] = emoji_group(c["emoji"] or "") or NEWER
    return concepts


def allocate(groups: dict[str, list], total: int) -> dict[str, int]:
    """Per-group counts proportional to sqrt(group size), largest remainder, summing to `total`."""
    weights = {g: math.sqrt(len(v)) for g, v in groups.items()}
    exact = {g: total * w / sum(weights.values()) for g, w in weights.items()}
    counts = {g: min(len(groups[g]), int(x)) for g, x in exact.items()}
    for g in sorted(exact, key=lambda g: (counts[g] - exact[g], g)):
        if sum(counts.values()) >= total:
            break
        if counts[g] < len(groups[g]):
            counts[g] += 1
    return counts


def deal(order: list[dict], targets: dict[str, int], eligible) -> dict[str, str]:
    """Give each concept of `order` one category. Categories with the fewest eligible concepts go first; each takes
    from every group a share proportional to the group's size in `order` (largest remainder, among groups with
    eligible concepts left), evenly spaced along the group's eligible concepts."""
    out: dict[str, str] = {}
    size: dict[str, int] = {}
    for c in order:
        size[c["group"]] = size.get(c["group"], 0) + 1
    pool = {cat: sum(eligible(c, cat) for c in order) for cat in targets}
    for cat in sorted(targets, key=lambda cat: (pool[cat], list(targets).index(cat))):
        left = {g: [c for c in order if c["group"] == g and c["name"] not in out and eligible(c, cat)] for g in size}
        n = targets[cat]
        share = {g: n * size[g] / len(order) for g in size}
        take = {g: min(int(share[g]), len(left[g])) for g in size}
        while sum(take.values()) < n:
            open_ = [g for g in size if take[g] < len(left[g])]
            if not open_:
                raise SystemExit(f"not enough concepts left for {cat!r}: {n} wanted")
            g = max(open_, key=lambda g: (share[g] - take[g], g))
            take[g] += 1
        for g in size:
            for k in range(take[g]):
                out[left[g][int((k + 0.5) * len(left[g]) / take[g])]["name"]] = cat
    return out


def draw(concepts: list[dict]) -> list[tuple[dict, str]]:
    """(concept, category) pairs, in the order of the draw."""
    rng = random.Random(SEED)
    groups: dict[str, list[dict]] = {}
    for c in sorted(concepts, key=lambda c: c["name"]):
        groups.setdefault(c["group"], []).append(c)
    counts = allocate(groups, N_CONCEPTS)
    order = []
    for g in sorted(groups):
        order += rng.sample(groups[g], counts[g])
    hand = deal(order, {**{c: CATEGORIES[c] for c in HAND}, "rest": N_CONCEPTS - sum(CATEGORIES[c] for c in HAND)},
                lambda c, cat: True)
    rest = [c for c in order if hand[c["name"]] == "rest"]
    cats = deal(rest, {c: n for c, n in CATEGORIES.items() if c not in HAND}, eligible)
    return [(c, hand[c["name"]] if hand[c["name"]] != "rest" else cats[c["name"]]) for c in order]


# -- what makes a concept eligible for a category -----------------------------------------------------
def _key(text: str) -> str:
    from minicream.filter.normalize import key

    return key(text)


def usable_aliases(concept: dict, names: set[str]) -> list[str]:
    """Aliases that are not the name in other spelling ("flag for Germany" is the package's spelling of every
    flag's name), not another concept's name and not a single letter ("o", "b")."""
    own = _key(concept["name"])
    return [a for a in concept["aliases"] if len(_key(a)) >= 2 and _key(a) != own and _key(a) not in names
            and not _key(a).startswith("flag for ")]


def other_names(concept: dict) -> dict[str, str]:
    """language -> CLDR name in the languages the filter does not read (from the `emoji` package)."""
    import emoji

    from minicream.data.emoji_names import clean_name, lookup

    emoji.config.load_language(["ru", *OTHER_LANGUAGES])  # idempotent; EMOJI_DATA then carries these names
    k = lookup(concept["emoji"] or "")
    data = emoji.EMOJI_DATA.get(k, {}) if k else {}
    out = {}
    for lang in OTHER_LANGUAGES:
        if lang in data:
            name = clean_name(data[lang])
            if _key(name) != _key(concept["name"]):
                out[lang] = name
    return out


_NAMES: set[str] = set()


def eligible(concept: dict, category: str) -> bool:
    if category == "alias":
        return bool(usable_aliases(concept, _NAMES))
    if category == "russian":
        return bool(concept["ru"])
    if category == "other language":
        return bool(other_names(concept))
    if category == "typo":
        return any(sum(ch.isalpha() for ch in w) >= 4 for w in concept["name"].split())
    return True


# -- the prompt of each category -------------------------------------------------------------------
KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
NO_TYPO_WORDS = {"fag", "fags"}  # slips that would make a slur ("flag" -> "fag"): drawn again


def _neighbour(ch: str, rng: random.Random) -> str:
    for r, row in enumerate(KEYBOARD):
        i = row.find(ch.lower())
        if i >= 0:
            near = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
            near += [KEYBOARD[rr][i] for rr in (r - 1, r + 1) if 0 <= rr < 3 and i < len(KEYBOARD[rr])]
            return rng.choice(near)
    return ch


def typo(name: str, rng: random.Random, taken: set[str]) -> str:
    """One slip (two in names of 14+ letters) inside a word of 4+ letters, never on its first letter."""
    for _ in range(100):
        words = name.split(" ")
        n_slips = 2 if sum(ch.isalpha() for ch in name) >= 14 else 1
        for _ in range(n_slips):
            cand = [i for i, w in enumerate(words) if sum(ch.isalpha() for ch in w) >= 4]
            wi = rng.choice(cand)
            w = words[wi]
            pos = [i for i in range(1, len(w)) if w[i].isalpha()]
            i = rng.choice(pos)
            op = rng.choice(("swap", "drop", "double", "neighbour"))
            if op == "swap" and i + 1 < len(w) and w[i + 1].isalpha() and w[i + 1] != w[i]:
                w = w[:i] + w[i + 1] + w[i] + w[i + 2:]
            elif op == "drop":
                w = w[:i] + w[i + 1:]
            elif op == "double":
                w = w[:i] + w[i] + w[i:]
            else:
                w = w[:i] + _neighbour(w[i], rng) + w[i + 1:]
            words[wi] = w
        out = " ".join(words)
        if rng.random() < 0.5:
            out = out.lower()
        if _key(out) != _key(name) and _key(out) not in taken and not set(_key(out).split()) & NO_TYPO_WORDS:
            return out
    raise SystemExit(f"no typo for {name!r}")


def case_variant(name: str, rng: random.Random) -> str:
    for _ in range(20):
        form = rng.choice(("upper", "title", "lower!", "spaces", "sentence."))
        out = {"upper": name.upper(), "title": " ".join(w[:1].upper() + w[1:] for w in name.split(" ")),
               "lower!": name.lower() + "!", "spaces": "  " + name.replace(" ", "  ") + " ",
               "sentence.": name[:1].upper() + name[1:].lower() + "."}[form]
        if out != name:
            return out
    return name.upper() + "!"


_RU_ACC = (("ая", "ую"), ("яя", "юю"), ("а", "у"), ("я", "ю"))


def _ru_genitive(word: str) -> str | None:
    """Crude genitive of a one-word country name ("Германия" -> "Германии", "Иран" -> "Ирана"); None when unsure."""
    if word.endswith(("ия", "ея")):
        return word[:-1] + "и"
    if word.endswith("а"):
        return word[:-1] + ("и" if word[-2:-1] in "гкхжшчщ" else "ы")
    if word.endswith("я"):
        return word[:-1] + "и"
    if word.endswith(("й", "ь")):
        return word[:-1] + "я"
    if word[-1:] in "бвгджзклмнпрстфхцчшщ":
        return word + "а"
    return None  # ends in a vowel that does not decline (Перу, Того, Сан-Томе)


_RU_ACC = (("ая", "ую"), ("яя", "юю"), ("а", "у"), ("я", "ю"))


def russian(ru: str, rng: random.Random) -> str:
    """The CLDR name as typed: no colon, mostly lower case. A flag is often "флаг Германии" (the genitive, where a
    crude rule can); some prompts are a request "нарисуй X", X in the accusative where a crude rule can (feminine
    -а/-я nouns and their -ая/-яя adjectives; neuter words and "флаг" stay as they are)."""
    words = ru.replace(":", " ").replace("«", "").replace("»", "").split()
    if len(words) == 2 and words[0].lower() == "флаг" and rng.random() < 0.5:
        words[1] = _ru_genitive(words[1]) or words[1]
    text = " ".join(words)
    if rng.random() < 0.7:
        text = text.lower()
    if rng.random() < 0.35:
        words = text.split()
        head = words[-1]
        if words[0] == "флаг" or (head.endswith(("о", "е")) and all(w.endswith(("ое", "ее")) for w in words[:-1])):
            return f"нарисуй {text}"
        if head.endswith(("а", "я")) and all(w.endswith(("ая", "яя")) for w in words[:-1]):
            acc = []
            for w in words:
                end = next(e for e in _RU_ACC if w.endswith(e[0]))
                acc.append(w[: -len(end[0])] + end[1])
            return "нарисуй " + " ".join(acc)
    return text


def emoji_prompt(concept: dict, rng: random.Random) -> str:
    import emoji

    from minicream.data.emoji_names import lookup

    chars = lookup(concept["emoji"]) or concept["emoji"]  # the fully qualified form a keyboard types
    assert emoji.emoji_list(chars), concept
    return rng.choice((chars, chars, chars, f"draw {chars}", f"{chars} please"))


def styled(name: str, styles: list[str], rng: random.Random) -> str:
    style = rng.choice(sorted(styles))
    form = rng.choice(("{n}, {s}", "{n}, {s}", "{n} in {s} style", "{s} {n}", "{n} ({s} style)"))
    return form.format(n=name if rng.random() < 0.5 else name.lower(), s=style)


def alias_prompt(alias: str, rng: random.Random) -> str:
    return f":{alias.replace(' ', '_')}:" if rng.random() < 0.35 else alias


def build() -> list[dict]:
    from typed_prompt_words import DESCRIPTIONS, SYNONYMS

    concepts = load_concepts()
    _NAMES.clear()
    _NAMES.update(_key(c["name"]) for c in concepts)
    by_field: dict[str, set[str]] = {}  # key of any name / alias / Russian name -> concepts
    for c in concepts:
        for text in [c["name"], *c["aliases"], c["ru"] or "", *other_names(c).values()]:
            if _key(text):
                by_field.setdefault(_key(text), set()).add(c["name"])
    rows = []
    for c, cat in draw(concepts):
        rng = random.Random(f"{SEED}:{c['name']}")
        name, accept, lang = c["name"], [c["name"]], "en"
        if cat == "exact":
            prompt = name
        elif cat == "case":
            prompt = case_variant(name, rng)
        elif cat == "typo":
            prompt = typo(name, rng, set(by_field))
        elif cat == "alias":
            alias = rng.choice(usable_aliases(c, _NAMES))
            prompt, accept = alias_prompt(alias, rng), sorted(by_field[_key(alias)], key=lambda x: (x != name, x))
        elif cat in HAND:
            entry = (SYNONYMS if cat == "synonym" else DESCRIPTIONS).get(name)
            if entry is None:
                raise SystemExit(f"no hand-written {cat} for {name!r} (run with --todo)")
            prompt, extra = (entry, []) if isinstance(entry, str) else entry
            if _key(name) in _key(prompt):
                raise SystemExit(f"{cat} {prompt!r} contains the name {name!r}")
            if _key(prompt) in _NAMES:
                raise SystemExit(f"{cat} {prompt!r} of {name!r} is the name of another concept")
            accept += [x for x in extra if x != name]
        elif cat == "russian":
            prompt, lang = russian(c["ru"], rng), "ru"
            accept = sorted(by_field[_key(c["ru"])], key=lambda x: (x != name, x))
        elif cat == "emoji":
            prompt, lang = emoji_prompt(c, rng), "emoji"
        elif cat == "styled":
            prompt = styled(name, c["styles"], rng)
        else:  # other language
            names = other_names(c)
            lang = rng.choice(sorted(names))
            prompt = names[lang]
            accept = sorted(by_field[_key(prompt)], key=lambda x: (x != name, x))
        rows.append({"prompt": prompt, "concepts": accept, "category": cat, "group": c["group"], "language": lang})
    order = list(CATEGORIES)
    rows.sort(key=lambda r: (order.index(r["category"]), r["group"], r["concepts"][0].lower()))
    prompts = [r["prompt"] for r in rows]
    dupes = sorted({p for p in prompts if prompts.count(p) > 1})
    if dupes:
        raise SystemExit(f"duplicate prompts: {dupes}")
    return rows


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def todo() -> None:
    """The drawn concepts that still need a hand-written synonym or description."""
    from typed_prompt_words import DESCRIPTIONS, SYNONYMS

    concepts = load_concepts()
    _NAMES.update(_key(c["name"]) for c in concepts)
    for c, cat in draw(concepts):
        table = SYNONYMS if cat == "synonym" else DESCRIPTIONS if cat == "description" else None
        if table is not None and c["name"] not in table:
            print(f"{cat:12s} {c['group']:18s} {c['name']!r}  ({c['ru']}, {c['emoji']})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the committed file is what the seed gives")
    ap.add_argument("--todo", action="store_true", help="list drawn concepts that lack a hand-written entry")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    if args.todo:
        todo()
        return 0
    text = render(build())
    if args.check:
        same = Path(args.out).read_text(encoding="utf-8") == text
        print("up to date" if same else f"{args.out} differs from what seed {SEED} gives")
        return 0 if same else 1
    Path(args.out).write_text(text, encoding="utf-8")
    counts: dict[str, int] = {}
    for line in text.splitlines():
        cat = json.loads(line)["category"]
        counts[cat] = counts.get(cat, 0) + 1
    print(f"{len(text.splitlines())} prompts -> {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
