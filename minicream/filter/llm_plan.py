"""The LLM's scene plan: objects, counts and boxes on the canvas, and relations, read from its JSON answer.

The answer the LLM filter asks for (llm.py) carries, next to its caption, a plan such as
    {"objects": [{"concept": "dog face", "count": 1, "boxes": [[0.05, 0.2, 0.45, 0.8]]}, ...],
     "relations": [{"subject": "dog face", "relation": "left of", "object": "red apple"}]}
with boxes as fractions of the canvas (x0, y0, x1, y1; 0 = left/top, 1 = right/bottom), so the plan does not depend
on the canvas the scene is drawn on (sized later from the layout, e.g. 136x64 for two objects side by side).

Why a schema (pydantic) and not trust: the answer is text from another program, possibly hostile. The schema bounds
every field (at most MAX_OBJECTS objects, counts 1..6, four finite numbers a box, names of 80 characters); a box a
little past an edge is clipped to the canvas, one far outside it (or pixels instead of fractions, or too small
once clipped) is invalid and left to the rules. The concepts were already checked against the model's vocabulary
(llm.parse_answer) and the caption's own parse (the offline filter) is the scene that is drawn: the plan only
places its objects, and boxes that contradict the caption's relation are dropped. Whatever is missing or invalid
is laid out by the rules (pipelines/layout_plan.py merges the two), with one warning line, never an error.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_OBJECTS = 6         # as pipelines/layout.py: a scene draws at most six (the filter sits below the pipelines)
MIN_SIDE = 0.05         # a clipped box narrower than this fraction of the canvas is no box
SLACK = 0.25            # coordinates within [-SLACK, 1 + SLACK] are clipped to the canvas; beyond, the box is invalid
MAX_RELATIONS = 2 * MAX_OBJECTS
RELATIONS = {"left of": "to the left of", "to the left of": "to the left of", "left": "to the left of",
             "right of": "to the right of", "to the right of": "to the right of", "right": "to the right of",
             "above": "above", "over": "above", "on top of": "above", "below": "below", "under": "below",
             "beneath": "below", "and": "and", "next to": "and", "beside": "and"}

Box = tuple[float, float, float, float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, str_max_length=80)


class PlanObject(_Strict):
    concept: str = Field(min_length=1)
    count: int = Field(1, ge=1, le=MAX_OBJECTS)
    boxes: list[Box] = Field(default_factory=list, max_length=MAX_OBJECTS)

    @model_validator(mode="before")
    @classmethod
    def _one_box(cls, data):
        """{"box": [...]} for one object, as models often answer, is {"boxes": [[...]]}."""
        if isinstance(data, dict) and "boxes" not in data and data.get("box") is not None:
            data = {**data, "boxes": [data["box"]]}
        return data


class PlanRelation(_Strict):
    subject: str
    relation: Literal[tuple(RELATIONS)]  # type: ignore[valid-type]
    object: str

    @field_validator("relation", mode="before")
    @classmethod
    def _lower(cls, v):
        return v.strip().lower() if isinstance(v, str) else v


class ScenePlan(_Strict):
    objects: list[PlanObject] = Field(default_factory=list, max_length=MAX_OBJECTS)
    relations: list[PlanRelation] = Field(default_factory=list, max_length=MAX_RELATIONS)


def clip_box(box: Box) -> Box | None:
    """The box clipped to the unit canvas, or None when it is not a box on it (see SLACK, MIN_SIDE)."""
    if not all(-SLACK <= v <= 1 + SLACK for v in box):
        return None
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in box)
    if x1 - x0 < MIN_SIDE or y1 - y0 < MIN_SIDE:
        return None
    return tuple(round(v, 4) for v in (x0, y0, x1, y1))


def _centre(box, axis: int) -> float:
    return (box[axis] + box[axis + 2]) / 2


def _contradicts(plan: dict, scene: dict) -> str | None:
    """Why the plan's boxes contradict the caption's relation between its two objects, or None."""
    relation = scene.get("relation")
    names = [o["concept"] for o in scene.get("objects") or []]
    if relation not in ("to the left of", "to the right of", "above", "below") or len(set(names)) != 2:
        return None
    boxes = {o["concept"]: [b for b in o["boxes"] if b is not None] for o in plan["objects"]}
    a, b = boxes.get(names[0]) or [], boxes.get(names[1]) or []
    if not a or not b:
        return None
    axis = 1 if relation in ("above", "below") else 0
    first_before = max(_centre(x, axis) for x in a) < min(_centre(x, axis) for x in b)
    first_after = min(_centre(x, axis) for x in a) > max(_centre(x, axis) for x in b)
    ok = first_before if relation in ("to the left of", "above") else first_after
    return None if ok else f"its boxes do not put {names[0]} {relation} {names[1]}"


def _reason(e: ValidationError) -> str:
    """One line from pydantic's multi-line report: where, and what."""
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "plan"
    return f"{where}: {err['msg'][:80]}" + (f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else "")


def read_plan(data: dict, scene: dict | None) -> tuple[dict | None, str | None]:
    """(plan, warning) from the LLM's answer (a JSON object) for the caption's `scene` (FilterResult.scene).

    plan: {"objects": [{"concept", "count", "boxes": [box or None, ...]}], "relations": [...]} with boxes clipped to
    the unit canvas (None where invalid), or None when there is nothing to place or nothing usable. warning: one
    line when something of the answer was dropped (the rules place it), else None."""
    if not scene or not isinstance(data.get("objects"), list) or not any(
            isinstance(o, dict) and ("boxes" in o or "box" in o) for o in data["objects"]):
        return None, None  # no boxes proposed (an older answer): the rules lay the scene out, nothing to warn about
    try:
        plan = ScenePlan.model_validate({"objects": data["objects"], "relations": data.get("relations") or []})
    except ValidationError as e:
        return None, f"LLM scene plan rejected ({_reason(e)}); the rules placed the objects"
    known = {o["concept"] for o in scene.get("objects") or []}
    names = {o.concept for o in plan.objects}
    if any(r.subject not in names or r.object not in names for r in plan.relations):
        return None, "LLM scene plan rejected (a relation names an object the plan has not); the rules placed the objects"
    objects, invalid = [], 0
    for o in plan.objects:
        if o.concept not in known:
            continue  # grounded by llm.py already; an object the caption does not draw has nothing to place
        boxes = [clip_box(b) for b in o.boxes[:o.count]]
        invalid += sum(b is None for b in boxes)
        objects.append({"concept": o.concept, "count": o.count, "boxes": boxes})
    out = {"objects": objects, "relations": [{"subject": r.subject, "relation": RELATIONS[r.relation], "object": r.object}
                                             for r in plan.relations]}
    why = _contradicts(out, scene)
    if why:
        return None, f"LLM scene plan rejected ({why}); the rules placed the objects"
    if not any(b is not None for o in objects for b in o["boxes"]):
        return None, "LLM scene plan has no valid box; the rules placed the objects"
    if invalid:
        return out, f"LLM scene plan: {invalid} box(es) outside the canvas or too small; the rules placed those"
    return out, None
