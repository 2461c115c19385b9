"""What a client asks about the server: request progress, the loaded models and their samplers, saved images,
Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from . import adapters as http_adapters
from .errors import error_response
from .requests import describe_modes
from .served import UnknownModel, served

OUTPUT_NAME_CHARS = set("0123456789abcdef")

router = APIRouter()


@router.get("/api/progress/{client_id}", tags=["minicream"], summary="Progress of a request sent with client_id")
async def progress(client_id: str, request: Request):
    queue = served(request).queue
    p = queue.progress(client_id)
    if p is None:
        return {"state": "unknown", "step": 0, "total": 0}
    return {"state": p.state, "step": p.step, "total": p.total, "queued": queue.queued}


@router.get("/api/models", tags=["minicream"], summary="The loaded models (the first is the default), each with its "
            "modes and their declared options (name, field, kind, default, help, choices, required, limits) and its "
            "loaded adapters (name, token, method, style, served scale, hash) its ControlNets' kinds (controls) whether it takes image prompts (image_prompt) and has a prior (prior)")
async def models(request: Request):
    s = served(request)
    return {"models": [{"name": name, "image_size": s.size, "sizes": list(getattr(pl, "sizes", [s.size])),
                        "model_hash": getattr(pl, "model_hash", None),
                        "samplers": list(pl.samplers), "defaults": dict(getattr(pl, "defaults", {}) or {}),
                        "kind": (getattr(pl, "provenance", None) or {}).get("model_kind"),
                        "teacher": (getattr(pl, "provenance", None) or {}).get("teacher"),
                        "features": s.features_of(pl).as_dict(), "modes": describe_modes(pl),
                        "adapters": http_adapters.listed(pl), "controls": list(getattr(pl, "control_kinds", [])),
                        "image_prompt": bool(getattr(pl, "has_image_prompt", False)),
                        "prior": bool(getattr(pl, "has_prior", False)),
                        "loaded": True}
                       for name, pl in s.pipes.items()]}


@router.get("/api/samplers", tags=["minicream"], summary="Samplers a model can use (default: the default model)")
async def samplers(request: Request, model: str | None = None):
    try:
        target = served(request).pick(model)
    except UnknownModel as e:
        return error_response(422, str(e), "model")
    defaults = getattr(target, "defaults", {}) or {}
    return {"samplers": list(target.samplers), "default": defaults.get("sampler")}


@router.get("/outputs/{name}", tags=["minicream"], summary="An image saved by this server", response_class=FileResponse)
async def output_file(name: str, request: Request):
    output_dir = served(request).output_dir
    # Names are ours (32 hex digits + .png): anything else, '..' and '/' included, is not a file we wrote.
    stem = name.removesuffix(".png")
    if len(stem) != 32 or not name.endswith(".png") or not set(stem) <= OUTPUT_NAME_CHARS:  # before any path call:
        return error_response(404, f"no such image: {name[:80]!r}")  # a NUL byte makes resolve() raise
    path = (output_dir / name).resolve()
    if path.parent != output_dir or not path.is_file():
        return error_response(404, f"no such image: {name[:80]!r}")
    return FileResponse(path, media_type="image/png")


@router.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
async def prometheus(request: Request):
    metrics = served(request).metrics
    return Response(metrics.render(), media_type=metrics.content_type)

