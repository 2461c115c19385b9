"""A scene's layout when the LLM filter planned boxes: the rules' layout (layout.py), with each object's box replaced
by the LLM's where its plan has a valid one.

Why merge rather than choose: a plan may be partial (two of three bananas boxed, one object without a box) or hold
a box that was invalid (filter/llm_plan.py left it None); the rules always have a box for every object of the
caption, so the scene is drawn whole and the recorded `Layout.source` says whose boxes it holds ("llm",
"llm+rules" or "rules"). The LLM's boxes are fractions of the canvas; the canvas is the rules' (sized from the
scene, issue 28), so the same plan fits "scene" and "model" canvases alike.
"""
from __future__ import annotations

from .layout import MIN_BOX_PX, Layout, LayoutObject, instances, layout_from_scene, native_layout


def to_pixels(box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """A box in fractions of the canvas -> pixels (x1/y1 exclusive), or None when it is under MIN_BOX_PX a side."""
    x0, y0, x1, y1 = (int(round(v * n)) for v, n in zip(box, (width, height, width, height)))
    return (x0, y0, x1, y1) if x1 - x0 >= MIN_BOX_PX and y1 - y0 >= MIN_BOX_PX else None


def merge_plan(rules: Layout, scene: dict, plan: dict | None) -> Layout:
    """The rules' layout of `scene` with the plan's boxes put in: the k-th instance of a concept (in the order the
    rules place them) takes the k-th box the plan gives that concept."""
    if not plan:
        return rules
    boxes = {o["concept"]: list(o["boxes"]) for o in plan.get("objects") or []}
    items, _ = instances(scene)
    objects, from_llm = [], 0
    for (concept, _), obj in zip(items, rules.objects):
        queue = boxes.get(concept) or []
        planned = queue.pop(0) if queue else None
        box = to_pixels(planned, rules.width, rules.height) if planned is not None else None
        from_llm += box is not None
        objects.append(LayoutObject(obj.caption, box) if box is not None else obj)
    source = "rules" if not from_llm else "llm" if from_llm == len(objects) else "llm+rules"
    return Layout(rules.width, rules.height, objects, source)


def scene_layout(scene: dict, plan: dict | None, native: int, factor: int, seed: int, canvas: str = "scene") -> Layout:
    """The layout of a filtered scene: laid out by the rules (seeded) on the canvas `canvas` asks for, the LLM's
    plan (FilterResult.plan) merged in."""
    if canvas == "model":
        rules = layout_from_scene(scene, native, seed=seed)
    else:
        rules = native_layout(scene, native, factor, seed=seed)
    return merge_plan(rules, scene, plan)
