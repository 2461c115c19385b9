"""Adapters over HTTP (issue 31): a model's loaded adapters (`serve --adapter DIR[:SCALE]`) are listed in
`/api/models`; a request picks the ones it wants, `adapters: [{"name": ..., "scale": ...}]` on every native route,
or OpenAI's way through the model's name, `base+adapter[:scale][+adapter...]`.

A request that names adapters gets exactly those LoRA adapters at those scales (the others off) for its own run;
one that names none gets the model's served mix. A textual inversion is a word: it is there whenever a prompt uses
its token (scale 1 only). The chosen mix is set and restored inside the worker, under the model's lock, so that
two requests never see each other's adapters.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

from pydantic import BaseModel, ConfigDict, Field

from ..adapters.use import MAX_SCALE, check_scale
from ..errors import MinicreamError

MAX_ADAPTERS = 8  # adapters one request may name


class AdapterChoice(BaseModel):
    """One adapter of the chosen model, by its name in GET /api/models, at a LoRA scale."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="a loaded adapter's name (GET /api/models)")
    scale: float = Field(1.0, ge=0.0, le=MAX_SCALE, description="LoRA scale (0 = off, 1 = as trained); a textual "
                                                                "inversion takes 1 only")


class AdapterRefused(ValueError):
    pass


def loaded(pipe) -> dict:
    return dict(getattr(pipe, "adapters", None) or {})


def listed(pipe) -> list[dict]:
    """What /api/models says of a model's adapters."""
    return [{"name": a.name, "token": a.info.token, "method": a.info.method, "style": bool(a.info.style),
             "scale": a.scale, "hash": a.hash} for a in loaded(pipe).values()]


def checked(pipe, choices: list[tuple[str, float]] | None) -> list[tuple[str, float]] | None:
    """A request's (name, scale) choices, each one loaded for this model, once, at a scale it takes."""
    if choices is None:
        return None
    have, seen = loaded(pipe), set()
    if len(choices) > MAX_ADAPTERS:
        raise AdapterRefused(f"adapters: at most {MAX_ADAPTERS}, got {len(choices)}")
    for name, scale in choices:
        if name not in have:
            raise AdapterRefused(f"adapters: {name!r} is not loaded for this model (loaded: {', '.join(have) or 'none'}; "
                                 "GET /api/models lists them)")
        if name in seen:
            raise AdapterRefused(f"adapters: {name!r} is named twice")
        try:
            check_scale(scale, name)  # the library's own bound (a native request's field is bounded already)
        except MinicreamError as e:
            raise AdapterRefused(f"adapters: {e}") from None
        if have[name].info.method == "textual-inversion" and scale != 1.0:
            raise AdapterRefused(f"adapters: {name!r} is a textual inversion (a new word): its scale is 1")
        seen.add(name)
    return list(choices)


def from_model_name(model: str | None) -> tuple[str | None, list[tuple[str, float]] | None]:
    """OpenAI's `model` field: "base+adapter[:scale]+..." -> ("base", [(adapter, scale), ...]); a plain name -> (it, None)."""
    if not model or "+" not in model:
        return model, None
    base, *specs = model.split("+")
    choices = []
    for spec in specs:
        name, _, scale = spec.partition(":")
        try:
            value = float(scale) if scale else 1.0
        except ValueError:
            raise AdapterRefused(f"model: {spec!r} is not ADAPTER or ADAPTER:SCALE (e.g. {base}+my-cat:0.8)") from None
        choices.append((name, value))
    return base, choices


@contextmanager
def applied(pipe, choices: list[tuple[str, float]] | None, lock: threading.Lock):
    """Run the body with these adapters (None: the model's served mix), holding the model's `lock` when it has any."""
    if not loaded(pipe):
        yield
        return
    with lock:
        if choices is None:
            yield
            return
        before = [(a.name, a.scale) for a in loaded(pipe).values()]
        pipe.set_adapters([n for n, _ in choices], [s for _, s in choices])
        try:
            yield
        finally:
            pipe.set_adapters([n for n, _ in before], [s for _, s in before])
