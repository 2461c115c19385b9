"""The OpenAI Images API: /v1/images/generations, /v1/images/edits and /v1/images/variations (multipart, as OpenAI's
clients send them; transparent mask pixels are repainted), /v1/models."""
from __future__ import annotations

import base64
import re
import time

from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect

from . import adapters as http_adapters
from .errors import error_response
from .schemas import MAX_IMAGES, MAX_PROMPT_CHARS, OpenAIImage, OpenAIImageRequest, OpenAIImagesResponse
from .served import Served, decoded, image_params, png_bytes, served
from .uploads import UploadError, has_transparency

N_FIELD = re.compile(r"[0-9]{1,3}")  # ASCII digits only: str.isdigit() also takes '²' (int() fails) and '٣' (== 3)
_FORM_FIELDS = {  # OpenAI's multipart fields, for the schema (the route reads and checks them itself)
    "image": {"type": "string", "format": "binary", "description": "PNG, JPEG or WebP; at most 4 MB and 2048x2048 px"},
    "prompt": {"type": "string", "maxLength": MAX_PROMPT_CHARS},
    "n": {"type": "integer", "minimum": 1, "maximum": MAX_IMAGES, "default": 1},
    "size": {"type": "string", "description": "the model's native WIDTHxHEIGHT, a larger one its upscaler draws "
                                              "(e.g. 256x256), or 'auto'"},
    "response_format": {"type": "string", "enum": ["b64_json", "url"], "default": "b64_json"},
    "model": {"type": "string", "description": "a loaded model's name (GET /v1/models), with adapters as "
              "'base+adapter[:scale]'; other names mean the default"},
}


def _multipart(*required: str, mask: bool = False) -> dict:
    fields = {**_FORM_FIELDS, **({"mask": {"type": "string", "format": "binary", "description": "transparent = "
                                           "repaint; the image's size"}} if mask else {})}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "properties": fields, "required": list(required)}}}}}


router = APIRouter(tags=["openai"])


@router.post("/v1/images/generations", response_model=OpenAIImagesResponse, response_model_exclude_none=True,
             summary="Create images (OpenAI Images API)")
async def openai_generate(req: OpenAIImageRequest, request: Request):
    s = served(request)
    try:
        target, chosen = _target(s, req.model)
    except http_adapters.AdapterRefused as e:
        return error_response(422, str(e), "model")
    offered = {f"{k}x{k}": k for k in target.sizes}  # the native size, and larger ones with an upscaler
    if req.size not in (None, "auto", *offered):
        return error_response(422, f"size: this model draws {', '.join(offered)} images; use one of them or 'auto' "
                                   f"(got {req.size!r})", "size")
    size = {"size": offered[req.size]} if req.size in offered else {}
    images = await s.generate({"prompt": req.prompt, "num_images": req.n, **size}, mode="text2img", target=target,
                              adapters=chosen)
    return _openai_response(s, images, req.response_format, request, req.prompt)


def _target(s: Served, model: str | None):
    """(the pipeline, the adapters) OpenAI's `model` names: "base" or "base+adapter[:scale]+..." (adapters.py);
    OpenAI's own model names (dall-e-2) mean the default model."""
    base, choices = http_adapters.from_model_name(model)
    target = s.pipes.get(base or "", s.pipe)
    return target, http_adapters.checked(target, choices)


def _openai_response(s: Served, images, response_format, request: Request, prompt: str | None):
    s.metrics.images.inc(len(images))
    data = []
    for im in images:
        params = image_params(im)
        revised = params.get("rewritten_prompt") or params.get("prompt") or prompt
        if response_format == "url":
            path = s.save(im, params)
            if path is None:
                return error_response(507, "the server could not store the image for a URL; ask for "
                                           "response_format 'b64_json'")
            url = str(request.base_url).rstrip("/") + path
            data.append(OpenAIImage(url=url, revised_prompt=revised))
        else:
            data.append(OpenAIImage(b64_json=base64.b64encode(png_bytes(im, params)).decode(), revised_prompt=revised))
    return OpenAIImagesResponse(created=int(time.time()), data=data)


async def _upload_form(s: Served, request: Request, needs_prompt: bool):
    """The multipart fields OpenAI's clients send, validated, the images still undecoded bytes:
    (the pipeline and adapters `model` names, image, mask or None, prompt, n, response_format)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()  # case-insensitive
    if media_type != "multipart/form-data":
        raise UploadError("send multipart/form-data with an 'image' file (as OpenAI's clients do)")
    s.queue.check_room()  # 429 before an upload is read, let alone decoded, when no job could take it
    try:
        form = await request.form(max_files=4, max_fields=32)
    except ClientDisconnect:
        raise
    except Exception as e:  # the multipart parser's own errors (bad boundary, too many parts)
        reason = (str(e).splitlines() or [""])[0][:120] or type(e).__name__
        raise UploadError(f"could not read the multipart form ({reason})") from None
    files = [v for k, v in form.multi_items() if k in ("image", "image[]") and hasattr(v, "read")]
    if not files:
        raise UploadError("image: a file is required (multipart field 'image')")
    image = await files[0].read()
    mask_part = form.get("mask")
    mask = await mask_part.read() if hasattr(mask_part, "read") else None
    prompt = form.get("prompt")
    if needs_prompt and (not isinstance(prompt, str) or not prompt.strip()):
        raise UploadError("prompt: describe the edited image, e.g. \"red apple\"")
    if isinstance(prompt, str) and len(prompt) > MAX_PROMPT_CHARS:
        raise UploadError(f"prompt: at most {MAX_PROMPT_CHARS} characters")
    n_raw = form.get("n") or "1"
    if not isinstance(n_raw, str) or not N_FIELD.fullmatch(n_raw) or not 1 <= int(n_raw) <= MAX_IMAGES:
        raise UploadError(f"n: an integer in 1..{MAX_IMAGES}")
    fmt = form.get("response_format") or "b64_json"
    if fmt not in ("b64_json", "url"):
        raise UploadError("response_format: 'b64_json' or 'url'")
    model = form.get("model")
    if model is not None and not isinstance(model, str):
        raise UploadError("model: a model's name (GET /v1/models)")
    try:
        target, chosen = _target(s, model)
    except http_adapters.AdapterRefused as e:
        raise UploadError(str(e)) from None
    offered = {f"{k}x{k}": k for k in getattr(target, "sizes", [s.size])}
    if form.get("size") not in (None, "", "auto", *offered):
        raise UploadError(f"size: this model draws {', '.join(offered)} images; use one of them or 'auto'")
    size = offered.get(form.get("size"), s.size)
    return target, chosen, image, mask, prompt, int(n_raw), fmt, size

@router.post("/v1/images/edits", response_model=OpenAIImagesResponse, response_model_exclude_none=True,
             summary="Edit an image (OpenAI Images API): transparent mask pixels are repainted",
             openapi_extra=_multipart("image", "prompt", mask=True))
async def openai_edit(request: Request):
    s = served(request)
    target, chosen, raw, raw_mask, prompt, n, fmt, size = await _upload_form(s, request, needs_prompt=True)
    if not {"img2img", "inpaint"} <= set(getattr(target, "modes", {}) or {}):
        return error_response(501, "this server's pipeline cannot edit images")

    def job_options():
        image, mask = decoded(raw, raw_mask)
        if mask is None and has_transparency(image):  # OpenAI: without a mask, the image's transparency marks the edit
            mask = image.convert("RGBA")
        if mask is not None and mask.mode in ("RGBA", "LA") and not has_transparency(mask):
            raise UploadError("mask: it has no transparent pixels; make transparent the area to edit")
        options = {"image": image, "prompt": prompt, "num_images": n, **({"mask": mask} if mask is not None else {}),
                   **({"size": size} if size != s.size else {})}  # larger: drawn native, then upscaled
        return ("inpaint" if mask is not None else "img2img"), options

    images = await s.generate(job_options, target=target, adapters=chosen)
    return _openai_response(s, images, fmt, request, prompt)


@router.post("/v1/images/variations", response_model=OpenAIImagesResponse, response_model_exclude_none=True,
             summary="Variations of an image (OpenAI Images API)", openapi_extra=_multipart("image"))
async def openai_variations(request: Request):
    s = served(request)
    target, chosen, raw, _, _, n, fmt, size = await _upload_form(s, request, needs_prompt=False)
    if "variation" not in (getattr(target, "modes", {}) or {}):
        return error_response(501, "this server's pipeline cannot make variations")
    if size != s.size:
        return error_response(400, f"size: variations are drawn at {s.size}x{s.size}; use it or 'auto'", "size")
    images = await s.generate(lambda: ("variation", {"image": decoded(raw, None)[0], "num_images": n}), target=target,
                              adapters=chosen)
    return _openai_response(s, images, fmt, request, None)


@router.get("/v1/models", summary="List models (OpenAI shape)")
async def openai_models(request: Request):
    s = served(request)
    ids = [name for name in s.pipes] + [f"{name}+{a['name']}" for name, pl in s.pipes.items()
                                        for a in http_adapters.listed(pl) if a["method"] != "textual-inversion"]
    return {"object": "list", "data": [{"id": i, "object": "model", "created": int(s.started), "owned_by": "minicream"}
                                       for i in ids]}
