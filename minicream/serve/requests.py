"""The native API's request models, generated from the modes' declared options (pipelines/modes.py) with
`pydantic.create_model`, so a mode or an option declared once is a documented, validated HTTP field.

Every option a mode offers over HTTP (`Option.on_http`) is a field named `Option.http_name`: its type from its kind
(an image is base64 text; "json" an object or one of its choices), its choices a Literal, its limits the
declared ones capped by what one request may cost here (SERVER_CAPS), its help the field's description. A required
option is a required field (a required text must not be blank); any other is optional, and left out means the
mode's (or the model's) default. Next to the mode's options every request has the server's own fields (`model`,
`client_id`, `adapters`: adapters.py). One model per mode (`POST /api/modes/{mode}`), `GenerateRequest` (text2img, `POST /api/generate`) and
`EditRequest` (`POST /api/edit`: the modes that take an uploaded image, chosen by `mode`).
"""
from __future__ import annotations

import re
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from .adapters import MAX_ADAPTERS, AdapterChoice
from .schemas import MAX_CANDIDATES, MAX_GUIDANCE, MAX_IMAGES, MAX_SEED, MAX_STEPS

MAX_FRAMES = 16
# What one request may cost on a shared server, below what the library allows (option -> highest value).
SERVER_CAPS = {"num_images": MAX_IMAGES, "num_candidates": MAX_CANDIDATES, "steps": MAX_STEPS, "guidance": MAX_GUIDANCE,
               "seed": MAX_SEED, "frames": MAX_FRAMES}
SERVER_FIELDS = ("model", "client_id", "mode", "adapters")  # the server's own fields: no option may take these names over HTTP
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
class Part(BaseModel):
    """One part of a fusion: a base64 image or a text."""
    model_config = ConfigDict(extra="forbid")
    image: Optional[str] = Field(None, min_length=1, description="base64 image (or a data: URL)")
    text: Optional[str] = Field(None, min_length=1, max_length=500, description="a text")


MAX_PARTS = 4
KIND_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "seed": int, "image": str, "json": dict,
              "floats": list[float], "parts": list[Part]}


def _client_id(value: str | None) -> str | None:
    if value is not None and not CLIENT_ID.match(value):
        raise ValueError("client_id must be 1-64 letters, digits, '-' or '_'")
    return value


def http_options(mode) -> list:
    return [o for o in mode.options if o.on_http]


def field_type(o):
    """The Python type pydantic checks an option's HTTP value against."""
    if o.kind == "json":
        return Union[dict, Literal[tuple(o.choices)]] if o.choices else dict
    if o.choices:
        return Literal[tuple(o.choices)]
    return KIND_TYPES[o.kind]


def _limits(o) -> dict:
    limits = dict(o.limits)
    cap = SERVER_CAPS.get(o.name)
    if cap is not None:
        limits["le"] = min(limits.get("le", cap), cap)
    if o.kind == "image":
        limits = {"min_length": 1}
    if o.kind in ("parts", "floats"):
        limits = {"min_length": 1, "max_length": MAX_PARTS}
    return limits


def _description(o) -> str:
    return ("base64 image (or a data: URL): " if o.kind == "image" else "") + o.help


def field_definition(o, required: bool, default=None):
    """(type, FieldInfo) of an option as create_model takes it."""
    if required:
        return field_type(o), Field(..., description=_description(o), **_limits(o))
    return Optional[field_type(o)], Field(default, description=_description(o), **_limits(o))


def _http_default(o):
    """The default an optional field shows and takes: the declared one when it is plain and fixed, else None (the
    mode fills it: the model's value, or one depending on other options)."""
    return None if o.model_key or not isinstance(o.default, (str, int, float, bool)) else o.default


def _not_blank(value, info):
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{info.field_name} is empty; write what it should be, e.g. \"red apple\"")
    return value


def _model(name: str, doc: str, fields: dict, texts: list[str]) -> type[BaseModel]:
    validators = {"_check_client_id": field_validator("client_id")(_client_id)}
    if texts:
        validators["_check_text"] = field_validator(*texts)(_not_blank)
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=doc, __validators__=validators,
                        **fields, **_server_fields())


def _server_fields() -> dict:
    return {"model": (Optional[str], Field(None, max_length=128, description="a loaded model's name (GET /api/models); "
                                                                                 "default: the first")),
            "client_id": (Optional[str], Field(None, description="any id of yours: GET /api/progress/{client_id} "
                                                                 "reports progress")),
            "adapters": (Optional[list[AdapterChoice]], Field(None, max_length=MAX_ADAPTERS, description=(
                "the chosen model's adapters to draw with (GET /api/models lists them), e.g. [{\"name\": \"my-cat\", "
                "\"scale\": 0.8}]: exactly these LoRA adapters, the others off; [] = none; default: the served mix")))}


def _check_names(mode) -> None:
    for o in http_options(mode):
        if o.http_name in SERVER_FIELDS:
            raise ValueError(f"mode {mode.name}: option {o.name} cannot be the HTTP field {o.http_name!r} (the server's own)")


def mode_request(mode, name: str | None = None) -> type[BaseModel]:
    """The request model of one mode: its HTTP options (required ones required) and the server's fields."""
    _check_names(mode)
    options = http_options(mode)
    fields = {o.http_name: field_definition(o, o.required, _http_default(o)) for o in options}
    texts = [o.http_name for o in options if o.required and o.kind == "str"]
    return _model(name or f"{mode.name.capitalize()}Request", f"`POST /api/modes/{mode.name}`: {mode.help}.", fields, texts)


def describe_modes(pipe) -> dict:
    """Each mode a pipeline declares with its HTTP options, as /api/models lists them (the page builds its editor
    from these): name, field, kind, default (the model's where it has one), help, choices, required, and the limits
    a request here is held to."""
    defaults = dict(getattr(pipe, "defaults", {}) or {})
    return {name: {"help": mode.help, "options": [{**o.describe(defaults), "limits": _limits(o)}
                                                  for o in http_options(mode)]}
            for name, mode in (getattr(pipe, "modes", None) or {}).items()}


def takes_upload(mode) -> bool:
    """A mode of /api/edit: one whose required inputs include an image."""
    return any(o.required and o.kind == "image" for o in http_options(mode))


def edit_request(modes: dict) -> type[BaseModel] | None:
    """`POST /api/edit`: the fields of every mode that takes an uploaded image, `mode` choosing one. A field is
    required when every one of these modes requires it; each mode's other requirements are checked by the route."""
    chosen = [m for m in modes.values() if takes_upload(m)]
    if not chosen:
        return None
    fields, texts, required, seen = {}, set(), None, {}
    for m in chosen:
        _check_names(m)
        names = {o.http_name for o in http_options(m) if o.required}
        required = names if required is None else required & names
        for o in http_options(m):
            seen.setdefault(o.http_name, (o, []))[1].append(m.name)
    for field, (o, users) in seen.items():
        definition = field_definition(o, field in required)
        info = definition[1]
        info.description = f"{info.description} ({', '.join(users)})" if len(users) < len(chosen) else info.description
        fields[field] = definition
        if o.kind == "str" and field in required:
            texts.add(field)
    fields = {"mode": (Literal[tuple(m.name for m in chosen)], Field(..., description="; ".join(
        f"{m.name}: {m.help}" for m in chosen))), **fields}
    return _model("EditRequest", "`POST /api/edit`: change an uploaded image (base64 PNG, JPEG or WebP; a data: URL is "
                                 "fine) with one of the modes that take one; each mode's fields as it declares them.",
                  fields, sorted(texts))


def generate_request(modes: dict) -> type[BaseModel] | None:
    """`POST /api/generate`: every text-to-image option."""
    return mode_request(modes["text2img"], "GenerateRequest") if "text2img" in modes else None
