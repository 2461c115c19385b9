"""Compositional scenes made from single-emoji images.

Single emoji teach "what"; these scenes teach "where", "how many" and "how
big" (two objects, spatial relations, counting, relative size) with captions
that are correct by construction, so compositional prompts can be trained and
evaluated without any hand labelling.

Scene captions carry no style word; every object of a scene uses the same art
style when that style has all its concepts, and the style is kept in `meta`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from minicream.data.folder import Example
from minicream.data.images import WHITE, cutout_from_white, paste_fitted
from minicream.data.scene_layout import DEFAULT_CONCEPTS, KINDS, ScenePlan, SceneObject, plan_scene
from minicream.errors import MinicreamError

# Render randomness (which image of a concept) is drawn from a stream separate
# from planning, so make_scene_dataset and scene_prompts agree on captions.
_RENDER_SEED_OFFSET = 1_000_003


@dataclass
class Scene:
    """A rendered scene: image, caption, kind and per-object layout (caption order)."""

    image: Image.Image
    text: str
    kind: str
    layout: list[SceneObject]
    style: str | None = None


def available_concepts(examples: Sequence[Example], concepts: Sequence[str] | None = None) -> list[str]:
    """Pool concepts (default: DEFAULT_CONCEPTS) that some skin-tone-free example shows."""
    present = {ex.meta.get("concept") for ex in examples if ex.meta.get("skin_tone") is None}
    return [c for c in (DEFAULT_CONCEPTS if concepts is None else concepts) if c in present]


def _check_kinds(kinds: Sequence[str]) -> list[str]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise MinicreamError(f"unknown scene kind {unknown[0] if unknown else '(none)'!r}; use {', '.join(KINDS)}")
    return list(kinds)


class SceneGenerator:
    """Renders random scenes from a pool of single-object emoji examples."""

    def __init__(
        self,
        examples: Sequence[Example],
        size: int = 64,
        seed: int = 0,
        concepts: Sequence[str] | None = None,
        kinds: Sequence[str] = KINDS,
    ):
        self.size = size
        self.kinds = _check_kinds(kinds)
        self.concepts = available_concepts(examples, concepts)
        if len(self.concepts) < 2:
            raise MinicreamError(
                f"scenes need at least 2 pool concepts among the examples, found {len(self.concepts)}; "
                "pass emoji examples (with 'concept' metadata) or a different concept list"
            )
        self._by_style: dict[str | None, dict[str, list[Example]]] = defaultdict(lambda: defaultdict(list))
        for ex in examples:
            concept = ex.meta.get("concept")
            if concept in self.concepts and ex.meta.get("skin_tone") is None:
                self._by_style[ex.meta.get("style")][concept].append(ex)
        self._cutouts: dict[int, Image.Image] = {}
        self._rng = random.Random(seed)

    def plan(self, rng: random.Random) -> ScenePlan:
        """Caption and layout of a random scene over this generator's concepts."""
        return plan_scene(rng, self.concepts, self.size, self.kinds)

    def render(self, plan: ScenePlan, rng: random.Random) -> Scene:
        """Paste one emoji per layout slot onto a white canvas."""
        style = self._pick_style(plan, rng)
        canvas = Image.new("RGB", (self.size, self.size), WHITE)
        chosen: dict[str, Example] = {}
        for obj in plan.layout:
            if obj.concept not in chosen:  # counting repeats the very same image
                chosen[obj.concept] = self._pick_example(obj.concept, style, rng)
            paste_fitted(canvas, self._cutout(chosen[obj.concept]), obj.bbox)
        return Scene(canvas, plan.text, plan.kind, list(plan.layout), style)

    def sample(self, rng: random.Random | None = None) -> Scene:
        """Plan and render one scene (uses the generator's own seeded rng by default)."""
        rng = self._rng if rng is None else rng
        return self.render(self.plan(rng), rng)

    def _pick_style(self, plan: ScenePlan, rng: random.Random) -> str | None:
        needed = {obj.concept for obj in plan.layout}
        styles = sorted((s for s, pool in self._by_style.items() if needed <= pool.keys()), key=str)
        return rng.choice(styles) if styles else None

    def _pick_example(self, concept: str, style: str | None, rng: random.Random) -> Example:
        if style is not None:
            return rng.choice(self._by_style[style][concept])
        candidates = [ex for s in sorted(self._by_style, key=str) for ex in self._by_style[s].get(concept, [])]
        return rng.choice(candidates)

    def _cutout(self, example: Example) -> Image.Image:
        key = id(example)
        if key not in self._cutouts:
            self._cutouts[key] = cutout_from_white(example.image)
        return self._cutouts[key]


def _layout_meta(layout: list[SceneObject]) -> list[dict]:
    return [{"concept": obj.concept, "bbox": list(obj.bbox)} for obj in layout]


def make_scene_dataset(
    examples: Sequence[Example],
    n: int,
    size: int = 64,
    seed: int = 0,
    concepts: Sequence[str] | None = None,
    kinds: Sequence[str] = KINDS,
) -> list[Example]:
    """`n` rendered scenes as Examples (meta: kind, layout, style, source='scene')."""
    generator = SceneGenerator(examples, size=size, seed=seed, concepts=concepts, kinds=kinds)
    plan_rng, render_rng = random.Random(seed), random.Random(seed + _RENDER_SEED_OFFSET)
    scenes = []
    for _ in range(n):
        scene = generator.render(generator.plan(plan_rng), render_rng)
        meta = {"kind": scene.kind, "layout": _layout_meta(scene.layout), "style": scene.style, "source": "scene"}
        scenes.append(Example(image=scene.image, text=scene.text, meta=meta))
    return scenes


def scene_prompts(
    n: int,
    seed: int = 0,
    size: int = 64,
    examples: Sequence[Example] | None = None,
    concepts: Sequence[str] | None = None,
    kinds: Sequence[str] = KINDS,
) -> list[ScenePlan]:
    """`n` scene captions + target layouts for evaluation, without rendering.

    With the same seed, size, kinds and concept pool, the captions equal those
    of `make_scene_dataset`; use a different seed for held-out prompts. Pass
    `examples` to restrict the pool to concepts actually present in them.
    """
    kinds = _check_kinds(kinds)
    pool = available_concepts(examples, concepts) if examples is not None else list(concepts or DEFAULT_CONCEPTS)
    if len(pool) < 2:
        raise MinicreamError(f"scene prompts need at least 2 concepts, found {len(pool)}")
    rng = random.Random(seed)
    return [plan_scene(rng, pool, size, kinds) for _ in range(n)]
