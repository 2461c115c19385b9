"""Scene layouts: objects with boxes on a canvas, from the language filter's parse of a prompt or given by the user.

A layout is what LLM-grounded diffusion (LMD) and GLIGEN condition on: a caption per object and its box. The rules:
    counts            "three bananas": three boxes in a row, left to right
    left / right      "A to the left of B": A's box left of B's ("to the right of": A right of B); "and": side by side
    above / below     "A above B": A's box over B's, stacked vertically
    big / small       a big object's box is about twice a small one's side, both centred on the same line
with seeded jitter (a couple of pixels, a few percent of size), so seeds vary the picture but never the relation.

The default canvas (`native_layout`, issue 28) is sized from the layout: each object's box is the model's native
size (64 px for the shipped models) with 8 px between boxes, so objects are drawn at native size and pasted unscaled,
e.g. 136x64 for two side by side, 208x64 for "three bananas", 64x136 for "A above B"; a small object's box is about half a big one's.
`layout_from_scene` lays the objects out on a given canvas instead (the model's own, `canvas="model"`).
Boxes are (x0, y0, x1, y1) in pixels, x1/y1 exclusive, as in the data builder's scenes.

This is the drawing side (scene.py draws what it lays out); the training data's scenes are planned by
data/scene_layout.py, and minicream/eval grades drawn scenes against their prompts.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..errors import MinicreamError
from ..io.atomic import read_json_object

MAX_OBJECTS = 6
MAX_LAYOUT_BYTES = 64 * 1024  # a layout of six boxes is a few hundred bytes
HORIZONTAL = ("to the left of", "to the right of", "and", None)
VERTICAL = ("above", "below")
# Box side as a fraction of the canvas, by how many objects share it (the data builder's scene sizes).
_SIDE = {1: 0.62, 2: 0.44, 3: 0.30, 4: 0.23, 5: 0.19, 6: 0.16}
_SIZE_SCALE = {"big": 1.25, "small": 0.62, None: 1.0}
MIN_BOX_PX = 4  # the smallest box side a layout takes
# Where a layout's boxes came from, recorded in the PNG: given by the user, laid out by the rules below, planned by
# the LLM filter (layout_plan.py), or the LLM's boxes with the rules' where its plan had none or an invalid one.
SOURCES = ("given", "rules", "llm", "llm+rules")


@dataclass(frozen=True)
class LayoutObject:
    caption: str
    box: tuple[int, int, int, int]


@dataclass
class Layout:
    width: int
    height: int
    objects: list[LayoutObject] = field(default_factory=list)
    source: str = "rules"  # one of SOURCES

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "source": self.source,
                "objects": [{"caption": o.caption, "box": list(o.box)} for o in self.objects]}

    @classmethod
    def from_dict(cls, data, width: int | None = None, height: int | None = None) -> "Layout":
        """A layout as JSON gives it ({"width", "height", "objects": [{"caption", "box"}]}), validated: every box
        inside the canvas and at least 4 px wide, 1..6 objects, captions non-empty. width/height default to the
        given canvas (the model's size). A recorded layout keeps its "source" (a `--from` re-run records the same
        parameters); any other is "given"."""
        if isinstance(data, Layout):
            return data
        if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
            raise MinicreamError('layout: expected {"objects": [{"caption": "red apple", "box": [x0, y0, x1, y1]}, ...]}')
        w, h = data.get("width", width), data.get("height", height)
        if not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 1024 for v in (w, h)):
            raise MinicreamError(f"layout: width and height must be integers in 8..1024, got {w!r} x {h!r}")
        objs = data["objects"]
        if not 1 <= len(objs) <= MAX_OBJECTS:
            raise MinicreamError(f"layout: 1..{MAX_OBJECTS} objects, got {len(objs)}")
        out = []
        for i, o in enumerate(objs):
            cap, box = (o.get("caption"), o.get("box")) if isinstance(o, dict) else (None, None)
            if not isinstance(cap, str) or not cap.strip() or len(cap) > 200:
                raise MinicreamError(f"layout: object {i} needs a caption (1-200 characters)")
            if (not isinstance(box, (list, tuple)) or len(box) != 4
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)):
                raise MinicreamError(f"layout: object {i} box must be four integers [x0, y0, x1, y1]")
            x0, y0, x1, y1 = box
            if not (0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h and x1 - x0 >= MIN_BOX_PX and y1 - y0 >= MIN_BOX_PX):
                raise MinicreamError(f"layout: object {i} box {list(box)} must lie inside the {w}x{h} canvas, at least {MIN_BOX_PX} px a side")
            out.append(LayoutObject(cap.strip(), (x0, y0, x1, y1)))
        source = data.get("source")
        return cls(w, h, out, source if source in SOURCES else "given")

    def check_harmonizable(self, native: int, factor: int) -> None:
        """The joint redraw (harmonize > 0) runs the model in windows of its `native` size over latents `factor` times
        smaller than the pixels: the canvas must hold one window and divide into latents."""
        if min(self.width, self.height) < native or self.width % factor or self.height % factor:
            raise MinicreamError(f"layout: a {self.width}x{self.height} canvas cannot be harmonized by this model: it "
                                 f"needs at least {native}x{native} px, in multiples of {factor} (or harmonize 0)")

    @staticmethod
    def read_json(path) -> dict:
        """A layout file's JSON (validated when the pipeline uses it, against the model's canvas)."""
        return read_json_object(path, f"layout {path}", MAX_LAYOUT_BYTES, 'a JSON object with "objects"')


def instances(scene: dict) -> tuple[list[tuple[str, str | None]], str | None]:
    """(concept, size) per object to draw, in the order they are placed, and the axis relation."""
    objs = scene.get("objects") or []
    relation = scene.get("relation")
    items = [(o["concept"], o.get("size")) for o in objs for _ in range(max(1, int(o.get("count") or 1)))]
    if relation in ("to the right of", "below"):  # the first object named goes right of / below the second
        items = items[::-1]
    return items[:MAX_OBJECTS], relation


def layout_from_scene(scene: dict, width: int, height: int | None = None, seed: int = 0) -> Layout:
    """The rules above, deterministic in `seed`. Captions carry the scene's style word when the prompt named one."""
    height = height or width
    items, relation = instances(scene)
    if not items:
        raise MinicreamError("layout: the scene has no objects")
    rng = random.Random(seed)
    vertical = relation in VERTICAL
    along, across = (height, width) if vertical else (width, height)
    base = _SIDE[len(items)] * min(width, height)
    sides = [base * _SIZE_SCALE.get(size, 1.0) * rng.uniform(0.94, 1.06) for _, size in items]
    gap = 0.06 * along
    total = sum(sides) + gap * (len(items) - 1)
    if total > 0.96 * along:  # shrink to fit
        k = 0.96 * along / total
        sides, gap, total = [s * k for s in sides], gap * k, 0.96 * along
    start = (along - total) / 2 + rng.uniform(-0.02, 0.02) * along
    centre_across = across / 2 + rng.uniform(-0.03, 0.03) * across
    style = scene.get("style")
    objects, pos = [], start
    for (concept, _), side in zip(items, sides):
        a0 = int(round(min(max(pos, 0), along - side)))
        c0 = int(round(min(max(centre_across - side / 2, 0), across - side)))
        s = max(4, int(round(side)))
        box = (c0, a0, c0 + s, a0 + s) if vertical else (a0, c0, a0 + s, c0 + s)
        box = (box[0], box[1], min(box[2], width), min(box[3], height))
        objects.append(LayoutObject(f"{concept}, {style}" if style else concept, box))
        pos += side + gap
    return Layout(width, height, objects)


def native_gap(native: int) -> int:
    """White space between two native-size boxes (8 px at 64): objects drawn to their tile's edge would touch and
    read as one shape."""
    return max(2, native // 8)


def _native_sides(items, native: int) -> list[int]:
    """Box side per object: the native size, a small object's scaled down against the biggest of the scene."""
    top = max(_SIZE_SCALE.get(size, 1.0) for _, size in items)
    return [max(4, int(round(native * _SIZE_SCALE.get(size, 1.0) / top))) for _, size in items]


def native_canvas(scene: dict, native: int, factor: int) -> tuple[int, int]:
    """(width, height) of the default canvas of a scene: its objects' native-size boxes in a row (a column for
    above/below) with `native_gap` between them, rounded up to a multiple of the latent `factor`."""
    items, relation = instances(scene)
    if not items:
        raise MinicreamError("layout: the scene has no objects")
    need = sum(_native_sides(items, native)) + native_gap(native) * (len(items) - 1)
    along = -(-need // factor) * factor
    return (native, along) if relation in VERTICAL else (along, native)


def native_layout(scene: dict, native: int, factor: int, seed: int = 0) -> Layout:
    """The scene on its default canvas (`native_canvas`): boxes of the native size side by side (stacked for
    above/below), centred across; the space a smaller box leaves along the row is shared out by the seed."""
    items, relation = instances(scene)
    width, height = native_canvas(scene, native, factor)
    vertical = relation in VERTICAL
    sides = _native_sides(items, native)
    along = height if vertical else width
    gap = native_gap(native)
    pos = random.Random(seed).randint(0, along - sum(sides) - gap * (len(sides) - 1))  # the rounding's slack
    style = scene.get("style")
    objects = []
    for (concept, _), side in zip(items, sides):
        c0 = (native - side) // 2
        box = (c0, pos, c0 + side, pos + side) if vertical else (pos, c0, pos + side, c0 + side)
        objects.append(LayoutObject(f"{concept}, {style}" if style else concept, box))
        pos += side + gap
    return Layout(width, height, objects)


def describe(layout: Layout) -> list[str]:
    """One line per object, for --explain."""
    return [f"{o.caption!r} at x {o.box[0]}-{o.box[2]}, y {o.box[1]}-{o.box[3]} of {layout.width}x{layout.height}"
            for o in layout.objects]
