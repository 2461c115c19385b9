"""Plan compositional scenes (caption + object boxes) without touching pixels.

Planning is separate from rendering so evaluation can draw the same prompts
and target layouts without needing the emoji images (see `scene_prompts`).
Layout boxes are square slots (x0, y0, x1, y1) in pixels, x1/y1 exclusive; the
rendered emoji is fitted inside its slot, keeping its aspect ratio.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

KINDS = ("two_objects", "position", "counting", "size")

RELATIONS = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}

NUMBER_WORDS = {2: "two", 3: "three"}

# Common, visually distinct concepts without skin tones, present in both
# Twemoji and OpenMoji. Names are the emoji package's English CLDR names.
DEFAULT_CONCEPTS = (
    "red apple", "tangerine", "banana", "watermelon", "strawberry", "pineapple",
    "lemon", "carrot", "mushroom", "pizza", "hamburger", "doughnut",
    "birthday cake", "dog face", "cat face", "rabbit face", "fox", "panda",
    "pig face", "frog", "penguin", "fish", "butterfly", "turtle", "red heart",
    "rocket", "star", "sun", "crescent moon", "cloud", "snowflake", "umbrella",
    "automobile", "bicycle", "airplane", "house", "deciduous tree", "sunflower",
    "soccer ball", "balloon", "wrapped gift", "key",
)

_IRREGULAR_PLURALS = {"fish": "fish", "tomato": "tomatoes", "potato": "potatoes", "mouse": "mice"}

# Fractions of the canvas side used for object slots, per kind.
_SIZE_RANGES = {
    "two_objects": (0.38, 0.48),
    "position": (0.38, 0.46),
    "counting2": (0.36, 0.44),
    "counting3": (0.28, 0.33),
    "big": (0.52, 0.60),
    "small": (0.24, 0.30),
}
_MAX_TRIES = 200
_ALIGN_TOLERANCE = 0.2  # max centre offset (fraction of canvas) across a relation axis

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class SceneObject:
    """One object in a scene: its concept name and slot box in pixels."""

    concept: str
    bbox: Box

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass(frozen=True)
class ScenePlan:
    """Caption and layout of a scene; layout is in caption order."""

    kind: str
    text: str
    layout: list[SceneObject]
    relation: str | None = None


def plural(noun: str) -> str:
    """English plural of the last word of a concept name ('dog face' -> 'dog faces')."""
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        word = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def with_article(noun: str) -> str:
    """'a rocket', 'an umbrella' ('a unicorn': 'uni'/'use' sound like 'you')."""
    first = noun[:1].lower()
    vowel = first in "aeio" or (first == "u" and not noun.lower().startswith(("uni", "use", "uk")))
    return f"{'an' if vowel else 'a'} {noun}"


def _overlaps(a: Box, b: Box, gap: int) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def _relation_holds(relation: str, a: Box, b: Box, gap: int, tolerance: float) -> bool:
    """`a` is entirely on the `relation` side of `b`, and roughly aligned with it."""
    dx = abs((a[0] + a[2]) - (b[0] + b[2])) / 2
    dy = abs((a[1] + a[3]) - (b[1] + b[3])) / 2
    if relation == "left":
        return a[2] + gap <= b[0] and dy <= tolerance
    if relation == "right":
        return b[2] + gap <= a[0] and dy <= tolerance
    if relation == "above":
        return a[3] + gap <= b[1] and dx <= tolerance
    return b[3] + gap <= a[1] and dx <= tolerance


def place(
    rng: random.Random,
    sides: Sequence[int],
    canvas: int,
    accept: Callable[[list[Box]], bool] = lambda boxes: True,
) -> list[Box]:
    """Random non-overlapping square boxes satisfying `accept`.

    Rejection sampling; if it keeps failing, the boxes shrink by 10% and it
    retries, so it always terminates (the smallest boxes fit trivially).
    """
    gap = max(1, round(0.03 * canvas))
    sides = list(sides)
    while True:
        for _ in range(_MAX_TRIES):
            boxes = []
            for side in sides:
                x0, y0 = rng.randint(0, canvas - side), rng.randint(0, canvas - side)
                boxes.append((x0, y0, x0 + side, y0 + side))
            pairs = [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))]
            if not any(_overlaps(boxes[i], boxes[j], gap) for i, j in pairs) and accept(boxes):
                return boxes
        sides = [max(2, int(s * 0.9)) for s in sides]


def _side(rng: random.Random, key: str, canvas: int) -> int:
    low, high = _SIZE_RANGES[key]
    return max(2, round(rng.uniform(low, high) * canvas))


def _two(rng: random.Random, concepts: Sequence[str]) -> tuple[str, str]:
    first, second = rng.sample(list(concepts), 2)
    return first, second


def _plan_two_objects(rng, concepts, canvas) -> ScenePlan:
    a, b = _two(rng, concepts)
    boxes = place(rng, [_side(rng, "two_objects", canvas) for _ in range(2)], canvas)
    text = f"{with_article(a)} and {with_article(b)}"
    return ScenePlan("two_objects", text, [SceneObject(a, boxes[0]), SceneObject(b, boxes[1])])


def _plan_position(rng, concepts, canvas) -> ScenePlan:
    a, b = _two(rng, concepts)
    relation = rng.choice(sorted(RELATIONS))
    gap = max(1, round(0.03 * canvas))
    tolerance = _ALIGN_TOLERANCE * canvas
    sides = [_side(rng, "position", canvas) for _ in range(2)]
    boxes = place(rng, sides, canvas, lambda bx: _relation_holds(relation, bx[0], bx[1], gap, tolerance))
    text = f"{with_article(a)} {RELATIONS[relation]} {with_article(b)}"
    return ScenePlan("position", text, [SceneObject(a, boxes[0]), SceneObject(b, boxes[1])], relation)


def _plan_counting(rng, concepts, canvas) -> ScenePlan:
    concept = rng.choice(list(concepts))
    count = rng.choice(sorted(NUMBER_WORDS))
    side = _side(rng, f"counting{count}", canvas)
    boxes = place(rng, [side] * count, canvas)
    text = f"{NUMBER_WORDS[count]} {plural(concept)}"
    return ScenePlan("counting", text, [SceneObject(concept, box) for box in boxes])


def _plan_size(rng, concepts, canvas) -> ScenePlan:
    big, small = _two(rng, concepts)
    order = [("big", big), ("small", small)]
    rng.shuffle(order)
    boxes = place(rng, [_side(rng, word, canvas) for word, _ in order], canvas)
    text = " and ".join(with_article(f"{word} {concept}") for word, concept in order)
    return ScenePlan("size", text, [SceneObject(c, box) for (_, c), box in zip(order, boxes)])


_PLANNERS = {
    "two_objects": _plan_two_objects,
    "position": _plan_position,
    "counting": _plan_counting,
    "size": _plan_size,
}


def plan_scene(rng: random.Random, concepts: Sequence[str], canvas: int, kinds: Sequence[str] = KINDS) -> ScenePlan:
    """Draw one scene plan of a random kind from `kinds`."""
    kind = rng.choice(list(kinds))
    return _PLANNERS[kind](rng, concepts, canvas)
